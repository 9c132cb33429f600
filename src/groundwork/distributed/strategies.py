"""The parallel plan from the command line (``--parallel.dp``, ``--parallel.zero``) and the
engine hooks of each strategy: the :class:`~groundwork.train.parallel.Parallelism` the training
engine calls, so the same loop runs in one process or under ``torchrun``.

* :class:`DataParallel`: torch's ``DistributedDataParallel`` (gradients all-reduced in buckets
  during the last micro-batch's backward, skipped with ``no_sync`` on the others);
* :class:`FullyShardedDataParallel`: torch's FSDP2 (``fully_shard``; ZeRO stage 3), parameters
  sharded too, gathered block by block;
* :class:`ZeroDataParallel`: our ZeRO-1/2 (:class:`~groundwork.distributed.zero.ZeroOptimizer`):
  the AdamW state sharded over the ranks, gradients all-reduced (1) or reduce-scattered (2) after
  backward, parameters all-gathered after the step.

Chapter 17.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from groundwork.distributed import fsdp
from groundwork.distributed.ddp import apply_ddp
from groundwork.distributed.world import World, collective_errors, init_world, require_torchrun
from groundwork.distributed.zero import ZeroOptimizer
from groundwork.errors import ConfigError
from groundwork.train import checkpoint as ckpt
from groundwork.train.config import TrainConfig
from groundwork.train.optim import parameter_groups
from groundwork.train.parallel import Parallelism


@dataclass(frozen=True)
class ParallelConfig:
    """How to spread training over the processes ``torchrun`` started."""

    dp: int = 1
    """Data-parallel degree: the number of processes, each with a replica of the model and its
    share of every batch (must equal torchrun's ``--nproc-per-node`` x nodes)."""
    zero: int = 0
    """ZeRO stage over the data-parallel ranks: 0 (replicated optimizer state, torch's DDP),
    1 (optimizer state sharded) or 2 (gradients sharded too), ours."""
    fsdp: bool = False
    """Shard the parameters too with torch's FSDP2 (ZeRO stage 3), instead of DDP or ZeRO."""
    timeout: float = 300.0
    """Seconds a collective waits for the other ranks before the run fails."""

    def __post_init__(self) -> None:
        if self.dp < 1:
            raise ConfigError(f"parallel.dp must be at least 1, got {self.dp}")
        if self.zero not in (0, 1, 2):
            raise ConfigError(
                f"parallel.zero must be 0, 1 or 2, got {self.zero} (stage 3, parameters "
                "sharded too, is FSDP)"
            )
        if self.fsdp and self.zero:
            raise ConfigError(
                "parallel.fsdp shards everything (ZeRO stage 3): drop parallel.zero, or fsdp"
            )
        if self.timeout <= 0:
            raise ConfigError(f"parallel.timeout must be positive, got {self.timeout}")


class DataParallel(Parallelism):
    """Data parallelism with torch's ``DistributedDataParallel``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rank, self.world_size = world.rank, world.world_size

    def describe(self) -> str:
        return f"data parallel over {self.world_size} processes ({self.world.backend}, DDP)"

    def wrap(self, model: nn.Module) -> nn.Module:
        with collective_errors(self.rank):  # DDP broadcasts rank 0's weights
            return apply_ddp(model, self.world)

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        no_sync = getattr(forward, "no_sync", None)
        if last or no_sync is None:
            return collective_errors(self.rank)
        return no_sync()

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        with collective_errors(self.rank):
            dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def agree(self, flag: bool) -> bool:
        t = torch.tensor([int(flag)])
        with collective_errors(self.rank):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        with collective_errors(self.rank):
            dist.barrier()


class ZeroDataParallel(DataParallel):
    """Data parallelism with our ZeRO stage 1 or 2 optimizer (no DDP wrapper: the optimizer
    reduces the gradients after backward)."""

    def __init__(self, world: World, stage: int) -> None:
        super().__init__(world)
        self.stage = stage

    def describe(self) -> str:
        return (
            f"data parallel over {self.world_size} processes ({self.world.backend}), "
            f"ZeRO stage {self.stage}"
        )

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def build_optimizer(self, model: nn.Module, cfg: TrainConfig) -> Any:
        groups = [
            {k: v for k, v in g.items() if k != "names"}
            for g in parameter_groups(model, cfg.weight_decay)
        ]
        with collective_errors(self.rank):
            return ZeroOptimizer(
                groups,
                torch.optim.AdamW,
                stage=1 if self.stage == 1 else 2,
                lr=cfg.lr,
                betas=(cfg.beta1, cfg.beta2),
                eps=1e-8,
            )

    def finish_gradients(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        with collective_errors(self.rank):
            optimizer.reduce_gradients()
            return optimizer.clip_grad_norm(max_norm)


class FullyShardedDataParallel(DataParallel):
    """Data parallelism with parameters, gradients and optimizer state sharded: torch's FSDP2."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.model: nn.Module | None = None
        self.names: dict[str, str] = {}

    def describe(self) -> str:
        return f"fully sharded data parallel over {self.world_size} processes (FSDP2)"

    def wrap(self, model: nn.Module) -> nn.Module:
        self.names = fsdp.tied_names(model)
        with collective_errors(self.rank):
            self.model = fsdp.apply_fsdp(model)
        return model

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        forward.set_requires_gradient_sync(last)  # type: ignore[operator]
        return collective_errors(self.rank)

    def finish_gradients(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        # the gradients were reduce-scattered in backward; the norm needs every rank's shards
        with collective_errors(self.rank):
            limit = max_norm if max_norm > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
        full = getattr(norm, "full_tensor", None)
        return full() if full is not None else norm

    def save_model(self, model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        with collective_errors(self.rank):
            tensors = fsdp.full_model_state(model, self.names)
        if self.is_main:
            ckpt.save_tensors(tensors, path, metadata=metadata)

    def load_model(self, model: nn.Module, path: Path) -> None:
        with collective_errors(self.rank):
            fsdp.load_full_model_state(model, fsdp.read_model_file(path), self.names)

    def save_optimizer(self, optimizer: Any, path: Path) -> None:
        assert self.model is not None
        with collective_errors(self.rank):
            state = fsdp.full_optimizer_state(self.model, optimizer)
        if self.is_main:
            ckpt.save_optimizer_state(state, path)

    def load_optimizer(self, optimizer: Any, path: Path) -> None:
        assert self.model is not None
        with collective_errors(self.rank):
            fsdp.load_full_optimizer_state(self.model, optimizer, ckpt.read_optimizer_state(path))


def build_parallelism(config: ParallelConfig, device: str = "auto") -> Parallelism:
    """The strategy ``config`` asks for, joined to torchrun's process group; one process
    (``Parallelism()``) when ``dp`` is 1."""
    require_torchrun(f"--parallel.dp {config.dp}", config.dp)
    if config.dp == 1:
        return Parallelism()
    world = init_world(device, timeout_s=config.timeout)
    if world.world_size != config.dp:
        raise ConfigError(
            f"--parallel.dp {config.dp} but torchrun started {world.world_size} processes: "
            f"launch with --nproc-per-node {config.dp} (x nodes), or set --parallel.dp "
            f"{world.world_size}"
        )
    if config.fsdp:
        return FullyShardedDataParallel(world)
    if config.zero:
        return ZeroDataParallel(world, config.zero)
    return DataParallel(world)
