"""The training engine: one loop for every objective.

``train(model, data, objective, config, run_dir)`` takes optimizer steps until ``max_steps``:
each step draws ``grad_accum`` micro-batches from ``data``, asks the ``objective`` for the loss
under mixed precision, backpropagates, clips the gradient norm, sets the learning rate from the
schedule and steps AdamW. Every ``eval_every`` steps it evaluates, keeps the best weights by a
chosen metric, writes an atomic checkpoint and redraws the loss plot; it logs to
``metrics.jsonl`` (and TensorBoard), shows a progress bar with tokens/s and MFU, stops cleanly on
SIGINT/SIGTERM, on a time budget or when the metric stops improving (early stopping), and
resumes exactly. The pieces plug in:

* an **objective** (:mod:`groundwork.train.objectives`): ``objective(model, batch)`` returns a
  :class:`~groundwork.train.objectives.LossOutput` (the mean loss, the number of items, optional
  metrics). Causal LM, classification, masked LM (+ next-sentence prediction) and
  sequence-to-sequence (span corruption) exist; SFT, reward models, DPO, distillation and MoE
  auxiliary losses are further objectives of the same shape.
* **data** (:mod:`groundwork.train.data`): ``data.next_batch(generator)`` for training,
  ``data.val_batches()`` for evaluation.
* an optional **evaluation**: ``evaluate(model) -> {"val_loss": ..., "val_f1": ...}``, run in
  eval mode without gradients; by default the objective's mean loss over ``val_batches()``.
  ``config.best_metric`` / ``best_mode`` pick the best evaluation (ties go to the lower
  ``val_loss``), ``patience`` stops after that many evaluations without a better one, and
  ``restore_best`` puts the best weights back at the end.

Speed (chapter 8, Performance): the step never waits for the device. Each step's loss stays a
tensor on the device and is read (one ``.item()``-like transfer for all the steps since the
previous reading) only at log steps, before an evaluation or checkpoint, and at the end; the
non-finite-loss check therefore fires at the next reading, naming the step where the loss first
became NaN or infinite, and since a checkpoint is only ever written after a reading, the last
good checkpoint stays intact. Batches move to a GPU from pinned memory without blocking,
AdamW is fused on CUDA, ``compile`` compiles the model and, with one process, the objective (so
the loss fuses with the model's last layers), ``precision="bf16"`` runs under autocast, and
``activation_checkpointing`` trades compute for memory.

What makes a resumed run equal to an uninterrupted one, bit for bit on CPU: the data order comes
from a dedicated ``torch.Generator`` whose state is checkpointed (with the data's position, for
data read in epochs), as are the optimizer moments and torch's global RNG (dropout); evaluation
consumes no randomness; the learning rate is a pure function of the step.

With a :class:`~groundwork.train.parallel.Parallelism` from ``groundwork.distributed`` (DDP,
ZeRO, FSDP, tensor and pipeline parallelism) the same loop runs on every rank of a ``torchrun``
launch: each data-parallel rank keeps its rows of the global batch, the strategy finishes the
gradients (or runs the step's schedule itself), and rank 0 alone logs and writes the run
directory (sharded weights and optimizer state are gathered for it first), so checkpoints are
the one-process format and load at any world size. This module is long because it is the whole
training loop, one function with its helpers, read top to bottom in chapter 8.

Chapter 8 (Training); chapter 17 (distributed training).
"""

import contextlib
import math
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from types import FrameType
from typing import Any, Literal, cast

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError, TrainingError
from groundwork.runtime import eval_mode, resolve_device
from groundwork.train import checkpoint as ckpt
from groundwork.train.activation_checkpointing import checkpoint_blocks, uncheckpoint_blocks
from groundwork.train.config import TrainConfig
from groundwork.train.data import Batch, TrainData, to_device
from groundwork.train.flops import mfu, model_flops_per_token, peak_flops
from groundwork.train.metrics import MetricsLogger, plot_losses
from groundwork.train.objectives import Objective
from groundwork.train.parallel import Parallelism, shard_rows
from groundwork.train.schedules import learning_rate
from groundwork.train.state import (
    BEST_MODEL_FILE,
    TrainerState,
    clear_training_files,
    load_trainer_state,
    save_checkpoint,
    saved_step,
)

PLOT_INTERVAL = 30.0
"""Seconds between redraws of ``plots/loss.png`` at evaluations (it is drawn at the end too)."""

Stopped = Literal["finished", "time", "signal", "early_stop"]
Metrics = dict[str, float | None]
Evaluate = Callable[[nn.Module], Mapping[str, float | None]]
"""``evaluate(model) -> metrics``: called in eval mode, without gradients (None: not known)."""


@dataclass(kw_only=True)
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    state: TrainerState
    stopped: Stopped
    """Why the run stopped: finished (max_steps), time (max_time), signal, early_stop."""
    reason: str
    """The same in words, naming the option, e.g. ``train.max_time (60 s) reached``."""
    max_steps: int
    evals: list[dict[str, float]] = field(default_factory=list)
    """This invocation's evaluations: their ``step`` and known metrics."""

    def summary(self) -> str:
        """One line: ``stopped at step 470 of 800: train.max_time (60 s) reached``."""
        verb = "finished" if self.stopped == "finished" else "stopped"
        return f"{verb} at step {self.state.step} of {self.max_steps}: {self.reason}"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"`` (fp32 master weights), else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    objective: Objective,
    batches: Iterable[Batch],
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> tuple[float, int]:
    """The objective's loss summed over ``batches`` (each batch's mean times its items) and the
    number of items, in eval mode."""
    device = torch.device(device)
    total, items = 0.0, 0
    with eval_mode(model):
        for batch in batches:
            with autocast(device, precision):
                out = objective(model, to_device(batch, device))
            total += out.loss.item() * out.items
            items += out.items
    return total, items


# --8<-- [start:train]
def train(
    model: nn.Module,
    data: TrainData,
    objective: Objective,
    config: TrainConfig,
    run_dir: Path | None,
    *,
    resume: bool = False,
    evaluate: Evaluate | None = None,
    parallel: Parallelism | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``objective``, writing checkpoints into ``run_dir``.

    Args:
        model: Freshly initialised (or, with ``resume``, of the same config as the checkpoint).
        data: Training and validation batches (:class:`~groundwork.train.data.TrainData`).
        objective: Gives the loss of a batch (:class:`~groundwork.train.objectives.Objective`).
        config: Steps, optimizer, schedule, precision, evaluation, logging.
        run_dir: The run directory (created if needed; without ``resume``, the files of an
            earlier training run there are removed first). None: a temporary one, deleted at
            the end (only the trained ``model`` is kept).
        resume: Continue from the checkpoint in ``run_dir``.
        evaluate: Metrics of the model at an evaluation (default: the objective's mean loss
            over ``data.val_batches()``, as ``val_loss``).
        parallel: How the ranks of a distributed run share the work (default: one process);
            ``config.batch_size`` is the global batch, split over the data-parallel ranks.

    Returns:
        The final trainer state, why the run stopped, and this invocation's evaluations.

    Raises:
        TrainingError: the loss became NaN or infinite (the last good checkpoint is kept).
        CheckpointError: ``resume`` with no (or an incompatible) checkpoint.
    """
    if run_dir is None:
        if resume:
            raise ConfigError("resuming needs the run directory that holds the checkpoint")
        with tempfile.TemporaryDirectory(prefix="groundwork-run-") as tmp:
            return train(
                model, data, objective, config, Path(tmp), evaluate=evaluate, parallel=parallel
            )
    cfg, run_dir = config, Path(run_dir)
    par = parallel or Parallelism()
    par.check(cfg)
    main, rank, world = par.is_main, par.data_rank, par.data_size
    device = resolve_device(cfg.device)
    model.to(device)
    if cfg.activation_checkpointing:
        checkpoint_blocks(model)
    forward = par.wrap(model)  # before the optimizer: FSDP replaces the parameters
    optimizer = par.build_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)  # the data order, and only that
    state = _start(run_dir, model, optimizer, data, generator, resume=resume, parallel=par)
    par.barrier()  # rank 0 has cleared an earlier run's files
    if evaluate is None:
        evaluate = _mean_objective_loss(objective, data, device, cfg.precision)
    if cfg.compile:
        forward = cast(nn.Module, torch.compile(forward))
        if type(par) is Parallelism:  # one process: the loss is compiled with the model
            objective = cast(Objective, torch.compile(objective))
    logger = MetricsLogger(
        run_dir,
        tensorboard=cfg.tensorboard and main,
        resume_step=state.step if resume else None,
        write=main,
    )
    speed = _Throughput(model_flops_per_token(model, cfg.seq_len), peak_flops(device))
    bar = _progress_bar(cfg, state.step, show=main)
    evals: list[dict[str, float]] = []
    stopped, reason = _stop_reason(cfg, state, signum=None, out_of_time=False)
    if stopped is not None:  # e.g. resuming a run that already reached max_steps
        reason = f"nothing to do, {reason} before this invocation"
    start, elapsed_before = perf_counter(), state.elapsed_seconds  # max_time: per invocation
    plotted = -math.inf
    unread = _UnreadLosses(device, par, run_dir)  # losses still on the device
    model.train()
    with _StopFlag() as stop:
        while stopped is None:
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
            items, tokens = 0, 0
            extra: dict[str, torch.Tensor | float] = {}
            batches = [  # this rank's rows of each micro-batch
                to_device(shard_rows(data.next_batch(generator), rank, world), device)
                for _ in range(cfg.grad_accum)
            ]
            scheduled = par.forward_backward(forward, batches, objective, cfg)
            if scheduled is not None:  # e.g. a pipeline's schedule
                loss_sum, items = scheduled
                tokens = items
            for micro, batch in enumerate(batches if scheduled is None else []):
                with par.micro_batch(forward, last=micro == cfg.grad_accum - 1):
                    with autocast(device, cfg.precision):
                        out = objective(forward, batch)
                    loss = out.loss / cfg.grad_accum
                    loss.backward()
                loss_sum += loss.detach()
                items += out.items * world
                tokens += (out.items if out.tokens is None else out.tokens) * world
                for k, v in out.metrics.items():
                    extra[k] = extra.get(k, 0.0) + _detached(v) / cfg.grad_accum
            unread.add(state.step + 1, loss_sum, items)  # no sync: read at the next log step
            grad_norm = par.finish_gradients(model, optimizer, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens_seen += tokens
            speed.add(tokens)
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                loss_value = unread.read(state, logger, bar)  # the global batch's loss
                tok_s, util = speed.read()
                logger.log(
                    state.step,
                    loss=loss_value,
                    lr=lr,
                    grad_norm=float(grad_norm),
                    tokens=state.tokens_seen,
                    tokens_per_s=round(tok_s, 1),
                    mfu=None if util is None else round(util, 4),
                    **{k: float(v) for k, v in extra.items()},
                )
                bar.set_postfix(
                    loss=f"{loss_value:.3f}",
                    tok_s=f"{tok_s:,.0f}",
                    mfu="n/a" if util is None else f"{util:.1%}",
                )

            out_of_time = par.agree(
                cfg.max_time is not None and perf_counter() - start > cfg.max_time
            )
            if par.agree(stop.signal is not None) and stop.signal is None:
                stop.signal = signal.SIGTERM  # another rank was signalled: stop together
            at_eval = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
            if at_eval or out_of_time or stop.signal is not None:
                unread.read(state, logger, bar)  # a checkpoint only after a non-finite check
                if stop.signal is None:  # on a signal, just save
                    par.sync_model(model)
                    metrics = _evaluate(model, evaluate, cfg, state, run_dir, par)
                    if metrics:
                        known = {k: v for k, v in metrics.items() if v is not None}
                        evals.append({"step": state.step, **known})
                        logger.log(state.step, **metrics)
                        if cfg.progress and main:
                            bar.write(_describe(state.step, metrics, data))
                state.elapsed_seconds = elapsed_before + perf_counter() - start
                _checkpoint(run_dir, model, optimizer, state, generator, data, par)
                par.barrier()  # every rank sees the files rank 0 wrote
            stopped, reason = _stop_reason(cfg, state, stop.signal, out_of_time)
            plot_due = stopped is not None or (at_eval and perf_counter() - plotted > PLOT_INTERVAL)
            if main and plot_due:
                plot_losses(logger.path, run_dir / "plots" / "loss.png")
                plotted = perf_counter()
    unread.read(state, logger, bar)
    bar.close()
    logger.close()
    if cfg.activation_checkpointing:
        uncheckpoint_blocks(model)
    if cfg.restore_best and stopped in ("finished", "early_stop"):
        _restore_best(model, run_dir, state, par)
        par.barrier()
    return TrainResult(
        run_dir=run_dir,
        state=state,
        stopped=stopped,
        reason=reason,
        max_steps=cfg.max_steps,
        evals=evals,
    )


# --8<-- [end:train]


def _start(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainData,
    generator: torch.Generator,
    *,
    resume: bool,
    parallel: Parallelism,
) -> TrainerState:
    """A fresh state (rank 0 clearing an earlier run's files), or the checkpoint's, restored
    (on every rank)."""
    if not resume:
        if parallel.is_main:
            clear_training_files(run_dir)
        return TrainerState()
    if not (run_dir / ckpt.STATE_FILE).exists():
        raise CheckpointError(f"cannot resume: {run_dir} has no {ckpt.STATE_FILE}")
    state = load_trainer_state(run_dir)
    parallel.load_model(model, run_dir / ckpt.MODEL_FILE)
    parallel.load_optimizer(optimizer, run_dir / ckpt.OPTIMIZER_FILE)
    ckpt.set_rng_state(state.rng, generator)
    load_position = getattr(data, "load_state_dict", None)
    if state.data and load_position is not None:
        load_position(state.data, generator)
    return state


def _checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    generator: torch.Generator,
    data: TrainData,
    parallel: Parallelism,
) -> None:
    position = getattr(data, "state_dict", None)
    state.data = position() if position is not None else {}
    save_checkpoint(run_dir, model, optimizer, state, generator, parallel)


def _mean_objective_loss(
    objective: Objective, data: TrainData, device: torch.device, precision: str
) -> Evaluate:
    """The default evaluation: ``val_loss``, the objective's mean over ``data.val_batches()``."""

    def evaluate(model: nn.Module) -> Metrics:
        total, items = validation_loss(
            model, objective, data.val_batches(), device=device, precision=precision
        )
        return {"val_loss": total / items} if items else {}

    return evaluate


def _evaluate(
    model: nn.Module,
    evaluate: Evaluate,
    cfg: TrainConfig,
    state: TrainerState,
    run_dir: Path,
    parallel: Parallelism,
) -> Metrics:
    """Run the evaluation, add the mean training loss since the previous one, and keep the
    weights if ``best_metric`` improved."""
    with eval_mode(model), torch.no_grad():
        metrics = dict(evaluate(model))
    if not metrics:  # no validation data
        return metrics
    if cfg.best_metric not in metrics:
        raise ConfigError(
            f"train.best_metric {cfg.best_metric!r} is not among the evaluation's metrics "
            f"{sorted(metrics)}"
        )
    if state.train_items:
        metrics["train_loss"] = state.train_loss_sum / state.train_items
        state.train_loss_sum, state.train_items = 0.0, 0
    state.last_val_loss = metrics.get("val_loss")
    if _improves(metrics, state, cfg):
        state.best_value, state.best_step = metrics[cfg.best_metric], state.step
        state.best_val_loss, state.evals_since_best = metrics.get("val_loss"), 0
        step = {"step": str(state.step)}
        parallel.save_model(model, run_dir / BEST_MODEL_FILE, metadata=step)
    else:
        state.evals_since_best += 1
    return metrics


def _improves(metrics: Metrics, state: TrainerState, cfg: TrainConfig) -> bool:
    """Whether ``metrics`` beat the best evaluation so far (a tie: the lower ``val_loss``)."""
    value = metrics[cfg.best_metric]
    if value is None or math.isnan(value):
        return False
    if state.best_value is None:
        return True
    sign = 1.0 if cfg.best_mode == "max" else -1.0
    if value != state.best_value:
        return sign * value > sign * state.best_value
    loss, best_loss = metrics.get("val_loss"), state.best_val_loss
    return loss is not None and best_loss is not None and loss < best_loss


def _stop_reason(
    cfg: TrainConfig, state: TrainerState, signum: int | None, out_of_time: bool
) -> tuple[Stopped | None, str]:
    """Why the run should stop now, or ``(None, "")`` to go on."""
    if signum is not None:
        return "signal", f"{signal.Signals(signum).name} received"
    if out_of_time:
        return "time", f"train.max_time ({cfg.max_time:g} s) reached"
    if cfg.patience is not None and state.evals_since_best >= cfg.patience:
        return "early_stop", (
            f"no better {cfg.best_metric} in {cfg.patience} evaluations (train.patience); "
            f"the best was at step {state.best_step}"
        )
    if state.step >= cfg.max_steps:
        return "finished", f"train.max_steps ({cfg.max_steps}) reached"
    return None, ""


def _restore_best(
    model: nn.Module, run_dir: Path, state: TrainerState, parallel: Parallelism
) -> None:
    """Load the best weights into ``model`` and make them the run's ``model.safetensors``."""
    best = run_dir / BEST_MODEL_FILE
    if state.best_step is None or state.best_step == state.step or not best.exists():
        return
    parallel.load_model(model, best)
    step = {"step": str(state.best_step)}
    parallel.save_model(model, run_dir / ckpt.MODEL_FILE, metadata=step)


def _describe(step: int, metrics: Metrics, data: TrainData) -> str:
    """An evaluation line: ``step 200: val loss (first 20 batches of 32x128) 4.1234, ...``."""
    parts = []
    for name, value in metrics.items():
        if value is None:
            continue
        if name == "val_loss":
            where = getattr(data, "val_description", None)
            parts.append(f"val loss ({where}) {value:.4f}" if where else f"val loss {value:.4f}")
        elif name == "val_bpb":
            parts.append(f"{value:.3f} bits/byte")
        else:
            parts.append(f"{name.replace('_', ' ')} {value:.4f}")
    return f"step {step}: " + ", ".join(parts)


# --8<-- [start:unread_losses]
class _UnreadLosses:
    """The steps' losses kept on the device until they are read, all at once.

    Reading a tensor's value (``.item()``, ``float()``) makes the host wait for the device to
    finish every queued kernel; doing it every step leaves a GPU idle while Python prepares the
    next one. The engine instead keeps each step's loss tensor here and :meth:`read` copies them
    all to the host in one transfer at log steps, before evaluations and checkpoints, and at
    the end. The arithmetic is the per-step one (each value averaged over the ranks, summed as a
    Python float times its items, in step order), so metrics and resumed runs are unchanged.
    """

    def __init__(self, device: torch.device, parallel: Parallelism, run_dir: Path) -> None:
        self.device, self.parallel, self.run_dir = device, parallel, run_dir
        self.steps: list[tuple[int, torch.Tensor, int]] = []
        self.last = math.nan

    def add(self, step: int, loss_sum: torch.Tensor, items: int) -> None:
        """Keep step ``step``'s loss (a scalar tensor, the mean over its ``items``)."""
        self.steps.append((step, loss_sum.detach(), items))

    def read(self, state: TrainerState, logger: MetricsLogger, bar: Any) -> float:
        """Add the unread losses to ``state.train_loss_sum``/``train_items`` and return the
        latest (the last one read, if none is unread).

        Raises:
            TrainingError: one of them is NaN or infinite (naming its step).
        """
        if not self.steps:
            return self.last
        losses = torch.stack([t.to(self.device, torch.float32) for _, t, _ in self.steps])
        values = losses.tolist()  # (n_steps,): the one host-device synchronisation
        for (step, _, items), local in zip(self.steps, values, strict=True):
            value = self.parallel.mean(local)  # the global batch's loss
            if not math.isfinite(value):
                logger.close()
                bar.close()
                seen = f" (read at step {state.step})" if step != state.step else ""
                raise TrainingError(
                    f"the loss became {value} at step {step}{seen}; the run stopped and "
                    f"the last good checkpoint in {self.run_dir} is intact "
                    f"(step {saved_step(self.run_dir)}). "
                    "Try a lower --train.lr, gradient clipping, or fp32."
                )
            state.train_loss_sum += value * items
            state.train_items += items
            self.last = value
        self.steps.clear()
        return self.last


# --8<-- [end:unread_losses]


def _detached(value: torch.Tensor | float) -> torch.Tensor | float:
    return value.detach() if isinstance(value, torch.Tensor) else value


class _Throughput:
    """Tokens per second and MFU over the steps since the previous reading."""

    def __init__(self, flops_per_token: float | None, peak: float | None) -> None:
        self.flops_per_token, self.peak = flops_per_token, peak
        self.start, self.tokens = perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def read(self) -> tuple[float, float | None]:
        now = perf_counter()
        tok_s = self.tokens / max(now - self.start, 1e-9)
        self.start, self.tokens = now, 0
        if not self.flops_per_token:
            return tok_s, None
        return tok_s, mfu(tok_s, self.flops_per_token, self.peak)


def _progress_bar(cfg: TrainConfig, initial: int, *, show: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=cfg.max_steps,
        initial=initial,
        disable=not (cfg.progress and show),
        unit="step",
        ascii=True,
        mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line every 10 s
    )


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
