"""OLMoE's Hugging Face twin, ``OlmoeForCausalLM``: config fields and key map.

The names are Mixtral's (:mod:`groundwork.models.mixtral_hf`: the router renamed, nothing
transposed) plus each layer's ``self_attn.q_norm.weight`` and ``self_attn.k_norm.weight``. The
config fields are Llama's and ``num_experts`` (``n_experts``), ``num_experts_per_tok``
(``top_k``), ``norm_topk_prob`` and ``router_aux_loss_coef``. ``transformers`` sizes the key
norm as ``hidden_size // num_attention_heads`` per key head, so a ``head_dim`` other than that
is refused, as is ``clip_qkv`` (clamping queries, keys and values, which OLMoE-1B-7B does not
use).

Reference: ``transformers/models/olmoe/configuration_olmoe.py``.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError
from groundwork.models.hf_adapter import HFAdapter
from groundwork.models.mixtral_hf import from_hf_config as mixtral_from_hf_config
from groundwork.models.mixtral_hf import mixtral_key_map
from groundwork.models.mixtral_hf import to_hf_config as mixtral_to_hf_config
from groundwork.models.olmoe import OlmoeConfig


def olmoe_key_map(config: OlmoeConfig) -> dict[str, str]:
    """Our OLMoE parameter names -> Hugging Face ``OlmoeForCausalLM`` names.

    >>> olmoe_key_map(OlmoeConfig.from_name("tiny"))["model.layers.0.self_attn.q_norm.weight"]
    'model.layers.0.self_attn.q_norm.weight'
    """
    mapping = mixtral_key_map(config)
    for i in range(config.n_layers):
        for norm in ("q_norm", "k_norm"):
            key = f"model.layers.{i}.self_attn.{norm}.weight"
            mapping[key] = key
    return mapping


def to_hf_config(config: OlmoeConfig) -> dict[str, Any]:
    """The ``transformers.OlmoeConfig`` fields describing ``config``."""
    d = mixtral_to_hf_config(config)
    for key in ("num_local_experts", "router_jitter_noise", "sliding_window", "head_dim"):
        d.pop(key)
    d.update(
        num_experts=config.n_experts,
        norm_topk_prob=config.norm_topk_prob,
        clip_qkv=None,
        attention_bias=False,
    )
    return d


def from_hf_config(d: Mapping[str, Any]) -> OlmoeConfig:
    """Our config from a ``transformers.OlmoeConfig``'s fields.

    Raises:
        CheckpointError: ``clip_qkv`` set, attention biases, or a ``head_dim`` other than
            ``hidden_size // num_attention_heads``.
    """
    if d.get("clip_qkv") is not None:
        raise CheckpointError(f"OLMoE with clip_qkv={d['clip_qkv']} is not supported")
    if d.get("attention_bias"):
        raise CheckpointError("OLMoE with attention biases is not supported")
    head_dim = d["hidden_size"] // d["num_attention_heads"]
    if d.get("head_dim") not in (None, head_dim):
        raise CheckpointError(
            f"OLMoE with head_dim {d['head_dim']} != hidden_size // num_attention_heads "
            f"({head_dim}) is not supported"
        )
    mixtral = mixtral_from_hf_config({**d, "sliding_window": None, "router_jitter_noise": 0.0})
    fields = {f.name: getattr(mixtral, f.name) for f in dataclasses.fields(mixtral)}
    return OlmoeConfig(
        **{**fields, "router_aux_loss_coef": d.get("router_aux_loss_coef", 0.01)},
        norm_topk_prob=bool(d.get("norm_topk_prob", False)),
    )


OLMOE_ADAPTER = HFAdapter(
    model_types=("olmoe",),
    architectures="OlmoeForCausalLM",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=olmoe_key_map,
    ignored_suffixes=("rotary_emb.inv_freq",),  # RoPE frequencies: computed, not learned
)
"""The OLMoE adapter (registered on the ``olmoe`` architecture)."""
