"""T5: config validation and presets, relative position buckets, the KV cache, bad inputs, the
registry entry, and parity with ``transformers``' ``T5ForConditionalGeneration`` and
``T5EncoderModel`` (logits, gradients, encoder outputs, both directions, v1.0 and v1.1)."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import CheckpointError, ConfigError, TokenIdError, UnknownNameError
from groundwork.models import registry
from groundwork.models.info import info
from groundwork.models.t5 import (
    T5,
    T5Config,
    T5Encoder,
    parameter_counts,
    relative_position_bucket,
)
from groundwork.models.t5_hf import T5_ADAPTER, from_hf_config, t5_key_map, to_hf_config

TOL = dict(rtol=1e-5, atol=1e-5)

# Odd on purpose: inner dim 3 * 16 = 48 != d_model 60, d_ff 97, more encoder than decoder blocks.
ODD = dict(
    vocab_size=1001,
    d_model=60,
    d_kv=16,
    d_ff=97,
    n_layers=3,
    n_decoder_layers=2,
    n_heads=3,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=40,
    dropout=0.0,
)
VARIANTS = {
    "v1_0_relu_tied": dict(feed_forward="relu", tie_embeddings=True),
    "v1_1_gated_gelu_untied": dict(feed_forward="gated-gelu", tie_embeddings=False),
}


def _config(variant: str) -> T5Config:
    return T5Config(**ODD, **VARIANTS[variant])


# ----------------------------------------------------------------------------------------------
# Config, presets, parameter counts


def test_presets() -> None:
    small = T5Config.from_name("t5-small")
    assert (small.d_model, small.d_kv, small.d_ff, small.n_layers, small.n_heads) == (
        512,
        64,
        2048,
        6,
        8,
    )
    assert small.n_decoder_layers == 6 and small.feed_forward == "relu" and small.tie_embeddings
    v11 = T5Config.from_name("t5-v1_1-small")
    assert (v11.inner_dim, v11.d_model, v11.feed_forward, v11.tie_embeddings) == (
        384,
        512,
        "gated-gelu",
        False,
    )
    with pytest.raises(UnknownNameError, match="t5-small"):
        T5Config.from_name("t5-smal")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(d_kv=0), "d_kv"),
        (dict(n_heads=-1), "n_heads"),
        (dict(n_decoder_layers=0), "n_decoder_layers"),
        (dict(feed_forward="swiglu"), "feed_forward"),
        (dict(relative_attention_num_buckets=2), "relative_attention_num_buckets"),
        (dict(relative_attention_max_distance=8), "relative_attention_max_distance"),
        (dict(dropout=1.0), "dropout"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(eos_id=512), "eos_id"),
        (dict(decoder_start_id=-1), "decoder_start_id"),
    ],
)
def test_bad_config_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        T5Config.from_name("tiny", **overrides)


@pytest.mark.parametrize("name", ["t5-small", "t5-base", "t5-v1_1-small", "tiny"])
def test_parameter_counts_equal_the_built_model(name: str) -> None:
    config = T5Config.from_name(name)
    with torch.device("meta"):
        model = T5(config)
    counts = parameter_counts(config)
    assert counts["total"] == model.num_parameters()
    parts = ("embeddings", "attention", "position_bias", "mlp", "norms", "head")
    assert sum(counts[k] for k in parts) == counts["total"]
    assert info(config)["parameters"]["total"] == counts["total"]


def test_inner_dim_may_differ_from_d_model() -> None:
    model = T5(_config("v1_1_gated_gelu_untied"))
    attn = model.decoder.blocks[0].cross_attn
    assert attn is not None
    assert attn.q_proj.weight.shape == (48, 60) and attn.o_proj.weight.shape == (60, 48)


def test_tied_and_untied_heads() -> None:
    tied, untied = T5(_config("v1_0_relu_tied")), T5(_config("v1_1_gated_gelu_untied"))
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight


# ----------------------------------------------------------------------------------------------
# Relative positions


def test_buckets_are_exact_near_and_log_spaced_far() -> None:
    offsets = torch.arange(-60, 61)
    enc = relative_position_bucket(offsets, bidirectional=True, num_buckets=16, max_distance=40)
    dec = relative_position_bucket(offsets, bidirectional=False, num_buckets=16, max_distance=40)
    assert enc.tolist()[60 - 3 : 60 + 4] == [3, 2, 1, 0, 9, 10, 11]  # exact for |d| < 4
    assert set(enc[offsets <= -40].tolist()) == {7} and set(enc[offsets >= 40].tolist()) == {15}
    assert set(dec[offsets >= 0].tolist()) == {0}  # the future is one bucket (masked anyway)
    assert dec[offsets < 0].diff().le(0).all()  # farther back: same or larger bucket
    assert set(dec[offsets <= -40].tolist()) == {15}


@pytest.mark.parity
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (16, 40), (5, 9)])
def test_buckets_equal_transformers(
    bidirectional: bool, num_buckets: int, max_distance: int
) -> None:
    pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5Attention

    offsets = torch.arange(-300, 301)[:, None] + torch.zeros(1, 3, dtype=torch.long)
    expected = T5Attention._relative_position_bucket(
        offsets, bidirectional, num_buckets, max_distance
    )
    got = relative_position_bucket(
        offsets, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    assert torch.equal(got, expected)


# ----------------------------------------------------------------------------------------------
# Forward passes: cache, masks, bad inputs


def _inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder ids ``(2, 11)`` with 4 padding positions in row 1, decoder ids ``(2, 7)`` with 2
    padding positions at the end of row 0."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab_size, (2, 11), generator=g)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    dec = torch.randint(0, vocab_size, (2, 7), generator=g)
    dec_mask = torch.ones(2, 7, dtype=torch.long)
    dec_mask[0, 5:] = 0
    return ids, mask, dec, dec_mask


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_decoding_equals_the_full_forward(variant: str) -> None:
    torch.manual_seed(0)
    model = T5(_config(variant)).eval()
    ids, mask, dec, _ = _inputs(1001)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, decoder_input_ids=dec)  # (2, 7, V)
        hidden = model.encode(ids, mask)
        cache = model.new_kv_cache(2, 7)
        steps = [
            model(
                decoder_input_ids=dec[:, :3],
                attention_mask=mask,
                encoder_hidden=hidden,
                kv_cache=cache,
            )
        ]
        for t in range(3, 7):  # later steps need neither the encoder output nor input_ids
            steps.append(
                model(decoder_input_ids=dec[:, t : t + 1], attention_mask=mask, kv_cache=cache)
            )
    assert cache.seq_len == 7 and len(cache.cross_attn) == 2
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_encoder_padding_changes_nothing_for_the_tokens() -> None:
    torch.manual_seed(0)
    model = T5(_config("v1_0_relu_tied")).eval()
    ids, _, dec, _ = _inputs(1001)
    padded = torch.cat([ids[1:, :7], torch.randint(0, 1001, (1, 5))], dim=1)  # junk after 7
    with torch.no_grad():
        short = model(ids[1:, :7], decoder_input_ids=dec[1:])
        long = model(
            padded, attention_mask=(torch.arange(12) < 7).long()[None], decoder_input_ids=dec[1:]
        )
        encoder = T5Encoder(model.config).eval()
        encoder.load_state_dict(model.state_dict(), strict=False)
        torch.testing.assert_close(encoder(ids[1:, :7]), model.encode(ids[1:, :7]))
    torch.testing.assert_close(long, short, **TOL)


def test_bad_inputs_raise_clear_errors() -> None:
    model = T5(T5Config.from_name("tiny")).eval()
    dec = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ConfigError, match="a decoder input without an encoder output"):
        model(decoder_input_ids=dec)
    with pytest.raises(TokenIdError, match=r"input_ids holds token id 512.*0\.\.511"):
        model(torch.tensor([[3, 512]]), decoder_input_ids=dec)
    with pytest.raises(TokenIdError, match="decoder_input_ids holds token id -1"):
        model(torch.tensor([[3, 4]]), decoder_input_ids=torch.tensor([[0, -1]]))
    with pytest.raises(TokenIdError, match="input_ids"):
        T5Encoder(T5Config.from_name("tiny"))(torch.tensor([[1000]]))


def test_registry_entry() -> None:
    arch = registry.get("t5")
    assert arch.name in registry.names(causal_lm=False) and arch.hf is T5_ADAPTER
    config = T5Config.from_name("tiny", tie_embeddings=False, n_decoder_layers=1)
    assert registry.config_from_dict(registry.config_to_dict(config)) == config
    assert isinstance(registry.build_model(config), T5)
    assert registry.find_preset("t5-small").d_model == 512


# ----------------------------------------------------------------------------------------------
# The Hugging Face adapter (no transformers needed)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_key_map_covers_every_key_once(variant: str) -> None:
    config = _config(variant)
    key_map = t5_key_map(config)
    with torch.device("meta"):
        t5, encoder = T5(config), T5Encoder(config)
    assert set(t5.state_dict()) == set(key_map)
    assert set(encoder.state_dict()) <= set(key_map)
    assert len(set(key_map.values())) == len(key_map)
    assert from_hf_config(to_hf_config(config)) == config


def test_config_json_of_real_checkpoints() -> None:
    """What google-t5/t5-small and google/t5-v1_1-small's config.json say (abridged)."""
    common = dict(d_kv=64, num_layers=8, num_heads=6, vocab_size=32128, model_type="t5")
    v11 = dict(
        common,
        d_model=512,
        d_ff=1024,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.1,
    )
    assert from_hf_config(v11) == T5Config.from_name("t5-v1_1-small")
    v10 = dict(common, d_model=512, d_ff=2048, num_layers=6, num_heads=8, n_positions=512)
    assert from_hf_config(v10) == T5Config.from_name("t5-small")  # relu and tied by default
    # transformers >= 5 writes tie_word_embeddings true and the rescale apart.
    saved_by_v5 = dict(v11, tie_word_embeddings=True, scale_decoder_outputs=False)
    assert not from_hf_config(saved_by_v5).tie_embeddings
    with pytest.raises(CheckpointError, match="gated-silu"):
        from_hf_config(dict(v11, feed_forward_proj="gated-silu"))


# ----------------------------------------------------------------------------------------------
# Parity with transformers


def _hf_config(variant: str) -> Any:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    c = _config(variant)
    return transformers.T5Config(
        **to_hf_config(c), attn_implementation="eager", initializer_factor=1.0
    )


def _untie(hf: Any, variant: str) -> Any:
    """transformers 5 ties T5's head to the embeddings even for v1.1 (only a checkpoint with
    two different matrices unties it): give a v1.1 model its own, random head."""
    if not VARIANTS[variant]["tie_embeddings"] and hf.lm_head.weight is hf.shared.weight:
        hf.lm_head.weight = nn.Parameter(torch.randn_like(hf.shared.weight))
    return hf


def _hf_t5(variant: str) -> Any:
    import transformers

    hf_config = _hf_config(variant)
    torch.manual_seed(0)
    return _untie(transformers.T5ForConditionalGeneration(hf_config), variant).eval()


def _ours_from_hf(hf: Any, variant: str, cls: type[nn.Module] = T5) -> Any:
    """Ours, loaded from ``hf``'s state dict through the key map alone."""
    config = _config(variant)
    state = hf.state_dict()
    ours = cls(config).eval()
    keys = t5_key_map(config)
    ours.load_state_dict({k: state[keys[k]] for k in ours.state_dict()})
    return ours


def _hf_from_ours(ours: T5, variant: str) -> Any:
    """A ``T5ForConditionalGeneration`` loaded from ours through the key map alone."""
    import transformers

    hf = _untie(transformers.T5ForConditionalGeneration(_hf_config(variant)), variant).eval()
    state = {hf_key: ours.state_dict()[k] for k, hf_key in t5_key_map(ours.config).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.endswith("embed_tokens.weight") for k in missing)
    return hf


def _compare_logits(hf: Any, ours: T5) -> None:
    ids, mask, dec, dec_mask = _inputs(1001)
    with torch.no_grad():
        expected = hf(
            input_ids=ids,
            attention_mask=mask,
            decoder_input_ids=dec,
            decoder_attention_mask=dec_mask,
        ).logits
        got = ours(ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        valid = dec_mask.bool()  # padding queries of the decoder attend nothing: left out
        torch.testing.assert_close(got[valid], expected[valid], **TOL)
        plain = hf(input_ids=ids, decoder_input_ids=dec).logits
        torch.testing.assert_close(ours(ids, decoder_input_ids=dec), plain, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_equal_transformers_both_directions(variant: str) -> None:
    hf = _hf_t5(variant)
    ours = _ours_from_hf(hf, variant)
    _compare_logits(hf, ours)
    torch.manual_seed(1)
    fresh = T5(_config(variant)).eval()  # ours with its own initialisation -> transformers
    _compare_logits(_hf_from_ours(fresh, variant), fresh)


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_loss_and_gradients_equal_transformers(variant: str) -> None:
    hf = _hf_t5(variant)
    ours = _ours_from_hf(hf, variant)
    ids, mask, dec, dec_mask = _inputs(1001)
    labels = torch.cat([dec[:, 1:], torch.ones(2, 1, dtype=torch.long)], dim=1)
    labels = labels.masked_fill(dec_mask == 0, -100)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    kwargs = dict(attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    loss_hf = loss_of(hf(input_ids=ids, **kwargs).logits)
    loss_ours = loss_of(ours(ids, **kwargs))
    torch.testing.assert_close(loss_ours, loss_hf, **TOL)
    loss_hf.backward()
    loss_ours.backward()
    hf_params = dict(hf.named_parameters())
    keys = t5_key_map(ours.config)
    for name, p in ours.named_parameters():
        hf_grad = hf_params[keys[name]].grad
        assert p.grad is not None and hf_grad is not None, name
        torch.testing.assert_close(p.grad, hf_grad, **TOL)
    assert len(list(ours.named_parameters())) == len(hf_params)


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_encoder_equals_t5_encoder_model(variant: str) -> None:
    import transformers

    torch.manual_seed(0)
    hf = transformers.T5EncoderModel(_hf_config(variant)).eval()
    ours = _ours_from_hf(hf, variant, T5Encoder)
    ids, mask, _, _ = _inputs(1001)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask), expected, **TOL)
        # ... and the encoder of the encoder-decoder is the same computation
        hf_full = _hf_t5(variant)
        full = _ours_from_hf(hf_full, variant)
        hf_encoded = hf_full.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(full.encode(ids, mask), hf_encoded, **TOL)


@pytest.mark.parity
def test_parameter_counts_equal_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    for name, expected in (("t5-small", 60_506_624), ("t5-base", 222_903_552)):
        config = T5Config.from_name(name)
        with torch.device("meta"):
            hf = transformers.T5ForConditionalGeneration(
                transformers.T5Config(**to_hf_config(config))
            )
        assert hf.num_parameters() == expected == parameter_counts(config)["total"]


# ----------------------------------------------------------------------------------------------
# Through groundwork.interop.hf (generic over adapters)


@pytest.mark.parity
def test_from_hf_and_to_hf_through_interop() -> None:
    from groundwork.interop.hf import from_hf, to_hf

    for variant in VARIANTS:
        hf = _hf_t5(variant)
        ours = from_hf(hf)
        assert isinstance(ours, T5) and ours.config == _config(variant)
        _compare_logits(hf, ours)
    for variant in VARIANTS:  # v1.1's untied head stays untied on the way out
        ours = from_hf(_hf_t5(variant))
        _compare_logits(to_hf(ours), ours)
    import transformers

    torch.manual_seed(0)
    hf_encoder = transformers.T5EncoderModel(_hf_config("v1_0_relu_tied")).eval()
    encoder = from_hf(hf_encoder)
    assert isinstance(encoder, T5Encoder)
    back = to_hf(encoder)
    assert type(back).__name__ == "T5EncoderModel"
    ids, mask, _, _ = _inputs(1001)
    with torch.no_grad():
        expected = hf_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(encoder(ids, mask), expected, **TOL)
        torch.testing.assert_close(
            back(input_ids=ids, attention_mask=mask).last_hidden_state, expected, **TOL
        )


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_hf_loads_in_from_pretrained_and_import_hf(variant: str, tmp_path: Path) -> None:
    import transformers

    from groundwork.interop.hf import export_hf, import_hf

    ours = _ours_from_hf(_hf_t5(variant), variant)
    export_hf(ours, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["T5ForConditionalGeneration"]
    assert written["feed_forward_proj"] == VARIANTS[variant]["feed_forward"]
    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(
        tmp_path, attn_implementation="eager"
    ).eval()
    back = import_hf(tmp_path).eval()
    assert isinstance(back, T5) and back.config == ours.config
    _compare_logits(loaded, ours)
    _compare_logits(loaded, back)


@pytest.mark.parametrize("name", ["t5", "t5_hf"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(f"groundwork.models.{name}")).failed == 0
