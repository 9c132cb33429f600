"""Mixtral's Hugging Face twin, ``MixtralForCausalLM``: config fields and key map.

Our :class:`~groundwork.models.mixtral.Mixtral` keeps Hugging Face's names and layouts, fused
experts included (``mlp.experts.gate_up_proj`` ``(E, 2 d_ff, d_model)``, ``mlp.experts.
down_proj`` ``(E, d_model, d_ff)``), except the router: ours is ``mlp.router.weight``, theirs
``mlp.gate.weight`` (both ``(E, d_model)``). So the key map renames one key per layer and nothing
is transposed. The config fields are Llama's (:mod:`groundwork.models.llama_hf`) and
``num_local_experts`` (``n_experts``), ``num_experts_per_tok`` (``top_k``) and
``router_aux_loss_coef``.

A checkpoint whose expert count differs from the model's fails to load with a
:class:`~groundwork.errors.CheckpointError` naming the router's ``(E, d_model)`` shapes.

Reference: ``transformers/models/mixtral/configuration_mixtral.py``.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError
from groundwork.models.hf_adapter import HFAdapter
from groundwork.models.llama_hf import from_hf_config as llama_from_hf_config
from groundwork.models.llama_hf import to_hf_config as llama_to_hf_config
from groundwork.models.mixtral import MixtralConfig

_BLOCK_KEYS = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attn.q_proj.weight": "self_attn.q_proj.weight",
    "self_attn.k_proj.weight": "self_attn.k_proj.weight",
    "self_attn.v_proj.weight": "self_attn.v_proj.weight",
    "self_attn.o_proj.weight": "self_attn.o_proj.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.router.weight": "mlp.gate.weight",
    "mlp.experts.gate_up_proj": "mlp.experts.gate_up_proj",
    "mlp.experts.down_proj": "mlp.experts.down_proj",
}


def mixtral_key_map(config: MixtralConfig) -> dict[str, str]:
    """Our Mixtral parameter names -> Hugging Face ``MixtralForCausalLM`` names.

    >>> mixtral_key_map(MixtralConfig.from_name("tiny"))["model.layers.1.mlp.router.weight"]
    'model.layers.1.mlp.gate.weight'
    """
    mapping = {"model.embed_tokens.weight": "model.embed_tokens.weight"}
    for i in range(config.n_layers):
        for ours, theirs in _BLOCK_KEYS.items():
            mapping[f"model.layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    mapping.update({"model.norm.weight": "model.norm.weight", "lm_head.weight": "lm_head.weight"})
    return mapping


def to_hf_config(config: MixtralConfig) -> dict[str, Any]:
    """The ``transformers.MixtralConfig`` fields describing ``config``."""
    d = llama_to_hf_config(config)
    for key in ("attention_bias", "mlp_bias"):  # Llama-only fields
        d.pop(key)
    d.update(
        num_local_experts=config.n_experts,
        num_experts_per_tok=config.top_k,
        router_aux_loss_coef=config.router_aux_loss_coef,
        router_jitter_noise=0.0,
        sliding_window=None,
    )
    return d


def from_hf_config(d: Mapping[str, Any]) -> MixtralConfig:
    """Our config from a ``transformers.MixtralConfig``'s fields.

    Raises:
        CheckpointError: An option our Mixtral does not implement (another activation or RoPE
            scaling, a sliding window shorter than the context, router jitter).
        ConfigError: ``num_experts_per_tok > num_local_experts``.
    """
    window = d.get("sliding_window")
    if window is not None and window < d["max_position_embeddings"]:
        raise CheckpointError(f"Mixtral with sliding_window={window} is not supported")
    if d.get("router_jitter_noise", 0.0):
        raise CheckpointError("Mixtral with router_jitter_noise > 0 is not supported")
    llama = llama_from_hf_config(d)
    fields = {f.name: getattr(llama, f.name) for f in dataclasses.fields(llama)}
    return MixtralConfig(
        **fields,
        n_experts=d.get("num_local_experts", d.get("num_experts", 8)),
        top_k=d.get("num_experts_per_tok", 2),
        router_aux_loss_coef=d.get("router_aux_loss_coef", 0.001),
    )


MIXTRAL_ADAPTER = HFAdapter(
    model_types=("mixtral",),
    architectures="MixtralForCausalLM",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=mixtral_key_map,
    ignored_suffixes=("rotary_emb.inv_freq",),  # RoPE frequencies: computed, not learned
)
"""The Mixtral adapter (registered on the ``mixtral`` architecture)."""
