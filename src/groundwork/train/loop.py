"""Pretraining a causal language model with the engine: token streams in, a run directory out.

:func:`train_causal_lm` is :func:`groundwork.train.engine.train` with the pieces a language
model needs: :class:`~groundwork.train.data.LMData` (random windows of the training tokens, the
first ``eval_batches`` windows of the validation tokens), the
:class:`~groundwork.train.objectives.CausalLMObjective`, and an evaluation that reports the
validation loss in nats per token and in bits per byte. :func:`evaluate_loss` scores a whole
token stream. This module also keeps the names the loop had before the engine existed
(``TrainConfig``, ``TrainerState``, ...). Chapter 8 (Training).
"""

import itertools
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from groundwork.numerics import loss_to_bits_per_byte
from groundwork.train.config import TrainConfig
from groundwork.train.data import LMData, TokenData
from groundwork.train.engine import Metrics, TrainResult, train, validation_loss
from groundwork.train.flops import model_flops_per_token as _model_flops_per_token
from groundwork.train.objectives import CausalLMObjective, Objective
from groundwork.train.parallel import Parallelism
from groundwork.train.state import (
    BEST_MODEL_FILE,
    TrainerState,
    load_trainer_state,
    save_checkpoint,
)

__all__ = [
    "BEST_MODEL_FILE",
    "TokenData",
    "TrainConfig",
    "TrainResult",
    "TrainerState",
    "_model_flops_per_token",
    "evaluate_loss",
    "load_trainer_state",
    "save_checkpoint",
    "train",
    "train_causal_lm",
]


def evaluate_loss(
    model: nn.Module,
    data: TokenData,
    *,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    precision: Literal["fp32", "bf16"] = "fp32",
) -> tuple[float, int]:
    """Summed loss in nats and the number of predicted tokens over non-overlapping windows from
    the start of ``data`` (all of it when ``max_batches`` is None)."""
    windows = itertools.islice(data.sequential_batches(batch_size, seq_len), max_batches)
    return validation_loss(model, CausalLMObjective(), windows, device=device, precision=precision)


def train_causal_lm(
    model: nn.Module,
    train_data: TokenData,
    val_data: TokenData | None,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    bytes_per_token: float | None = None,
    objective: Objective | None = None,
    parallel: Parallelism | None = None,
) -> TrainResult:
    """Pretrain a causal LM on ``train_data``, evaluating on the first ``cfg.eval_batches``
    windows of ``val_data``, writing into ``run_dir``.

    Args:
        model: Maps ``(B, T)`` token ids to ``(B, T, V)`` logits.
        train_data: Training token stream.
        val_data: Validation token stream, or None.
        cfg: The training configuration.
        run_dir: The run directory (created if needed).
        resume: Continue from the checkpoint in ``run_dir``.
        bytes_per_token: UTF-8 bytes per token of the validation text, to report bits per byte.
        objective: The training loss (default: :class:`CausalLMObjective`; a mixture of experts
            trains with :class:`~groundwork.train.objectives.MoECausalLMObjective`). Validation
            is always the plain next-token loss.
        parallel: How the ranks of a distributed run share the work (default: one process).
    """
    data = LMData(train_data, val_data, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
    next_token = CausalLMObjective()

    def evaluate(net: nn.Module) -> Metrics:
        device = next(net.parameters()).device
        total, count = validation_loss(
            net, next_token, data.val_batches(), device=device, precision=cfg.precision
        )
        if count == 0:
            return {}
        loss = total / count
        return {"val_loss": loss, "val_bpb": loss_to_bits_per_byte(loss, bytes_per_token)}

    loss = next_token if objective is None else objective
    return train(
        model, data, loss, cfg, run_dir, resume=resume, evaluate=evaluate, parallel=parallel
    )
