"""CLIP's Hugging Face twin, ``CLIPModel``: config fields, key map.

Hugging Face nests the config: a ``text_config`` and a ``vision_config`` (each a full
``CLIPTextConfig`` / ``CLIPVisionConfig``) under a top level holding ``projection_dim`` and
``logit_scale_init_value``. Ours is flat (one YAML section); :func:`to_hf_config` and
:func:`from_hf_config` fold and unfold it. The end-of-text id lives in ``text_config``
(``eos_token_id``): the text tower pools there. The top-level ``bos_token_id`` and
``eos_token_id`` that :func:`groundwork.interop.hf.hf_config_dict` may add are not read by
``CLIPModel`` (nor by :func:`from_hf_config`).

Checkpoints saved before ``transformers`` PR #24773 say ``eos_token_id: 2`` in ``text_config``,
which makes ``CLIPModel`` pool at the *largest token id* of each text instead of at the first
end-of-text token (the two agree for OpenAI's tokenizer, whose end-of-text id 49407 is the
largest). We implement only the second rule, and refuse the first (:class:`CheckpointError`,
saying how to fix the file).

Nothing is transposed; the names differ only (:func:`clip_key_map`). Reference:
``transformers/models/clip/modeling_clip.py``. Chapter 20 of the docs.
"""

from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError
from groundwork.models.clip import CLIP, CLIPConfig
from groundwork.models.hf_adapter import HFAdapter

LEGACY_EOS_ID = 2
"""``text_config.eos_token_id`` of checkpoints that pool at the largest token id."""


# --8<-- [start:clip_key_map]
def _tower_keys(ours: str, theirs: str, n_layers: int) -> dict[str, str]:
    """The blocks of one tower: ``vision.blocks.0.attn.q_proj.weight`` ->
    ``vision_model.encoder.layers.0.self_attn.q_proj.weight``."""
    per_layer = {
        "attn.q_proj": "self_attn.q_proj",
        "attn.k_proj": "self_attn.k_proj",
        "attn.v_proj": "self_attn.v_proj",
        "attn.o_proj": "self_attn.out_proj",
        "ln_1": "layer_norm1",
        "mlp.up_proj": "mlp.fc1",
        "mlp.down_proj": "mlp.fc2",
        "ln_2": "layer_norm2",
    }
    return {
        f"{ours}.blocks.{i}.{a}.{p}": f"{theirs}.encoder.layers.{i}.{b}.{p}"
        for i in range(n_layers)
        for a, b in per_layer.items()
        for p in ("weight", "bias")
    }


def clip_key_map(config: CLIPConfig) -> dict[str, str]:
    """Our :class:`~groundwork.models.clip.CLIP` parameter names -> Hugging Face ``CLIPModel``
    names.

    >>> clip_key_map(CLIPConfig.from_name("tiny"))["vision.pre_norm.weight"]
    'vision_model.pre_layrnorm.weight'
    """
    mapping = {
        "vision.class_emb": "vision_model.embeddings.class_embedding",
        "vision.patch_emb.proj.weight": "vision_model.embeddings.patch_embedding.weight",
        "vision.pos_emb.weight": "vision_model.embeddings.position_embedding.weight",
        "text.tok_emb.weight": "text_model.embeddings.token_embedding.weight",
        "text.pos_emb.weight": "text_model.embeddings.position_embedding.weight",
        "visual_projection.weight": "visual_projection.weight",
        "text_projection.weight": "text_projection.weight",
        "logit_scale": "logit_scale",
    }
    norms = {  # "pre_layrnorm" is spelt so in transformers
        "vision.pre_norm": "vision_model.pre_layrnorm",
        "vision.post_norm": "vision_model.post_layernorm",
        "text.final_norm": "text_model.final_layer_norm",
    }
    for ours, theirs in norms.items():
        for p in ("weight", "bias"):
            mapping[f"{ours}.{p}"] = f"{theirs}.{p}"
    mapping |= _tower_keys("vision", "vision_model", config.vision_n_layers)
    mapping |= _tower_keys("text", "text_model", config.text_n_layers)
    return mapping


# --8<-- [end:clip_key_map]


def to_hf_config(config: CLIPConfig) -> dict[str, Any]:
    """The ``transformers.CLIPConfig`` fields describing ``config`` (nested, as Hugging Face
    writes them)."""
    c = config
    shared = dict(
        hidden_act=c.hidden_act,
        layer_norm_eps=c.layer_norm_eps,
        attention_dropout=0.0,
        projection_dim=c.projection_dim,  # unused by CLIPModel, which reads the top level's
    )
    text_config = dict(
        vocab_size=c.vocab_size,
        max_position_embeddings=c.max_seq_len,
        hidden_size=c.text_d_model,
        num_hidden_layers=c.text_n_layers,
        num_attention_heads=c.text_n_heads,
        intermediate_size=c.text_d_ff,
        eos_token_id=c.eos_id,
        bos_token_id=None,  # ours has no beginning-of-text token (the tokenizer's business)
        pad_token_id=None,
        **shared,
    )
    vision_config = dict(
        image_size=c.image_size,
        patch_size=c.patch_size,
        num_channels=c.n_channels,
        hidden_size=c.vision_d_model,
        num_hidden_layers=c.vision_n_layers,
        num_attention_heads=c.vision_n_heads,
        intermediate_size=c.vision_d_ff,
        **shared,
    )
    return dict(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=c.projection_dim,
        logit_scale_init_value=c.logit_scale_init,
    )


_TEXT_DEFAULTS: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    eos_token_id=49407,
)
"""``transformers.CLIPTextConfig``'s defaults (a ``config.json`` may leave any field out)."""

_VISION_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
)
"""``transformers.CLIPVisionConfig``'s defaults."""


def _sub_config(d: Mapping[str, Any], name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """``text_config`` or ``vision_config`` over the defaults; old files also carry a
    ``text_config_dict`` / ``vision_config_dict``, which wins (as in ``transformers``)."""
    return {**defaults, **(d.get(name) or {}), **(d.get(f"{name}_dict") or {})}


def _square(value: Any, field: str) -> int:
    """An image or patch size given as one int or as equal ``[height, width]``."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"CLIP vision_config.{field} {value!r}: only squares supported")
        value = value[0]
    return int(value)


def from_hf_config(d: Mapping[str, Any]) -> CLIPConfig:
    """Our config from a ``transformers.CLIPConfig``'s fields (``config.json``).

    Raises:
        CheckpointError: An option our CLIP does not implement: the legacy pooling of
            ``text_config.eos_token_id == 2``, an activation other than quick GELU or GELU (or
            one per tower), LayerNorm epsilons that differ between the towers, attention dropout,
            non-square images or patches.
    """
    text = _sub_config(d, "text_config", _TEXT_DEFAULTS)
    vision = _sub_config(d, "vision_config", _VISION_DEFAULTS)
    eos = text["eos_token_id"]
    if eos == LEGACY_EOS_ID:
        raise CheckpointError(
            "CLIP text_config.eos_token_id is 2: this checkpoint predates transformers PR #24773 "
            "and pools at the largest token id of each text (legacy argmax pooling), which is not "
            "supported; set text_config.eos_token_id to the tokenizer's end-of-text id (49407 "
            "for OpenAI's tokenizer, where both rules pick the same token) in config.json"
        )
    if not isinstance(eos, int):
        raise CheckpointError(f"CLIP text_config.eos_token_id must be one token id, got {eos!r}")
    acts = {text["hidden_act"], vision["hidden_act"]}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise CheckpointError(
            f"CLIP hidden_act {text['hidden_act']!r} (text), {vision['hidden_act']!r} (vision) "
            "is not supported: both towers must use quick_gelu, or both gelu"
        )
    if text["layer_norm_eps"] != vision["layer_norm_eps"]:
        raise CheckpointError("CLIP towers with different layer_norm_eps are not supported")
    if text["attention_dropout"] or vision["attention_dropout"]:
        raise CheckpointError("CLIP attention_dropout is not supported (ours has none)")
    return CLIPConfig(
        image_size=_square(vision["image_size"], "image_size"),
        patch_size=_square(vision["patch_size"], "patch_size"),
        n_channels=vision["num_channels"],
        vision_d_model=vision["hidden_size"],
        vision_n_layers=vision["num_hidden_layers"],
        vision_n_heads=vision["num_attention_heads"],
        vision_d_ff=vision["intermediate_size"],
        vocab_size=text["vocab_size"],
        max_seq_len=text["max_position_embeddings"],
        text_d_model=text["hidden_size"],
        text_n_layers=text["num_hidden_layers"],
        text_n_heads=text["num_attention_heads"],
        text_d_ff=text["intermediate_size"],
        projection_dim=d.get("projection_dim", 512),
        layer_norm_eps=text["layer_norm_eps"],
        hidden_act=acts.pop(),
        logit_scale_init=float(d.get("logit_scale_init_value", 2.6592)),
        eos_id=eos,
    )


CLIP_ADAPTER = HFAdapter(
    model_types=("clip",),
    architectures="CLIPModel",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=clip_key_map,
    ignored_suffixes=("embeddings.position_ids",),  # the positions 0..n-1, a buffer
    hf_classes={"CLIPModel": CLIP},
)
"""The CLIP adapter (registered on the ``clip`` architecture)."""
