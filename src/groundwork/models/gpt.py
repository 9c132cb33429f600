"""GPT-2: a decoder-only transformer with learned positions, pre-LN LayerNorm and a GELU MLP.

Read top to bottom: the config and its presets, then the model, which stacks
:class:`groundwork.nn.TransformerBlock` s built from :mod:`groundwork.nn` parts.

References:
    * Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training" (GPT).
    * Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2): pre-LN,
      a final LayerNorm, residual projections initialised with std ``0.02 / sqrt(2 * n_layers)``.
    * Vaswani et al. 2017, "Attention Is All You Need" (the block; post-LN is a config switch).
    * karpathy/nanoGPT ``model.py`` (the layout of this file).

The parameter names differ from Hugging Face's ``GPT2LMHeadModel`` (which also stores its linear
weights transposed); :mod:`groundwork.models.gpt_hf` holds the key map. The KV cache, parameter
count and initialisation shared with Llama are in :mod:`groundwork.models.decoder`. Chapter 5 of
the docs.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import (
    check_choice,
    check_divides,
    check_positive,
    check_pruned_heads,
    layer_heads,
    preset,
)
from groundwork.models.decoder import (
    DecoderLM,
    init_weights,
    packed_documents_of,
    token_inputs,
)
from groundwork.nn import (
    GELUMLP,
    Attention,
    AttentionImpl,
    KVCache,
    LayerNorm,
    LearnedPositionalEmbedding,
    NormPosition,
    TransformerBlock,
    build_attention_mask,
)


@dataclass(kw_only=True)
class GPTConfig:
    """Shape and options of a GPT-2-style model."""

    vocab_size: int = 50257
    """Number of token ids (GPT-2's byte-level BPE: 50257)."""
    max_seq_len: int = 1024
    """Longest sequence; the number of learned position vectors."""
    d_model: int = 768
    """Width of the residual stream."""
    n_layers: int = 12
    """Number of transformer blocks."""
    n_heads: int = 12
    """Attention heads per block; must divide ``d_model``."""
    d_ff: int | None = None
    """Hidden size of the MLP; ``None`` means ``4 * d_model``."""
    layer_norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    bias: bool = True
    """Biases in linear layers and LayerNorms (GPT-2: yes)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    norm_position: NormPosition = "pre"
    """``"pre"`` (GPT-2) or ``"post"`` (original Transformer; no final LayerNorm)."""
    tie_embeddings: bool = True
    """Share the token embedding matrix with the output head (GPT-2: yes)."""
    attn_impl: AttentionImpl = "sdpa"
    """``"sdpa"`` (fused kernel), ``"math"`` (written out), ``"flash"`` (our flash-attention
    algorithm in PyTorch) or ``"triton"`` (our flash-attention Triton kernels)."""
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)
    """Attention heads removed, ``{layer: [heads]}`` in original indices (as ``transformers``'
    ``pruned_heads``); written by :func:`groundwork.compress.prune.prune_heads`, so a pruned
    model saves and loads with its smaller layers."""

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        check_positive(self, "vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_ff")
        check_divides(self, "d_model", "n_heads")
        check_choice(self, "norm_position", ["pre", "post"])
        check_choice(self, "attn_impl", ["math", "sdpa", "flash", "triton"])
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        check_pruned_heads(self)

    @property
    def d_head(self) -> int:
        """Size of one attention head."""
        return self.d_model // self.n_heads

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads: GPT-2 uses plain multi-head attention."""
        return self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "GPTConfig":
        """A named preset (``"gpt2-124m"``, ..., ``"tiny"``), optionally with fields overridden."""
        return cls(**{**preset(GPT_PRESETS, name, "GPT"), **overrides})


GPT_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": dict(d_model=768, n_layers=12, n_heads=12),
    "gpt2-355m": dict(d_model=1024, n_layers=24, n_heads=16),
    "gpt2-774m": dict(d_model=1280, n_layers=36, n_heads=20),
    "gpt2-1558m": dict(d_model=1600, n_layers=48, n_heads=25),
    "tiny": dict(vocab_size=512, max_seq_len=128, d_model=64, n_layers=2, n_heads=4),
}
"""Named configs: the four GPT-2 sizes (Radford et al. 2019, Table 2) and a CPU-sized one."""


# --8<-- [start:gpt]
class GPT(DecoderLM):
    """GPT-2: token + position embeddings, ``n_layers`` blocks, final LayerNorm, output head.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        assert c.d_ff is not None
        self.wte = nn.Embedding(c.vocab_size, c.d_model)  # token embeddings
        self.wpe = LearnedPositionalEmbedding(c.max_seq_len, c.d_model)  # position embeddings
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                Attention(
                    c.d_model,
                    *layer_heads(c, i),  # n_heads, n_kv_heads (fewer where heads were pruned)
                    c.d_head,
                    bias=c.bias,
                    fused_qkv=True,
                    impl=c.attn_impl,
                    dropout=c.dropout,
                    layer_idx=i,
                ),
                self.build_mlp(c, i),
                LayerNorm(c.d_model, eps=c.layer_norm_eps, bias=c.bias),
                LayerNorm(c.d_model, eps=c.layer_norm_eps, bias=c.bias),
                norm_position=c.norm_position,
            )
            for i in range(c.n_layers)
        )
        # Pre-LN leaves the residual stream unnormalised: one last LayerNorm before the head.
        self.ln_f: nn.Module = (
            LayerNorm(c.d_model, eps=c.layer_norm_eps, bias=c.bias)
            if c.norm_position == "pre"
            else nn.Identity()
        )
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        # GPT-2's init; the projections that write into the residual stream are scaled down so
        # its variance does not grow with depth.
        init_weights(self, c.n_layers)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix reads tokens in and writes them out

    def build_mlp(self, config: GPTConfig, layer_idx: int) -> nn.Module:
        """Block ``layer_idx``'s MLP: GELU (a subclass may put a mixture of experts there)."""
        assert config.d_ff is not None
        return GELUMLP(config.d_model, config.d_ff, bias=config.bias, dropout=config.dropout)

    def forward(
        self,
        idx: torch.Tensor | None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            idx: Token ids ``(B, T)``; ``None`` when ``inputs_embeds`` is given.
            attention_mask: ``(B, T_k)`` with 1 for tokens and 0 for padding, ``T_k`` counting
                cached positions too; ``None`` means no padding.
            position_ids: ``(B, T)`` or ``(1, T)``; default ``start .. start + T - 1``.
            kv_cache: Cache to read and extend; its ``seq_len`` is where ``idx`` starts.
            inputs_embeds: ``(B, T, d_model)`` vectors used instead of the token embeddings of
                ``idx`` (as ``transformers``' ``inputs_embeds``; prompt tuning puts trained
                vectors in front of the tokens' own); the position embeddings are still added.

        Returns:
            Logits ``(B, T, vocab_size)``.
        """
        x = self.hidden_states(
            idx,
            attention_mask=attention_mask,
            position_ids=position_ids,
            kv_cache=kv_cache,
            inputs_embeds=inputs_embeds,
        )
        return self.lm_head(x)  # (B, T, vocab_size)

    def hidden_states(
        self,
        idx: torch.Tensor | None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states ``(B, T, d_model)`` the output head reads (after ``ln_f``);
        the arguments are :meth:`forward`'s."""
        tokens = token_inputs(self.wte, idx, inputs_embeds)  # (B, T, d_model)
        T = tokens.shape[1]
        start = kv_cache.seq_len if kv_cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens > max_seq_len {self.config.max_seq_len}"
            )
        given = position_ids  # packed documents are read only from the caller's ids
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=tokens.device)[None]  # (1, T)
        x = self.drop(tokens + self.wpe(position_ids))  # (B, T, d_model)
        mask = build_attention_mask(
            attention_mask,
            T,
            start + T,
            documents=packed_documents_of(given, attention_mask, kv_cache, x.shape[0]),
            dtype=x.dtype,
            device=x.device,
        )
        for block in self.blocks:
            x = block(x, mask=mask, kv_cache=kv_cache, start_pos=start)  # (B, T, d_model)
        if kv_cache is not None:
            kv_cache.seq_len = start + T
        return self.ln_f(x)  # (B, T, d_model)

    # --8<-- [end:gpt]

    def embedding_weights(self) -> list[torch.Tensor]:
        """Token and learned position embeddings."""
        return [self.wte.weight, self.wpe.weight]


def parameter_counts(config: GPTConfig) -> dict[str, int]:
    """Parameters by component: embeddings, attention, mlp, norms, head (0 if tied), total.

    >>> parameter_counts(GPTConfig.from_name("gpt2-124m"))["total"]
    124439808
    """
    c = config
    assert c.d_ff is not None
    d, V, L = c.d_model, c.vocab_size, c.n_layers
    b = 1 if c.bias else 0
    embeddings = V * d + c.max_seq_len * d  # tokens + learned positions
    widths = [layer_heads(c, i)[0] * c.d_head for i in range(L)]  # d, less pruned heads
    attention = sum(d * 3 * q + b * 3 * q + q * d + b * d for q in widths)  # qkv + output
    mlp = L * (d * c.d_ff + b * c.d_ff + c.d_ff * d + b * d)  # up + down
    per_norm = d * (1 + b)
    norms = L * 2 * per_norm + (per_norm if c.norm_position == "pre" else 0)
    head = 0 if c.tie_embeddings else V * d
    total = embeddings + attention + mlp + norms + head
    return dict(
        embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, head=head, total=total
    )
