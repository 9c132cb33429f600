"""GPT's Hugging Face twin, ``GPT2LMHeadModel``: config fields, key map and transposed weights.

Two differences from our :class:`~groundwork.models.gpt.GPT`:

* the names (:func:`gpt2_key_map`): ``blocks.0.attn.qkv_proj`` is ``transformer.h.0.attn.c_attn``;
* the layout: Hugging Face builds GPT-2's linear layers as ``Conv1D`` modules, whose weight is the
  transpose of ``nn.Linear``'s (``(in, out)`` instead of ``(out, in)``); those weights are
  transposed on the way in and out (:func:`is_conv1d_weight`).

Only the configs GPT-2 can express have a twin: pre-LN, with biases, tied embeddings, and the tanh
approximation of GELU. The converters themselves are generic (:mod:`groundwork.interop.hf`).

Reference: Radford et al. 2019 (GPT-2); ``transformers/models/gpt2/modeling_gpt2.py``.
Chapter 6 of the docs.
"""

from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError, ConfigError
from groundwork.models.config import check_not_pruned
from groundwork.models.gpt import GPTConfig
from groundwork.models.hf_adapter import HFAdapter


# --8<-- [start:gpt2_key_map]
def gpt2_key_map(n_layers: int) -> dict[str, str]:
    """Our GPT parameter names -> Hugging Face ``GPT2LMHeadModel`` names.

    >>> gpt2_key_map(1)["blocks.0.attn.qkv_proj.weight"]
    'transformer.h.0.attn.c_attn.weight'
    """
    mapping = {
        "wte.weight": "transformer.wte.weight",
        "wpe.weight": "transformer.wpe.weight",
        "ln_f.weight": "transformer.ln_f.weight",
        "ln_f.bias": "transformer.ln_f.bias",
        "lm_head.weight": "lm_head.weight",
    }
    per_layer = {
        "ln_1": "ln_1",
        "attn.qkv_proj": "attn.c_attn",
        "attn.o_proj": "attn.c_proj",
        "ln_2": "ln_2",
        "mlp.up_proj": "mlp.c_fc",
        "mlp.down_proj": "mlp.c_proj",
    }
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                mapping[f"blocks.{i}.{ours}.{p}"] = f"transformer.h.{i}.{theirs}.{p}"
    return mapping


def is_conv1d_weight(hf_key: str) -> bool:
    """GPT-2's ``Conv1D`` weights, stored ``(in, out)``: every linear weight except ``lm_head``."""
    return hf_key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))


# --8<-- [end:gpt2_key_map]


def to_hf_config(config: GPTConfig) -> dict[str, Any]:
    """The ``GPT2Config`` fields describing ``config``.

    Raises:
        ConfigError: The config has no GPT-2 twin (post-LN, no biases, or untied embeddings).
    """
    check_not_pruned(config, "Hugging Face's GPT2Config")
    if config.norm_position != "pre":
        raise ConfigError("norm_position must be 'pre' to export to Hugging Face GPT-2")
    if not config.bias:
        raise ConfigError("bias must be True to export to Hugging Face GPT-2")
    if not config.tie_embeddings:
        raise ConfigError("tie_embeddings must be True to export to Hugging Face GPT-2")
    return dict(
        vocab_size=config.vocab_size,
        n_positions=config.max_seq_len,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.d_ff,
        activation_function="gelu_new",
        layer_norm_epsilon=config.layer_norm_eps,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        tie_word_embeddings=True,
    )


def from_hf_config(d: Mapping[str, Any]) -> GPTConfig:
    """Our config from a ``GPT2Config``'s fields.

    Raises:
        CheckpointError: An option our GPT does not implement (another activation, scaled or
            upcast attention, untied embeddings).
    """
    act = d.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"GPT-2 activation_function {act!r} is not supported")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if d.get(flag):
            raise CheckpointError(f"GPT-2 option {flag}=True is not supported")
    if d.get("tie_word_embeddings", True) is False:
        raise CheckpointError("GPT-2 with untied embeddings is not supported")
    return GPTConfig(
        vocab_size=d["vocab_size"],
        max_seq_len=d["n_positions"],
        d_model=d["n_embd"],
        n_layers=d["n_layer"],
        n_heads=d["n_head"],
        d_ff=d.get("n_inner"),
        layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
        dropout=d.get("resid_pdrop", 0.0),
    )


def key_map(config: GPTConfig) -> dict[str, str]:
    """Our state-dict keys -> Hugging Face keys for a model of ``config``."""
    return gpt2_key_map(config.n_layers)


GPT2_ADAPTER = HFAdapter(
    model_types=("gpt2",),
    architectures="GPT2LMHeadModel",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=key_map,
    transposed=is_conv1d_weight,
    # The causal-mask buffers older checkpoints carry.
    ignored_suffixes=(".attn.bias", ".attn.masked_bias"),
    base_prefix="transformer.",
)
"""The GPT-2 adapter (registered on the ``gpt`` architecture)."""
