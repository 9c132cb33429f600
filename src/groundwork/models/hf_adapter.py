"""The Hugging Face adapter of a model family: how its config and state dict map to those of its
``transformers`` twin (torchtitan's "state dict adapter" idea).

Each family with a twin writes one :class:`HFAdapter` next to its model
(:mod:`groundwork.models.gpt_hf`, :mod:`groundwork.models.llama_hf`,
:mod:`groundwork.models.bert_hf`) and hangs it on its registry entry (``Architecture.hf``). A
family with several ``transformers`` classes (BERT's ``BertModel``, ``BertForMaskedLM``,
``BertForPreTraining``) pairs each with one of its own in :attr:`HFAdapter.hf_classes`. The
generic converters of :mod:`groundwork.interop.hf` find it there, by config type on export and
by ``config.json``'s ``model_type`` on import, and know no family by name. Adapters only move
names, shapes and dictionaries (and name the model classes they pair): they import neither
``transformers`` nor anything above ``models/``.

Chapter 6 of the docs ("Hugging Face checkpoints").
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _never(hf_key: str) -> bool:
    return False


@dataclass(frozen=True)
class HFAdapter:
    """Conversion between one family's configs and weights and Hugging Face's."""

    model_types: tuple[str, ...]
    """``config.json`` ``model_type`` values this family reads; the first is written on export."""
    architectures: str
    """The ``transformers`` class named in ``config.json``'s ``architectures``
    (``"GPT2LMHeadModel"``)."""
    to_hf_config: Callable[[Any], dict[str, Any]]
    """Our config -> the fields of Hugging Face's ``config.json`` (without ``model_type``,
    ``architectures`` and the special token ids, which the converter adds). Raises
    :class:`~groundwork.errors.ConfigError` for a config with no twin (e.g. a post-LN GPT)."""
    from_hf_config: Callable[[Mapping[str, Any]], Any]
    """``config.json``'s contents -> our config. Raises
    :class:`~groundwork.errors.CheckpointError` for an option the family does not implement."""
    key_map: Callable[[Any], dict[str, str]]
    """Our config -> ``{our state-dict key: Hugging Face key}``, every key of the model (of
    every class in :attr:`hf_classes`, when the family has several)."""
    transposed: Callable[[str], bool] = _never
    """Whether the tensor under a Hugging Face key is stored as the transpose of ours (GPT-2's
    ``Conv1D`` weights are ``(in, out)``, ``nn.Linear``'s ``(out, in)``)."""
    ignored_suffixes: tuple[str, ...] = ()
    """Endings of Hugging Face keys that hold no learned state (causal-mask buffers, RoPE
    frequencies): skipped on import."""
    base_prefix: str = ""
    """The prefix of the base model's keys (``"transformer."``): a checkpoint saved from the base
    model (``GPT2Model`` rather than ``GPT2LMHeadModel``) lacks it, and gets it added on import."""
    hf_classes: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    """The family's ``transformers`` classes by name, each with the class of ours it converts
    to and from (``{"BertModel": Bert, "BertForMaskedLM": BertForMaskedLM}``), the one named
    by :attr:`architectures` included. Empty for a family with one class (GPT-2, Llama): every
    ``transformers`` model of the family converts to the registry's model class, and ours to
    :attr:`architectures`."""

    to_checkpoint: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """Renames a state dict from the names of ``transformers``' modules (what :attr:`key_map`
    gives) to those its checkpoints are saved under, where the two differ (ViT in
    ``transformers`` 5 renamed its modules, but ``save_pretrained`` and the Hub keep the older
    names, which every version reads): :func:`~groundwork.interop.hf.export_hf` writes these."""
    from_checkpoint: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """The inverse of :attr:`to_checkpoint`, applied by
    :func:`~groundwork.interop.hf.import_hf` to the weights it reads (names already in the
    modules' form pass unchanged)."""

    @property
    def model_type(self) -> str:
        """The ``model_type`` written on export."""
        return self.model_types[0]
