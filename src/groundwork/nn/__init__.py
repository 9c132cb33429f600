"""Building blocks of transformers: attention, positions, norms, MLPs, the block, the KV cache.

Imports only torch. Chapter 5 of the docs walks through every module; chapter 16 the
mixture-of-experts layer (:mod:`groundwork.nn.moe`).
"""

from groundwork.nn.attention import (
    Attention,
    AttentionImpl,
    build_attention_mask,
    causal_mask,
    document_mask,
    math_attention,
    packed_documents,
    padding_mask,
    repeat_kv,
    sdpa_attention,
    to_additive,
)
from groundwork.nn.block import NormPosition, TransformerBlock
from groundwork.nn.kv_cache import KVCache, StaticKVCache
from groundwork.nn.mlp import GELUMLP, SwiGLU, gelu_tanh
from groundwork.nn.moe import (
    MoE,
    MoEConfig,
    MoEExperts,
    RouterOutput,
    load_balancing_loss,
    moe_reference,
    router_aux_loss,
    router_z_loss,
)
from groundwork.nn.norms import LayerNorm, RMSNorm, layer_norm
from groundwork.nn.patches import PatchEmbedding, interpolate_positions, patchify
from groundwork.nn.positions import (
    LearnedPositionalEmbedding,
    RopeScaling,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_inv_freq,
    rotate_half,
    sinusoidal_table,
)

__all__ = [
    "GELUMLP",
    "Attention",
    "AttentionImpl",
    "KVCache",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "MoE",
    "MoEConfig",
    "MoEExperts",
    "NormPosition",
    "PatchEmbedding",
    "RMSNorm",
    "RopeScaling",
    "RotaryEmbedding",
    "RouterOutput",
    "SinusoidalPositionalEmbedding",
    "StaticKVCache",
    "SwiGLU",
    "TransformerBlock",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "build_attention_mask",
    "causal_mask",
    "document_mask",
    "gelu_tanh",
    "interpolate_positions",
    "layer_norm",
    "load_balancing_loss",
    "math_attention",
    "moe_reference",
    "packed_documents",
    "padding_mask",
    "patchify",
    "repeat_kv",
    "rope_inv_freq",
    "rotate_half",
    "router_aux_loss",
    "router_z_loss",
    "sdpa_attention",
    "sinusoidal_table",
    "to_additive",
]

from groundwork.nn.nf4 import NF4Linear, NF4Quantized, dequantize_nf4, quantize_nf4

__all__ += ["NF4Linear", "NF4Quantized", "dequantize_nf4", "quantize_nf4"]
