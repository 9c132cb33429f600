"""Training: one engine (:func:`train`) for every objective, with the causal LM, classification
(per sequence and per token), masked LM (+ next-sentence prediction) and sequence-to-sequence
(span corruption) objectives and their data, AdamW with parameter groups, learning-rate
schedules, gradient clipping, checkpoints with exact resume, metrics and FLOPs/MFU. Chapter 8
(Training).
"""

from groundwork.runtime import resolve_device
from groundwork.train.checkpoint import load_model_weights, save_model
from groundwork.train.config import TrainConfig
from groundwork.train.data import LabelledSequences, LMData, TokenData, TrainData
from groundwork.train.encoder_data import BertPretrainingData, Seq2SeqPairs, SpanCorruptionData
from groundwork.train.engine import TrainResult, train, validation_loss
from groundwork.train.flops import mfu, model_flops_per_token, peak_flops, training_flops_per_token
from groundwork.train.loop import evaluate_loss, train_causal_lm
from groundwork.train.masking import TokenMasker, mask_tokens, wordpiece_continuation_ids
from groundwork.train.metrics import MetricsLogger, plot_expert_load, plot_losses, read_metrics
from groundwork.train.objectives import (
    IGNORE_INDEX,
    CausalLMObjective,
    ClassificationObjective,
    LossOutput,
    MaskedLMObjective,
    Objective,
    PretrainingObjective,
    Seq2SeqObjective,
    TokenClassificationObjective,
    bits_per_byte,
    causal_lm_loss,
    masked_lm_loss,
    shift_for_causal_lm,
    shift_right,
)
from groundwork.train.optim import build_adamw, clip_grad_norm, parameter_groups
from groundwork.train.pairs import (
    IS_NEXT,
    NOT_NEXT,
    SentencePair,
    SentencePairs,
    chunk_segments,
    pack_pair,
    truncate_pair,
)
from groundwork.train.schedules import learning_rate
from groundwork.train.span_corruption import (
    compute_input_and_target_lengths,
    noise_span_counts,
    random_spans_noise_mask,
    restore_spans,
    span_corrupt,
)
from groundwork.train.state import TrainerState, load_trainer_state
from groundwork.train.vision import ContrastiveObjective, ImageClassificationObjective, ImageData

__all__ = [
    "IGNORE_INDEX",
    "IS_NEXT",
    "NOT_NEXT",
    "BertPretrainingData",
    "CausalLMObjective",
    "ClassificationObjective",
    "ContrastiveObjective",
    "ImageClassificationObjective",
    "ImageData",
    "LMData",
    "LabelledSequences",
    "LossOutput",
    "MaskedLMObjective",
    "MetricsLogger",
    "Objective",
    "PretrainingObjective",
    "SentencePair",
    "SentencePairs",
    "Seq2SeqObjective",
    "Seq2SeqPairs",
    "SpanCorruptionData",
    "TokenClassificationObjective",
    "TokenData",
    "TokenMasker",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "TrainerState",
    "bits_per_byte",
    "build_adamw",
    "causal_lm_loss",
    "chunk_segments",
    "clip_grad_norm",
    "compute_input_and_target_lengths",
    "evaluate_loss",
    "learning_rate",
    "load_model_weights",
    "load_trainer_state",
    "mask_tokens",
    "masked_lm_loss",
    "mfu",
    "model_flops_per_token",
    "noise_span_counts",
    "pack_pair",
    "parameter_groups",
    "peak_flops",
    "plot_expert_load",
    "plot_losses",
    "random_spans_noise_mask",
    "read_metrics",
    "resolve_device",
    "restore_spans",
    "save_model",
    "shift_for_causal_lm",
    "shift_right",
    "span_corrupt",
    "train",
    "train_causal_lm",
    "training_flops_per_token",
    "truncate_pair",
    "validation_loss",
    "wordpiece_continuation_ids",
]
