"""Scaled dot-product attention, masks, and multi-head / grouped-query / multi-query attention.

* Scaled dot-product and multi-head attention: Vaswani et al. 2017, "Attention Is All You Need".
* Multi-query attention (one key/value head): Shazeer 2019, "Fast Transformer Decoding".
* Grouped-query attention (``n_kv_heads`` key/value heads, each shared by a group of query heads):
  Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models".

Attention is computed by one of four interchangeable paths, chosen with ``impl``:

* ``"math"``: $\\mathrm{softmax}(QK^\\top/\\sqrt{d} + M)\\,V$ written out, to read and to test;
* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention`, which dispatches to fused
  (flash / memory-efficient) kernels;
* ``"flash"``: our flash-attention algorithm in PyTorch (:mod:`groundwork.nn.flash_attention`);
* ``"triton"``: our flash-attention Triton kernels (:mod:`groundwork.nn.flash_triton`; a GPU, or
  ``TRITON_INTERPRET=1`` on a CPU).

The two agree to 1e-5 in float32 (``tests/nn/test_attention.py``). Masks come in two forms:
boolean (``True`` = may attend) or additive (``0`` = may attend, a very negative number = may
not). Chapter 5 of the docs explains all of it.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.nn.flash_attention import flash_attention
from groundwork.nn.flash_triton import flash_attention_triton
from groundwork.nn.kv_cache import KVCache, StaticKVCache
from groundwork.nn.norms import RMSNorm
from groundwork.nn.positions import apply_rope

AttentionImpl = Literal["math", "sdpa", "flash", "triton"]


# --8<-- [start:masks]
def causal_mask(t_q: int, t_k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean causal mask ``(t_q, t_k)``: query ``i`` may see key ``j`` iff ``j <= t_k - t_q + i``.

    The queries are the *last* ``t_q`` of ``t_k`` positions (with a KV cache, earlier keys come
    from previous steps). For ``t_q == t_k`` this is the lower triangle:

    >>> causal_mask(3, 3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    ones = torch.ones(t_q, t_k, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=t_k - t_q)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean key mask ``(B, 1, 1, T_k)`` from a ``(B, T_k)`` tensor of 1 (token) and 0 (padding).

    >>> padding_mask(torch.tensor([[1, 1, 0]])).int().tolist()
    [[[[1, 1, 0]]]]
    """
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T_k)


def packed_documents(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Which document each position belongs to, for sequences packed end to end.

    Packing puts several documents in one row and restarts the position ids at each: a
    position that does not follow its left neighbour by one starts a new document (the rule of
    ``transformers``' ``find_packed_sequence_indices``, so a batch packed for one trains the
    other alike). Returns ``(B, T)`` document indices, or ``None`` when every row holds one
    document.

    >>> packed_documents(torch.tensor([[0, 1, 2, 0, 1, 0]])).tolist()
    [[0, 0, 0, 1, 1, 2]]
    >>> packed_documents(torch.tensor([[0, 1, 2]])) is None
    True
    """
    first = position_ids[:, :1] - 1
    starts = torch.diff(position_ids, prepend=first, dim=-1) != 1  # (B, T)
    documents = starts.cumsum(-1)  # (B, T)
    if bool((documents[:, -1] == 0).all()):
        return None
    return documents


def document_mask(documents: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``(B, 1, T, T)``: a position may attend only within its own document.

    >>> document_mask(torch.tensor([[0, 0, 1]])).int()[0, 0].tolist()
    [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    """
    return documents[:, None, :, None] == documents[:, None, None, :]  # (B, 1, T, T)


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive mask: ``0`` where ``True``, the dtype's minimum elsewhere.

    The most negative finite value rather than ``-inf`` keeps a fully masked row (a padding query)
    finite: its softmax is uniform instead of NaN.
    """
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


def build_attention_mask(
    attention_mask: torch.Tensor | None,
    t_q: int,
    t_k: int,
    *,
    bias: torch.Tensor | None = None,
    documents: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """The additive mask a model passes to every attention layer, or ``None`` for plain causal.

    Combines causality, padding (``attention_mask`` ``(B, t_k)``, 1 = token), packed documents
    (``documents`` ``(B, t_q)`` from :func:`packed_documents`, needs ``t_q == t_k``) and an
    optional additive ``bias`` (e.g. ALiBi, ``(H, t_q, t_k)``). Returns ``None`` when there is
    none of them, so attention can take its fast causal path.

    Returns:
        ``(B or 1, H or 1, t_q, t_k)`` additive mask in ``dtype``, or ``None``.
    """
    has_padding = attention_mask is not None and not bool(attention_mask.all())
    if not has_padding and bias is None and documents is None:
        return None
    allowed = causal_mask(t_q, t_k, device=device)[None, None]  # (1, 1, t_q, t_k)
    if has_padding:
        assert attention_mask is not None
        allowed = allowed & padding_mask(attention_mask.to(device))  # (B, 1, t_q, t_k)
    if documents is not None:
        if t_q != t_k:
            raise ValueError("packed documents need the whole sequence at once (no KV cache)")
        allowed = allowed & document_mask(documents.to(device))  # (B, 1, t_q, t_k)
    mask = to_additive(allowed, dtype)
    if bias is not None:
        mask = mask + bias.to(dtype)[None]  # (B, H, t_q, t_k)
    return mask


# --8<-- [end:masks]


# --8<-- [start:attention]
def math_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """$\\mathrm{softmax}(QK^\\top / \\sqrt{d} + M)\\,V$, written out.

    Args:
        q: Queries ``(B, H, T_q, D)``.
        k: Keys ``(B, H, T_k, D)``.
        v: Values ``(B, H, T_k, D)``.
        mask: Boolean (``True`` = attend) or additive, broadcastable to ``(B, H, T_q, T_k)``.
        is_causal: Apply :func:`causal_mask` (instead of, not with, ``mask``).
        dropout_p: Dropout probability on the attention weights.

    Returns:
        ``(B, H, T_q, D)``: for each query, the attention-weighted average of the values.
    """
    scale = q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T_q, T_k)
    if is_causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)  # (T_q, T_k)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T_q, T_k)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (B, H, T_q, D)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Same contract as :func:`math_attention`, through PyTorch's fused kernel.

    ``k`` and ``v`` may have fewer heads than ``q`` (grouped-query attention): on torch >= 2.5 the
    kernel reads the shared heads in place (``enable_gqa``) instead of copying them per query head.
    """
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1 and not _SDPA_HAS_GQA:
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T_k, D)
    extra = {"enable_gqa": True} if n_rep > 1 and _SDPA_HAS_GQA else {}
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p, **extra
    )


_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)
"""``scaled_dot_product_attention(..., enable_gqa=True)`` exists from torch 2.5 on."""


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head ``n_rep`` times: ``(B, H_kv, T, D) -> (B, H_kv * n_rep, T, D)``.

    Query head ``h`` then reads key/value head ``h // n_rep``: grouped-query attention is ordinary
    multi-head attention on repeated keys and values.
    """
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)  # (B, H_kv * n_rep, T, D)


class Attention(nn.Module):
    """Multi-head self-attention with ``n_kv_heads`` key/value heads (MHA, GQA or MQA).

    ``n_kv_heads == n_heads`` is multi-head attention, ``n_kv_heads == 1`` multi-query attention,
    anything in between (dividing ``n_heads``) grouped-query attention.

    Args:
        d_model: Model width (input and output size).
        n_heads: Number of query heads.
        n_kv_heads: Number of key/value heads (default: ``n_heads``).
        d_head: Size of one head (default: ``d_model // n_heads``).
        bias: Whether the projections have biases (GPT-2: yes; Llama: no).
        fused_qkv: One ``qkv_proj`` layer instead of ``q_proj``, ``k_proj``, ``v_proj``.
        causal: Whether a token may only attend to itself and earlier tokens.
        impl: ``"math"`` or ``"sdpa"`` (see the module docstring).
        dropout: Dropout on attention weights and on the output (training mode only).
        layer_idx: This layer's index in a :class:`KVCache`.
        qk_norm_eps: If given, RMSNorm (with this epsilon) over the whole query and key
            projections before the heads are split, as OLMo and OLMoE do (``q_norm``,
            ``k_norm``; they keep attention logits from growing in training).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        d_head: int | None = None,
        *,
        bias: bool = False,
        fused_qkv: bool = False,
        causal: bool = True,
        impl: AttentionImpl = "sdpa",
        dropout: float = 0.0,
        layer_idx: int = 0,
        qk_norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.d_head = d_head or d_model // n_heads
        if n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads")
        if impl not in ("math", "sdpa", "flash", "triton"):
            raise ValueError(f"impl must be 'math', 'sdpa', 'flash' or 'triton', got {impl!r}")
        self.causal, self.impl, self.dropout, self.layer_idx = causal, impl, dropout, layer_idx
        q_size, kv_size = n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv_proj = nn.Linear(d_model, q_size + 2 * kv_size, bias=bias)
        else:
            self.q_proj = nn.Linear(d_model, q_size, bias=bias)
            self.k_proj = nn.Linear(d_model, kv_size, bias=bias)
            self.v_proj = nn.Linear(d_model, kv_size, bias=bias)
        self.o_proj = nn.Linear(q_size, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if qk_norm_eps is not None:  # OLMo: RMSNorm over each whole projection
            self.q_norm = RMSNorm(q_size, eps=qk_norm_eps)
            self.k_norm = RMSNorm(kv_size, eps=qk_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: KVCache | None = None,
        start_pos: int = 0,
    ) -> torch.Tensor:
        """Attend from every token of ``x`` ``(B, T, d_model)``; returns ``(B, T, d_model)``.

        Args:
            x: Input hidden states.
            mask: Full mask (causality included), boolean or additive, broadcastable to
                ``(B, H, T, T_k)``; ``None`` means "causal" (or "none" if ``causal=False``).
            rope: ``(cos, sin)`` ``(B, T, d_head)`` to rotate queries and keys with (RoPE).
            kv_cache: If given, this layer's keys/values are written at ``start_pos`` and the
                queries attend over all cached positions ``0..start_pos+T-1``.
            start_pos: Position of the first token of ``x`` (with a cache).
        """
        B, T, _ = x.shape
        if self.fused_qkv:
            q_size, kv_size = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
            q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (B, T, H D), (B, T, H_kv D)
        q = q.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)  # (B, H_kv, T, D)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v, start_pos)  # (B, H_kv, T_k, D)
            k, v = k.to(q.dtype), v.to(q.dtype)  # a no-op unless the cache has another dtype
            if isinstance(kv_cache, StaticKVCache):  # decoding: its mask of the filled slots
                mask = kv_cache.key_mask(mask)  # (B, 1, 1, S)
        if self.impl == "math":  # the SDPA path shares key/value heads without copying them
            n_rep = self.n_heads // self.n_kv_heads
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T_k, D)

        t_k = k.shape[2]
        is_causal = False
        if mask is None and self.causal and T > 1:
            if t_k == T:
                is_causal = True  # the fused kernels' fast path
            elif self.impl not in ("flash", "triton"):  # these align causality at the end
                mask = causal_mask(T, t_k, device=x.device)  # (T, T_k)
        if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
            # e.g. under autocast: SDPA wants the mask in the dtype of the queries.
            mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        if self.impl in ("flash", "triton"):
            y = self._flash(q, k, v, mask, dropout_p)  # (B, H, T, D)
        else:
            attend = math_attention if self.impl == "math" else sdpa_attention
            y = attend(q, k, v, mask, is_causal=is_causal, dropout_p=dropout_p)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.d_head)  # (B, T, H * D)
        return self.resid_dropout(self.o_proj(y))

    # --8<-- [end:attention]

    def _flash(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        dropout_p: float,
    ) -> torch.Tensor:
        """``impl="flash"``: :func:`~groundwork.nn.flash_attention.flash_attention`, the blocked
        online softmax in PyTorch (the algorithm, for study: slower than SDPA's kernels);
        ``impl="triton"``: the same algorithm as Triton kernels
        (:func:`~groundwork.nn.flash_triton.flash_attention_triton`)."""
        if mask is not None or dropout_p > 0.0:
            raise ValueError(
                f"attn_impl {self.impl!r} computes causal or unmasked "
                "attention without dropout: this call has "
                + ("a padding mask" if mask is not None else f"dropout {dropout_p}")
                + "; use attn_impl 'sdpa' for it"
            )
        attend = flash_attention if self.impl == "flash" else flash_attention_triton
        return attend(q, k, v, causal=self.causal)
