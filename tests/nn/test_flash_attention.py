"""Flash attention's blocked online softmax, forward and its own backward, equals math attention
(fp32, 1e-5) on odd shapes: lengths not a multiple of the block, head size 24, grouped-query
heads 6/2, causal (also with fewer queries than keys), padded keys."""

import math

import pytest
import torch

from groundwork.nn.flash_attention import flash_attention


def math_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    keep: torch.Tensor | None,
) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V with the whole score matrix, the reference."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    t, n = q.shape[2], k.shape[2]
    if causal:
        future = torch.arange(n)[None, :] > torch.arange(t)[:, None] + (n - t)
        s = s.masked_fill(future, float("-inf"))
    if keep is not None:
        s = s.masked_fill(~keep[:, None, None, :], float("-inf"))
    return torch.softmax(s, -1) @ v


def inputs(b: int, h: int, h_kv: int, t: int, n: int, d: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(b, h, t, d), (b, h_kv, n, d), (b, h_kv, n, d)]
    return [torch.randn(s, generator=g, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("h", "h_kv", "t", "n", "d", "block"),
    [(2, 2, 37, 37, 24, 16), (6, 2, 33, 33, 24, 8), (4, 1, 5, 21, 16, 4), (2, 2, 7, 7, 8, 64)],
)
def test_equals_math_attention_values_and_gradients(
    causal: bool, h: int, h_kv: int, t: int, n: int, d: int, block: int
) -> None:
    q, k, v = inputs(2, h, h_kv, t, n, d)
    g = torch.randn(2, h, t, d, generator=torch.Generator().manual_seed(1))
    ours = flash_attention(q, k, v, causal=causal, block=block)
    grads = torch.autograd.grad((ours * g).sum(), (q, k, v))
    want = math_attention(q, k, v, causal, None)
    want_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_padded_keys_are_ignored_and_a_row_without_keys_is_zero() -> None:
    q, k, v = inputs(2, 4, 2, 9, 9, 16)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[0, 6:] = False  # the first sequence's last three keys are padding
    g = torch.randn(2, 4, 9, 16, generator=torch.Generator().manual_seed(2))
    ours = flash_attention(q, k, v, key_padding_mask=keep, block=4)
    want = math_attention(q, k, v, False, keep)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((ours * g).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads[1][0, :, 6:].abs().max() == 0  # no gradient flows into padding
    # causal with the first keys padded: the first query sees nothing -> zeros, no NaN
    keep = torch.ones(1, 5, dtype=torch.bool)
    keep[0, 0] = False
    q1, k1, v1 = inputs(1, 2, 2, 5, 5, 8)
    out = flash_attention(q1, k1, v1, causal=True, key_padding_mask=keep, block=2)
    assert torch.isfinite(out).all() and out[0, :, 0].abs().max() == 0
    (dq, dk, dv) = torch.autograd.grad(out.sum(), (q1, k1, v1))
    assert all(torch.isfinite(x).all() for x in (dq, dk, dv))


def test_equals_torch_sdpa() -> None:
    q, k, v = inputs(1, 4, 4, 50, 50, 32)
    ours = flash_attention(q, k, v, causal=True, block=16)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused() -> None:
    q, k, v = inputs(1, 3, 2, 4, 4, 8)
    with pytest.raises(ValueError, match="divides the 3 query heads"):
        flash_attention(q, k, v)
    q, k, v = inputs(1, 2, 2, 4, 4, 8)
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, S\)"):
        flash_attention(q, k, v, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="q \\(B, H, T, D\\)"):
        flash_attention(q[0], k, v)


@pytest.mark.parametrize(
    ("arch", "impl"), [("gpt", "flash"), ("llama", "flash"), ("llama", "triton")]
)
def test_models_with_attn_impl_flash_equal_sdpa(arch: str, impl: str) -> None:
    """``attn_impl="flash"`` (or ``"triton"``, the kernels, through Triton's interpreter on a
    CPU) in a model: logits, gradients and cached decoding equal SDPA's."""
    import dataclasses

    from groundwork.models import registry

    if impl == "triton":
        pytest.importorskip("triton")

    config = registry.get(arch).config("tiny")
    if hasattr(config, "dropout"):
        config = dataclasses.replace(config, dropout=0.0)
    torch.manual_seed(0)
    sdpa = registry.build_model(config)
    flash = registry.build_model(dataclasses.replace(config, attn_impl=impl))
    flash.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, config.vocab_size, (2, 21), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(flash(idx), sdpa(idx), rtol=1e-5, atol=1e-5)
    flash(idx).logsumexp(-1).sum().backward()
    sdpa(idx).logsumexp(-1).sum().backward()
    for (name, a), b in zip(flash.named_parameters(), sdpa.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=name)
    cache = flash.new_kv_cache(2, 32)
    with torch.no_grad():
        steps = [flash(idx[:, :5], kv_cache=cache)]
        steps += [flash(idx[:, t : t + 1], kv_cache=cache) for t in range(5, 21)]
        torch.testing.assert_close(torch.cat(steps, 1), sdpa(idx), rtol=1e-5, atol=1e-5)


def test_attn_impl_flash_refuses_a_padding_mask() -> None:
    from groundwork.nn.attention import Attention

    attention = Attention(16, 2, 2, 8, impl="flash")
    x = torch.randn(1, 4, 16)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="use attn_impl 'sdpa'"):
        attention(x, mask=mask)
