"""ViT's Hugging Face twins, ``ViTModel`` and ``ViTForImageClassification``: config fields, key
map, and which ``transformers`` class each of our classes is.

=============================  ===============================================================
``transformers``               ours
=============================  ===============================================================
``ViTModel``                   :class:`~groundwork.models.vit.ViT` (keys without a prefix,
                               the pooler included)
``ViTForImageClassification``  :class:`~groundwork.models.vit.ViTForImageClassification`
                               (``vit.`` without the pooler, and ``classifier.*``)
=============================  ===============================================================

Our classifier holds the encoder as ``vit``, as Hugging Face's does, so one key map
(:func:`vit_key_map`) covers both. The shapes are Hugging Face's (``[CLS]`` ``(1, 1, d)``, the
positions ``(1, 1 + N, d)``, the patch projection a ``Conv2d``): the map only renames, nothing is
transposed. The number of classes is the length of ``id2label`` (``num_labels``).

Two namings of the same weights. ``transformers`` 5 renamed ViT's modules
(``layers.{i}.attention.q_proj``, ``layers.{i}.mlp.fc1``, ...); the checkpoints on the Hub, and
what ``save_pretrained`` still writes, keep the older names (``encoder.layer.{i}.attention.
attention.query``, ``encoder.layer.{i}.intermediate.dense``, ...), which ``from_pretrained``
renames on the way in. The key map gives the names of the modules in memory, those
:func:`~groundwork.interop.hf.from_hf` and :func:`~groundwork.interop.hf.to_hf` see (and
``from_pretrained`` loads as they are); :func:`rename_checkpoint_keys` turns a checkpoint's older
names into them.

Reference: Dosovitskiy et al. 2021; ``transformers/models/vit/modeling_vit.py``. Chapter 20.
"""

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from groundwork.errors import CheckpointError
from groundwork.models.hf_adapter import HFAdapter
from groundwork.models.vit import ViT, ViTConfig, ViTForImageClassification

T = TypeVar("T")

_HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
"""Our ``hidden_act`` -> Hugging Face's (read back: ``gelu_new`` is the tanh GELU as well)."""


# --8<-- [start:vit_key_map]
def encoder_key_map(n_layers: int) -> dict[str, str]:
    """Our :class:`~groundwork.models.vit.ViT` parameter names -> Hugging Face ``ViTModel``
    names (``transformers`` 5, in memory).

    >>> encoder_key_map(1)["blocks.0.attn.q_proj.weight"]
    'layers.0.attention.q_proj.weight'
    """
    mapping = {
        "cls_token": "embeddings.cls_token",
        "pos_emb": "embeddings.position_embeddings",
        "patch_emb.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_emb.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
        "pooler.weight": "pooler.dense.weight",
        "pooler.bias": "pooler.dense.bias",
    }
    per_layer = {
        "ln_1": "layernorm_before",  # pre-LN: before the attention
        "attn.q_proj": "attention.q_proj",
        "attn.k_proj": "attention.k_proj",
        "attn.v_proj": "attention.v_proj",
        "attn.o_proj": "attention.o_proj",
        "ln_2": "layernorm_after",  # after the attention's residual sum, before the MLP
        "mlp.up_proj": "mlp.fc1",
        "mlp.down_proj": "mlp.fc2",
    }
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                mapping[f"blocks.{i}.{ours}.{p}"] = f"layers.{i}.{theirs}.{p}"
    return mapping


def vit_key_map(config: ViTConfig) -> dict[str, str]:
    """Our parameter names -> Hugging Face's, for both classes at once: the encoder's names
    (``ViTModel``), the same under ``vit.`` (the classifier), and the classifier.

    >>> vit_key_map(ViTConfig.from_name("tiny"))["vit.pos_emb"]
    'vit.embeddings.position_embeddings'
    """
    encoder = encoder_key_map(config.n_layers)
    prefixed = {f"vit.{ours}": f"vit.{theirs}" for ours, theirs in encoder.items()}
    head = {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}
    return {**encoder, **prefixed, **head}


# --8<-- [end:vit_key_map]

CHECKPOINT_LAYER_NAMES = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
"""A block's module names in checkpoints (``transformers`` 4, the Hub, ``save_pretrained``) ->
in ``transformers`` 5's modules; the LayerNorms kept their names."""

_CHECKPOINT_LAYER = re.compile(r"^((?:vit\.)?)encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def rename_checkpoint_keys(state: Mapping[str, T]) -> dict[str, T]:
    """A ViT checkpoint's state dict with the older names of the blocks' weights
    (``encoder.layer.{i}.attention.attention.query.weight``) renamed to those the key map uses
    (``layers.{i}.attention.q_proj.weight``); other keys unchanged.

    >>> list(rename_checkpoint_keys({"vit.encoder.layer.3.output.dense.bias": 0}))
    ['vit.layers.3.mlp.fc2.bias']
    """
    renamed = {}
    for key, value in state.items():
        match = _CHECKPOINT_LAYER.match(key)
        if match:
            prefix, i, module, param = match.groups()
            key = f"{prefix}layers.{i}.{CHECKPOINT_LAYER_NAMES.get(module, module)}.{param}"
        renamed[key] = value
    return renamed


_MODULE_LAYER = re.compile(r"^((?:vit\.)?)layers\.(\d+)\.(.+)\.(weight|bias)$")
_MODULE_TO_CHECKPOINT = {v: k for k, v in CHECKPOINT_LAYER_NAMES.items()}


def to_checkpoint_keys(state: Mapping[str, T]) -> dict[str, T]:
    """The inverse of :func:`rename_checkpoint_keys`: the modules' names of the blocks'
    weights (``layers.{i}.attention.q_proj.weight``) renamed to the checkpoints' older ones
    (``encoder.layer.{i}.attention.attention.query.weight``), which every ``transformers``
    version loads; other keys unchanged.

    >>> list(to_checkpoint_keys({"vit.layers.3.mlp.fc2.bias": 0}))
    ['vit.encoder.layer.3.output.dense.bias']
    """
    renamed = {}
    for key, value in state.items():
        match = _MODULE_LAYER.match(key)
        if match:
            prefix, i, module, param = match.groups()
            key = f"{prefix}encoder.layer.{i}.{_MODULE_TO_CHECKPOINT.get(module, module)}.{param}"
        renamed[key] = value
    return renamed


def to_hf_config(config: ViTConfig) -> dict[str, Any]:
    """The ``transformers.ViTConfig`` fields describing ``config``."""
    return dict(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.n_channels,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.d_ff,
        hidden_act=_HIDDEN_ACT[config.hidden_act],
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        qkv_bias=True,
        pooler_output_size=config.d_model,
        pooler_act="tanh",
        id2label={i: f"LABEL_{i}" for i in range(config.n_classes)},
        label2id={f"LABEL_{i}": i for i in range(config.n_classes)},
    )


def _square(d: Mapping[str, Any], field: str) -> int:
    """``image_size`` or ``patch_size``: an int, or a pair of equal sides."""
    value = d[field]
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"ViT {field}={list(value)} is not supported (square only)")
        value = value[0]
    return int(value)


def from_hf_config(d: Mapping[str, Any]) -> ViTConfig:
    """Our config from a ``transformers.ViTConfig``'s fields (``encoder_stride``, used only by
    the masked-image-modelling head, is ignored).

    Raises:
        CheckpointError: An option our ViT does not implement (query/key/value without biases,
            another activation, a pooler of another size or activation, non-square images or
            patches, a head size other than ``hidden_size / num_attention_heads``, no classes).
    """
    if not d.get("qkv_bias", True):
        raise CheckpointError("ViT option qkv_bias=False is not supported (biases everywhere)")
    act = d.get("hidden_act", "gelu")
    acts = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
    if act not in acts:
        raise CheckpointError(f"ViT hidden_act {act!r} is not supported (gelu, gelu_new)")
    d_model = d["hidden_size"]
    pooler_size = d.get("pooler_output_size")
    if pooler_size not in (None, d_model):
        raise CheckpointError(
            f"ViT pooler_output_size {pooler_size} is not supported (only hidden_size, {d_model})"
        )
    if d.get("pooler_act", "tanh") != "tanh":
        raise CheckpointError(f"ViT pooler_act {d['pooler_act']!r} is not supported (tanh)")
    head_dim = d.get("head_dim")
    if head_dim is not None and head_dim * d["num_attention_heads"] != d_model:
        raise CheckpointError(f"ViT head_dim {head_dim} is not supported (hidden_size / heads)")
    id2label = d.get("id2label")  # num_labels is not in config.json: id2label's length is
    n_classes = len(id2label) if id2label is not None else d.get("num_labels", 2)
    if n_classes < 1:
        raise CheckpointError("ViT with num_labels=0 (no classifier) is not supported")
    return ViTConfig(
        image_size=_square(d, "image_size"),
        patch_size=_square(d, "patch_size"),
        n_channels=d.get("num_channels", 3),
        d_model=d_model,
        n_layers=d["num_hidden_layers"],
        n_heads=d["num_attention_heads"],
        d_ff=d["intermediate_size"],
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        dropout=d.get("hidden_dropout_prob", 0.0),
        hidden_act=acts[act],  # type: ignore[arg-type]
        n_classes=n_classes,
    )


VIT_ADAPTER = HFAdapter(
    model_types=("vit",),
    architectures="ViTForImageClassification",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=vit_key_map,
    # The encoder's pooler, which a classifier checkpoint may carry and does not use
    # (transformers' ViTForImageClassification has none either).
    ignored_suffixes=("vit.pooler.dense.weight", "vit.pooler.dense.bias"),
    hf_classes={"ViTModel": ViT, "ViTForImageClassification": ViTForImageClassification},
    to_checkpoint=to_checkpoint_keys,
    from_checkpoint=rename_checkpoint_keys,
)
"""The ViT adapter (registered on the ``vit`` architecture)."""
