"""Training: the causal LM objective, AdamW with parameter groups, learning-rate schedules,
gradient clipping, checkpoints with exact resume, metrics, FLOPs/MFU, and the loop.
Chapter 8 (Training)."""

from groundwork.train.checkpoint import load_model_weights, save_model
from groundwork.train.flops import mfu, peak_flops, training_flops_per_token
from groundwork.train.loop import (
    TrainConfig,
    TrainerState,
    TrainResult,
    evaluate_loss,
    load_trainer_state,
    resolve_device,
    train,
)
from groundwork.train.metrics import MetricsLogger, plot_losses, read_metrics
from groundwork.train.objectives import (
    IGNORE_INDEX,
    bits_per_byte,
    causal_lm_loss,
    shift_for_causal_lm,
)
from groundwork.train.optim import build_adamw, clip_grad_norm, parameter_groups
from groundwork.train.schedules import learning_rate

__all__ = [
    "IGNORE_INDEX",
    "MetricsLogger",
    "TrainConfig",
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
    "parameter_groups",
    "peak_flops",
    "plot_losses",
    "read_metrics",
    "resolve_device",
    "save_model",
    "shift_for_causal_lm",
    "train",
    "training_flops_per_token",
]
