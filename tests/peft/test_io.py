"""`load_adapter` picks the reader from peft_type: each method's saved adapter loads through it
with the same logits; an unknown type is refused, naming those we read."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import helpers
from groundwork.errors import CheckpointError, ConfigError
from groundwork.models.llama import Llama
from groundwork.peft import (
    BitFitConfig,
    IA3Config,
    LoRAConfig,
    PromptTuningConfig,
    apply_bitfit,
    apply_ia3,
    apply_lora,
    apply_prompt_tuning,
    load_adapter,
    save_bitfit,
    save_ia3,
    save_lora,
    save_prompt_tuning,
)


def _llama() -> Llama:
    return helpers.tiny_llama(n_layers=2)


def _perturb(model: nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt", "bitfit"])
def test_each_saved_adapter_loads_through_load_adapter(method: str, tmp_path: Path) -> None:
    model: nn.Module = _llama()
    if method == "lora":
        config = LoRAConfig(r=2, target_modules=("q_proj", "down_proj"))
        model = apply_lora(model, config)
        _perturb(model)
        save_lora(model, tmp_path, config)
    elif method == "ia3":
        model = apply_ia3(model, IA3Config())
        _perturb(model)
        save_ia3(model, tmp_path)
    elif method == "prompt":
        model = apply_prompt_tuning(model, PromptTuningConfig(num_virtual_tokens=3))
        save_prompt_tuning(model, tmp_path, PromptTuningConfig(num_virtual_tokens=3))
    else:
        model = apply_bitfit(model, BitFitConfig())
        _perturb(model)
        save_bitfit(model, tmp_path, BitFitConfig())
    ids = torch.randint(0, 97, (2, 7))
    loaded = load_adapter(_llama(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model.eval()(ids), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(loaded(ids), _llama()(ids), atol=1e-4)


def test_unknown_adapters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no adapter_config\.json"):
        load_adapter(_llama(), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LOHA"}))
    with pytest.raises(ConfigError, match=r"'LOHA' adapter; groundwork reads LORA, IA3"):
        load_adapter(_llama(), tmp_path)
