"""Adaptation (chapter 12): task heads over any pretrained backbone of the registry.

* :mod:`groundwork.adapt.features`: every layer's hidden states (:func:`layer_states`, as
  ``transformers``' ``output_hidden_states=True``) or the last one's
  (:func:`last_hidden_state`), for GPT, Llama, BERT and the T5 encoder.
* :mod:`groundwork.adapt.heads`: :class:`SequenceClassifier` (``cls``, ``mean`` or ``last``
  pooling), :class:`TokenClassifier` and :class:`MultipleChoiceClassifier`; :func:`head_for`
  picks each family's defaults.
* :mod:`groundwork.adapt.heads_hf`: ``transformers``' ``BertForSequenceClassification``,
  ``BertForTokenClassification``, ``BertForMultipleChoice``, ``GPT2ForSequenceClassification``
  and ``LlamaForSequenceClassification`` as our heads (:func:`head_from_hf`) and ours as theirs
  (:func:`head_to_hf`, :func:`export_head_hf`).
* :mod:`groundwork.adapt.probe`: linear probes with control tasks (imported on its own).
* :mod:`groundwork.adapt.runs`: the ``task-head`` run directory, which
  :func:`groundwork.runs.load_run` reads (found through an entry point).

References: Devlin et al. 2019 (BERT fine-tuning); Radford et al. 2018 (GPT's last-token
classifier).
"""

from groundwork.adapt.features import (
    hidden_size,
    last_hidden_state,
    layer_states,
    num_layer_states,
)
from groundwork.adapt.heads import (
    POOLINGS,
    TASK_KINDS,
    MultipleChoiceClassifier,
    SequenceClassifier,
    TokenClassifier,
    default_pooling,
    head_for,
    pool,
)
from groundwork.adapt.heads_hf import (
    HF_HEADS,
    export_head_hf,
    head_from_hf,
    head_from_hf_state_dict,
    head_to_hf,
    hf_head_class,
    hf_head_config_dict,
    hf_head_key_map,
    hf_head_state_dict,
)
from groundwork.adapt.runs import load_task_head

__all__ = [
    "HF_HEADS",
    "POOLINGS",
    "TASK_KINDS",
    "MultipleChoiceClassifier",
    "SequenceClassifier",
    "TokenClassifier",
    "default_pooling",
    "export_head_hf",
    "head_for",
    "head_from_hf",
    "head_from_hf_state_dict",
    "head_to_hf",
    "hf_head_class",
    "hf_head_config_dict",
    "hf_head_key_map",
    "hf_head_state_dict",
    "hidden_size",
    "last_hidden_state",
    "layer_states",
    "load_task_head",
    "num_layer_states",
    "pool",
]
