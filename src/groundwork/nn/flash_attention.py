r"""Flash attention, the algorithm (Dao et al. 2022, "FlashAttention: Fast and memory-efficient
exact attention with IO-awareness"; Dao 2023, FlashAttention-2), in PyTorch: exact attention
computed block by block, never holding the $T \times S$ score matrix.

Attention is $O = \mathrm{softmax}(QK^\top / \sqrt{d})\,V$. The softmax of a row needs the row's
maximum and sum, which seem to need the whole row; the **online softmax** keeps, for each query
row, a running maximum $m$, a running sum $\ell$ of $e^{s - m}$ and a running output $o$, and
folds in one block of keys at a time: with the block's scores $s_j$,

$$ m' = \max(m, \max_j s_j), \quad
   \ell' = e^{m - m'}\,\ell + \sum_j e^{s_j - m'}, \quad
   o' = e^{m - m'}\,o + \sum_j e^{s_j - m'}\,v_j, $$

and at the end $O = o / \ell$. Only $O$ and the log-sum-exp $L = m + \log \ell$ of each row are
kept for backward, $O(T)$ numbers instead of $O(TS)$. Backward **recomputes** each block's
probabilities from $L$, $P_{ij} = e^{s_{ij} - L_i}$, and uses $D_i = \sum_d dO_{id} O_{id}$
(the row's $\sum_j P_{ij}\, dP_{ij}$) for the softmax's gradient,

$$ dV = P^\top dO, \quad dP = dO\, V^\top, \quad dS = P \odot (dP - D), \quad
   dQ = dS\, K / \sqrt{d}, \quad dK = dS^\top Q / \sqrt{d}. $$

Here the blocks are a Python loop over slices — the algorithm made visible, tested equal to
math attention (values and gradients, causal, grouped-query heads, padded keys, lengths that
are not a multiple of the block); the speed comes from running the same loop inside one GPU
kernel, where a block of $Q$, $K$ and $V$ sits in on-chip memory. Chapter 18.
"""

import math

import torch


def _scores(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float,
    rows: slice,
    cols: slice,
    causal: bool,
    key_keep: torch.Tensor | None,
) -> torch.Tensor:
    """The scaled scores of query rows ``rows`` against keys ``cols``, masked (-inf) where a
    key is in the future (causal, aligned at the end) or padding. ``(B, H, bq, bk)``."""
    s = q[:, :, rows] @ k[:, :, cols].transpose(-1, -2) * scale  # (B, H, bq, bk)
    if causal:
        t, n = q.shape[2], k.shape[2]
        i = torch.arange(rows.start, rows.stop, device=q.device)[:, None] + (n - t)
        j = torch.arange(cols.start, cols.stop, device=q.device)[None, :]
        s = s.masked_fill(j > i, float("-inf"))
    if key_keep is not None:
        s = s.masked_fill(~key_keep[:, None, None, cols], float("-inf"))
    return s


# --8<-- [start:forward]
def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool,
    key_keep: torch.Tensor | None,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The output ``(B, H, T, D)`` and each row's log-sum-exp ``(B, H, T)``, block by block."""
    b, h, t, d = q.shape
    n = k.shape[2]
    out = torch.empty_like(q)
    lse = torch.empty(b, h, t, dtype=q.dtype, device=q.device)
    for r0 in range(0, t, block):
        rows = slice(r0, min(r0 + block, t))
        m = torch.full((b, h, rows.stop - r0), float("-inf"), dtype=q.dtype, device=q.device)
        ell = torch.zeros_like(m)
        o = torch.zeros(b, h, rows.stop - r0, d, dtype=q.dtype, device=q.device)
        for c0 in range(0, n, block):
            if causal and c0 > rows.stop - 1 + n - t:
                break  # this block and all after it are in every row's future
            cols = slice(c0, min(c0 + block, n))
            s = _scores(q, k, scale, rows, cols, causal, key_keep)  # (B, H, bq, bk)
            m_new = torch.maximum(m, s.amax(-1))
            safe = torch.where(torch.isinf(m_new), 0.0, m_new)  # a row with no key yet
            p = torch.exp(s - safe[..., None])  # (B, H, bq, bk)
            rescale = torch.exp(m - safe)
            ell = rescale * ell + p.sum(-1)
            o = rescale[..., None] * o + p @ v[:, :, cols]
            m = m_new
        out[:, :, rows] = o / ell.clamp_min(torch.finfo(q.dtype).tiny)[..., None]
        lse[:, :, rows] = torch.where(ell > 0, m + torch.log(ell), float("-inf"))
    return out, lse


# --8<-- [end:forward]


# --8<-- [start:backward]
def _backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    grad_out: torch.Tensor,
    scale: float,
    causal: bool,
    key_keep: torch.Tensor | None,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dQ, dK, dV, recomputing each block's probabilities from the saved log-sum-exp."""
    t, n = q.shape[2], k.shape[2]
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (grad_out * out).sum(-1)  # (B, H, T): D_i = sum_j P_ij dP_ij
    safe_lse = torch.where(torch.isinf(lse), 0.0, lse)  # rows that see no key: P = 0
    for c0 in range(0, n, block):
        cols = slice(c0, min(c0 + block, n))
        for r0 in range(0, t, block):
            rows = slice(r0, min(r0 + block, t))
            if causal and c0 > rows.stop - 1 + n - t:
                continue  # these keys are in the future of every row of the block
            s = _scores(q, k, scale, rows, cols, causal, key_keep)  # (B, H, bq, bk)
            p = torch.exp(s - safe_lse[:, :, rows, None])
            do = grad_out[:, :, rows]  # (B, H, bq, D)
            dv[:, :, cols] += p.transpose(-1, -2) @ do
            dp = do @ v[:, :, cols].transpose(-1, -2)  # (B, H, bq, bk)
            ds = p * (dp - delta[:, :, rows, None])
            dq[:, :, rows] += ds @ k[:, :, cols] * scale
            dk[:, :, cols] += ds.transpose(-1, -2) @ q[:, :, rows] * scale
    return dq, dk, dv


# --8<-- [end:backward]


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
        causal: bool,
        key_keep: torch.Tensor | None,
        block: int,
    ) -> torch.Tensor:
        out, lse = _forward(q, k, v, scale, causal, key_keep, block)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.key_keep, ctx.scale, ctx.causal, ctx.block = key_keep, scale, causal, block  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        dq, dk, dv = _backward(
            q,
            k,
            v,
            out,
            lse,
            grad_out.contiguous(),
            ctx.scale,  # type: ignore[attr-defined]
            ctx.causal,  # type: ignore[attr-defined]
            ctx.key_keep,  # type: ignore[attr-defined]
            ctx.block,  # type: ignore[attr-defined]
        )
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    block: int = 64,
) -> torch.Tensor:
    """Exact attention by the online softmax, block by block, with its own backward.

    Args:
        q: Queries ``(B, H, T, D)``.
        k, v: Keys and values ``(B, H_kv, S, D)``; ``H`` a multiple of ``H_kv`` (grouped-query
            attention: each group of ``H / H_kv`` query heads shares one key/value head).
        causal: Query ``i`` sees keys up to ``i + S - T`` (aligned at the end, as with a cache).
        key_padding_mask: ``(B, S)``, True for real keys, False for padding.
        scale: The scores' factor (default ``1 / sqrt(D)``).
        block: Rows and columns per block.

    Returns:
        ``(B, H, T, D)``; a query that sees no key gets zeros.
    """
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(
            f"flash_attention takes q (B, H, T, D) and k, v (B, H_kv, S, D) of one shape; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    b, h, _, d = q.shape
    h_kv = k.shape[1]
    if k.shape[0] != b or k.shape[3] != d or h % h_kv:
        raise ValueError(
            f"keys {tuple(k.shape)} do not fit queries {tuple(q.shape)}: same batch and head "
            f"size, and a number of key/value heads that divides the {h} query heads"
        )
    if key_padding_mask is not None and key_padding_mask.shape != (b, k.shape[2]):
        raise ValueError(
            f"key_padding_mask must be (B, S) = {(b, k.shape[2])}, got "
            f"{tuple(key_padding_mask.shape)}"
        )
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    group = h // h_kv
    # grouped-query heads: each key/value head serves `group` query heads; autograd sums the
    # copies' gradients back into it
    k = k.repeat_interleave(group, dim=1)  # (B, H, S, D)
    v = v.repeat_interleave(group, dim=1)
    keep = None if key_padding_mask is None else key_padding_mask.bool()
    factor = 1.0 / math.sqrt(d) if scale is None else scale
    out: torch.Tensor = _FlashAttention.apply(q, k, v, factor, causal, keep, block)
    return out
