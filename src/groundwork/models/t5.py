"""T5: an encoder-decoder transformer with relative position biases and RMS layer norms.

Read top to bottom: the config and its presets, the relative position buckets, attention (self and
cross), the feed-forward layer, the block, the encoder and decoder stacks, then the models:
:class:`T5` (encoder-decoder, "text-to-text") and :class:`T5Encoder` (the encoder alone, for
embeddings and classifiers).

What T5 changes in the transformer of Vaswani et al. 2017:

* **Relative positions** (Shaw et al. 2018, simplified): no position embeddings; instead every
  attention score gets a learned scalar per head that depends only on the key's offset from the
  query, ``key - query``, put in one of ``relative_attention_num_buckets`` buckets: exact for
  small offsets, log-spaced up to ``relative_attention_max_distance``, one bucket beyond. The
  encoder's buckets are bidirectional (half for keys before the query, half after); the
  decoder's are causal (only keys at or before the query). Each stack computes the bias once,
  with one embedding table, and every layer of the stack adds the same bias.
* **No 1/sqrt(d) in attention**: the scores are plain ``q . k``; the scale is folded into the
  initialisation of the query projection (:func:`init_t5_weights`).
* **T5 LayerNorm** is RMSNorm (Zhang & Sennrich 2019): no mean subtraction, no bias, a weight;
  pre-norm, with a final norm after each stack.
* **Feed-forward**: ReLU (T5 v1.0) or gated GELU (T5 v1.1, Shazeer 2020, with the tanh GELU);
  no biases anywhere.
* **Output head**: v1.0 ties it to the token embeddings and rescales the decoder output by
  ``d_model ** -0.5`` first (the embeddings are initialised with std 1); v1.1 unties it and
  drops the rescale.

References:
    * Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
      Transformer" (T5), JMLR 21(140).
    * Shaw, Uszkoreit & Vaswani 2018, "Self-Attention with Relative Position Representations".
    * Shazeer 2020, "GLU Variants Improve Transformer" (gated GELU, T5 v1.1).
    * ``transformers/models/t5/modeling_t5.py`` (the twin the tests compare with).

The module is long because an encoder-decoder is two stacks and three kinds of attention (the
encoder's, the decoder's causal self-attention with its cache, and cross-attention), and the
pieces read best in one place, in the order data flows through them.

The parameter names are ours (``encoder.blocks.0.self_attn.q_proj.weight``); the Hugging Face
names (``encoder.block.0.layer.0.SelfAttention.q.weight``) are in :mod:`groundwork.models.t5_hf`.
Encoder-decoder decoding (greedy, sampling, beam search) is :mod:`groundwork.generate.seq2seq`.
Chapters 6 (model families) and 10 (decoding) of the docs.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError, TokenIdError
from groundwork.models.config import check_choice, check_positive, preset
from groundwork.nn import KVCache, RMSNorm, causal_mask, padding_mask, to_additive

FeedForward = Literal["relu", "gated-gelu"]


@dataclass(kw_only=True)
class T5Config:
    """Shape and options of a T5 model (v1.0 and v1.1)."""

    vocab_size: int = 32128
    """Number of token ids (T5's SentencePiece vocabulary, padded: 32128)."""
    max_seq_len: int = 512
    """Length the model was trained for. Relative positions have no table to run out of, so
    longer inputs work; tools use this as the default context (and KV-cache size)."""
    d_model: int = 512
    """Width of the residual stream."""
    d_kv: int = 64
    """Size of one attention head. ``n_heads * d_kv`` need not equal ``d_model``
    (T5 v1.1 small: 6 heads of 64 on a width of 512)."""
    d_ff: int = 2048
    """Hidden size of the feed-forward layer."""
    n_layers: int = 6
    """Encoder blocks."""
    n_decoder_layers: int | None = None
    """Decoder blocks; ``None``: ``n_layers``."""
    n_heads: int = 8
    """Attention heads per block."""
    relative_attention_num_buckets: int = 32
    """Buckets of key-query offsets, each with a learned bias per head."""
    relative_attention_max_distance: int = 128
    """Offsets at least this far apart share the last bucket."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights, sublayer outputs and the feed-forward hidden
    layer (training mode only)."""
    layer_norm_eps: float = 1e-6
    """Epsilon of the RMS layer norms."""
    feed_forward: FeedForward = "relu"
    """``"relu"`` (T5 v1.0) or ``"gated-gelu"`` (v1.1: ``gelu_tanh(gate) * up``)."""
    tie_embeddings: bool = True
    """v1.0: the output head is the token embedding matrix, applied to the decoder output scaled
    by ``d_model ** -0.5``. v1.1 (``False``): a separate head, no rescale."""
    pad_id: int = 0
    """Padding id (also T5's decoder start id)."""
    eos_id: int = 1
    """End-of-sequence id."""
    decoder_start_id: int = 0
    """The id the decoder starts every output with."""

    def __post_init__(self) -> None:
        if self.n_decoder_layers is None:
            self.n_decoder_layers = self.n_layers
        sizes = ("vocab_size", "max_seq_len", "d_model", "d_kv", "d_ff", "n_layers", "n_heads")
        buckets = ("relative_attention_num_buckets", "relative_attention_max_distance")
        check_positive(self, *sizes, "n_decoder_layers", *buckets)
        check_choice(self, "feed_forward", ["relu", "gated-gelu"])
        if self.relative_attention_num_buckets < 4:
            raise ConfigError(
                "relative_attention_num_buckets must be at least 4 (the encoder splits them "
                f"into two directions, each with exact and log-spaced halves), got "
                f"{self.relative_attention_num_buckets}"
            )
        max_exact = self.relative_attention_num_buckets // 2  # the decoder's exact buckets
        if self.relative_attention_max_distance <= max_exact:
            raise ConfigError(
                f"relative_attention_max_distance ({self.relative_attention_max_distance}) must "
                f"exceed relative_attention_num_buckets // 2 ({max_exact}): the log-spaced "
                "buckets span the offsets between the two"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(
                    f"{name} must be a token id in 0..{self.vocab_size - 1}, got {value!r}"
                )

    @property
    def inner_dim(self) -> int:
        """Width of the attention's queries, keys and values: ``n_heads * d_kv``."""
        return self.n_heads * self.d_kv

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "T5Config":
        """A named preset (``"t5-small"``, ``"t5-v1_1-small"``, ``"tiny"``), optionally with
        fields overridden."""
        return cls(**{**preset(T5_PRESETS, name, "T5"), **overrides})


_T5_V1_0 = dict(vocab_size=32128, d_kv=64, feed_forward="relu", tie_embeddings=True)
T5_PRESETS: dict[str, dict[str, Any]] = {
    # google-t5/t5-small and google-t5/t5-base config.json
    "t5-small": dict(_T5_V1_0, d_model=512, d_ff=2048, n_layers=6, n_heads=8),
    "t5-base": dict(_T5_V1_0, d_model=768, d_ff=3072, n_layers=12, n_heads=12),
    # google/t5-v1_1-small config.json: gated GELU, untied head, inner dim 384 != d_model 512
    "t5-v1_1-small": dict(
        vocab_size=32128,
        d_model=512,
        d_kv=64,
        d_ff=1024,
        n_layers=8,
        n_heads=6,
        feed_forward="gated-gelu",
        tie_embeddings=False,
    ),
    "tiny": dict(
        vocab_size=512,
        max_seq_len=128,
        d_model=64,
        d_kv=16,
        d_ff=128,
        n_layers=2,
        n_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=64,
    ),
}
"""Named configs: T5 v1.0 small and base, T5 v1.1 small, and a CPU-sized one."""


# --8<-- [start:t5_buckets]
def relative_position_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """The bucket of each key-query offset ``key - query`` (Mesh TensorFlow's, as in T5).

    Bidirectional (the encoder): half the buckets for keys after the query, half for keys at or
    before it. Causal (the decoder): keys after the query never occur, so all buckets go to
    ``key <= query``. Within a direction, with ``n`` buckets and ``max_exact = n // 2``:
    distances ``0 .. max_exact - 1`` get one bucket each, larger ones share log-spaced buckets up
    to ``max_distance``, and everything beyond falls in the last bucket.

    >>> offsets = torch.tensor([-100, -9, -1, 0, 1, 9])
    >>> relative_position_bucket(offsets, bidirectional=True, num_buckets=16, max_distance=40)
    tensor([ 7,  5,  1,  0,  9, 13])
    >>> relative_position_bucket(offsets, bidirectional=False, num_buckets=16, max_distance=40)
    tensor([15,  8,  1,  0,  0,  0])
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets  # keys after the query
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # keys after the query: distance 0
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced: max_exact + (n - max_exact) * log(d / max_exact) / log(max_distance / max_exact)
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    if_large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    if_large = if_large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, if_large)


# --8<-- [end:t5_buckets]


# --8<-- [start:t5_attention]
class T5Attention(nn.Module):
    """Multi-head attention without the ``1/sqrt(d)`` scale, with an additive bias.

    Self-attention projects queries, keys and values from the same input; cross-attention
    projects keys and values from the encoder output once (:meth:`project_kv`) and reuses them
    for every decoder position and step.

    Args:
        d_model: Input and output width.
        n_heads: Number of heads.
        d_kv: Size of one head.
        dropout: Dropout on the attention weights (training mode only).
    """

    def __init__(self, d_model: int, n_heads: int, d_kv: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.d_kv, self.dropout = n_heads, d_kv, dropout
        inner = n_heads * d_kv
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_kv).transpose(1, 2)  # (B, H, T, D)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, H, S, D)`` of ``source`` ``(B, S, d_model)``."""
        return self._heads(self.k_proj(source)), self._heads(self.v_proj(source))

    def forward(
        self,
        x: torch.Tensor,
        *,
        bias: torch.Tensor | None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        start_pos: int = 0,
    ) -> torch.Tensor:
        """Attend from every position of ``x`` ``(B, T, d_model)``; returns ``(B, T, d_model)``.

        Args:
            x: The (normalised) queries' input.
            bias: Additive, broadcastable to ``(B, H, T, T_k)``: position bias plus masks.
            kv: Precomputed keys and values (cross-attention); ``None``: project them from
                ``x`` (self-attention).
            kv_cache: Self-attention cache: the new keys/values are written at ``start_pos``
                and the queries attend over positions ``0 .. start_pos + T - 1``.
            layer: This layer's index in ``kv_cache``.
            start_pos: Position of the first token of ``x``.
        """
        B, T, _ = x.shape
        q = self._heads(self.q_proj(x))  # (B, H, T, D)
        if kv is None:
            k, v = self.project_kv(x)  # (B, H, T, D)
            if kv_cache is not None:
                k, v = kv_cache.update(layer, k, v, start_pos)  # (B, H, T_k, D)
                k, v = k.to(q.dtype), v.to(q.dtype)
        else:
            k, v = kv  # (B, H, T_k, D)
        scores = q @ k.transpose(-2, -1)  # (B, H, T, T_k): no 1/sqrt(D), see init_t5_weights
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, T_k)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        y = (weights @ v).transpose(1, 2).reshape(B, T, self.n_heads * self.d_kv)  # (B, T, H*D)
        return self.o_proj(y)


# --8<-- [end:t5_attention]


class T5FeedForward(nn.Module):
    """``down_proj(relu(up_proj(x)))`` (v1.0) or ``down_proj(gelu_tanh(gate_proj(x)) *
    up_proj(x))`` (v1.1), with dropout on the hidden layer."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        c = config
        self.gated = c.feed_forward == "gated-gelu"
        if self.gated:
            self.gate_proj = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.up_proj = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.down_proj = nn.Linear(c.d_ff, c.d_model, bias=False)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        if self.gated:
            h = F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x)  # (B, T, d_ff)
        else:
            h = F.relu(self.up_proj(x))  # (B, T, d_ff)
        return self.down_proj(self.dropout(h))


# --8<-- [start:t5_block]
class T5Block(nn.Module):
    """One pre-norm block: ``x + attn(norm(x))``, in the decoder ``x + cross_attn(norm(x))``,
    then ``x + ffn(norm(x))``; dropout on each sublayer's output."""

    def __init__(self, config: T5Config, *, cross_attention: bool) -> None:
        super().__init__()
        c = config
        self.self_attn_norm = RMSNorm(c.d_model, eps=c.layer_norm_eps)
        self.self_attn = T5Attention(c.d_model, c.n_heads, c.d_kv, dropout=c.dropout)
        self.cross_attn: T5Attention | None = None
        if cross_attention:
            self.cross_attn_norm = RMSNorm(c.d_model, eps=c.layer_norm_eps)
            self.cross_attn = T5Attention(c.d_model, c.n_heads, c.d_kv, dropout=c.dropout)
        self.mlp_norm = RMSNorm(c.d_model, eps=c.layer_norm_eps)
        self.mlp = T5FeedForward(c)
        self.dropout = nn.Dropout(c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        self_bias: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cross_bias: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        start_pos: int = 0,
    ) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        h = self.self_attn(
            self.self_attn_norm(x),
            bias=self_bias,
            kv_cache=kv_cache,
            layer=layer,
            start_pos=start_pos,
        )
        x = x + self.dropout(h)
        if self.cross_attn is not None:
            h = self.cross_attn(self.cross_attn_norm(x), bias=cross_bias, kv=cross_kv)
            x = x + self.dropout(h)
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


# --8<-- [end:t5_block]


@dataclass
class T5Cache:
    """What the decoder keeps between decoding steps (:meth:`T5.new_kv_cache`)."""

    self_attn: KVCache
    """The decoder's self-attention keys and values, ``(n_decoder_layers, B, H, S, d_kv)``;
    ``seq_len`` decoder positions are filled."""
    cross_attn: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """Per decoder layer, the keys and values of the encoder output, ``(B, H, S_enc, d_kv)``:
    projected at the first call, reused at every later step."""

    @property
    def seq_len(self) -> int:
        """Decoder positions already fed (the position of the next token)."""
        return self.self_attn.seq_len


# --8<-- [start:t5_stack]
class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention): blocks sharing
    one relative position bias, then a final RMS norm.

    Args:
        config: The model's shape and options.
        decoder: Build the decoder stack (causal buckets, cross-attention, ``n_decoder_layers``).
    """

    def __init__(self, config: T5Config, *, decoder: bool) -> None:
        super().__init__()
        c = config
        assert c.n_decoder_layers is not None
        self.config, self.is_decoder = c, decoder
        n_blocks = c.n_decoder_layers if decoder else c.n_layers
        self.relative_attention_bias = nn.Embedding(c.relative_attention_num_buckets, c.n_heads)
        self.blocks = nn.ModuleList(T5Block(c, cross_attention=decoder) for _ in range(n_blocks))
        self.final_norm = RMSNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)

    def position_bias(self, t_q: int, t_k: int, start: int = 0) -> torch.Tensor:
        """The learned bias ``(1, H, t_q, t_k)`` of queries at ``start .. start + t_q - 1`` and
        keys at ``0 .. t_k - 1``."""
        device = self.relative_attention_bias.weight.device
        query = torch.arange(start, start + t_q, device=device)[:, None]  # (t_q, 1)
        key = torch.arange(t_k, device=device)[None, :]  # (1, t_k)
        buckets = relative_position_bucket(
            key - query,  # (t_q, t_k)
            bidirectional=not self.is_decoder,
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (1, H, t_q, t_k)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        kv_cache: T5Cache | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, T, d_model)`` of the token embeddings ``x`` ``(B, T, d_model)``.

        Args:
            x: Token embeddings.
            attention_mask: ``(B, T_k)``, 1 for tokens and 0 for padding (the decoder's counts
                cached positions too); ``None``: no padding.
            encoder_hidden: Decoder only: the encoder output ``(B, S, d_model)`` (not needed
                once ``kv_cache`` holds its keys and values).
            encoder_mask: Decoder only: the encoder's padding mask ``(B, S)``.
            kv_cache: Decoder only: the cache to read and extend.
        """
        T = x.shape[1]
        start = kv_cache.seq_len if kv_cache is not None else 0
        t_k = start + T
        bias = self.position_bias(T, t_k, start).to(x.dtype)  # (1, H, T, T_k)
        allowed = None  # which keys each query may see (None: all)
        if self.is_decoder:
            allowed = causal_mask(T, t_k, device=x.device)[None, None]  # (1, 1, T, T_k)
        if attention_mask is not None:
            keys = padding_mask(attention_mask.to(x.device))  # (B, 1, 1, T_k)
            allowed = keys if allowed is None else allowed & keys  # (B, 1, T, T_k)
        self_bias = bias if allowed is None else bias + to_additive(allowed, x.dtype)
        cross_bias = None  # no position bias across: the encoder output is a set, not a line
        if encoder_mask is not None:
            cross_bias = to_additive(padding_mask(encoder_mask.to(x.device)), x.dtype)

        x = self.dropout(x)
        blocks = cast(list[T5Block], list(self.blocks))
        for i, block in enumerate(blocks):
            cross_kv = None
            if self.is_decoder:
                cross_kv = self._cross_kv(i, block, encoder_hidden, kv_cache)
            x = block(
                x,
                self_bias=self_bias,
                cross_kv=cross_kv,
                cross_bias=cross_bias,
                kv_cache=kv_cache.self_attn if kv_cache is not None else None,
                layer=i,
                start_pos=start,
            )  # (B, T, d_model)
        if kv_cache is not None:
            kv_cache.self_attn.seq_len = t_k
        return self.dropout(self.final_norm(x))

    @staticmethod
    def _cross_kv(
        i: int, block: T5Block, encoder_hidden: torch.Tensor | None, cache: T5Cache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s cross-attention keys and values: from the cache, or projected from the
        encoder output (and cached)."""
        if cache is not None and len(cache.cross_attn) > i:
            return cache.cross_attn[i]
        assert block.cross_attn is not None and encoder_hidden is not None
        kv = block.cross_attn.project_kv(encoder_hidden)  # (B, H, S, D) each
        if cache is not None:
            cache.cross_attn.append(kv)
        return kv


# --8<-- [end:t5_stack]


def _check_ids(ids: torch.Tensor, vocab_size: int, name: str) -> None:
    """Raise :class:`~groundwork.errors.TokenIdError` for an id outside ``0 .. vocab_size-1``
    (an embedding lookup would fail with an opaque error, on CUDA an unrecoverable one)."""
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        value = int(ids[bad][0])
        raise TokenIdError(
            f"{name} holds token id {value}, outside the model's vocabulary 0..{vocab_size - 1}"
        )


def init_t5_weights(model: nn.Module, config: T5Config) -> None:
    """T5's initialisation (Mesh TensorFlow's, as in ``transformers``), in place.

    Every matrix is drawn from ``N(0, 1 / fan_in)`` except the query projection, whose std is
    ``(d_model * d_kv) ** -0.5``: the extra ``d_kv ** -0.5`` is the ``1/sqrt(d)`` that T5's
    attention leaves out. The embeddings (and an untied head) have std 1; the relative biases
    ``d_model ** -0.5``; the norms' weights are 1.
    """
    c = config
    for module in model.modules():
        if isinstance(module, T5Attention):
            nn.init.normal_(module.q_proj.weight, std=(c.d_model * c.d_kv) ** -0.5)
            nn.init.normal_(module.k_proj.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.v_proj.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.o_proj.weight, std=c.inner_dim**-0.5)
        elif isinstance(module, T5FeedForward):
            for linear in (module.up_proj, getattr(module, "gate_proj", None)):
                if linear is not None:
                    nn.init.normal_(linear.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.down_proj.weight, std=c.d_ff**-0.5)
        elif isinstance(module, T5Stack):
            nn.init.normal_(module.relative_attention_bias.weight, std=c.d_model**-0.5)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
    embed = getattr(model, "embed_tokens", None)
    if isinstance(embed, nn.Embedding):
        nn.init.normal_(embed.weight, std=1.0)
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear) and not c.tie_embeddings:
        nn.init.normal_(head.weight, std=1.0)


# --8<-- [start:t5]
class T5(nn.Module):
    """T5 encoder-decoder: shared token embeddings, the encoder, the decoder and an LM head.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)  # shared by both stacks
        self.encoder = T5Stack(c, decoder=False)
        self.decoder = T5Stack(c, decoder=True)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_t5_weights(self, c)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The encoder output ``(B, S, d_model)`` of ``input_ids`` ``(B, S)`` (``attention_mask``:
        ``(B, S)``, 1 for tokens and 0 for padding)."""
        _check_ids(input_ids, self.config.vocab_size, "input_ids")
        return self.encoder(self.embed_tokens(input_ids), attention_mask=attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor,
        encoder_hidden: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        kv_cache: T5Cache | None = None,
    ) -> torch.Tensor:
        """Next-token logits of the decoder at every position of ``decoder_input_ids``.

        Args:
            input_ids: Encoder input ``(B, S)``; not needed when ``encoder_hidden`` is given.
            attention_mask: The encoder input's padding mask ``(B, S)`` (1 = token), used by the
                encoder and by the decoder's cross-attention: pass it at every decoding step.
            decoder_input_ids: Decoder input ``(B, T)``: the decoder start id, then the target
                shifted right (teacher forcing), or the newest token with a cache.
            encoder_hidden: The output of :meth:`encode` ``(B, S, d_model)``, to run the
                encoder once and decode many steps.
            decoder_attention_mask: ``(B, T_k)`` padding mask of the decoder input, ``T_k``
                counting cached positions; ``None``: no padding (causal only).
            kv_cache: From :meth:`new_kv_cache`: self-attention keys/values of earlier steps
                and the encoder output's cross-attention keys/values.

        Returns:
            Logits ``(B, T, vocab_size)``.

        Raises:
            ConfigError: Neither ``input_ids`` nor ``encoder_hidden`` (and no cached encoder
                keys/values).
            TokenIdError: An id outside the vocabulary.
        """
        cached = kv_cache is not None and len(kv_cache.cross_attn) > 0
        if encoder_hidden is None and not cached:
            if input_ids is None:
                raise ConfigError(
                    "a decoder input without an encoder output: pass input_ids (the encoder "
                    "input) or encoder_hidden (the output of T5.encode)"
                )
            encoder_hidden = self.encode(input_ids, attention_mask)  # (B, S, d_model)
        _check_ids(decoder_input_ids, self.config.vocab_size, "decoder_input_ids")
        x = self.decoder(
            self.embed_tokens(decoder_input_ids),  # (B, T, d_model)
            attention_mask=decoder_attention_mask,
            encoder_hidden=encoder_hidden,
            encoder_mask=attention_mask,
            kv_cache=kv_cache,
        )  # (B, T, d_model)
        if self.config.tie_embeddings:
            x = x * self.config.d_model**-0.5  # the embeddings have std 1: rescale (v1.0)
        return self.lm_head(x)  # (B, T, vocab_size)

    # --8<-- [end:t5]

    def new_kv_cache(self, batch: int, max_seq_len: int | None = None) -> T5Cache:
        """An empty decoder cache for ``batch`` sequences of up to ``max_seq_len`` decoder
        positions (default ``config.max_seq_len``), on the model's device and dtype."""
        c = self.config
        assert c.n_decoder_layers is not None
        p = self.lm_head.weight
        length = max_seq_len or c.max_seq_len
        kv = KVCache(batch, c.n_decoder_layers, c.n_heads, length, c.d_kv, p.dtype, p.device)
        return T5Cache(self_attn=kv)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (the tied head counts once); optionally without the token
        embeddings."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if exclude_embeddings else n


class T5Encoder(nn.Module):
    """The T5 encoder alone (``transformers``' ``T5EncoderModel``): token embeddings and the
    encoder stack, for sentence embeddings and classifiers.

    Args:
        config: The model's shape (the decoder fields are unused).
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder = T5Stack(c, decoder=False)
        init_t5_weights(self, c)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The encoder output ``(B, S, d_model)`` of ``input_ids`` ``(B, S)``."""
        _check_ids(input_ids, self.config.vocab_size, "input_ids")
        return self.encoder(self.embed_tokens(input_ids), attention_mask=attention_mask)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Number of parameters; optionally without the token embeddings."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if exclude_embeddings else n


def parameter_counts(config: T5Config) -> dict[str, int]:
    """Parameters of :class:`T5` by component: embeddings, attention (self and cross),
    position_bias (one table per stack), mlp, norms, head (0 if tied), total.

    >>> parameter_counts(T5Config.from_name("t5-small"))["total"]
    60506624
    """
    c = config
    assert c.n_decoder_layers is not None
    d, inner, L_enc, L_dec = c.d_model, c.inner_dim, c.n_layers, c.n_decoder_layers
    embeddings = c.vocab_size * d
    attention = (L_enc + 2 * L_dec) * 4 * d * inner  # q, k, v, o; the decoder has two
    position_bias = 2 * c.relative_attention_num_buckets * c.n_heads
    mlp = (L_enc + L_dec) * (3 if c.feed_forward == "gated-gelu" else 2) * d * c.d_ff
    norms = (2 * L_enc + 1 + 3 * L_dec + 1) * d
    head = 0 if c.tie_embeddings else c.vocab_size * d
    total = embeddings + attention + position_bias + mlp + norms + head
    return dict(
        embeddings=embeddings,
        attention=attention,
        position_bias=position_bias,
        mlp=mlp,
        norms=norms,
        head=head,
        total=total,
    )
