"""Training: one engine (:func:`train`) for every objective, with the causal LM and
classification objectives, token-stream and labelled-sequence data, AdamW with parameter groups,
learning-rate schedules, gradient clipping, checkpoints with exact resume, metrics and FLOPs/MFU.
Chapter 8 (Training).
"""

from groundwork.runtime import resolve_device
from groundwork.train.checkpoint import load_model_weights, save_model
from groundwork.train.config import TrainConfig
from groundwork.train.data import LabelledSequences, LMData, TokenData, TrainData
from groundwork.train.engine import TrainResult, train, validation_loss
from groundwork.train.flops import mfu, model_flops_per_token, peak_flops, training_flops_per_token
from groundwork.train.loop import evaluate_loss, train_causal_lm
from groundwork.train.metrics import MetricsLogger, plot_losses, read_metrics
from groundwork.train.objectives import (
    IGNORE_INDEX,
    CausalLMObjective,
    ClassificationObjective,
    LossOutput,
    Objective,
    bits_per_byte,
    causal_lm_loss,
    shift_for_causal_lm,
)
from groundwork.train.optim import build_adamw, clip_grad_norm, parameter_groups
from groundwork.train.schedules import learning_rate
from groundwork.train.state import TrainerState, load_trainer_state

__all__ = [
    "IGNORE_INDEX",
    "CausalLMObjective",
    "ClassificationObjective",
    "LMData",
    "LabelledSequences",
    "LossOutput",
    "MetricsLogger",
    "Objective",
    "TokenData",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "TrainerState",
    "bits_per_byte",
    "build_adamw",
    "causal_lm_loss",
    "clip_grad_norm",
    "evaluate_loss",
    "learning_rate",
    "load_model_weights",
    "load_trainer_state",
    "mfu",
    "model_flops_per_token",
    "parameter_groups",
    "peak_flops",
    "plot_losses",
    "read_metrics",
    "resolve_device",
    "save_model",
    "shift_for_causal_lm",
    "train",
    "train_causal_lm",
    "training_flops_per_token",
    "validation_loss",
]
