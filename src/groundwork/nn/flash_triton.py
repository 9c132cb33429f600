r"""Flash attention as Triton kernels, forward and backward (Dao 2023, "FlashAttention-2: Faster
attention with better parallelism and work partitioning"): the algorithm of
:mod:`groundwork.nn.flash_attention`, with each block of it run by one GPU program instead of one
turn of a Python loop. Written from the paper; the fused-attention tutorial of the Triton
documentation ("Fused Attention", after the same paper) is the other reference. Chapter 18,
"Efficient inference and compression".

Four kernels, each launched on a grid of programs (one program = one block of rows of one head):

* **forward**, one program per (query block, batch x query head): loads its block of $Q$ once,
  loops over the key/value blocks with the online softmax, writes $O$ and the log-sum-exp $L$;
* **backward preprocess**, $D_i = \sum_d dO_{id}\,O_{id}$ per query row;
* **dK, dV**, one program per (key block, batch x key/value head): loops over the query heads
  of its group (grouped-query attention: their gradients sum into the shared head) and over the
  query blocks, recomputing $P = e^{S - L}$ from the saved $L$;
* **dQ**, one program per (query block, batch x query head): loops over the key blocks.

Separate dK/dV and dQ passes (as FlashAttention-2 does) write every gradient once, with no atomic
additions: each program owns the rows it writes.

The scores are kept in base 2: $QK^\top$ is multiplied by ``scale * log2(e)`` and exponentiated
with ``exp2`` (what the hardware computes natively; $e^x = 2^{x \log_2 e}$), so $L$ is saved in
base 2 too. Masks: query $i$ sees key $j$ iff $j < S$, $j \le i + S - T$ (causal, aligned at the
end as in :mod:`~groundwork.nn.flash_attention`) and key $j$ is not padding; rows $i \ge T$ and
head dimensions $d \ge D$ (the head size is padded to a power of two, ``BLOCK_D``) are masked
loads of zeros. Accumulators are float32 for float32, float16 and bfloat16 inputs.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``):
each program is executed by numpy, slowly, which is how the tests check them against math
attention (bfloat16 is computed in float32 there: numpy has no bfloat16). Triton reads
``TRITON_INTERPRET`` when it decorates a kernel, its own library's included, so it must be set
before the first ``import triton`` of the process; this module imports Triton and decorates its
kernels at the first call, not at import, so importing it early does no harm.

Long (about 480 lines) because each kernel spells out its own loads and masks: a Triton kernel
can call only other ``triton.jit`` functions, and these are decorated at the first call.
"""

from __future__ import annotations  # the kernels' annotations name tl, which may be absent

import functools
import importlib.util
import math
import os
from collections.abc import Callable
from typing import Any

import torch

from groundwork.errors import ConfigError

triton: Any = None  # imported at the first call, see _load_triton
tl: Any = None

LOG2E = 1.4426950408889634
"""$\\log_2 e$: $e^x = 2^{x \\log_2 e}$."""

INSTALL_HINT = "install triton (pip install 'groundwork[kernels]')"


def triton_available() -> bool:
    """Whether Triton is installed (the kernels also need a GPU, or ``TRITON_INTERPRET=1``)."""
    return importlib.util.find_spec("triton") is not None


def _load_triton() -> None:
    """Import Triton into this module (the kernels name ``tl``) at the first call, not at
    import: Triton reads ``TRITON_INTERPRET`` when it is first imported, and a program (a test
    suite) may set it after importing this module."""
    global triton, tl
    if triton is not None:
        return
    try:
        import triton as triton_module
        import triton.language as language
    except ImportError as e:
        raise ConfigError(f"flash_attention_triton needs Triton: {INSTALL_HINT}") from e
    triton, tl = triton_module, language


def _interpreting() -> bool:
    """Whether Triton runs kernels through its interpreter (``TRITON_INTERPRET=1``)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:  # triton >= 3.4
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _check_mode(device: torch.device) -> bool:
    """Whether to interpret; a clear error where the kernels cannot run."""
    interpret = _interpreting()
    if device.type == "cpu" and not interpret:
        raise ConfigError(
            "flash_attention_triton got CPU tensors: Triton kernels run on a GPU, or on the CPU "
            "through Triton's (slow) interpreter when the environment variable TRITON_INTERPRET=1 "
            "is set before triton is first imported"
        )
    try:  # Triton decorates its own library (tl.sum, tl.max) when it is imported
        from triton.runtime.interpreter import InterpretedFunction

        library_interpreted = isinstance(tl.sum, InterpretedFunction)
    except (ImportError, AttributeError):  # another Triton version: assume they agree
        library_interpreted = interpret
    if library_interpreted != interpret:
        raise ConfigError(
            f"TRITON_INTERPRET is {int(interpret)} now but was {int(library_interpreted)} when "
            "triton was first imported: set it before anything imports triton (e.g. at the top "
            "of tests/conftest.py)"
        )
    return interpret


# --8<-- [start:forward]
def _forward_kernel(
    Q: tl.tensor, K: tl.tensor, V: tl.tensor, KEEP: tl.tensor, O: tl.tensor, LSE: tl.tensor,
    qk_scale: float, T: int, S: int, H: int, H_KV: int, D: int,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
) -> None:  # fmt: skip
    """Rows ``BLOCK_M * program_id(0) + [0, BLOCK_M)`` of head ``program_id(1)`` (over B x H)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)  # b * H + h
    b = bh // H
    kv = b * H_KV + (bh % H) // (H // H_KV)  # the key/value head this query head reads
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    cols0 = tl.arange(0, BLOCK_N)
    # a (BLOCK_M, BLOCK_D) tile of Q: rows past T and dimensions past D load as zeros
    q_tile = bh * T * D + rows[:, None] * D + dims[None, :]
    q_mask = (rows[:, None] < T) & (dims[None, :] < D)
    q = tl.load(Q + q_tile, mask=q_mask, other=0.0)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running maximum (base 2)
    ell = tl.full([BLOCK_M], 0.0, tl.float32)  # running sum of 2^(s - m)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)  # running sum of 2^(s - m) v
    end = S
    if CAUSAL:  # no key past the block's last row's horizon: skip those blocks entirely
        end = tl.minimum(S, start_m + BLOCK_M + S - T)
    for start_n in range(0, end, BLOCK_N):
        cols = start_n + cols0
        kv_tile = kv * S * D + cols[:, None] * D + dims[None, :]  # (BLOCK_N, BLOCK_D)
        kv_mask = (cols[:, None] < S) & (dims[None, :] < D)
        k = tl.load(K + kv_tile, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_tile, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        seen = cols[None, :] < S
        if CAUSAL:
            seen = seen & (cols[None, :] <= rows[:, None] + S - T)
        if HAS_KEEP:
            keep = tl.load(KEEP + b * S + cols, mask=cols < S, other=0)
            seen = seen & (keep[None, :] != 0)
        s = tl.where(seen, s, float("-inf"))
        # online softmax: m' = max(m, max_j s_j); rescale the old sums by 2^(m - m')
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet
        p = tl.math.exp2(s - m_safe[:, None])  # (BLOCK_M, BLOCK_N)
        alpha = tl.math.exp2(m - m_safe)
        ell = ell * alpha + tl.sum(p, 1)
        pv = tl.dot(p.to(v.dtype), v, input_precision=PRECISION)  # (BLOCK_M, BLOCK_D)
        acc = acc * alpha[:, None] + pv
        m = m_new
    # O = acc / l; a row that saw no key gets zeros, and L = 0 (its P is 2^-inf = 0 in backward)
    seen_any = ell > 0.0
    ell_safe = tl.where(seen_any, ell, 1.0)
    out = acc / ell_safe[:, None]
    lse = tl.where(seen_any, m + tl.math.log2(ell_safe), 0.0)
    tl.store(O + q_tile, out.to(O.dtype.element_ty), mask=q_mask)
    tl.store(LSE + bh * T + rows, lse, mask=rows < T)


# --8<-- [end:forward]


def _preprocess_kernel(
    O: tl.tensor, DO: tl.tensor, DELTA: tl.tensor, T: int, D: int,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
) -> None:  # fmt: skip
    """``DELTA[i] = sum_d dO[i, d] O[i, d]`` for rows ``BLOCK_M * program_id(0) + [0, BLOCK_M)``."""
    bh = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    tile = bh * T * D + rows[:, None] * D + dims[None, :]
    mask = (rows[:, None] < T) & (dims[None, :] < D)
    o = tl.load(O + tile, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + tile, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + bh * T + rows, tl.sum(o * do, 1), mask=rows < T)


# --8<-- [start:backward]
def _dkdv_kernel(
    Q: tl.tensor, K: tl.tensor, V: tl.tensor, KEEP: tl.tensor, DO: tl.tensor,
    LSE: tl.tensor, DELTA: tl.tensor, DK: tl.tensor, DV: tl.tensor,
    scale: float, qk_scale: float, T: int, S: int, H: int, H_KV: int, D: int,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
) -> None:  # fmt: skip
    """dK, dV of keys ``BLOCK_N * program_id(0) + [0, BLOCK_N)`` of key/value head
    ``program_id(1)`` (over B x H_kv), summed over the query heads that share it."""
    start_n = tl.program_id(0) * BLOCK_N
    kv = tl.program_id(1).to(tl.int64)  # b * H_KV + h_kv
    b = kv // H_KV
    group = H // H_KV
    cols = start_n + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    rows0 = tl.arange(0, BLOCK_M)
    kv_tile = kv * S * D + cols[:, None] * D + dims[None, :]  # (BLOCK_N, BLOCK_D)
    kv_mask = (cols[:, None] < S) & (dims[None, :] < D)
    k = tl.load(K + kv_tile, mask=kv_mask, other=0.0)
    v = tl.load(V + kv_tile, mask=kv_mask, other=0.0)
    seen_cols = cols < S
    if HAS_KEEP:
        seen_cols = seen_cols & (tl.load(KEEP + b * S + cols, mask=cols < S, other=0) != 0)
    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    start = 0
    if CAUSAL:  # queries before start_n - (S - T) see none of these keys
        start = tl.maximum(0, start_n + T - S)
    for g in range(0, group):
        bh = b * H + (kv % H_KV) * group + g  # a query head reading this key/value head
        for start_m in range(start, T, BLOCK_M):
            rows = start_m + rows0
            q_tile = bh * T * D + rows[:, None] * D + dims[None, :]  # (BLOCK_M, BLOCK_D)
            q_mask = (rows[:, None] < T) & (dims[None, :] < D)
            q = tl.load(Q + q_tile, mask=q_mask, other=0.0)
            do = tl.load(DO + q_tile, mask=q_mask, other=0.0)
            lse = tl.load(LSE + bh * T + rows, mask=rows < T, other=0.0)
            delta = tl.load(DELTA + bh * T + rows, mask=rows < T, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
            seen = seen_cols[None, :] & (rows[:, None] < T)
            if CAUSAL:
                seen = seen & (cols[None, :] <= rows[:, None] + S - T)
            p = tl.math.exp2(tl.where(seen, s, float("-inf")) - lse[:, None])  # P = e^(S - L)
            # dV = P^T dO;  dP = dO V^T;  dS = P (dP - D);  dK = dS^T Q * scale
            dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    tl.store(DK + kv_tile, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_tile, dv.to(DV.dtype.element_ty), mask=kv_mask)


def _dq_kernel(
    Q: tl.tensor, K: tl.tensor, V: tl.tensor, KEEP: tl.tensor, DO: tl.tensor,
    LSE: tl.tensor, DELTA: tl.tensor, DQ: tl.tensor,
    scale: float, qk_scale: float, T: int, S: int, H: int, H_KV: int, D: int,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
) -> None:  # fmt: skip
    """dQ of rows ``BLOCK_M * program_id(0) + [0, BLOCK_M)`` of head ``program_id(1)``."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    kv = b * H_KV + (bh % H) // (H // H_KV)
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    cols0 = tl.arange(0, BLOCK_N)
    q_tile = bh * T * D + rows[:, None] * D + dims[None, :]  # (BLOCK_M, BLOCK_D)
    q_mask = (rows[:, None] < T) & (dims[None, :] < D)
    q = tl.load(Q + q_tile, mask=q_mask, other=0.0)
    do = tl.load(DO + q_tile, mask=q_mask, other=0.0)
    lse = tl.load(LSE + bh * T + rows, mask=rows < T, other=0.0)
    delta = tl.load(DELTA + bh * T + rows, mask=rows < T, other=0.0)
    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    end = S
    if CAUSAL:
        end = tl.minimum(S, start_m + BLOCK_M + S - T)
    for start_n in range(0, end, BLOCK_N):
        cols = start_n + cols0
        kv_tile = kv * S * D + cols[:, None] * D + dims[None, :]  # (BLOCK_N, BLOCK_D)
        kv_mask = (cols[:, None] < S) & (dims[None, :] < D)
        k = tl.load(K + kv_tile, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_tile, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        seen = (cols[None, :] < S) & (rows[:, None] < T)
        if CAUSAL:
            seen = seen & (cols[None, :] <= rows[:, None] + S - T)
        if HAS_KEEP:
            keep = tl.load(KEEP + b * S + cols, mask=cols < S, other=0)
            seen = seen & (keep[None, :] != 0)
        p = tl.math.exp2(tl.where(seen, s, float("-inf")) - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)  # dQ = dS K * scale
    tl.store(DQ + q_tile, (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


# --8<-- [end:backward]


# GPU block shapes to autotune over, (BLOCK_M, BLOCK_N, num_warps, num_stages): the forward and
# dQ take many query rows against a few keys at a time, dK/dV the other way round
_CONFIGS = {
    "forward": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 4)],
    "dkdv": [(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 4)],
    "dq": [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4)],
}


@functools.cache
def _kernels(interpret: bool) -> dict[str, Any]:
    """The kernels decorated with ``triton.jit`` (which makes interpreted functions when
    ``TRITON_INTERPRET=1``), and on a GPU each also autotuned over ``_CONFIGS``."""
    jit: Callable[[Callable[..., None]], Any] = triton.jit
    fns: dict[str, Callable[..., None]] = {
        "forward": _forward_kernel,
        "dkdv": _dkdv_kernel,
        "dq": _dq_kernel,
    }
    kernels = {name: jit(fn) for name, fn in fns.items()}
    kernels["preprocess"] = jit(_preprocess_kernel)
    if not interpret:  # each kernel writes its outputs once: safe to rerun while tuning
        for name, fn in fns.items():
            configs = [
                triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
                for m, n, w, st in _CONFIGS[name]
            ]
            tune = triton.autotune(configs=configs, key=["T", "S", "D", "CAUSAL", "HAS_KEEP"])
            kernels[name + "_tuned"] = tune(jit(fn))
    return kernels


def _launch(
    name: str,
    block: int | None,
    length: int,
    heads: int,
    args: tuple[Any, ...],
    meta: dict[str, Any],
) -> None:
    """Run kernel ``name`` on ``cdiv(length, block) x heads`` programs: with ``block`` rows and
    columns per block, else (``None``) autotuned block shapes on a GPU, 32 in the interpreter."""
    interpret = _interpreting()
    kernels = _kernels(interpret)
    split = "BLOCK_N" if name == "dkdv" else "BLOCK_M"  # the blocks the programs divide
    if block is None and not interpret:
        grid = lambda cfg: (triton.cdiv(length, cfg[split]), heads)  # noqa: E731
        kernels[name + "_tuned"][grid](*args, **meta)
    else:
        size = block or 32
        kernels[name][(triton.cdiv(length, size), heads)](*args, **meta, BLOCK_M=size, BLOCK_N=size)


class _FlashAttentionTriton(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        keep: torch.Tensor | None,
        scale: float,
        causal: bool,
        block: int | None,
    ) -> torch.Tensor:
        b, h, t, d = q.shape  # k, v: (B, H_kv, S, D); all contiguous
        h_kv, s = k.shape[1], k.shape[2]
        out = torch.empty_like(q)
        lse = torch.empty(b * h, t, dtype=torch.float32, device=q.device)  # (B * H, T), base 2
        meta = {
            "CAUSAL": causal,
            "HAS_KEEP": keep is not None,
            "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",  # fp32: no TF32 rounding
            "BLOCK_D": max(16, triton.next_power_of_2(d)),
        }
        keep_arg = q if keep is None else keep  # any pointer when there is no mask
        args = (q, k, v, keep_arg, out, lse, scale * LOG2E, t, s, h, h_kv, d)
        _launch("forward", block, t, b * h, args, meta)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.keep, ctx.scale, ctx.block, ctx.meta = keep, scale, block, meta  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        keep, scale, block, meta = ctx.keep, ctx.scale, ctx.block, ctx.meta  # type: ignore[attr-defined]
        b, h, t, d = q.shape
        h_kv, s = k.shape[1], k.shape[2]
        grad_out = grad_out.contiguous()
        delta = torch.empty_like(lse)  # (B * H, T), float32
        _kernels(_interpreting())["preprocess"][(triton.cdiv(t, 64), b * h)](
            out, grad_out, delta, t, d, BLOCK_M=64, BLOCK_D=meta["BLOCK_D"]
        )
        keep_arg = q if keep is None else keep
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        common = (scale, scale * LOG2E, t, s, h, h_kv, d)
        _launch(
            "dkdv",
            block,
            s,
            b * h_kv,
            (q, k, v, keep_arg, grad_out, lse, delta, dk, dv, *common),
            meta,
        )
        _launch("dq", block, t, b * h, (q, k, v, keep_arg, grad_out, lse, delta, dq, *common), meta)
        return dq, dk, dv, None, None, None, None


def flash_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Exact attention by the Triton flash-attention kernels, with their own backward.

    The same contract as :func:`groundwork.nn.flash_attention.flash_attention`.

    Args:
        q: Queries ``(B, H, T, D)``, float32, float16 or bfloat16, on a GPU (or on the CPU with
            ``TRITON_INTERPRET=1``).
        k, v: Keys and values ``(B, H_kv, S, D)``; ``H`` a multiple of ``H_kv`` (grouped-query
            attention: each group of ``H / H_kv`` query heads shares one key/value head).
        causal: Query ``i`` sees keys up to ``i + S - T`` (aligned at the end, as with a cache).
        key_padding_mask: ``(B, S)``, True for real keys, False for padding.
        scale: The scores' factor (default ``1 / sqrt(D)``).
        block: Rows and columns per block, a power of two >= 16 on a GPU (default: tuned block
            shapes on a GPU, 32 in the interpreter).

    Returns:
        ``(B, H, T, D)`` in the dtype of ``q``; a query that sees no key gets zeros.

    Raises:
        ConfigError: Triton is not installed, or CPU tensors without ``TRITON_INTERPRET=1``.
        ValueError: Shapes, dtypes or devices that do not fit together.
    """
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(
            f"flash_attention_triton takes q (B, H, T, D) and k, v (B, H_kv, S, D) of one "
            f"shape; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    b, h, _, d = q.shape
    h_kv, s = k.shape[1], k.shape[2]
    if k.shape[0] != b or k.shape[3] != d or h % h_kv:
        raise ValueError(
            f"keys {tuple(k.shape)} do not fit queries {tuple(q.shape)}: same batch and head "
            f"size, and a number of key/value heads that divides the {h} query heads"
        )
    if key_padding_mask is not None and key_padding_mask.shape != (b, s):
        raise ValueError(
            f"key_padding_mask must be (B, S) = {(b, s)}, got {tuple(key_padding_mask.shape)}"
        )
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"flash_attention_triton takes float32, float16 or bfloat16, got {q.dtype}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype or k.device != q.device or v.device != q.device:
        raise ValueError(
            f"q, k, v must share a dtype and a device; got {q.dtype}/{k.dtype}/{v.dtype} on "
            f"{q.device}/{k.device}/{v.device}"
        )
    if block is not None and (block < 16 or block & (block - 1)):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    _load_triton()
    interpret = _check_mode(q.device)
    if q.dtype == torch.bfloat16 and interpret:
        # numpy, which runs the interpreter, has no bfloat16 (its tl.dot would multiply the raw
        # bits): compute in float32 there and round the result
        q32, k32, v32 = q.float(), k.float(), v.float()
        out32 = flash_attention_triton(
            q32,
            k32,
            v32,
            causal=causal,
            key_padding_mask=key_padding_mask,
            scale=scale,
            block=block,
        )
        return out32.to(torch.bfloat16)
    keep = None
    if key_padding_mask is not None:
        keep = key_padding_mask.to(device=q.device, dtype=torch.int8).contiguous()  # (B, S)
    factor = 1.0 / math.sqrt(d) if scale is None else scale
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out: torch.Tensor = _FlashAttentionTriton.apply(q, k, v, keep, factor, causal, block)
    return out
