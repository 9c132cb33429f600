"""Prefix tuning (Li & Liang 2021): the same logits as peft's PREFIX_TUNING (with and without the
reparameterisation MLP, GQA included) on the transformers twins of our GPT and Llama, adapters
that load both ways, gradients through the prefix cache, a frozen base, a sequence head on top,
and bad input refused by name."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import helpers
from groundwork.adapt.features import last_hidden_state, layer_states
from groundwork.adapt.heads import SequenceClassifier, head_for
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import to_hf
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.peft.lora import trainable_parameters
from groundwork.peft.prefix_tuning import (
    PrefixTuned,
    PrefixTuningConfig,
    apply_prefix_tuning,
    load_prefix_tuning,
    save_prefix_tuning,
)

P = 3
TOL = dict(rtol=1e-5, atol=1e-5)
CONFIGS = {
    "direct": PrefixTuningConfig(P),
    "projection": PrefixTuningConfig(P, prefix_projection=True, encoder_hidden_size=20),
}


def _llama(**overrides: Any) -> Llama:
    return helpers.tiny_llama(**overrides)


def _gpt(**overrides: Any) -> GPT:
    return helpers.tiny_gpt(**overrides)


FAMILIES = {"llama": _llama, "gpt": _gpt}


def _ids() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    ids = torch.randint(0, 97, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])  # the second row right-padded
    return ids, mask


def _peft_twin(ours: PrefixTuned, make: Callable[[], nn.Module]) -> Any:
    """peft's PREFIX_TUNING on the transformers twin, with our weights copied in."""
    from peft import PrefixTuningConfig as PeftPrefixTuningConfig
    from peft import get_peft_model

    c = ours.adapter_config
    config = PeftPrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=c.num_virtual_tokens,
        prefix_projection=c.prefix_projection,
        encoder_hidden_size=c.encoder_hidden_size,
    )
    theirs = get_peft_model(to_hf(make()).eval(), config).eval()
    state = {"embedding.weight": ours.prefix_embeddings.weight}
    if ours.transform is not None:
        state |= {f"transform.{k}": v for k, v in ours.transform.state_dict().items()}
    theirs.prompt_encoder["default"].load_state_dict(state)
    return theirs


@pytest.mark.parity
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind", ["direct", "projection"])
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_same_logits_as_peft(family: str, kind: str, padded: bool) -> None:
    make = FAMILIES[family]
    ours = apply_prefix_tuning(make(), CONFIGS[kind])  # random weights, as peft's init
    theirs = _peft_twin(ours, make)
    ids, mask = _ids()
    m = mask if padded else None
    with torch.no_grad():
        # peft's prefix lives in the cache: its logits are the real tokens' alone
        expected = theirs(input_ids=ids, attention_mask=m).logits
        torch.testing.assert_close(ours(ids, m), expected, **TOL)
    assert ours.hidden_states(ids, m).shape == (2, 7, 64)


def test_the_prefix_has_peft_gqa_layout() -> None:
    ours = apply_prefix_tuning(_llama(), PrefixTuningConfig(P))
    assert (ours.n_kv_heads, ours.d_head, ours.kv_dim) == (2, 16, 32)
    assert ours.prefix().shape == (P, 2 * 2 * 32)  # (P, n_layers * 2 * n_kv_heads * d_head)
    cache = ours.past_key_values(batch=2)
    row = ours.prefix()[1]  # virtual token 1: [K^0, V^0, K^1, V^1], heads in order
    torch.testing.assert_close(cache.keys[1][0, :, 1].reshape(-1), row[64:96])
    torch.testing.assert_close(cache.values[0][1, :, 1].reshape(-1), row[32:64])
    with pytest.raises(ValueError, match="start right after its 3 prefix positions, not at 0"):
        cache.update(0, cache.keys[0], cache.values[0], 0)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["direct", "projection"])
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_ours_load_in_peft(family: str, kind: str, tmp_path: Path) -> None:
    from peft import PeftModel

    make = FAMILIES[family]
    ours = apply_prefix_tuning(make(), CONFIGS[kind])
    save_prefix_tuning(ours, tmp_path / "ours", CONFIGS[kind])
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    kv_dim = 32 if family == "llama" else 64  # peft's token_dim: n_kv_heads * d_head
    assert (saved["token_dim"], saved["prefix_projection"]) == (kv_dim, kind == "projection")
    theirs = PeftModel.from_pretrained(to_hf(make()).eval(), str(tmp_path / "ours")).eval()
    ids, mask = _ids()
    with torch.no_grad():
        got = theirs(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got, ours(ids, mask), **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["direct", "projection"])
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_peft_adapters_load_in_ours(family: str, kind: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    make = FAMILIES[family]
    theirs = _peft_twin(apply_prefix_tuning(make(), CONFIGS[kind]), make)
    theirs.save_pretrained(str(tmp_path / "peft"))
    # peft saves the prefixes (with projection: the MLP's output), never the MLP
    saved = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    width = 2 * 2 * (32 if family == "llama" else 64)
    assert {k: tuple(v.shape) for k, v in saved.items()} == {"prompt_embeddings": (P, width)}
    ours = load_prefix_tuning(make(), tmp_path / "peft")
    assert ours.transform is None and ours.adapter_config == PrefixTuningConfig(P)
    ids, mask = _ids()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(ours(ids, mask), expected, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["direct", "projection"])
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_trainable_parameters_as_peft(family: str, kind: str) -> None:
    ours = apply_prefix_tuning(FAMILIES[family](), CONFIGS[kind])
    theirs = _peft_twin(ours, FAMILIES[family])
    assert trainable_parameters(ours) == theirs.get_nb_trainable_parameters()


@pytest.mark.parametrize("kind", ["direct", "projection"])
def test_training_moves_the_prefix_only(kind: str) -> None:
    base = _llama()
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    ours = apply_prefix_tuning(base, CONFIGS[kind]).train()
    start = ours.prefix().detach().clone()
    ids, mask = _ids()
    with torch.no_grad():
        assert not torch.allclose(ours(ids), base(ids))  # the prefix changes the output
    optimizer = torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], lr=0.02)
    losses = []
    for _ in range(5):
        logits = ours(ids, mask)  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()  # through the prefix cache of every layer
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(ours.prefix().detach(), start)
    for k, v in base.state_dict().items():
        assert torch.equal(v, frozen[k]), k


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_a_sequence_head_reads_the_real_tokens(family: str) -> None:
    ours = apply_prefix_tuning(FAMILIES[family](), CONFIGS["projection"])
    head = head_for(ours, "sequence", 2)
    assert isinstance(head, SequenceClassifier) and head.pooling == "last"
    ids, mask = _ids()
    with torch.no_grad():
        hidden = ours.hidden_states(ids, mask)  # (B, T, d)
        torch.testing.assert_close(last_hidden_state(ours, ids, mask), hidden)
        expected = head.classifier(hidden[torch.arange(2), torch.tensor([6, 3])])
        torch.testing.assert_close(head(ids, mask), expected)
        states = layer_states(ours, ids, mask)
    assert len(states) == 3 and all(s.shape == (2, 7, 64) for s in states)
    torch.testing.assert_close(states[-1], hidden)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    for bad in (0, -1):
        with pytest.raises(
            ConfigError, match=f"num_virtual_tokens must be an integer >= 1, got {bad}"
        ):
            PrefixTuningConfig(bad)
    with pytest.raises(ConfigError, match="set prefix_projection=True"):
        PrefixTuningConfig(P, encoder_hidden_size=8)
    with pytest.raises(ConfigError, match="encoder_hidden_size must be an integer >= 1, got 0"):
        PrefixTuningConfig(P, prefix_projection=True, encoder_hidden_size=0)
    ours = apply_prefix_tuning(_llama(), CONFIGS["projection"])
    with pytest.raises(ConfigError, match="config has prefix_projection=False, the model has"):
        save_prefix_tuning(ours, tmp_path / "x", PrefixTuningConfig(P))
    with pytest.raises(ConfigError, match="writes a PrefixTuned model"):
        save_prefix_tuning(_llama(), tmp_path / "x", PrefixTuningConfig(P))
    ids, _ = _ids()
    with pytest.raises(ConfigError, match=r"idx must be \(batch, seq_len\), got shape \(7,\)"):
        ours(ids[0])

    adapter = save_prefix_tuning(ours, tmp_path / "a", CONFIGS["projection"])
    with pytest.raises(CheckpointError, match="the adapter has num_layers=2, the model 1"):
        load_prefix_tuning(_llama(n_layers=1), adapter)
    with pytest.raises(CheckpointError, match="the adapter has token_dim=32, the model 64"):
        load_prefix_tuning(_gpt(), adapter)  # GPT: no GQA, 4 key/value heads
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "num_layers": None, "token_dim": None}))
    with pytest.raises(
        CheckpointError,
        match=r"prompt_embeddings has shape \(3, 128\), the model needs \(3, 256\)",
    ):
        load_prefix_tuning(_gpt(), adapter)
    config_file.write_text(json.dumps({**config, "peft_type": "PROMPT_TUNING"}))
    with pytest.raises(ConfigError, match="'PROMPT_TUNING' adapter; load_prefix_tuning reads"):
        load_prefix_tuning(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "modules_to_save": ["score"]}))
    with pytest.raises(ConfigError, match=r"modules_to_save=\['score'\]"):
        load_prefix_tuning(_llama(), adapter)
