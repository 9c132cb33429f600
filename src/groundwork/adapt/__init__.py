"""Adaptation (chapter 12): task heads over any pretrained backbone of the registry.

* :mod:`groundwork.adapt.features`: every layer's hidden states (:func:`layer_states`, as
  ``transformers``' ``output_hidden_states=True``) or the last one's
  (:func:`last_hidden_state`), for GPT, Llama, BERT and the T5 encoder.
* :mod:`groundwork.adapt.heads`: :class:`SequenceClassifier` (``cls``, ``mean`` or ``last``
  pooling) and :class:`TokenClassifier`; :func:`head_for` picks each family's defaults.
* :mod:`groundwork.adapt.heads_hf`: ``transformers``' ``BertForSequenceClassification``,
  ``BertForTokenClassification``, ``GPT2ForSequenceClassification`` and
  ``LlamaForSequenceClassification`` as our heads (:func:`head_from_hf`).
* :mod:`groundwork.adapt.probe`: linear probes with control tasks (imported on its own).
* :mod:`groundwork.adapt.runs`: the ``task-head`` run directory, which importing this package
  teaches :func:`groundwork.runs.load_run` to read.

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
    SequenceClassifier,
    TokenClassifier,
    default_pooling,
    head_for,
    pool,
)
from groundwork.adapt.heads_hf import (
    HF_HEADS,
    head_from_hf,
    head_from_hf_state_dict,
    hf_head_key_map,
)
from groundwork.adapt.runs import load_task_head

__all__ = [
    "HF_HEADS",
    "POOLINGS",
    "TASK_KINDS",
    "SequenceClassifier",
    "TokenClassifier",
    "default_pooling",
    "head_for",
    "head_from_hf",
    "head_from_hf_state_dict",
    "hf_head_key_map",
    "hidden_size",
    "last_hidden_state",
    "layer_states",
    "load_task_head",
    "num_layer_states",
    "pool",
]
