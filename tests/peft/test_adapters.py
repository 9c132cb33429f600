"""Bottleneck adapters (Houlsby, Pfeiffer): the identity at the start, trainable counts by formula,
gradients only in the adapters, a frozen base while the loss falls, saved adapters load back;
errors. (peft has no bottleneck adapters.)"""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import helpers
from groundwork.errors import CheckpointError, ConfigError
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.peft.adapters import (
    AdapterConfig,
    AdapterLinear,
    adapters_state_dict,
    apply_adapters,
    load_adapters,
    save_adapters,
)

V = 97
D = 64


def _llama(n_layers: int = 2, d_model: int = D) -> Llama:
    return helpers.tiny_llama(vocab_size=V, n_layers=n_layers, d_model=d_model)


def _gpt() -> GPT:
    return helpers.tiny_gpt(vocab_size=V)


MODELS: dict[str, Callable[[], nn.Module]] = {"llama": _llama, "gpt": _gpt}
CASES = [(f, p) for f in MODELS for p in ("houlsby", "pfeiffer")]


def _adapted(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, AdapterLinear)]


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))


@pytest.mark.parametrize(("family", "placement"), CASES)
def test_starts_as_the_base_with_the_adapters_where_the_placement_says(
    family: str, placement: str
) -> None:
    model = MODELS[family]()
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        before = model(ids)
    apply_adapters(model, AdapterConfig(bottleneck=8, placement=placement))  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before, rtol=0, atol=0)  # up = 0: the identity
    attn = "self_attn.o_proj" if family == "llama" else "attn.o_proj"
    blocks = "model.layers" if family == "llama" else "blocks"
    per_block = [attn, "mlp.down_proj"] if placement == "houlsby" else ["mlp.down_proj"]
    assert _adapted(model) == [f"{blocks}.{i}.{m}" for i in range(2) for m in per_block]
    # down (m x d + m) and up (d x m + d) per adapter; two blocks
    n_adapters = 2 * len(per_block)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == n_adapters * (2 * D * 8 + 8 + D)
    assert trainable == sum(v.numel() for v in adapters_state_dict(model).values())


@pytest.mark.parametrize("family", list(MODELS))
def test_only_the_adapters_learn_and_the_loss_falls(family: str) -> None:
    model = MODELS[family]()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_adapters(model, AdapterConfig(bottleneck=8, activation="gelu"))
    torch.manual_seed(3)
    ids = torch.randint(0, V, (4, 16))
    _loss(model, ids).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if ".adapter." in n}
    model.zero_grad()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = _loss(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    for key, value in model.state_dict().items():
        if ".adapter." not in key:
            torch.testing.assert_close(
                value, base[key.replace(".base_layer.", ".")], rtol=0, atol=0
            )


@pytest.mark.parametrize("family", list(MODELS))
def test_saved_adapters_load_onto_a_fresh_base(family: str, tmp_path: Path) -> None:
    model = apply_adapters(MODELS[family](), AdapterConfig(bottleneck=4, activation="silu"))
    torch.manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.1)
    save_adapters(model, tmp_path / "adapters")
    written = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert written["peft_type"] == "BOTTLENECK_ADAPTER" and written["bottleneck"] == 4
    loaded = load_adapters(MODELS[family](), tmp_path / "adapters")
    assert _adapted(loaded) == _adapted(model)
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"match no linear layer.*named down_proj, gate_proj"):
        apply_adapters(_llama(), AdapterConfig(bottleneck=4, target_modules=("c_proj",)))
    with pytest.raises(ConfigError, match=r"bottleneck 64 is not narrower.*\(64\)"):
        apply_adapters(_llama(), AdapterConfig(bottleneck=64))
    with pytest.raises(ConfigError, match="bottleneck must be >= 1"):
        AdapterConfig(bottleneck=0)
    with pytest.raises(ConfigError, match="placement must be one of houlsby, pfeiffer"):
        AdapterConfig(bottleneck=4, placement="parallel")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="activation must be one of relu, gelu"):
        AdapterConfig(bottleneck=4, activation="swish")  # type: ignore[arg-type]
    model = apply_adapters(_llama(), AdapterConfig(bottleneck=4))
    with pytest.raises(ConfigError, match="already has adapters"):
        apply_adapters(model, AdapterConfig(bottleneck=4))
    with pytest.raises(ConfigError, match="has no adapters"):
        save_adapters(_llama(), tmp_path / "none")


def test_bad_saved_adapters_are_refused(tmp_path: Path) -> None:
    adapter = save_adapters(apply_adapters(_llama(), AdapterConfig(bottleneck=4)), tmp_path / "a")
    with pytest.raises(
        CheckpointError, match=r"adapter\.down\.weight has shape \(4, 64\), the model.s \(4, 128"
    ):
        load_adapters(_llama(d_model=128), adapter)  # wider layers
    with pytest.raises(
        CheckpointError, match=r"'model\.layers\.1\.mlp\.down_proj', which the Llama does not"
    ):
        load_adapters(_llama(n_layers=1), adapter)
    with pytest.raises(
        CheckpointError, match=r"'model\.layers\.0\.mlp\.down_proj', which the GPT does not"
    ):
        load_adapters(_gpt(), adapter)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(ConfigError, match="'LORA' adapter; load_adapters reads BOTTLENECK_ADAPTER"):
        load_adapters(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "bottleneck": 8}))
    with pytest.raises(CheckpointError, match=r"down\.bias has shape \(4,\), the model's \(8,\)"):
        load_adapters(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "target_modules": ["model.layers.0.mlp"]}))
    with pytest.raises(
        CheckpointError,
        match=r"'model\.layers\.0\.mlp', which in the Llama is a SwiGLU, not a linear",
    ):
        load_adapters(_llama(), adapter)
    with pytest.raises(CheckpointError, match="not a peft adapter directory"):
        load_adapters(_llama(), tmp_path / "nothing")
