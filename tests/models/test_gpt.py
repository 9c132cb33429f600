"""GPT: config validation and presets, init, shapes, KV-cache decoding, math == SDPA."""

import pytest
import torch

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import GPT, GPTConfig, build_model


def test_presets_have_the_gpt2_sizes() -> None:
    sizes = {
        name: (c.d_model, c.n_layers, c.n_heads, c.vocab_size, c.max_seq_len, c.d_ff)
        for name in ("gpt2-124m", "gpt2-355m", "gpt2-774m", "gpt2-1558m")
        for c in [GPTConfig.from_name(name)]
    }
    assert sizes == {
        "gpt2-124m": (768, 12, 12, 50257, 1024, 3072),
        "gpt2-355m": (1024, 24, 16, 50257, 1024, 4096),
        "gpt2-774m": (1280, 36, 20, 50257, 1024, 5120),
        "gpt2-1558m": (1600, 48, 25, 50257, 1024, 6400),
    }
    assert GPTConfig.from_name("tiny", n_layers=3).n_layers == 3


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'gpt2-124m'"):
        GPTConfig.from_name("gpt2-124")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(d_model=65), "d_model"),
        (dict(n_heads=0), "n_heads"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(d_ff=0), "d_ff"),
        (dict(norm_position="middle"), "norm_position"),
        (dict(attn_impl="fast"), "attn_impl"),
        (dict(dropout=1.0), "dropout"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        GPTConfig.from_name("tiny", **overrides)


def test_forward_shape_tied_head_and_parameter_count() -> None:
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_name("tiny"))
    assert isinstance(model, GPT)
    assert model(torch.randint(0, 512, (2, 7))).shape == (2, 7, 512)
    assert model.lm_head.weight is model.wte.weight
    d, V, T, L = 64, 512, 128, 2
    per_layer = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d
    assert model.num_parameters() == V * d + T * d + L * per_layer + 2 * d
    assert model.num_parameters(exclude_embeddings=True) == L * per_layer + 2 * d


def test_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", d_model=256, n_layers=8, n_heads=4))
    assert model.blocks[0].attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / (2 * 8) ** 0.5
    assert model.blocks[0].attn.o_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.blocks[0].mlp.down_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.blocks[0].attn.qkv_proj.bias.abs().sum() == 0


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_math_and_sdpa_paths_give_equal_logits(norm_position: str) -> None:
    torch.manual_seed(0)
    sdpa = GPT(GPTConfig.from_name("tiny", norm_position=norm_position)).eval()
    math = GPT(GPTConfig.from_name("tiny", norm_position=norm_position, attn_impl="math")).eval()
    math.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 512, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, :3] = 0
    torch.testing.assert_close(math(idx), sdpa(idx), rtol=1e-5, atol=1e-5)
    valid = mask.bool()
    got, expected = math(idx, attention_mask=mask), sdpa(idx, attention_mask=mask)
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)


def test_kv_cache_decoding_equals_full_forward() -> None:
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny")
    model = GPT(config).eval()
    idx = torch.randint(0, 512, (2, 10))
    cache = model.new_kv_cache(2, 32)
    assert cache.k.shape == (config.n_layers, 2, config.n_kv_heads, 32, config.d_head)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :4], kv_cache=cache)]
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(4, 10)]
    assert cache.seq_len == 10
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_too_long_input_is_refused() -> None:
    model = GPT(GPTConfig.from_name("tiny", max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", dropout=0.5))
    idx = torch.randint(0, 512, (1, 8))
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))
