"""Hugging Face's task heads as ours and back: ``BertForSequenceClassification``,
``BertForTokenClassification``, ``BertForMultipleChoice``, ``GPT2ForSequenceClassification`` and
``LlamaForSequenceClassification`` become a :class:`~groundwork.adapt.heads.SequenceClassifier`,
:class:`~groundwork.adapt.heads.TokenClassifier` or
:class:`~groundwork.adapt.heads.MultipleChoiceClassifier` with the same weights and the same
logits (:func:`head_from_hf`), and ours become theirs (:func:`head_to_hf` in memory,
:func:`export_head_hf` on disk).

Each of those classes is a base model under a prefix plus one linear layer:

=================================  ================  ================  =========  ==========
``transformers`` class             base model        classifier        pooling    our head
=================================  ================  ================  =========  ==========
``BertForSequenceClassification``  ``bert.``         ``classifier``    ``cls``    sequence
``BertForTokenClassification``     ``bert.`` (no     ``classifier``    --         token
                                   pooler)
``BertForMultipleChoice``          ``bert.``         ``classifier``    ``cls``    choice
                                                     (one output)
``GPT2ForSequenceClassification``  ``transformer.``  ``score`` (no     ``last``   sequence
                                                     bias)
``LlamaForSequenceClassification`` ``model.``        ``score`` (no     ``last``   sequence
                                                     bias)
=================================  ================  ================  =========  ==========

The base model goes through the family's own adapter (:mod:`groundwork.interop.hf`'s
:func:`~groundwork.interop.hf.config_from_hf_dict`, :func:`~groundwork.interop.hf.hf_config_dict`
and the family's key map: GPT-2's transposed ``Conv1D`` weights); this module adds only the
prefixes and the classifier. Our Llama backbone is built with tied embeddings: its language-model
head is not used by a classifier (nor saved by ``transformers``), and tying it costs no
parameters. ``transformers`` finds the last token by ``pad_token_id``, ours by the attention mask
(:mod:`groundwork.adapt.heads`): give ours the attention mask for the same logits.

**Export.** A head exports when one of those classes computes what it computes: BERT heads with
``cls`` pooling and a biased classifier, GPT-2 and Llama sequence heads with ``last`` pooling and
no bias. ``transformers`` has no class that mean-pools, and none for a head over a T5 encoder,
so such heads are refused. Over a pretrained BERT (``BertForMaskedLM``, ``BertForPreTraining``)
the encoder and the pooler are exported and the pretraining heads, which a classifier does not
use, are left out; so are the language-model heads of GPT and Llama. The decoders' classes
find the last token as the rightmost one that is not ``config.pad_token_id``: the export writes
0 there unless told otherwise, the id ``groundwork finetune`` pads decoder batches with.

Reference: ``transformers/models/bert/modeling_bert.py``, ``gpt2/modeling_gpt2.py``,
``modeling_layers.py`` (``GenericForSequenceClassification``). Chapter 12 (Adaptation).

The module is long because both directions share one table of classes and one key map per
class: import and export split in two would each need all of them.
"""

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.adapt.features import encoder_of
from groundwork.adapt.heads import (
    MultipleChoiceClassifier,
    Pooling,
    SequenceClassifier,
    TaskKind,
    TokenClassifier,
)
from groundwork.errors import CheckpointError, ConfigError
from groundwork.fileio import atomic_path, atomic_write
from groundwork.interop.hf import (
    config_from_hf_dict,
    hf_adapter,
    hf_config_dict,
    load_hf_state_dict,
)
from groundwork.models import registry
from groundwork.models.bert import Bert, BertConfig
from groundwork.models.llama import Llama

__all__ = [
    "HF_HEADS",
    "HFHead",
    "export_head_hf",
    "head_from_hf",
    "head_from_hf_state_dict",
    "head_to_hf",
    "hf_head_class",
    "hf_head_config_dict",
    "hf_head_key_map",
    "hf_head_state_dict",
]

Head = SequenceClassifier | TokenClassifier | MultipleChoiceClassifier

_HEAD_CLASSES: dict[str, type[nn.Module]] = {
    "sequence": SequenceClassifier,
    "token": TokenClassifier,
    "choice": MultipleChoiceClassifier,
}


@dataclass(frozen=True)
class HFHead:
    """How one ``transformers`` head class is laid out."""

    kind: TaskKind
    """Our head: ``"sequence"`` (:class:`SequenceClassifier`), ``"token"``
    (:class:`TokenClassifier`) or ``"choice"`` (:class:`MultipleChoiceClassifier`)."""
    model_type: str
    """The base model's ``config.json`` ``model_type`` (``"bert"``, ``"gpt2"``, ``"llama"``)."""
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
    """Sequence and choice heads: how the sequence is pooled; ``None``: a token head."""


def _bert(kind: TaskKind, pooling: Pooling | None) -> HFHead:
    return HFHead(
        kind=kind,
        model_type="bert",
        prefix="bert.",
        keep_prefix=False,
        classifier="classifier",
        bias=True,
        pooling=pooling,
    )


def _decoder(model_type: str, prefix: str) -> HFHead:
    return HFHead(
        kind="sequence",
        model_type=model_type,
        prefix=prefix,
        keep_prefix=True,
        classifier="score",
        bias=False,
        pooling="last",
    )


HF_HEADS: dict[str, HFHead] = {
    "BertForSequenceClassification": _bert("sequence", "cls"),
    "BertForTokenClassification": _bert("token", None),
    "BertForMultipleChoice": _bert("choice", "cls"),
    "GPT2ForSequenceClassification": _decoder("gpt2", "transformer."),
    "LlamaForSequenceClassification": _decoder("llama", "model."),
}
"""The ``transformers`` head classes we convert, both ways, by class name."""


def _spec(hf_class: str) -> HFHead:
    if hf_class not in HF_HEADS:
        raise CheckpointError(
            f"{hf_class} is not a head we convert: {', '.join(HF_HEADS)} are supported"
        )
    return HF_HEADS[hf_class]


def _num_labels(d: Mapping[str, Any], spec: HFHead) -> int:
    if spec.kind == "choice":
        return 1  # one score per candidate, whatever the config's labels say
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


def _backbone(config: Any, spec: HFHead) -> nn.Module:
    if isinstance(config, BertConfig):  # BertForTokenClassification has no pooler
        return Bert(config, pooler=spec.kind != "token")
    if spec.prefix == "model.":  # Llama: the LM head tied, hence free (it is not used)
        return Llama(dataclasses.replace(config, tie_embeddings=True))
    return registry.build_model(config)


def _check_fits(head: Head, spec: HFHead, hf_class: str) -> None:
    """Refuse a head that is not ``hf_class``'s kind, or whose backbone is another family."""
    if type(head) is not _HEAD_CLASSES[spec.kind]:
        raise ConfigError(
            f"{hf_class} is a {spec.kind} head ({_HEAD_CLASSES[spec.kind].__name__}), not a "
            f"{type(head).__name__}"
        )
    backbone: Any = head.backbone
    if hf_adapter(backbone.config).model_type != spec.model_type:
        raise ConfigError(
            f"{hf_class} holds a {spec.model_type} model: the head's backbone must be one, not "
            f"a {type(backbone).__name__}"
        )


def hf_head_key_map(head: Head, hf_class: str) -> dict[str, str]:
    """Our head's state-dict keys -> the ``transformers`` class's keys (the backbone's through
    its family's key map, under ``backbone.``; the head's own BERT pooler, if any; the
    classifier's). GPT-2's ``Conv1D`` weights are stored transposed
    (``hf_adapter(config).transposed(key)``).

    Left out: what the ``transformers`` class does not hold, which the head does not use: a tied
    output head, the pretraining heads of a ``BertForMaskedLM`` or ``BertForPreTraining``
    backbone, the language-model head of a GPT or Llama, and BERT's pooler under a token head.

    Raises:
        CheckpointError: ``hf_class`` is not one of :data:`HF_HEADS`.
        ConfigError: The head is not that class's kind, or its backbone not of that class's
            family (a ``Bert*`` model for BERT's heads), or a family without a Hugging Face
            twin.
    """
    spec = _spec(hf_class)
    _check_fits(head, spec, hf_class)
    backbone = head.backbone
    config = backbone.config
    family = hf_adapter(config).key_map(config)
    bare = encoder_of(backbone) is backbone  # a BertModel: its names have no "bert." prefix
    distinct = {name for name, _ in backbone.named_parameters()}  # a tied matrix: once
    distinct |= {name for name, _ in backbone.named_buffers()}
    pooler = f"{spec.prefix}pooler."
    keys = {}
    for key in backbone.state_dict():
        if key not in distinct:
            continue  # a tied head, saved by transformers (if at all) as the embeddings
        theirs = spec.prefix + family[key] if bare else family[key]
        if not theirs.startswith(spec.prefix):
            continue  # a pretraining or language-model head, outside the base model
        if spec.kind == "token" and theirs.startswith(pooler):
            continue  # BertForTokenClassification's BertModel has no pooler
        keys[f"backbone.{key}"] = theirs
    own_pooler = getattr(head, "pooler", None)
    if own_pooler is not None:  # BERT's pooler, the head's own (the encoder has none)
        for name in own_pooler.state_dict():
            keys[f"pooler.{name}"] = f"{pooler}dense.{name}"
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
        A new :class:`SequenceClassifier`, :class:`TokenClassifier` or
        :class:`MultipleChoiceClassifier` in training mode, with ``num_labels``, pooling, bias
        and dropout those of the ``transformers`` class.

    Raises:
        CheckpointError: An unsupported class or architecture option, or weights that do not
            fit (a missing, unexpected or misshapen key).
    """
    spec = _spec(hf_class)
    config = config_from_hf_dict(hf_config)
    backbone = _backbone(config, spec)
    base = {k: v for k, v in hf_state.items() if k.startswith(spec.prefix)}
    if not spec.keep_prefix:
        base = {k.removeprefix(spec.prefix): v for k, v in base.items()}
    load_hf_state_dict(backbone, base)  # checks the base model's keys and shapes
    num_labels, dropout = _num_labels(hf_config, spec), _dropout(hf_config, spec)
    head: Head
    if spec.kind == "token":
        head = TokenClassifier(backbone, num_labels, dropout, bias=spec.bias)
    elif spec.kind == "choice":
        head = MultipleChoiceClassifier(backbone, spec.pooling, dropout, bias=spec.bias)
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


# ----------------------------------------------------------------------------------------------
# Export: our heads as transformers' classes


def hf_head_class(head: Head) -> str:
    """The ``transformers`` class that computes what ``head`` computes (one of
    :data:`HF_HEADS`).

    >>> from groundwork.adapt.heads import head_for
    >>> hf_head_class(head_for("gpt:tiny", "sequence", 2))
    'GPT2ForSequenceClassification'

    Raises:
        ConfigError: No ``transformers`` class matches: mean pooling (``transformers`` has no
            class that mean-pools), a T5 backbone, a token or multiple-choice head over a
            decoder, a pooling or a classifier bias other than the class's, or a backbone
            without a Hugging Face twin.
    """
    kinds = {cls: kind for kind, cls in _HEAD_CLASSES.items()}
    if type(head) not in kinds:
        raise ConfigError(
            f"a {type(head).__name__} is not a task head: SequenceClassifier, TokenClassifier "
            "and MultipleChoiceClassifier export to Hugging Face format"
        )
    kind = kinds[type(head)]
    pooling = getattr(head, "pooling", None)
    if pooling == "mean":
        raise ConfigError(
            "transformers has no head class that mean-pools: its classes read BERT's pooler on "
            "[CLS] ('cls') or a decoder's last token ('last'); fine-tune with one of those "
            "poolings to export"
        )
    backbone: Any = head.backbone
    family = hf_adapter(backbone.config).model_type  # refuses a family without a twin
    matches = [n for n, s in HF_HEADS.items() if s.kind == kind and s.model_type == family]
    if not matches:
        exported = ", ".join(f"{n} ({s.kind} over {s.model_type})" for n, s in HF_HEADS.items())
        raise ConfigError(
            f"no transformers class we export holds a {kind} head over a "
            f"{type(backbone).__name__}: we export {exported}"
        )
    name = matches[0]
    spec = HF_HEADS[name]
    if pooling != spec.pooling:
        raise ConfigError(
            f"{name} pools with {spec.pooling!r}, this head with {pooling!r}: transformers has "
            "no class for that combination"
        )
    if (head.classifier.bias is not None) != spec.bias:
        has = "a bias" if spec.bias else "no bias"
        raise ConfigError(
            f"{name}'s {spec.classifier} layer has {has}, this head's classifier "
            f"{'has none' if spec.bias else 'has one'}: transformers has no class for it"
        )
    return name


def hf_head_config_dict(
    head: Head,
    labels: Sequence[str] | None = None,
    *,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> dict[str, Any]:
    """The ``config.json`` contents of ``head``'s ``transformers`` class
    (:func:`hf_head_class`): the backbone's fields
    (:func:`~groundwork.interop.hf.hf_config_dict`), the label names, the classifier's dropout
    (BERT) and the pad id.

    Args:
        head: A head :func:`hf_head_class` finds a class for.
        labels: The classes' names, in order (``config.id2label`` and ``label2id``); ``None``:
            ``transformers``' ``LABEL_0``, ``LABEL_1``, ... A multiple-choice head has none.
        pad_token_id: Written as ``pad_token_id``; the decoders' classes read the last token
            as the rightmost one that is not it. ``None``: the BERT config's own pad id, 0 for
            GPT and Llama (the id ``groundwork finetune`` pads them with).
        eos_token_id: The tokenizer's end-of-text id, as for
            :func:`~groundwork.interop.hf.hf_config_dict`.
        bos_token_id: A beginning-of-text id that differs from ``eos_token_id``.

    Raises:
        ConfigError: No ``transformers`` class for the head; labels that are not
            ``num_labels`` distinct names, or labels for a multiple-choice head; a pad id
            outside the vocabulary.
    """
    hf_class = hf_head_class(head)
    spec = HF_HEADS[hf_class]
    config: Any = head.backbone.config
    d = hf_config_dict(
        config, eos_token_id=eos_token_id, bos_token_id=bos_token_id, hf_class=hf_class
    )
    if spec.kind == "choice":
        if labels is not None:
            raise ConfigError(
                "a multiple-choice head scores candidates, it has no label names: pass no labels"
            )
    else:
        names = [f"LABEL_{i}" for i in range(head.num_labels)] if labels is None else list(labels)
        if len(names) != head.num_labels or len(set(names)) != len(names):
            raise ConfigError(
                f"labels must be {head.num_labels} distinct names, one per class of the head, "
                f"got {names!r}"
            )
        d["id2label"] = dict(enumerate(names))
        d["label2id"] = {name: i for i, name in enumerate(names)}
    if spec.prefix == "bert.":
        d["classifier_dropout"] = head.dropout.p
    if pad_token_id is None:
        pad_token_id = d.get("pad_token_id") if spec.prefix == "bert." else 0
    if pad_token_id is not None and not 0 <= pad_token_id < config.vocab_size:
        raise ConfigError(
            f"pad_token_id {pad_token_id} is outside the vocabulary (size {config.vocab_size})"
        )
    d["pad_token_id"] = pad_token_id
    d["torch_dtype"] = str(next(head.parameters()).dtype).removeprefix("torch.")
    return d


def hf_head_state_dict(head: Head) -> dict[str, torch.Tensor]:
    """``head``'s weights under the names and layouts of its ``transformers`` class
    (:func:`hf_head_class`, :func:`hf_head_key_map`; GPT-2's ``Conv1D`` weights transposed).

    Raises:
        ConfigError: No ``transformers`` class for the head.
    """
    hf_class = hf_head_class(head)
    adapter = hf_adapter(head.backbone.config)
    state = head.state_dict()
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in hf_head_key_map(head, hf_class).items():
        tensor = state[ours]
        out[theirs] = tensor.t() if adapter.transposed(theirs) else tensor
    return out


def head_to_hf(
    head: Head,
    labels: Sequence[str] | None = None,
    *,
    pad_token_id: int | None = None,
    attn_implementation: str = "eager",
) -> Any:
    """A ``transformers`` model equal to ``head`` (the reverse of :func:`head_from_hf`), on its
    device and dtype, in its mode:

    ==============================================  ==================================
    our head                                        ``transformers`` class
    ==============================================  ==================================
    :class:`SequenceClassifier`, BERT, ``cls``      ``BertForSequenceClassification``
    :class:`SequenceClassifier`, GPT, ``last``      ``GPT2ForSequenceClassification``
    :class:`SequenceClassifier`, Llama, ``last``    ``LlamaForSequenceClassification``
    :class:`TokenClassifier`, BERT                  ``BertForTokenClassification``
    :class:`MultipleChoiceClassifier`, BERT, ``cls``  ``BertForMultipleChoice``
    ==============================================  ==================================

    Args:
        head: Our head (see :func:`hf_head_class` for what is refused).
        labels: The classes' names (``config.id2label``); ``None``: ``LABEL_0``, ...
        pad_token_id: As for :func:`hf_head_config_dict` (GPT and Llama: 0 by default; give
            the decoders' classes a pad id no real token has for our logits on padded batches).
        attn_implementation: Passed to ``transformers`` (``"eager"`` or ``"sdpa"``).

    Raises:
        ConfigError: No ``transformers`` class for the head, or bad labels.
    """
    import transformers

    d = hf_head_config_dict(head, labels, pad_token_id=pad_token_id)
    hf_class = d["architectures"][0]
    fields = {k: v for k, v in d.items() if k not in ("architectures", "torch_dtype")}
    hf_config = transformers.AutoConfig.for_model(**fields)
    hf_model = getattr(transformers, hf_class)._from_config(
        hf_config, attn_implementation=attn_implementation
    )
    param = next(head.parameters())
    hf_model.to(device=param.device, dtype=param.dtype)
    missing, unexpected = hf_model.load_state_dict(hf_head_state_dict(head), strict=False)
    ignored = hf_adapter(head.backbone.config).ignored_suffixes
    missing = [k for k in missing if not (ignored and k.endswith(ignored))]
    if missing or unexpected:
        raise CheckpointError(f"key map incomplete: missing {missing}, unexpected {unexpected}")
    return hf_model.train(head.training)


def export_head_hf(
    head: Head,
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    *,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``from_pretrained(out_dir)`` of
    ``head``'s ``transformers`` class loads (``AutoModelForSequenceClassification``,
    ``AutoModelForTokenClassification``, ``AutoModelForMultipleChoice``); ``transformers`` is
    not needed to write them.

    Args:
        head: Our head (see :func:`head_to_hf` for the classes).
        out_dir: Directory to create or overwrite the two files in.
        labels, pad_token_id, eos_token_id, bos_token_id: As for :func:`hf_head_config_dict`.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ConfigError: No ``transformers`` class for the head, or bad labels (nothing is
            written).
    """
    from safetensors.torch import save_file

    d = hf_head_config_dict(
        head,
        labels,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
    )
    tensors = {k: v.detach().contiguous().cpu() for k, v in hf_head_state_dict(head).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    atomic_write(out / "config.json", text.encode("utf-8"))
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), {"format": "pt"})
    return out
