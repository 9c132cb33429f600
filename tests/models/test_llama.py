"""Llama: config validation and presets, HF parameter names, KV-cache decoding, math == SDPA."""

import pytest
import torch

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import Llama, LlamaConfig
from groundwork.nn import KVCache, RopeScaling


def test_smollm2_preset() -> None:
    c = LlamaConfig.from_name("smollm2-135m")
    assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_ff) == (
        49152,
        576,
        30,
        9,
        3,
        1536,
    )
    assert (c.d_head, c.rope_theta, c.rms_norm_eps, c.tie_embeddings, c.max_seq_len) == (
        64,
        100000.0,
        1e-5,
        True,
        8192,
    )


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="smollm2-135m"):
        LlamaConfig.from_name("smollm-135m")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(d_model=66), "d_model"),
        (dict(d_head=7), "d_head"),
        (dict(n_layers=0), "n_layers"),
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(rms_norm_eps=-1.0), "rms_norm_eps"),
        (dict(attn_impl="fast"), "attn_impl"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        LlamaConfig.from_name("tiny", **overrides)


def test_rope_scaling_from_a_dict() -> None:
    c = LlamaConfig.from_name("tiny", rope_scaling={"kind": "linear", "factor": 2.0})
    assert c.rope_scaling == RopeScaling(kind="linear", factor=2.0)


def test_parameter_names_are_hugging_face_names() -> None:
    names = set(Llama(LlamaConfig.from_name("tiny", tie_embeddings=False)).state_dict())
    assert {
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    } <= names
    assert not any("bias" in n for n in names)


def test_tied_and_untied_heads() -> None:
    tied = Llama(LlamaConfig.from_name("tiny"))
    untied = Llama(LlamaConfig.from_name("tiny", tie_embeddings=False))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.num_parameters() - tied.num_parameters() == 512 * 64


def test_math_and_sdpa_paths_give_equal_logits() -> None:
    torch.manual_seed(0)
    sdpa = Llama(LlamaConfig.from_name("tiny")).eval()
    math = Llama(LlamaConfig.from_name("tiny", attn_impl="math")).eval()
    math.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 512, (2, 16))
    torch.testing.assert_close(math(idx), sdpa(idx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_kv_cache_decoding_equals_full_forward(n_kv_heads: int) -> None:
    torch.manual_seed(0)
    config = LlamaConfig.from_name("tiny", n_kv_heads=n_kv_heads)
    model = Llama(config).eval()
    idx = torch.randint(0, 512, (2, 10))
    assert config.n_kv_heads is not None and config.d_head is not None
    cache = model.new_kv_cache(2, 16)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :3], kv_cache=cache)]
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(3, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_left_padded_row_with_shifted_positions_equals_unpadded_row() -> None:
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny")).eval()
    idx = torch.randint(1, 512, (1, 6))
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), idx], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        got = model(padded, attention_mask=mask, position_ids=positions)[:, 2:]
        torch.testing.assert_close(got, model(idx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_bf16_autocast_with_padding_and_cache_stays_close_to_fp32(impl: str) -> None:
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny", attn_impl=impl)).eval()
    idx = torch.randint(0, 512, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        expected = model(idx, attention_mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(idx, attention_mask=mask)
            cache = KVCache(2, 2, 2, 16, 16)  # float32 cache under bf16 autocast
            model(idx[:, :6], attention_mask=mask[:, :6], kv_cache=cache)
            step = model(idx[:, 6:7], attention_mask=mask[:, :7], kv_cache=cache)
    valid = mask.bool()
    torch.testing.assert_close(got.float()[valid], expected[valid], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(step.float(), expected[:, 6:7], rtol=1e-2, atol=1e-2)
