"""The Triton flash-attention kernels, forward and backward, equal math attention (fp32, 1e-5) on
odd shapes: lengths not a multiple of the block, head size 24 (not a power of two), grouped-query
heads 6/2, causal (also with fewer queries than keys), padded keys.

Without a GPU the kernels run on CPU tensors through Triton's interpreter. Triton reads
``TRITON_INTERPRET`` when it is first imported (it decorates its own library then), so this
module sets it before anything imports triton: ``groundwork.nn.flash_triton`` imports triton
only at its first call, and test modules are all collected (imported) before any test runs.
With a GPU the same tests run the compiled kernels on it. Blocks of 16 keep the interpreter fast
and still give several blocks per sequence."""

import os
import sys

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from groundwork.errors import ConfigError  # noqa: E402
from groundwork.nn import flash_triton  # noqa: E402
from groundwork.nn.attention import math_attention  # noqa: E402
from groundwork.nn.flash_triton import flash_attention_triton  # noqa: E402


def inputs(
    b: int, h: int, h_kv: int, t: int, n: int, d: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(s, generator=g).to(DEVICE, dtype).requires_grad_()
        for s in [(b, h, t, d), (b, h_kv, n, d), (b, h_kv, n, d)]
    )
    return q, k, v


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, keep: torch.Tensor | None
) -> torch.Tensor:
    """``math_attention`` on repeated key/value heads, with causality aligned at the end."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # (B, H, S, D)
    t, n = q.shape[2], k.shape[2]
    allowed = torch.ones(q.shape[0], 1, t, n, dtype=torch.bool, device=q.device)  # (B, 1, T, S)
    if causal:
        allowed = allowed & torch.ones(t, n, dtype=torch.bool, device=q.device).tril(n - t)
    if keep is not None:
        allowed = allowed & keep[:, None, None, :]
    return math_attention(q, k, v, allowed)


def check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    keep: torch.Tensor | None = None,
    block: int | None = 16,
    tol: float = 1e-5,
) -> tuple[torch.Tensor, ...]:
    """Our output and (dq, dk, dv) against the reference's, in float32."""
    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    ours = flash_attention_triton(q, k, v, causal=causal, key_padding_mask=keep, block=block)
    assert ours.dtype == q.dtype
    grads = torch.autograd.grad((ours.float() * g).sum(), (q, k, v))
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    want = reference(q32, k32, v32, causal, keep)
    want_grads = torch.autograd.grad((want * g).sum(), (q32, k32, v32))
    torch.testing.assert_close(ours.float(), want, rtol=tol, atol=tol)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol)
    return (ours, *grads)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("b", "h", "h_kv", "t", "n", "d"),
    [(1, 2, 2, 37, 37, 24), (2, 6, 2, 33, 33, 24), (1, 4, 1, 5, 21, 16)],
    ids=["T37-D24", "GQA6/2", "decode-chunk-5-of-21"],
)
def test_equals_math_attention_values_and_gradients(
    causal: bool, b: int, h: int, h_kv: int, t: int, n: int, d: int
) -> None:
    check(*inputs(b, h, h_kv, t, n, d), causal)


def test_padded_keys_are_ignored_and_a_row_without_keys_is_zero() -> None:
    q, k, v = inputs(2, 4, 2, 19, 19, 16)
    keep = torch.ones(2, 19, dtype=torch.bool, device=DEVICE)
    keep[0, 13:] = False  # the first sequence's last six keys are padding
    _, _, dk, dv = check(q, k, v, False, keep)
    assert dk[0, :, 13:].abs().max() == 0 and dv[0, :, 13:].abs().max() == 0
    # causal with the first key padded: the first query sees nothing -> zeros, no NaN
    keep = torch.ones(1, 5, dtype=torch.bool, device=DEVICE)
    keep[0, 0] = False
    q1, k1, v1 = inputs(1, 2, 2, 5, 5, 8)
    out = flash_attention_triton(q1, k1, v1, causal=True, key_padding_mask=keep, block=16)
    assert torch.isfinite(out).all() and out[0, :, 0].abs().max() == 0
    torch.testing.assert_close(out[:, :, 1:], reference(q1, k1, v1, True, keep)[:, :, 1:])
    grads = torch.autograd.grad(out.sum(), (q1, k1, v1))
    assert all(torch.isfinite(x).all() for x in grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype) -> None:
    """float16 and bfloat16 in and out, float32 inside: within the inputs' rounding of fp32."""
    check(*inputs(1, 2, 2, 37, 37, 24, dtype), True, block=None, tol=2e-2)


def test_bad_inputs_are_refused() -> None:
    q, k, v = inputs(1, 3, 2, 4, 4, 8)
    with pytest.raises(ValueError, match="divides the 3 query heads"):
        flash_attention_triton(q, k, v)
    q, k, v = inputs(1, 2, 2, 4, 4, 8)
    with pytest.raises(ValueError, match=r"q \(B, H, T, D\)"):
        flash_attention_triton(q[0], k, v)
    with pytest.raises(ValueError, match=r"q \(B, H, T, D\)"):
        flash_attention_triton(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match="same batch and head size"):
        flash_attention_triton(q, k[..., :4], v[..., :4])
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, S\)"):
        flash_attention_triton(
            q, k, v, key_padding_mask=torch.ones(1, 3, dtype=torch.bool, device=DEVICE)
        )
    with pytest.raises(ValueError, match="share a dtype"):
        flash_attention_triton(q, k.double(), v)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        flash_attention_triton(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="power of two >= 16"):
        flash_attention_triton(q, k, v, block=24)


def test_cpu_tensors_need_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = (x.detach().cpu() for x in inputs(1, 2, 2, 4, 4, 8))
    with pytest.raises(ConfigError, match="TRITON_INTERPRET=1"):
        flash_attention_triton(q, k, v)


def test_without_triton_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flash_triton, "triton", None)  # not imported yet ...
    monkeypatch.setitem(sys.modules, "triton", None)  # ... and not importable
    assert not flash_triton.triton_available()
    with pytest.raises(ConfigError, match=r"pip install 'groundwork\[kernels\]'"):
        flash_attention_triton(*inputs(1, 2, 2, 4, 4, 8))
