"""Attention: math path vs SDPA, vs ``nn.MultiheadAttention``, GQA vs MHA, masks, KV cache."""

import pytest
import torch
from torch import nn

from groundwork.nn import (
    Attention,
    KVCache,
    alibi_bias,
    alibi_slopes,
    build_attention_mask,
    causal_mask,
    math_attention,
    padding_mask,
    repeat_kv,
    sdpa_attention,
    to_additive,
)


def _qkv(B: int = 2, H: int = 4, T: int = 6, D: int = 8) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    return torch.randn(B, H, T, D), torch.randn(B, H, T, D), torch.randn(B, H, T, D)


def test_math_attention_is_the_formula() -> None:
    q, k, v = _qkv()
    weights = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)
    torch.testing.assert_close(math_attention(q, k, v), weights @ v, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["none", "causal", "bool", "additive"])
def test_math_equals_sdpa(kind: str) -> None:
    q, k, v = _qkv()
    mask = None
    if kind == "bool":
        mask = causal_mask(6, 6) & padding_mask(
            torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
        )
        mask[1, :, 0] = True  # no fully masked row (SDPA and math disagree on those by design)
    if kind == "additive":
        mask = torch.randn(2, 4, 6, 6)
    causal = kind == "causal"
    ours = math_attention(q, k, v, mask, is_causal=causal)
    ref = sdpa_attention(q, k, v, mask, is_causal=causal)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_causal_mask_with_offset_matches_cached_queries() -> None:
    assert causal_mask(2, 4).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_build_attention_mask_is_none_without_padding() -> None:
    assert build_attention_mask(None, 4, 4) is None
    assert build_attention_mask(torch.ones(2, 4), 4, 4) is None
    mask = build_attention_mask(torch.tensor([[0, 1, 1]]), 3, 3)
    assert mask is not None and mask.shape == (1, 1, 3, 3)
    assert (mask[0, 0] == 0).int().tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1]]


def _copy_from_torch_mha(ours: Attention, ref: nn.MultiheadAttention) -> None:
    q_w, k_w, v_w = ref.in_proj_weight.chunk(3)
    q_b, k_b, v_b = ref.in_proj_bias.chunk(3)
    with torch.no_grad():
        for proj, w, b in [
            (ours.q_proj, q_w, q_b),
            (ours.k_proj, k_w, k_b),
            (ours.v_proj, v_w, v_b),
        ]:
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.o_proj.weight.copy_(ref.out_proj.weight)
        ours.o_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parity
@pytest.mark.parametrize("impl", ["math", "sdpa"])
@pytest.mark.parametrize("masking", ["none", "causal", "causal+padding"])
def test_matches_torch_multihead_attention(impl: str, masking: str) -> None:
    torch.manual_seed(0)
    d_model, n_heads, B, T = 32, 4, 2, 7
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True).eval()
    ours = Attention(d_model, n_heads, bias=True, causal=masking != "none", impl=impl)  # type: ignore[arg-type]
    _copy_from_torch_mha(ours, ref)
    x = torch.randn(B, T, d_model)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    if masking == "causal+padding":
        attention_mask[1, :2] = 0  # left padding of the second sequence
    # torch's masks say where attention is *forbidden*: the negation of ours.
    attn_mask = ~causal_mask(T, T) if masking != "none" else None
    key_padding_mask = attention_mask == 0 if masking == "causal+padding" else None
    expected, _ = ref(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
    mask = build_attention_mask(attention_mask, T, T)
    got = ours(x, mask=mask)
    valid = attention_mask.bool()  # padding queries attend nothing; torch returns NaN there
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 6])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_heads: int) -> None:
    torch.manual_seed(0)
    d_model, n_heads, d_head = 24, 6, 4  # d_head != d_model / n_heads on purpose
    gqa = Attention(d_model, n_heads, n_kv_heads, d_head)
    mha = Attention(d_model, n_heads, n_heads, d_head)
    n_rep = n_heads // n_kv_heads
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(n_kv_heads, d_head, d_model)  # (H_kv, D, d_model)
            w = w.repeat_interleave(n_rep, dim=0).reshape(n_heads * d_head, d_model)  # (H*D, d)
            getattr(mha, name).weight.copy_(w)
    x = torch.randn(2, 5, d_model)
    torch.testing.assert_close(gqa(x), mha(x), rtol=1e-5, atol=1e-5)
    assert repeat_kv(torch.arange(2.0).view(1, 2, 1, 1), 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_fused_qkv_equals_separate_projections() -> None:
    torch.manual_seed(0)
    sep = Attention(16, 4, 2, bias=True)
    fused = Attention(16, 4, 2, bias=True, fused_qkv=True)
    with torch.no_grad():
        fused.qkv_proj.weight.copy_(
            torch.cat([sep.q_proj.weight, sep.k_proj.weight, sep.v_proj.weight])
        )
        fused.qkv_proj.bias.copy_(torch.cat([sep.q_proj.bias, sep.k_proj.bias, sep.v_proj.bias]))
        fused.o_proj.load_state_dict(sep.o_proj.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(fused(x), sep(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_kv_cache_token_by_token_equals_full_attention(impl: str) -> None:
    torch.manual_seed(0)
    B, T, d_model, n_heads, n_kv_heads = 2, 9, 32, 4, 2
    attn = Attention(d_model, n_heads, n_kv_heads, impl=impl, layer_idx=1)  # type: ignore[arg-type]
    x = torch.randn(B, T, d_model)
    full = attn(x)
    cache = KVCache(B, 2, n_kv_heads, 16, d_model // n_heads)
    prefix = attn(x[:, :3], kv_cache=cache, start_pos=0)  # a 3-token prompt, then one at a time
    steps = [attn(x[:, t : t + 1], kv_cache=cache, start_pos=t) for t in range(3, T)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.k[0].abs().sum() == 0  # layer 0 untouched


def test_kv_cache_chunked_prefill_uses_offset_causal_mask() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 2)
    x = torch.randn(1, 8, 16)
    cache = KVCache(1, 1, 2, 8, 8)
    chunks = [attn(x[:, :5], kv_cache=cache), attn(x[:, 5:], kv_cache=cache, start_pos=5)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), attn(x), rtol=1e-5, atol=1e-5)


def test_kv_cache_overflow_raises() -> None:
    cache = KVCache(1, 1, 1, 4, 2)
    with pytest.raises(ValueError, match="overflow"):
        cache.update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2), 0)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        Attention(24, 6, 4)
    with pytest.raises(ValueError, match="impl"):
        Attention(24, 6, impl="triton-flash")  # type: ignore[arg-type]


def test_to_additive_keeps_fully_masked_rows_finite() -> None:
    q, k, v = _qkv(1, 1, 2, 4)
    mask = to_additive(torch.tensor([[False, False], [True, True]]))
    assert torch.isfinite(math_attention(q, k, v, mask)).all()


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_alibi_bias_through_the_mask(impl: str) -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4, impl=impl)  # type: ignore[arg-type]
    x = torch.randn(2, 6, 32)
    slopes = alibi_slopes(4)
    mask = build_attention_mask(None, 6, 6, bias=alibi_bias(slopes, 6, 6))
    assert mask is not None and mask.shape == (1, 4, 6, 6)
    # The same computation by hand: causal softmax of scores - slope * distance.
    q = attn.q_proj(x).view(2, 6, 4, 8).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_proj(x).view(2, 6, 4, 8).transpose(1, 2)  # (B, H, T, D)
    v = attn.v_proj(x).view(2, 6, 4, 8).transpose(1, 2)  # (B, H, T, D)
    i = torch.arange(6)
    scores = q @ k.transpose(-2, -1) / 8**0.5 - slopes.view(4, 1, 1) * (i[:, None] - i[None, :])
    scores = scores.masked_fill(~causal_mask(6, 6), float("-inf"))  # (B, H, T, T)
    y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(2, 6, 32)  # (B, T, d)
    torch.testing.assert_close(attn(x, mask=mask), attn.o_proj(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("has_gqa", [True, False])
def test_sdpa_shares_kv_heads_like_repeating_them(
    monkeypatch: pytest.MonkeyPatch, has_gqa: bool
) -> None:
    """GQA through SDPA (``enable_gqa`` on torch >= 2.5, repeated heads before) equals the math
    path on explicitly repeated keys and values."""
    import groundwork.nn.attention as attention

    if has_gqa and not attention._SDPA_HAS_GQA:
        pytest.skip("this torch has no enable_gqa")
    monkeypatch.setattr(attention, "_SDPA_HAS_GQA", has_gqa)
    torch.manual_seed(0)
    q = torch.randn(2, 6, 5, 8)  # (B, H, T, D)
    k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)  # (B, H_kv, T, D)
    expected = attention.math_attention(
        q, attention.repeat_kv(k, 3), attention.repeat_kv(v, 3), None, is_causal=True
    )
    got = attention.sdpa_attention(q, k, v, None, is_causal=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
