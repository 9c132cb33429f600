"""A scaling sweep: models of several sizes, each trained for several compute budgets, every run
to the end of its own learning-rate schedule, and the final validation loss of each.

This is the experiment behind the scaling laws of chapter 9, at the size of a laptop. For each
compute budget $C$ (training FLOPs) and each model of $N$ parameters, the run trains on

$$ D = \\frac{C}{f(N)} $$

tokens, where $f$ is the model's training FLOPs per token (:func:`~groundwork.train.flops.
model_flops_per_token`: $6N$ for the weights plus the attention term; $N$ counts the weights
that multiply, not the position table that is only looked up). A budget thus gives an
*IsoFLOP* family: small models see many tokens, large ones few (Hoffmann et al. 2022,
approach 2). Each run's cosine schedule ends at its own last step, as Hoffmann et al. insist:
judging a short run by a checkpoint of a long schedule (as Kaplan et al. 2020 did) makes small
data budgets look worse than they are. Every run starts from the same seed and is scored on the
same validation windows.

:func:`plan_sweep` lists the runs (dropping those with fewer than ``min_steps`` steps or more
than ``max_steps``), :func:`run_sweep` trains them one after another and appends each result to
``results.json`` as soon as it is known, so an interrupted sweep continues where it stopped.
The fits are :mod:`groundwork.scaling.laws` and :mod:`groundwork.scaling.isoflop`. Chapter 9.
"""

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from groundwork.errors import ConfigError
from groundwork.fileio import read_json, write_json
from groundwork.models import registry
from groundwork.train.config import TrainConfig
from groundwork.train.data import TokenData
from groundwork.train.flops import matmul_parameter_count, model_flops_per_token
from groundwork.train.loop import evaluate_loss, train_causal_lm

__all__ = ["ModelSize", "PlannedRun", "SweepConfig", "plan_sweep", "run_sweep"]


@dataclass(kw_only=True)
class ModelSize:
    """One model shape of the sweep (the other fields come from the preset)."""

    d_model: int
    """Width of the residual stream."""
    n_layers: int
    """Number of blocks."""
    n_heads: int
    """Attention heads."""


@dataclass(kw_only=True)
class SweepConfig:
    """The grid: model shapes times compute budgets."""

    arch: str = "gpt"
    """A registered causal LM (gpt, llama)."""
    preset: str = "tiny"
    """The preset the shapes modify."""
    models: list[ModelSize] = field(default_factory=list)
    """The model shapes, smallest first."""
    budgets: list[float] = field(default_factory=list)
    """Training compute budgets in FLOPs, one IsoFLOP family each."""
    min_steps: int = 20
    """Skip a (model, budget) pair with fewer optimizer steps than this."""
    max_steps: int = 100_000
    """Skip a pair with more steps than this."""
    eval_batches: int = 40
    """Validation windows (of train.batch_size x train.seq_len tokens) each run is scored on."""

    def __post_init__(self) -> None:
        if not self.models or not self.budgets:
            raise ConfigError("a sweep needs sweep.models and sweep.budgets (both non-empty)")
        if any(b <= 0 for b in self.budgets):
            raise ConfigError(f"sweep.budgets must be positive FLOPs, got {self.budgets}")
        if self.min_steps < 1 or self.max_steps < self.min_steps or self.eval_batches < 1:
            raise ConfigError("need 1 <= sweep.min_steps <= sweep.max_steps and eval_batches >= 1")


@dataclass
class PlannedRun:
    """One run of the sweep."""

    name: str
    model: Any
    """The model config."""
    params: int
    """Parameters that multiply (N): all but looked-up tables."""
    flops_per_token: float
    budget: float
    steps: int
    tokens: int
    """Tokens trained on: steps x batch x sequence length (D)."""

    @property
    def flops(self) -> float:
        """The compute actually spent: tokens x FLOPs per token (the budget, rounded to steps)."""
        return self.tokens * self.flops_per_token


# --8<-- [start:plan]
def plan_sweep(sweep: SweepConfig, train: TrainConfig, vocab_size: int) -> list[PlannedRun]:
    """The runs of the sweep, budget by budget, each model's steps set by the budget."""
    arch = registry.get(sweep.arch)
    if not arch.causal_lm:
        raise ConfigError(f"sweep.arch {sweep.arch!r} is not a causal language model")
    per_step = train.batch_size * train.seq_len
    runs = []
    for budget in sweep.budgets:
        for size in sweep.models:
            config = arch.config(
                sweep.preset,
                **dataclasses.asdict(size),
                vocab_size=vocab_size,
                max_seq_len=train.seq_len,
            )
            with torch.device("meta"):
                model = registry.build_model(config)
            fpt = model_flops_per_token(model, train.seq_len)
            assert fpt is not None
            params = matmul_parameter_count(model)
            steps = math.floor(budget / (fpt * per_step))
            if not sweep.min_steps <= steps <= sweep.max_steps:
                continue
            name = f"d{size.d_model}-l{size.n_layers}-c{budget:.0e}".replace("+", "")
            runs.append(PlannedRun(name, config, params, fpt, budget, steps, steps * per_step))
    if not runs:
        raise ConfigError("no (model, budget) pair of the sweep fits sweep.min_steps..max_steps")
    return runs


# --8<-- [end:plan]


def run_sweep(
    runs: Sequence[PlannedRun],
    train_data: TokenData,
    val_data: TokenData,
    train: TrainConfig,
    results: Path,
    *,
    eval_batches: int,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every planned run and score it; results accumulate in ``results`` (JSON, runs
    already there are skipped) and are returned.

    Each run: seed ``train.seed``, ``train`` with ``max_steps`` set to the run's steps, the
    warm-up at most a tenth of them, one evaluation at the end; then the mean validation loss
    (nats per token) over the first ``eval_batches`` windows of ``val_data``.
    """
    done: dict[str, dict[str, Any]] = {}
    if results.is_file():
        done = {r["name"]: r for r in read_json(results).get("runs", [])}
    out = [done[r.name] for r in runs if r.name in done]
    for i, run in enumerate(runs):
        if run.name in done:
            continue
        cfg = dataclasses.replace(
            train,
            max_steps=run.steps,
            warmup_steps=min(train.warmup_steps, max(1, run.steps // 10)),
            eval_every=run.steps,
            progress=False,
            tensorboard=False,
            max_time=None,
        )
        torch.manual_seed(train.seed)
        model = registry.build_model(run.model)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="groundwork-sweep-") as tmp:
            train_causal_lm(model, train_data, None, cfg, Path(tmp))
        seconds = time.perf_counter() - started
        total, count = evaluate_loss(
            model,
            val_data,
            batch_size=train.batch_size,
            seq_len=train.seq_len,
            max_batches=eval_batches,
            device=next(model.parameters()).device,
        )
        record = dict(
            name=run.name,
            arch=registry.arch_of(run.model).name,
            d_model=run.model.d_model,
            n_layers=run.model.n_layers,
            n_heads=run.model.n_heads,
            params=run.params,
            tokens=run.tokens,
            steps=run.steps,
            flops_per_token=run.flops_per_token,
            flops=run.flops,
            budget=run.budget,
            loss=total / count,
            seconds=round(seconds, 1),
        )
        out.append(record)
        done[run.name] = record
        write_json(results, {"runs": list(done.values())})
        log(
            f"[{i + 1}/{len(runs)}] {run.name}: N={run.params:,} D={run.tokens:,} "
            f"C={run.flops:.2e} loss {record['loss']:.4f} ({seconds:.0f} s)"
        )
    return out
