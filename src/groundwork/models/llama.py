"""Llama: a pre-norm decoder with RMSNorm, rotary positions, SwiGLU and grouped-query attention.

Read top to bottom: the config and its presets, the decoder block, then the model.

References:
    * Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models" and
      "Llama 2: Open Foundation and Fine-Tuned Chat Models".
    * Su et al. 2021, "RoFormer" (rotary position embedding, RoPE).
    * Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (RMSNorm).
    * Shazeer 2020, "GLU Variants Improve Transformer" (SwiGLU).
    * Ainslie et al. 2023, "GQA" (grouped-query attention).
    * Allal et al. 2025, "SmolLM2" (the ``smollm2-135m`` preset).

Parameter names are Hugging Face's ``LlamaForCausalLM`` names (``model.layers.0.self_attn.q_proj.
weight``), so checkpoints convert with the identity key map (:mod:`groundwork.models.llama_hf`).
The KV cache, parameter count and initialisation shared with GPT are in
:mod:`groundwork.models.decoder`. Chapter 5 of the docs.
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
    Attention,
    AttentionImpl,
    KVCache,
    RMSNorm,
    RopeScaling,
    RotaryEmbedding,
    SwiGLU,
    build_attention_mask,
)


@dataclass(kw_only=True)
class LlamaConfig:
    """Shape and options of a Llama-style model."""

    vocab_size: int = 32000
    """Number of token ids."""
    max_seq_len: int = 2048
    """Longest sequence the model is meant for (RoPE itself has no table to run out of)."""
    d_model: int = 4096
    """Width of the residual stream."""
    n_layers: int = 32
    """Number of decoder blocks."""
    n_heads: int = 32
    """Query heads per block."""
    n_kv_heads: int | None = None
    """Key/value heads (GQA); must divide ``n_heads``. ``None``: ``n_heads`` (plain MHA)."""
    d_head: int | None = None
    """Size of one head; ``None`` means ``d_model // n_heads``."""
    d_ff: int = 11008
    """Hidden size of the SwiGLU MLP."""
    rope_theta: float = 10000.0
    """RoPE base."""
    rope_scaling: RopeScaling | None = None
    """Optional RoPE frequency scaling (``linear`` or ``llama3``); a dict is converted."""
    rms_norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = False
    """Share the token embedding matrix with the output head (SmolLM2: yes; Llama 2: no)."""
    attn_impl: AttentionImpl = "sdpa"
    """``"sdpa"`` (fused kernel), ``"math"`` (written out), ``"flash"`` (our flash-attention
    algorithm in PyTorch) or ``"triton"`` (our flash-attention Triton kernels)."""
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)
    """Query heads removed, ``{layer: [heads]}`` in original indices (as ``transformers``'
    ``pruned_heads``); a key/value head goes with the last query head of its group. Written by
    :func:`groundwork.compress.prune.prune_heads`, so a pruned model saves and loads."""

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_head is None:
            check_positive(self, "n_heads")
            check_divides(self, "d_model", "n_heads")
            self.d_head = self.d_model // self.n_heads
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        fields = ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "n_kv_heads")
        check_positive(self, *fields, "d_head", "d_ff")
        check_divides(self, "n_heads", "n_kv_heads")
        if self.d_head % 2:
            raise ConfigError(f"d_head must be even for RoPE, got {self.d_head}")
        check_choice(self, "attn_impl", ["math", "sdpa", "flash", "triton"])
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta must be positive, got {self.rope_theta!r}")
        if self.rms_norm_eps <= 0:
            raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}")
        if self.rope_scaling is not None and self.rope_scaling.kind not in ("linear", "llama3"):
            raise ConfigError(
                f"rope_scaling.kind must be 'linear' or 'llama3', got {self.rope_scaling.kind!r}"
            )
        check_pruned_heads(self)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "LlamaConfig":
        """A named preset (``"smollm2-135m"``, ``"tiny"``), optionally with fields overridden."""
        return cls(**{**preset(LLAMA_PRESETS, name, "Llama"), **overrides})


LLAMA_PRESETS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M config.json
    "smollm2-135m": dict(
        vocab_size=49152,
        max_seq_len=8192,
        d_model=576,
        n_layers=30,
        n_heads=9,
        n_kv_heads=3,
        d_ff=1536,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_embeddings=True,
    ),
    "tiny": dict(
        vocab_size=512,
        max_seq_len=128,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=172,
        tie_embeddings=True,
    ),
}
"""Named configs: SmolLM2-135M (a small real Llama) and a CPU-sized one."""


# --8<-- [start:llama_block]
class LlamaBlock(nn.Module):
    """One decoder layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` (pre-norm, RMSNorm)."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        c = config
        self.input_layernorm = RMSNorm(c.d_model, eps=c.rms_norm_eps)
        self.self_attn = self.build_attention(c, layer_idx)
        self.post_attention_layernorm = RMSNorm(c.d_model, eps=c.rms_norm_eps)
        self.mlp = self.build_mlp(c)

    def build_attention(self, config: LlamaConfig, layer_idx: int) -> Attention:
        """The attention sublayer: grouped-query attention (OLMoE's adds query/key norms)."""
        c = config
        return Attention(
            c.d_model, *layer_heads(c, layer_idx), c.d_head, impl=c.attn_impl, layer_idx=layer_idx
        )

    def build_mlp(self, config: LlamaConfig) -> nn.Module:
        """The feed-forward sublayer: SwiGLU (a mixture of experts in Mixtral's block)."""
        return SwiGLU(config.d_model, config.d_ff)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        kv_cache: KVCache | None,
        start_pos: int,
    ) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        x = x + self.self_attn(
            self.input_layernorm(x), mask=mask, rope=rope, kv_cache=kv_cache, start_pos=start_pos
        )
        return x + self.mlp(self.post_attention_layernorm(x))


# --8<-- [end:llama_block]


# --8<-- [start:llama]
class LlamaModel(nn.Module):
    """The decoder stack: token embeddings, ``n_layers`` blocks with RoPE, final RMSNorm."""

    block_cls: type[LlamaBlock] = LlamaBlock
    """The layer class (Mixtral's stack uses its MoE block)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c = config
        assert c.d_head is not None
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(self.block_cls(c, i) for i in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, eps=c.rms_norm_eps)
        self.rotary = RotaryEmbedding(c.d_head, theta=c.rope_theta, scaling=c.rope_scaling)

    def forward(
        self,
        idx: torch.Tensor | None,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        kv_cache: KVCache | None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states ``(B, T, d_model)``; arguments as in :meth:`Llama.forward`."""
        x = token_inputs(self.embed_tokens, idx, inputs_embeds)  # (B, T, d_model)
        T = x.shape[1]
        start = kv_cache.seq_len if kv_cache is not None else 0
        given = position_ids  # packed documents are read only from the caller's ids
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=x.device).unsqueeze(0)  # (1, T)
        rope = self.rotary(position_ids, dtype=x.dtype)  # cos, sin: (1 or B, T, d_head)
        mask = build_attention_mask(
            attention_mask,
            T,
            start + T,
            documents=packed_documents_of(given, attention_mask, kv_cache, x.shape[0]),
            dtype=x.dtype,
            device=x.device,
        )
        for layer in self.layers:
            x = layer(x, rope=rope, mask=mask, kv_cache=kv_cache, start_pos=start)  # (B, T, d)
        if kv_cache is not None:
            kv_cache.seq_len = start + T
        return self.norm(x)


class Llama(DecoderLM):
    """Llama: the decoder stack (:class:`LlamaModel`) and an output head.

    Args:
        config: The model's shape and options.
    """

    model_cls: type[LlamaModel] = LlamaModel
    """The decoder stack's class (Mixtral's has MoE blocks)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.model = self.model_cls(c)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_weights(self, c.n_layers)  # GPT-2's, with the scaled residual projections
        if c.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

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
                vectors in front of the tokens' own).

        Returns:
            Logits ``(B, T, vocab_size)``.
        """
        x = self.model(
            idx,
            attention_mask=attention_mask,
            position_ids=position_ids,
            kv_cache=kv_cache,
            inputs_embeds=inputs_embeds,
        )
        return self.lm_head(x)  # (B, T, vocab_size)

    # --8<-- [end:llama]

    def embedding_weights(self) -> list[torch.Tensor]:
        """The token embeddings (RoPE has no learned positions)."""
        return [self.model.embed_tokens.weight]


def parameter_counts(config: LlamaConfig) -> dict[str, int]:
    """Parameters by component: embeddings, attention, mlp, norms, head (0 if tied), total.

    >>> parameter_counts(LlamaConfig.from_name("smollm2-135m"))["total"]
    134515008
    """
    c = config
    assert c.d_head is not None and c.n_kv_heads is not None
    d, V, L = c.d_model, c.vocab_size, c.n_layers
    heads = [layer_heads(c, i) for i in range(L)]  # fewer where heads were pruned
    attention = sum(2 * d * c.d_head * (h + g) for h, g in heads)  # q, k, v, o
    embeddings = V * d
    mlp = L * 3 * d * c.d_ff  # gate, up, down
    norms = L * 2 * d + d  # two per block, one final
    head = 0 if c.tie_embeddings else V * d
    total = embeddings + attention + mlp + norms + head
    return dict(
        embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, head=head, total=total
    )
