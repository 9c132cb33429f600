"""Hugging Face's task heads as ours: ``BertForSequenceClassification``,
``BertForTokenClassification``, ``GPT2ForSequenceClassification`` and
``LlamaForSequenceClassification`` become a :class:`~groundwork.adapt.heads.SequenceClassifier`
or :class:`~groundwork.adapt.heads.TokenClassifier` with the same weights and the same logits.

Each of those classes is a base model under a prefix plus one linear layer:

=================================  ================  ================  =========  =========
``transformers`` class             base model        classifier        pooling    our head
=================================  ================  ================  =========  =========
``BertForSequenceClassification``  ``bert.``         ``classifier``    ``cls``    sequence
``BertForTokenClassification``     ``bert.`` (no     ``classifier``    --         token
                                   pooler)
``GPT2ForSequenceClassification``  ``transformer.``  ``score`` (no     ``last``   sequence
                                                     bias)
``LlamaForSequenceClassification`` ``model.``        ``score`` (no     ``last``   sequence
                                                     bias)
=================================  ================  ================  =========  =========

The base model goes through the family's own adapter (:mod:`groundwork.interop.hf`'s
:func:`~groundwork.interop.hf.config_from_hf_dict` and
:func:`~groundwork.interop.hf.load_hf_state_dict`: key maps, GPT-2's transposed ``Conv1D``
weights); this module adds only the prefixes and the classifier. Our Llama backbone is built with
tied embeddings: its language-model head is not used by a classifier (nor saved by
``transformers``), and tying it costs no parameters. ``transformers`` finds the last token by
``pad_token_id``, ours by the attention mask (:mod:`groundwork.adapt.heads`): give ours the
attention mask for the same logits.

Reference: ``transformers/models/bert/modeling_bert.py``, ``gpt2/modeling_gpt2.py``,
``modeling_layers.py`` (``GenericForSequenceClassification``). Chapter 12 (Adaptation).
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from groundwork.adapt.heads import Pooling, SequenceClassifier, TokenClassifier
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import config_from_hf_dict, hf_adapter, load_hf_state_dict
from groundwork.models import registry
from groundwork.models.bert import Bert, BertConfig
from groundwork.models.llama import Llama

__all__ = ["HF_HEADS", "HFHead", "head_from_hf", "head_from_hf_state_dict", "hf_head_key_map"]

Head = SequenceClassifier | TokenClassifier


@dataclass(frozen=True)
class HFHead:
    """How one ``transformers`` head class is laid out."""

    prefix: str
    """The base model's prefix in the state dict (``"bert."``)."""
    keep_prefix: bool
    """Whether our backbone's key map includes the prefix (GPT-2's ``transformer.``, Llama's
    ``model.``) or maps the bare base-model names (BERT's ``BertModel`` names)."""
    classifier: str
    """The linear layer's name (``"classifier"``, ``"score"``)."""
    bias: bool
    """Whether the linear layer has a bias."""
    pooling: Pooling | None
    """Sequence heads: how the sequence is pooled; ``None``: a token head."""


HF_HEADS: dict[str, HFHead] = {
    "BertForSequenceClassification": HFHead(
        prefix="bert.", keep_prefix=False, classifier="classifier", bias=True, pooling="cls"
    ),
    "BertForTokenClassification": HFHead(
        prefix="bert.", keep_prefix=False, classifier="classifier", bias=True, pooling=None
    ),
    "GPT2ForSequenceClassification": HFHead(
        prefix="transformer.", keep_prefix=True, classifier="score", bias=False, pooling="last"
    ),
    "LlamaForSequenceClassification": HFHead(
        prefix="model.", keep_prefix=True, classifier="score", bias=False, pooling="last"
    ),
}
"""The ``transformers`` head classes we convert, by class name."""


def _spec(hf_class: str) -> HFHead:
    if hf_class not in HF_HEADS:
        raise CheckpointError(
            f"{hf_class} is not a head we convert: {', '.join(HF_HEADS)} are supported"
        )
    return HF_HEADS[hf_class]


def _num_labels(d: Mapping[str, Any]) -> int:
    if "num_labels" in d:
        return int(d["num_labels"])
    if d.get("id2label"):
        return len(d["id2label"])
    return 2  # transformers' default


def _dropout(d: Mapping[str, Any], spec: HFHead) -> float:
    """BERT's classifier dropout (``classifier_dropout``, else ``hidden_dropout_prob``); the
    decoders' heads have none."""
    if spec.prefix != "bert.":
        return 0.0
    dropout = d.get("classifier_dropout")
    return float(d.get("hidden_dropout_prob", 0.1) if dropout is None else dropout)


def _backbone(config: Any, spec: HFHead, token_head: bool) -> nn.Module:
    if isinstance(config, BertConfig):
        return Bert(config, pooler=not token_head)  # BertForTokenClassification has no pooler
    if spec.prefix == "model.":  # Llama: the LM head tied, hence free (it is not used)
        return Llama(dataclasses.replace(config, tie_embeddings=True))
    return registry.build_model(config)


def hf_head_key_map(head: Head, hf_class: str) -> dict[str, str]:
    """Our head's state-dict keys -> the ``transformers`` class's keys (the backbone's through
    its family's key map, under ``backbone.``; the classifier's). A tied output head, which
    the classifier does not use, is left out. GPT-2's ``Conv1D`` weights are stored transposed
    (``hf_adapter(config).transposed(key)``).

    Raises:
        CheckpointError: ``hf_class`` is not one of :data:`HF_HEADS`.
        ConfigError: The backbone is not that class's base model (``Bert`` for BERT's heads),
            or its family has no Hugging Face twin.
    """
    spec = _spec(hf_class)
    backbone = head.backbone
    if spec.prefix == "bert." and type(backbone) is not Bert:
        raise ConfigError(
            f"{hf_class} holds a BertModel: the head's backbone must be a Bert encoder, not a "
            f"{type(backbone).__name__}"
        )
    config = backbone.config
    family = hf_adapter(config).key_map(config)
    distinct = {name for name, _ in backbone.named_parameters()}  # a tied matrix: once
    distinct |= {name for name, _ in backbone.named_buffers()}
    keys = {}
    for key in backbone.state_dict():
        if key not in distinct:
            continue  # a tied head, saved by transformers (if at all) as the embeddings
        theirs = family[key]
        keys[f"backbone.{key}"] = theirs if spec.keep_prefix else spec.prefix + theirs
    for name in head.classifier.state_dict():
        keys[f"classifier.{name}"] = f"{spec.classifier}.{name}"
    return keys


def head_from_hf_state_dict(
    hf_config: Mapping[str, Any], hf_state: Mapping[str, torch.Tensor], hf_class: str
) -> Head:
    """Our head from a ``transformers`` head's ``config.json`` contents and state dict.

    Args:
        hf_config: The config's fields (``model.config.to_dict()``, or ``config.json``).
        hf_state: Its weights, in ``transformers``' names and layouts.
        hf_class: The ``transformers`` class (``"GPT2ForSequenceClassification"``, ...).

    Returns:
        A new :class:`SequenceClassifier` or :class:`TokenClassifier` in training mode, with
        ``num_labels``, pooling, bias and dropout those of the ``transformers`` class.

    Raises:
        CheckpointError: An unsupported class or architecture option, or weights that do not
            fit (a missing, unexpected or misshapen key).
    """
    spec = _spec(hf_class)
    config = config_from_hf_dict(hf_config)
    backbone = _backbone(config, spec, spec.pooling is None)
    base = {k: v for k, v in hf_state.items() if k.startswith(spec.prefix)}
    if not spec.keep_prefix:
        base = {k.removeprefix(spec.prefix): v for k, v in base.items()}
    load_hf_state_dict(backbone, base)  # checks the base model's keys and shapes
    num_labels, dropout = _num_labels(hf_config), _dropout(hf_config, spec)
    head: Head
    if spec.pooling is None:
        head = TokenClassifier(backbone, num_labels, dropout, bias=spec.bias)
    else:
        head = SequenceClassifier(backbone, num_labels, spec.pooling, dropout, bias=spec.bias)
    classifier: dict[str, torch.Tensor] = {}
    for name, target in head.classifier.state_dict().items():
        key = f"{spec.classifier}.{name}"
        if key not in hf_state:
            raise CheckpointError(f"checkpoint is missing key {key!r}")
        if hf_state[key].shape != target.shape:
            raise CheckpointError(
                f"{key}: expected shape {tuple(target.shape)}, got {tuple(hf_state[key].shape)}"
            )
        classifier[name] = hf_state[key]
    head.classifier.load_state_dict(classifier)
    known = {f"{spec.classifier}.{name}" for name in classifier}
    unexpected = [k for k in hf_state if not k.startswith(spec.prefix) and k not in known]
    if unexpected:
        raise CheckpointError(f"checkpoint has unexpected key {unexpected[0]!r}")
    return head.train()


def head_from_hf(hf_model: Any) -> Head:
    """Our head with the architecture and weights of a ``transformers`` head (one of
    :data:`HF_HEADS`), on its device and dtype, in its mode.

    Raises:
        CheckpointError: An unsupported class, or an architecture option we do not implement.
    """
    head = head_from_hf_state_dict(
        hf_model.config.to_dict(), hf_model.state_dict(), type(hf_model).__name__
    )
    param = next(hf_model.parameters())
    head.to(device=param.device, dtype=param.dtype)
    return head.train(hf_model.training)
