"""Llama's Hugging Face twin, ``LlamaForCausalLM``: config fields and (identity) key map.

Our :class:`~groundwork.models.llama.Llama` uses Hugging Face's parameter names and layouts, so
the key map is the identity (:func:`llama_key_map` lists the keys) and nothing is transposed; only
the config fields have other names (``hidden_size`` is ``d_model``, ``num_key_value_heads`` is
``n_kv_heads``, ``rope_scaling`` becomes a :class:`~groundwork.nn.RopeScaling`).

SmolLM2 and other Llama-architecture checkpoints (``model_type`` ``"llama"``) read through it; so
does a GGUF file once :mod:`groundwork.interop.gguf` has turned it into Hugging Face form.

Reference: ``transformers/models/llama/configuration_llama.py``. Chapter 6 of the docs.
"""

from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError
from groundwork.models.config import check_not_pruned
from groundwork.models.hf_adapter import HFAdapter
from groundwork.models.llama import LlamaConfig
from groundwork.nn import RopeScaling

_BLOCK_KEYS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def llama_key_map(config: LlamaConfig) -> dict[str, str]:
    """Our Llama parameter names -> Hugging Face ``LlamaForCausalLM`` names: the same.

    >>> llama_key_map(LlamaConfig.from_name("tiny"))["model.layers.1.mlp.up_proj.weight"]
    'model.layers.1.mlp.up_proj.weight'
    """
    keys = ["model.embed_tokens.weight"]
    keys += [f"model.layers.{i}.{k}" for i in range(config.n_layers) for k in _BLOCK_KEYS]
    keys += ["model.norm.weight", "lm_head.weight"]
    return {key: key for key in keys}


def to_hf_config(config: LlamaConfig) -> dict[str, Any]:
    """The ``transformers.LlamaConfig`` fields describing ``config``."""
    scaling = config.rope_scaling
    check_not_pruned(config, "Hugging Face's LlamaConfig")
    rope_scaling = None
    if scaling is not None:
        rope_scaling = {"rope_type": scaling.kind, "factor": scaling.factor}
        if scaling.kind == "llama3":
            rope_scaling.update(
                low_freq_factor=scaling.low_freq_factor,
                high_freq_factor=scaling.high_freq_factor,
                original_max_position_embeddings=scaling.original_max_seq_len,
            )
    return dict(
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_seq_len,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        head_dim=config.d_head,
        intermediate_size=config.d_ff,
        hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=config.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )


def _rope_scaling(d: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """RoPE's base and scaling from ``rope_theta`` / ``rope_scaling`` (or transformers 5's
    ``rope_parameters``)."""
    rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling(kind="linear", factor=rope["factor"])
    if kind == "llama3":
        return theta, RopeScaling(
            kind="llama3",
            factor=rope["factor"],
            low_freq_factor=rope["low_freq_factor"],
            high_freq_factor=rope["high_freq_factor"],
            original_max_seq_len=rope["original_max_position_embeddings"],
        )
    raise CheckpointError(f"RoPE type {kind!r} is not supported (default, linear, llama3)")


def from_hf_config(d: Mapping[str, Any]) -> LlamaConfig:
    """Our config from a ``transformers.LlamaConfig``'s fields.

    Raises:
        CheckpointError: An option our Llama does not implement (biases, another activation,
            another RoPE scaling).
    """
    if d.get("attention_bias") or d.get("mlp_bias"):
        raise CheckpointError("Llama with attention_bias or mlp_bias is not supported")
    if d.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"Llama hidden_act {d['hidden_act']!r} is not supported")
    theta, scaling = _rope_scaling(d)
    return LlamaConfig(
        vocab_size=d["vocab_size"],
        max_seq_len=d["max_position_embeddings"],
        d_model=d["hidden_size"],
        n_layers=d["num_hidden_layers"],
        n_heads=d["num_attention_heads"],
        n_kv_heads=d.get("num_key_value_heads"),
        d_head=d.get("head_dim"),
        d_ff=d["intermediate_size"],
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        tie_embeddings=d.get("tie_word_embeddings", False),
    )


LLAMA_ADAPTER = HFAdapter(
    model_types=("llama",),
    architectures="LlamaForCausalLM",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=llama_key_map,
    ignored_suffixes=("rotary_emb.inv_freq",),  # RoPE frequencies: computed, not learned
)
"""The Llama adapter (registered on the ``llama`` architecture)."""
