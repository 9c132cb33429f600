"""Parity with Hugging Face ``transformers``: GPT-2 and Llama built offline from small configs.

For each config: ours loaded through ``from_hf`` gives the same logits (with and without padding),
``to_hf(ours)`` gives them back, one training step's loss and every gradient agree, and the
checkpoint written by ``export_hf`` loads in ``AutoModelForCausalLM.from_pretrained``.
"""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import (
    config_from_hf_dict,
    export_hf,
    from_hf,
    gpt2_key_map,
    hf_config_dict,
    hf_state_dict,
    import_hf,
    load_hf_state_dict,
    to_hf,
)
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig

transformers = pytest.importorskip("transformers")

TOL = dict(rtol=1e-5, atol=1e-5)

GPT2_CONFIGS: dict[str, dict[str, Any]] = {
    "base": dict(vocab_size=1000, n_positions=32, n_embd=48, n_layer=2, n_head=4),
    "d_head24_vocab777": dict(vocab_size=777, n_positions=24, n_embd=72, n_layer=2, n_head=3),
    "n_inner": dict(vocab_size=300, n_positions=16, n_embd=32, n_layer=1, n_head=2, n_inner=80),
}
LLAMA_CONFIGS: dict[str, dict[str, Any]] = {
    "mha_untied": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4),
    "gqa_untied": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2),
    "mqa_tied": dict(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True
    ),
    "d_head24_vocab777": dict(
        vocab_size=777, hidden_size=72, num_attention_heads=3, num_key_value_heads=1
    ),
    "head_dim_not_d_over_h": dict(
        hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=16
    ),
    "llama3_scaling": dict(
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_theta=500000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
    ),
    "linear_scaling": dict(
        hidden_size=32,
        num_attention_heads=2,
        rope_theta=1000.0,
        rope_scaling=dict(rope_type="linear", factor=4.0),
    ),
}


def _hf_gpt2(name: str) -> Any:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        **GPT2_CONFIGS[name],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.1,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _hf_llama(name: str) -> Any:
    torch.manual_seed(0)
    kwargs = dict(
        vocab_size=1000,
        intermediate_size=88,
        num_hidden_layers=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        initializer_range=0.1,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    config = transformers.LlamaConfig(**{**kwargs, **LLAMA_CONFIGS[name]})
    return transformers.LlamaForCausalLM(config).eval()


CASES = [("gpt2", n) for n in GPT2_CONFIGS] + [("llama", n) for n in LLAMA_CONFIGS]


def _hf_model(family: str, name: str) -> Any:
    return _hf_gpt2(name) if family == "gpt2" else _hf_llama(name)


def _batch(vocab_size: int, T: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    idx = torch.randint(0, vocab_size, (2, T), generator=generator)
    attention_mask = torch.ones(2, T, dtype=torch.long)
    attention_mask[1, :5] = 0  # left padding in the second row
    return idx, attention_mask


@pytest.mark.parity
@pytest.mark.parametrize(("family", "name"), CASES)
def test_from_hf_and_to_hf_give_the_same_logits(family: str, name: str) -> None:
    hf = _hf_model(family, name)
    ours = from_hf(hf)
    assert isinstance(ours, GPT if family == "gpt2" else Llama)
    idx, attention_mask = _batch(hf.config.vocab_size)
    with torch.no_grad():
        expected = hf(idx).logits
        torch.testing.assert_close(ours(idx), expected, **TOL)
        # With padding: compare the positions that are tokens (padding queries attend nothing).
        expected_padded = hf(idx, attention_mask=attention_mask).logits
        got_padded = ours(idx, attention_mask=attention_mask)
        valid = attention_mask.bool()
        torch.testing.assert_close(got_padded[valid], expected_padded[valid], **TOL)
        # And back again.
        torch.testing.assert_close(to_hf(ours)(idx).logits, expected, **TOL)


def _hf_name_and_transpose(family: str, key_map: dict[str, str], key: str) -> tuple[str, bool]:
    if family == "llama":
        return key, False
    hf_key = key_map[key]
    return hf_key, hf_key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))


@pytest.mark.parity
@pytest.mark.parametrize(
    ("family", "name"), [("gpt2", "base"), ("llama", "gqa_untied"), ("llama", "mqa_tied")]
)
def test_one_training_step_has_equal_loss_and_gradients(family: str, name: str) -> None:
    hf = _hf_model(family, name)
    ours = from_hf(hf)
    idx, attention_mask = _batch(hf.config.vocab_size)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        # Predictions made *at* padding positions are ignored (padding queries attend nothing).
        targets = idx[:, 1:].masked_fill(attention_mask[:, :-1] == 0, -100)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten())

    loss_hf = loss_of(hf(idx, attention_mask=attention_mask).logits)
    loss_ours = loss_of(ours(idx, attention_mask=attention_mask))
    torch.testing.assert_close(loss_ours, loss_hf, **TOL)
    loss_hf.backward()
    loss_ours.backward()
    hf_params = dict(hf.named_parameters())
    key_map = gpt2_key_map(ours.config.n_layers) if family == "gpt2" else {}
    compared = 0
    for key, p in ours.named_parameters():
        hf_key, transpose = _hf_name_and_transpose(family, key_map, key)
        assert p.grad is not None, key
        hf_grad = hf_params[hf_key].grad
        assert hf_grad is not None, hf_key
        torch.testing.assert_close(p.grad, hf_grad.t() if transpose else hf_grad, **TOL)
        compared += 1
    assert compared == len(hf_params)


@pytest.mark.parity
@pytest.mark.parametrize(("family", "name"), [("gpt2", "base"), ("llama", "llama3_scaling")])
def test_export_hf_loads_in_from_pretrained_and_import_hf(
    family: str, name: str, tmp_path: Path
) -> None:
    hf = _hf_model(family, name)
    ours = from_hf(hf)
    export_hf(ours, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager"
    ).eval()
    back = import_hf(tmp_path).eval()
    idx, _ = _batch(hf.config.vocab_size)
    with torch.no_grad():
        expected = hf(idx).logits
        torch.testing.assert_close(loaded(idx).logits, expected, **TOL)
        torch.testing.assert_close(back(idx), expected, **TOL)


@pytest.mark.parity
def test_import_hf_reads_save_pretrained_output(tmp_path: Path) -> None:
    hf = _hf_llama("gqa_untied")
    hf.save_pretrained(tmp_path)
    ours = import_hf(tmp_path)
    idx, _ = _batch(hf.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, **TOL)


def test_gpt2_checkpoint_without_transformer_prefix_loads() -> None:
    source = GPT(GPTConfig.from_name("tiny"))
    state = {k.removeprefix("transformer."): v for k, v in hf_state_dict(source).items()}
    state.pop("lm_head.weight")
    target = load_hf_state_dict(GPT(GPTConfig.from_name("tiny")), state)
    idx = torch.randint(0, 512, (1, 8))
    torch.testing.assert_close(target(idx), source(idx))


def test_wrong_shape_raises_checkpoint_error_naming_the_key() -> None:
    state = hf_state_dict(Llama(LlamaConfig.from_name("tiny")))
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 64)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\(3, 64\)"):
        load_hf_state_dict(Llama(LlamaConfig.from_name("tiny")), state)


def test_missing_and_unexpected_keys_raise_checkpoint_error() -> None:
    state = hf_state_dict(GPT(GPTConfig.from_name("tiny")))
    missing = {k: v for k, v in state.items() if k != "transformer.h.1.ln_2.bias"}
    with pytest.raises(CheckpointError, match=r"transformer\.h\.1\.ln_2\.bias"):
        load_hf_state_dict(GPT(GPTConfig.from_name("tiny")), missing)
    with pytest.raises(CheckpointError, match=r"unexpected key 'extra\.weight'"):
        load_hf_state_dict(
            GPT(GPTConfig.from_name("tiny")), {**state, "extra.weight": state["lm_head.weight"]}
        )


def test_import_hf_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        import_hf(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        import_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(CheckpointError, match="model_type 'mamba'"):
        import_hf(tmp_path)
    export_hf(GPT(GPTConfig.from_name("tiny")), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="cannot read"):
        import_hf(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        import_hf(tmp_path)


def test_configs_without_an_hf_twin_refuse_to_export(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="norm_position"):
        export_hf(GPT(GPTConfig.from_name("tiny", norm_position="post")), tmp_path)
    with pytest.raises(ConfigError, match="bias"):
        to_hf(GPT(GPTConfig.from_name("tiny", bias=False)))
    with pytest.raises(ConfigError, match="tie_embeddings"):
        to_hf(GPT(GPTConfig.from_name("tiny", tie_embeddings=False)))


def test_from_hf_rejects_unsupported_options() -> None:
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        from_hf(transformers.GPT2LMHeadModel(config))
    llama = transformers.LlamaConfig(
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=20,
        num_hidden_layers=1,
        vocab_size=50,
        attention_bias=True,
    )
    with pytest.raises(CheckpointError, match="attention_bias"):
        from_hf(transformers.LlamaForCausalLM(llama))


def test_a_model_without_a_hugging_face_twin_is_refused(tmp_path: Path) -> None:
    from groundwork.models import LSTMLM, LSTMConfig

    lstm = LSTMLM(LSTMConfig.from_name("tiny", vocab_size=32))
    with pytest.raises(ConfigError, match="LSTM models have no Hugging Face twin"):
        export_hf(lstm, tmp_path / "out")  # type: ignore[arg-type]
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------
# Adapters from the registry, and the special token ids of an export


def test_every_adapter_maps_every_key_of_its_model() -> None:
    from groundwork.models import registry

    every = {"gpt", "llama", "mixtral", "olmoe", "bert", "t5", "vit", "clip"}
    assert set(registry.hf_adapters()) == every
    for name, adapter in registry.hf_adapters().items():
        arch = registry.get(name)
        fields = arch.field_names()
        for overrides in ({}, {"tie_embeddings": False}, {"n_layers": 3}, {"text_n_layers": 3}):
            if name == "gpt" and overrides.get("tie_embeddings") is False:
                continue  # no GPT-2 twin
            if not set(overrides) <= fields:
                continue
            config = arch.config("tiny", **overrides)
            with torch.device("meta"):
                model = arch.model_cls(config)
            key_map = adapter.key_map(config)
            assert set(model.state_dict()) <= set(key_map), name
            assert len(set(key_map.values())) == len(key_map), f"{name}: two keys map to one"
            # The config survives the trip through config.json's fields.
            assert config_from_hf_dict(hf_config_dict(config)) == config


def test_config_from_hf_dict_picks_the_adapter_by_model_type() -> None:
    d = hf_config_dict(LlamaConfig.from_name("tiny", rope_scaling={"kind": "linear", "factor": 2}))
    assert d["model_type"] == "llama" and d["architectures"] == ["LlamaForCausalLM"]
    assert isinstance(config_from_hf_dict(d), LlamaConfig)
    d = hf_config_dict(GPTConfig.from_name("tiny"))
    assert d["model_type"] == "gpt2" and d["architectures"] == ["GPT2LMHeadModel"]
    assert isinstance(config_from_hf_dict(d), GPTConfig)
    with pytest.raises(CheckpointError, match=r"model_type 'mamba' is not supported \(gpt2, llama"):
        config_from_hf_dict({**d, "model_type": "mamba"})


def _load_with_transformers(
    path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> tuple[Any, Any, list[str]]:
    """``AutoConfig`` and ``AutoModelForCausalLM`` of ``path``, and the warnings about token ids
    ``transformers`` logged while loading them (its ``warning_once`` cache cleared first)."""
    logging.Logger.warning_once.cache_clear()  # type: ignore[attr-defined]
    capfd.readouterr()
    caplog.clear()
    verbosity = transformers.logging.get_verbosity()  # other tests may have silenced it
    transformers.logging.set_verbosity_warning()
    try:
        with caplog.at_level(logging.WARNING):
            config = transformers.AutoConfig.from_pretrained(path)
            model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    finally:
        transformers.logging.set_verbosity(verbosity)
    text = capfd.readouterr().err + caplog.text
    return config, model, [line for line in text.splitlines() if "token_id" in line]


def test_transformers_warns_about_ids_outside_the_vocabulary(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """What the export avoids (and that the check below can see it)."""
    export_hf(GPT(GPTConfig.from_name("tiny", vocab_size=64)), tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**written, "eos_token_id": 50256}))
    _, _, warnings = _load_with_transformers(tmp_path, capfd, caplog)
    assert warnings and "50256" in warnings[0]


@pytest.mark.parametrize(("eos", "expected"), [(3, 3), (None, None), (64, None)])
def test_export_hf_writes_token_ids_inside_the_vocabulary(
    eos: int | None,
    expected: int | None,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = GPT(GPTConfig.from_name("tiny", vocab_size=64)).eval()
    export_hf(model, tmp_path, eos_token_id=eos)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["bos_token_id"] == expected
    assert written["eos_token_id"] == expected
    config, loaded, warnings = _load_with_transformers(tmp_path, capfd, caplog)
    assert (config.bos_token_id, config.eos_token_id) == (expected, expected)
    assert warnings == []
    idx = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx).logits, model(idx), **TOL)


def test_export_hf_without_ids_loads_without_token_warnings(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """GPT-2's default ids (50256) name no token of a small vocabulary: they are not written."""
    export_hf(GPT(GPTConfig.from_name("tiny", vocab_size=2048)), tmp_path / "gpt")
    export_hf(Llama(LlamaConfig.from_name("tiny", vocab_size=64)), tmp_path / "llama")
    for name in ("gpt", "llama"):
        config, _, warnings = _load_with_transformers(tmp_path / name, capfd, caplog)
        assert config.eos_token_id is None and config.bos_token_id is None
        assert warnings == []


def test_export_hf_keeps_a_separate_bos_id(tmp_path: Path) -> None:
    model = Llama(LlamaConfig.from_name("tiny", vocab_size=64))
    export_hf(model, tmp_path, eos_token_id=2, bos_token_id=1)
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["bos_token_id"], written["eos_token_id"]) == (1, 2)
