"""Shared by the distributed tests and the workers ``torchrun`` runs for them: the tiny models,
learnable batches and loss the runs train with, the launcher, and the one comparison rule."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groundwork.models import registry


def build(arch: str, **overrides: Any) -> Any:
    """The registry's ``tiny`` preset of ``arch``, seed 0, dropout off (so runs are comparable)."""
    torch.manual_seed(0)
    config = registry.get(arch).config("tiny")
    if hasattr(config, "dropout"):
        overrides = {"dropout": 0.0, **overrides}
    return registry.build_model(dataclasses.replace(config, **overrides))


def learnable_batches(vocab: int, steps: int, rows: int, length: int) -> torch.Tensor:
    """(steps, rows, length + 1) token ids from the first 16, the same on every rank (a loss
    that falls within a few steps)."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, min(vocab, 16), (steps, rows, length + 1), generator=g)


def loss_of(model: Any, rows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``rows`` (B, T + 1)."""
    logits = model(rows[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())


def torchrun(
    worker: Path, out: Path, *scenarios: str, nproc: int = 2, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``worker OUT SCENARIO...`` under ``torchrun --standalone`` with ``nproc`` processes
    (one thread each); torchrun checks its workers every 5 s, so a dead rank's peers report it
    first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--monitor-interval", "5", "--nproc-per-node", str(nproc)]
    command += [str(worker), str(out), *scenarios]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def without_key_bias(name: str, w: torch.Tensor) -> torch.Tensor:
    """The weight, with GPT's key bias zeroed: adding a constant vector to every key adds the
    same number to every score of a query, which the softmax ignores, so the key bias's true
    gradient is zero and its computed one is rounding noise, which AdamW scales up to steps of
    the learning rate's size. It drifts differently under any change of summation order."""
    if not name.endswith("qkv_proj.bias"):
        return w
    d = w.numel() // 3
    return torch.cat([w[:d], torch.zeros(d), w[2 * d :]])
