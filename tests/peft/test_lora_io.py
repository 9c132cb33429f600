"""LoRA adapters in peft's format: ours load in peft on the transformers twin, peft's load in ours,
with the same logits; bad adapters are refused by name."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import helpers
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import to_hf
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.peft import LoRAConfig, apply_lora, load_lora, save_lora

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj")


def _llama(n_layers: int = 2) -> Llama:
    return helpers.tiny_llama(n_layers=n_layers)


_randomise_b = helpers.randomise_lora_b


def test_ours_load_in_peft_with_the_same_logits(tmp_path: Path) -> None:
    from peft import PeftModel

    base = _llama()
    hf = to_hf(base).eval()
    ours = _llama()
    config = LoRAConfig(r=4, alpha=8, target_modules=TARGETS, use_rslora=True)
    apply_lora(ours, config)
    _randomise_b(ours)
    save_lora(ours, tmp_path / "adapter", config)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4
    theirs = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_peft_adapters_load_in_ours_with_the_same_logits(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    hf = to_hf(_llama()).eval()
    peft_model = get_peft_model(
        hf, LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "down_proj"])
    )
    torch.manual_seed(2)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.1)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    ours = load_lora(_llama(), tmp_path / "peft")
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids), peft_model.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5
        )


def test_bad_adapters_are_refused(tmp_path: Path) -> None:
    ours = apply_lora(_llama(), LoRAConfig(r=2, target_modules=("q_proj",)))
    adapter = save_lora(ours, tmp_path / "a", LoRAConfig(r=2, target_modules=("q_proj",)))
    # another shape: a model with wider layers
    torch.manual_seed(0)
    wide = Llama(
        LlamaConfig.from_name(
            "tiny", vocab_size=97, n_layers=2, d_model=128, n_heads=4, n_kv_heads=2
        )
    )
    with pytest.raises(
        CheckpointError, match=r"has shape .* the adapter was trained on another model"
    ):
        load_lora(wide, adapter)
    with pytest.raises(CheckpointError, match="fits no LoRA layer"):
        load_lora(_llama(n_layers=1), adapter)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ConfigError, match="'PREFIX_TUNING' adapter"):
        load_lora(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "rank_pattern": {"q_proj": 4}}))
    with pytest.raises(ConfigError, match=r"rank_pattern=\{'q_proj': 4\}, which load_lora"):
        load_lora(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "use_dora": True}))  # DoRA without magnitudes
    with pytest.raises(CheckpointError, match=r"no weight for .*lora_magnitude_vector"):
        load_lora(_llama(), adapter)
    with pytest.raises(CheckpointError, match="not a peft adapter directory"):
        load_lora(_llama(), tmp_path / "nothing")
    from groundwork.models.bert import Bert, BertConfig

    bert = Bert(BertConfig.from_name("tiny"))
    with pytest.raises(ConfigError, match=r"written for GPT and Llama models.*not a Bert"):
        load_lora(bert, adapter)


def _gpt() -> GPT:
    return helpers.tiny_gpt(n_layers=2, d_model=48, n_heads=3)


@pytest.mark.parametrize("targets", [("qkv_proj",), ("o_proj", "up_proj"), ("down_proj",)])
def test_gpt2_adapters_round_trip_through_peft_conv1d(tmp_path: Path, targets: tuple) -> None:
    """GPT-2's fused c_attn and its Conv1D layers: ours load in peft (fan_in_fan_out) and back."""
    from peft import PeftModel

    hf = to_hf(_gpt()).eval()
    ours = _gpt()
    config = LoRAConfig(r=2, alpha=4, target_modules=targets, use_dora=targets == ("down_proj",))
    apply_lora(ours, config)
    _randomise_b(ours)
    save_lora(ours, tmp_path / "a", config)
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is True
    theirs = PeftModel.from_pretrained(hf, str(tmp_path / "a")).eval()
    n_theirs = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert n_theirs == sum(p.numel() for p in ours.parameters() if p.requires_grad)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        expected = theirs(input_ids=ids).logits
        torch.testing.assert_close(ours(ids), expected, rtol=1e-5, atol=1e-5)
        theirs.save_pretrained(str(tmp_path / "b"))
        back = load_lora(_gpt(), tmp_path / "b")
        torch.testing.assert_close(back(ids), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(back(ids), _gpt()(ids), atol=1e-4)  # the adapter acts


def test_a_second_named_adapter_loads_beside_the_first(tmp_path: Path) -> None:
    model = apply_lora(_llama(), LoRAConfig(r=2, target_modules=("q_proj",)))
    _randomise_b(model)
    save_lora(model, tmp_path / "q", LoRAConfig(r=2, target_modules=("q_proj",)))
    load_lora(model, tmp_path / "q", adapter_name="copy")
    q = model.get_submodule("model.layers.0.self_attn.q_proj")
    torch.testing.assert_close(q.lora_B["copy"].weight, q.lora_B["default"].weight)
