"""The pretraining loop: teacher-forced causal LM training with AdamW, a warmup + decay schedule,
gradient clipping and accumulation, mixed precision, periodic evaluation, atomic checkpoints and
exact resume.

The loop takes a model (any ``nn.Module`` mapping ``(B, T)`` token ids to ``(B, T, V)`` logits) and
two token streams (``groundwork.corpus.TokenShards``); it knows nothing of the CLI. What makes a
resumed run equal to an uninterrupted one, bit for bit on CPU: the data order comes from a
dedicated ``torch.Generator`` whose state is checkpointed with the model, the optimizer moments and
torch's global RNG; evaluation reads fixed windows and consumes no randomness; the learning rate is
a pure function of the step.

Chapter 8 (Training).
"""

import contextlib
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError, TrainingError
from groundwork.fileio import read_json, write_json
from groundwork.runtime import resolve_device
from groundwork.train import checkpoint as ckpt
from groundwork.train.flops import mfu, peak_flops, training_flops_per_token
from groundwork.train.metrics import MetricsLogger, plot_losses
from groundwork.train.objectives import causal_lm_loss
from groundwork.train.optim import build_adamw, clip_grad_norm
from groundwork.train.schedules import Schedule, learning_rate

BEST_MODEL_FILE = "model.best.safetensors"
"""Weights at the evaluation with the lowest validation loss so far."""


class TokenData(Protocol):
    """What the loop needs from a token stream (``groundwork.corpus.TokenShards`` provides it)."""

    def __len__(self) -> int: ...

    def random_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sequential_batches(
        self, batch_size: int, seq_len: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(kw_only=True)
class TrainConfig:
    """How to train: steps, batch, optimizer, schedule, precision, evaluation and logging."""

    max_steps: int = 1000
    """Optimizer steps in the run (the schedule decays to ``min_lr`` at this step)."""
    max_time: float | None = None
    """Stop after this many seconds of wall time, with a checkpoint (``None``: no limit)."""
    batch_size: int = 32
    """Sequences per micro-batch."""
    seq_len: int = 128
    """Tokens per sequence (the model's context used in training)."""
    grad_accum: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay."""
    warmup_steps: int = 100
    """Steps of linear warmup."""
    schedule: Schedule = "cosine"
    """Learning-rate schedule after warmup: cosine, constant or wsd (warmup-stable-decay)."""
    decay_fraction: float = 0.2
    """For wsd: the fraction of steps spent decaying at the end."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (not applied to biases, norms, embeddings)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.95
    """AdamW second-moment decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 runs matmuls under autocast with fp32 master weights; fp32 is exact."""
    compile: bool = False
    """Compile the model with torch.compile."""
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ..."""
    seed: int = 1337
    """Seeds initialisation, data order and dropout."""
    eval_every: int = 200
    """Evaluate on the validation split (and checkpoint) every this many steps."""
    eval_batches: int = 20
    """Validation batches per evaluation (fixed windows from the start of the split)."""
    log_every: int = 10
    """Log training metrics every this many steps."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Write TensorBoard event files under the run directory's ``tb/``."""

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "seq_len", "grad_accum", "eval_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {value!r}")
        for name in ("lr",):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"train.{name} must be a positive number, got {value!r}")
        if self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.eval_batches < 1:
            raise ConfigError(f"train.eval_batches must be >= 1, got {self.eval_batches}")
        if not 0 <= self.decay_fraction <= 1:
            raise ConfigError(f"train.decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.max_time is not None and self.max_time <= 0:
            raise ConfigError(f"train.max_time must be positive seconds, got {self.max_time}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(kw_only=True)
class TrainerState:
    """Everything besides weights and optimizer moments that a resumed run needs."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    last_val_loss: float | None = None
    elapsed_seconds: float = 0.0
    rng: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    state: TrainerState
    stopped: Literal["finished", "time", "signal"]


def _model_flops_per_token(model: nn.Module, seq_len: int) -> float | None:
    config = getattr(model, "config", None)
    n_layers = getattr(config, "n_layers", None)
    d_model = getattr(config, "d_model", None)
    if n_layers is None or d_model is None:
        return None
    params = {id(p): p for p in model.parameters()}
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    lookup_only = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in linear_weights
    )
    n = sum(p.numel() for p in params.values()) - lookup_only
    if getattr(config, "n_heads", None) is None:  # no attention (an LSTM): just 6N
        return 6.0 * n
    return training_flops_per_token(n, n_layers=n_layers, d_model=d_model, seq_len=seq_len)


@torch.no_grad()
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
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i, (x, y) in enumerate(data.sequential_batches(batch_size, seq_len)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        total += causal_lm_loss(logits, y).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total, count


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> "_StopFlag":
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    generator: torch.Generator,
) -> None:
    """Write model, optimizer and trainer state (each file atomically; the state file last, so
    a state file always describes weights that are already on disk)."""
    state.rng = ckpt.rng_state(generator)
    ckpt.save_model(model, run_dir / ckpt.MODEL_FILE, metadata={"step": str(state.step)})
    ckpt.save_optimizer(optimizer, run_dir / ckpt.OPTIMIZER_FILE)
    write_json(run_dir / ckpt.STATE_FILE, asdict(state))


def load_trainer_state(run_dir: Path) -> TrainerState:
    """Read ``trainer_state.json`` of a run."""
    raw = read_json(Path(run_dir) / ckpt.STATE_FILE)
    try:
        return TrainerState(**raw)
    except TypeError as err:
        raise CheckpointError(f"{run_dir}/{ckpt.STATE_FILE} has unexpected fields: {err}") from err


# --8<-- [start:train]
def train(
    model: nn.Module,
    train_data: TokenData,
    val_data: TokenData | None,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    bytes_per_token: float | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data``, evaluating on ``val_data``, writing into ``run_dir``.

    Args:
        model: Maps ``(B, T)`` token ids to ``(B, T, V)`` logits; freshly initialised (or, with
            ``resume``, of the same config as the checkpoint).
        train_data: Training token stream.
        val_data: Validation token stream, or None.
        cfg: The training configuration.
        run_dir: The run directory (created if needed).
        resume: Continue from the checkpoint in ``run_dir``.
        bytes_per_token: UTF-8 bytes per token of the validation text, to report bits per byte.

    Returns:
        The final trainer state and why the run stopped.

    Raises:
        TrainingError: the loss became NaN or infinite (the last good checkpoint is kept).
        CheckpointError: ``resume`` with no (or an incompatible) checkpoint.
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    if len(train_data) <= cfg.seq_len:
        raise ConfigError(
            f"train.seq_len={cfg.seq_len} needs more than {cfg.seq_len} training tokens; "
            f"the training split has {len(train_data)}"
        )
    model.to(device)
    optimizer = build_adamw(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)
    )
    generator = torch.Generator().manual_seed(cfg.seed)  # the data order, and only that
    state = TrainerState()
    if resume:
        if not (run_dir / ckpt.STATE_FILE).exists():
            raise CheckpointError(f"cannot resume: {run_dir} has no {ckpt.STATE_FILE}")
        state = load_trainer_state(run_dir)
        ckpt.load_model_weights(model, run_dir / ckpt.MODEL_FILE)
        ckpt.load_optimizer(optimizer, run_dir / ckpt.OPTIMIZER_FILE)
        ckpt.set_rng_state(state.rng, generator)
    forward = torch.compile(model) if cfg.compile else model
    logger = MetricsLogger(
        run_dir, tensorboard=cfg.tensorboard, resume_step=state.step if resume else None
    )
    flops_per_token = _model_flops_per_token(model, cfg.seq_len)
    peak = peak_flops(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum

    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.max_steps,
        initial=state.step,
        disable=not cfg.progress,
        unit="step",
        ascii=True,
        mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line every 10 s
    )
    stopped: Literal["finished", "time", "signal"] = "finished"
    start = time.perf_counter() - state.elapsed_seconds
    window_start, window_tokens = time.perf_counter(), 0
    model.train()
    with _StopFlag() as stop:
        while state.step < cfg.max_steps:
            lr = learning_rate(
                state.step,
                lr=cfg.lr,
                max_steps=cfg.max_steps,
                warmup_steps=cfg.warmup_steps,
                min_lr=cfg.min_lr,
                schedule=cfg.schedule,
                decay_fraction=cfg.decay_fraction,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for _ in range(cfg.grad_accum):
                x, y = train_data.random_batch(cfg.batch_size, cfg.seq_len, generator)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast:
                    logits = forward(x)  # (B, T, V)
                loss = causal_lm_loss(logits, y) / cfg.grad_accum
                loss.backward()
                loss_sum += loss.detach()
            loss_value = loss_sum.item()
            if not math.isfinite(loss_value):
                logger.close()
                bar.close()
                raise TrainingError(
                    f"the loss became {loss_value} at step {state.step + 1}; the run stopped and "
                    f"the last good checkpoint in {run_dir} is intact "
                    f"(step {_saved_step(run_dir)}). "
                    "Try a lower --train.lr, gradient clipping, or fp32."
                )
            grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                now = time.perf_counter()
                tok_s = window_tokens / max(now - window_start, 1e-9)
                window_start, window_tokens = now, 0
                util = mfu(tok_s, flops_per_token, peak) if flops_per_token else None
                logger.log(
                    state.step,
                    loss=loss_value,
                    lr=lr,
                    grad_norm=float(grad_norm),
                    tokens=state.tokens_seen,
                    tokens_per_s=round(tok_s, 1),
                    mfu=None if util is None else round(util, 4),
                )
                bar.set_postfix(
                    loss=f"{loss_value:.3f}",
                    tok_s=f"{tok_s:,.0f}",
                    mfu="n/a" if util is None else f"{util:.1%}",
                )

            out_of_time = cfg.max_time is not None and time.perf_counter() - start > cfg.max_time
            at_eval = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
            if at_eval or out_of_time or stop.signal is not None:
                if val_data is not None and stop.signal is None:  # on a signal, just save
                    _evaluate(model, val_data, cfg, state, logger, device, bytes_per_token, bar)
                state.elapsed_seconds = time.perf_counter() - start
                save_checkpoint(run_dir, model, optimizer, state, generator)
                plot_losses(logger.path, run_dir / "plots" / "loss.png")
            if stop.signal is not None:
                stopped = "signal"
                break
            if out_of_time:
                stopped = "time"
                break
    bar.close()
    logger.close()
    return TrainResult(run_dir=run_dir, state=state, stopped=stopped)


# --8<-- [end:train]


def _evaluate(
    model: nn.Module,
    val_data: TokenData,
    cfg: TrainConfig,
    state: TrainerState,
    logger: MetricsLogger,
    device: torch.device,
    bytes_per_token: float | None,
    bar: Any,
) -> None:
    total, count = evaluate_loss(
        model,
        val_data,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        max_batches=cfg.eval_batches,
        device=device,
        precision=cfg.precision,
    )
    if count == 0:
        return
    val_loss = total / count
    bpb = val_loss / math.log(2) / bytes_per_token if bytes_per_token else None
    state.last_val_loss = val_loss
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss, state.best_step = val_loss, state.step
        ckpt.save_model(model, logger.run_dir / BEST_MODEL_FILE, metadata={"step": str(state.step)})
    logger.log(state.step, val_loss=val_loss, val_bpb=bpb)
    message = f"step {state.step}: val loss {val_loss:.4f}"
    if bpb is not None:
        message += f", {bpb:.3f} bits/byte"
    bar.write(message)


def _saved_step(run_dir: Path) -> int | str:
    try:
        return int(read_json(run_dir / ckpt.STATE_FILE)["step"])
    except (CheckpointError, KeyError, ValueError, TypeError):
        return "none yet"
