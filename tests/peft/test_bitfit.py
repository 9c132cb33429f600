"""BitFit: exactly the biases train (counts by formula), zero biases added to Llama leave it equal
to the base, training moves only the biases, saved biases load back; errors. (peft has no
BitFit.)"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import helpers
from groundwork.errors import CheckpointError, ConfigError
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.peft.bitfit import (
    BitFitConfig,
    apply_bitfit,
    bitfit_parameter_names,
    bitfit_state_dict,
    load_bitfit,
    save_bitfit,
)

V = 97


def _llama(n_layers: int = 2, d_model: int = 64) -> Llama:
    return helpers.tiny_llama(vocab_size=V, n_layers=n_layers, d_model=d_model)


def _gpt(d_model: int = 64) -> GPT:
    return helpers.tiny_gpt(vocab_size=V, d_model=d_model)


def _trainable(model: nn.Module) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def _train(model: nn.Module, ids: torch.Tensor, steps: int = 8) -> list[float]:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_gpt_trains_exactly_its_biases() -> None:
    model = _gpt()
    names = set(model.state_dict())
    apply_bitfit(model, BitFitConfig())
    assert set(model.state_dict()) == names  # nothing added: GPT-2 has its biases
    trainable = _trainable(model)
    assert set(trainable) == {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    d, d_ff, n_layers = 64, 256, 2
    # a block: q, k, v + output projection + MLP up + down + two LayerNorms; then ln_f
    per_block = 3 * d + d + d_ff + d + 2 * d
    assert sum(trainable.values()) == n_layers * per_block + d == 1472


def test_llama_gets_zero_biases_and_starts_as_the_base() -> None:
    model = _llama()
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        before = model(ids)
    assert not any(n.endswith(".bias") for n, _ in model.named_parameters())
    apply_bitfit(model, BitFitConfig())
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before, rtol=0, atol=0)
    trainable = _trainable(model)
    assert all(n.endswith("_proj.bias") for n in trainable)  # lm_head keeps no bias
    # q (4 heads of 16) + k, v (2 heads) + o + gate, up (d_ff) + down; two blocks
    assert sum(trainable.values()) == 2 * (64 + 32 + 32 + 64 + 172 + 172 + 64) == 1200
    assert set(trainable) == set(bitfit_parameter_names(model, BitFitConfig()))


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_training_moves_only_the_biases_and_the_loss_falls(family: str) -> None:
    model = _llama() if family == "llama" else _gpt()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_bitfit(model, BitFitConfig())
    torch.manual_seed(3)
    losses = _train(model, torch.randint(0, V, (4, 16)))
    assert losses[-1] < losses[0] - 0.1
    for key, value in model.state_dict().items():
        if key.endswith(".bias"):
            assert key not in base or not torch.equal(value, base[key])  # every bias learnt
        else:
            torch.testing.assert_close(value, base[key], rtol=0, atol=0)


def test_chosen_targets_without_the_norms() -> None:
    """The paper's smallest variant trains only the query and the MLP's first biases."""
    config = BitFitConfig(target_modules=r".*\.(q_proj|up_proj)", norm_biases=False)
    model = apply_bitfit(_llama(), config)
    assert set(_trainable(model)) == {
        f"model.layers.{i}.{m}.bias" for i in (0, 1) for m in ("self_attn.q_proj", "mlp.up_proj")
    }
    gpt = apply_bitfit(_gpt(), BitFitConfig(target_modules=("qkv_proj",), norm_biases=False))
    assert sum(_trainable(gpt).values()) == 2 * 3 * 64
    assert set(bitfit_state_dict(gpt, BitFitConfig(("qkv_proj",), norm_biases=False))) == set(
        _trainable(gpt)
    )


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_saved_biases_load_onto_a_fresh_base(family: str, tmp_path: Path) -> None:
    fresh = _llama if family == "llama" else _gpt
    config = BitFitConfig(norm_biases=family == "gpt")
    model = apply_bitfit(fresh(), config)
    torch.manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.1)
    save_bitfit(model, tmp_path / "bitfit", config)
    assert json.loads((tmp_path / "bitfit" / "adapter_config.json").read_text())["peft_type"] == (
        "BITFIT"
    )
    loaded = load_bitfit(fresh(), tmp_path / "bitfit")
    assert _trainable(loaded) == _trainable(model)
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"match no linear layer.*named down_proj, gate_proj"):
        apply_bitfit(_llama(), BitFitConfig(target_modules=("c_attn",)))
    with pytest.raises(ConfigError, match="nothing to train"):
        apply_bitfit(_llama(), BitFitConfig(add_biases=False))
    with pytest.raises(ConfigError, match="apply_bitfit first"):
        bitfit_state_dict(_llama(), BitFitConfig())
    config = BitFitConfig()
    adapter = save_bitfit(apply_bitfit(_llama(), config), tmp_path / "a", config)
    with pytest.raises(CheckpointError, match=r"down_proj\.bias has shape \(64,\), the model's"):
        load_bitfit(_llama(d_model=128), adapter)  # wider layers
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\..* fits no bias"):
        load_bitfit(_llama(n_layers=1), adapter)
    q_only = BitFitConfig(("q_proj",))
    q_adapter = save_bitfit(apply_bitfit(_llama(), q_only), tmp_path / "q", q_only)
    with pytest.raises(ConfigError, match=r"match no linear layer.*qkv_proj"):
        load_bitfit(_gpt(), q_adapter)
    config_file = adapter / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "peft_type": "IA3"}))
    with pytest.raises(ConfigError, match="'IA3' adapter; load_bitfit reads BITFIT adapters"):
        load_bitfit(_llama(), adapter)
    with pytest.raises(CheckpointError, match="not a peft adapter directory"):
        load_bitfit(_llama(), tmp_path / "nothing")
