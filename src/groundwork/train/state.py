"""The trainer's state between steps, and the checkpoint that holds it.

A checkpoint is three files in the run directory, each written atomically: the weights
(``model.safetensors``), the optimizer moments (``optimizer.safetensors``) and
``trainer_state.json``, a :class:`TrainerState`: the step, the tokens seen, the best evaluation
so far, the RNG states and the data's position. The state file is written last, so it always
describes weights that are already on disk. Chapter 8 (Training).
"""

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError
from groundwork.fileio import read_json, write_json
from groundwork.train import checkpoint as ckpt
from groundwork.train.metrics import METRICS_FILE
from groundwork.train.parallel import Parallelism

BEST_MODEL_FILE = "model.best.safetensors"
"""Weights at the evaluation with the best ``best_metric`` so far."""


@dataclass(kw_only=True)
class TrainerState:
    """Everything besides weights and optimizer moments that a resumed run needs."""

    step: int = 0
    """Optimizer steps taken."""
    tokens_seen: int = 0
    """Input tokens read in training (examples' tokens for a classifier)."""
    best_value: float | None = None
    """The best ``best_metric`` so far."""
    best_step: int | None = None
    """The step of that evaluation (its weights are ``model.best.safetensors``)."""
    best_val_loss: float | None = None
    """The validation loss at that evaluation."""
    last_val_loss: float | None = None
    """The validation loss at the latest evaluation."""
    evals_since_best: int = 0
    """Evaluations since the best one (early stopping counts these)."""
    train_loss_sum: float = 0.0
    """Training loss times items, summed since the latest evaluation."""
    train_items: int = 0
    """Items (tokens, examples) in that sum."""
    elapsed_seconds: float = 0.0
    """Wall time spent training, over every invocation."""
    data: dict[str, Any] = field(default_factory=dict)
    """The data's position, for data that has one (epochs)."""
    rng: dict[str, str] = field(default_factory=dict)
    """torch's global RNG and the data generator (base64)."""


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    generator: torch.Generator,
    parallel: Parallelism | None = None,
) -> None:
    """Write model, optimizer and trainer state (each file atomically; the state file last, so
    a state file always describes weights that are already on disk). In a distributed run every
    rank calls this (sharded state is gathered) and rank 0 writes."""
    par = parallel or Parallelism()
    state.rng = ckpt.rng_state(generator)
    par.save_model(model, run_dir / ckpt.MODEL_FILE, metadata={"step": str(state.step)})
    par.save_optimizer(optimizer, run_dir / ckpt.OPTIMIZER_FILE)
    if par.is_main:
        write_json(run_dir / ckpt.STATE_FILE, asdict(state))


def load_trainer_state(run_dir: Path) -> TrainerState:
    """Read ``trainer_state.json`` of a run."""
    raw = read_json(Path(run_dir) / ckpt.STATE_FILE)
    try:
        return TrainerState(**raw)
    except TypeError as err:
        raise CheckpointError(f"{run_dir}/{ckpt.STATE_FILE} has unexpected fields: {err}") from err


def saved_step(run_dir: Path) -> int | str:
    """The step of the checkpoint in ``run_dir``, or ``"none yet"``."""
    try:
        return int(read_json(Path(run_dir) / ckpt.STATE_FILE)["step"])
    except (CheckpointError, KeyError, ValueError, TypeError):
        return "none yet"


def clear_training_files(run_dir: Path) -> None:
    """Remove what an earlier training run left in ``run_dir`` (checkpoint, best weights,
    metrics, plots, TensorBoard files), keeping the rest (``config.yaml``, the tokenizer)."""
    run_dir = Path(run_dir)
    for name in (ckpt.STATE_FILE, ckpt.MODEL_FILE, ckpt.OPTIMIZER_FILE, BEST_MODEL_FILE):
        (run_dir / name).unlink(missing_ok=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    for folder in ("tb", "plots"):
        shutil.rmtree(run_dir / folder, ignore_errors=True)
