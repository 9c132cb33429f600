"""The parallel plan from the command line (``--parallel.dp``, ``--parallel.zero``) and the
engine hooks of each strategy: the :class:`~groundwork.train.parallel.Parallelism` the training
engine calls, so the same loop runs in one process or under ``torchrun``.

* :class:`DataParallel`: torch's ``DistributedDataParallel`` (gradients all-reduced in buckets
  during the last micro-batch's backward, skipped with ``no_sync`` on the others);
* :class:`FullyShardedDataParallel`: torch's FSDP2 (``fully_shard``; ZeRO stage 3), parameters
  sharded too, gathered block by block;
* :class:`TensorParallel`: our Megatron tensor parallelism
  (:func:`~groundwork.distributed.tensor_parallel.apply_tensor_parallel`): every rank sees the
  whole batch and holds its slice of each block's matrices;
* :class:`ZeroDataParallel`: our ZeRO-1/2 (:class:`~groundwork.distributed.zero.ZeroOptimizer`):
  the AdamW state sharded over the ranks, gradients all-reduced (1) or reduce-scattered (2) after
  backward, parameters all-gathered after the step.

Chapter 17.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from groundwork.distributed import fsdp
from groundwork.distributed import tensor_parallel as tp
from groundwork.distributed.ddp import apply_ddp
from groundwork.distributed.world import World, collective_errors, init_world, require_torchrun
from groundwork.distributed.zero import ZeroOptimizer
from groundwork.errors import CheckpointError, ConfigError
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
    tp: int = 1
    """Tensor-parallel degree: split each block's attention heads and MLP over this many
    processes, which all see the same batch (ours, Megatron-style)."""
    timeout: float = 300.0
    """Seconds a collective waits for the other ranks before the run fails."""

    def __post_init__(self) -> None:
        if self.dp < 1:
            raise ConfigError(f"parallel.dp must be at least 1, got {self.dp}")
        if self.tp < 1:
            raise ConfigError(f"parallel.tp must be at least 1, got {self.tp}")
        if self.tp > 1 and (self.dp > 1 or self.zero or self.fsdp):
            raise ConfigError(
                "parallel.tp does not combine with dp, zero or fsdp yet (2-D parallelism is "
                "planned): use tensor parallelism alone, or data parallelism alone"
            )
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
        self.optimizer: ZeroOptimizer | None = None

    def describe(self) -> str:
        return (
            f"data parallel over {self.world_size} processes ({self.world.backend}), "
            f"ZeRO stage {self.stage}"
        )

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return self._micro_batch()

    @contextlib.contextmanager
    def _micro_batch(self) -> Iterator[None]:
        """Stage 2 reduces gradients during backward; after it, the rest (unused parameters)."""
        with collective_errors(self.rank):
            yield
            assert self.optimizer is not None
            self.optimizer.end_micro_batch()

    def build_optimizer(self, model: nn.Module, cfg: TrainConfig) -> Any:
        groups = [
            {k: v for k, v in g.items() if k != "names"}
            for g in parameter_groups(model, cfg.weight_decay)
        ]
        with collective_errors(self.rank):
            self.optimizer = ZeroOptimizer(
                groups,
                torch.optim.AdamW,
                stage=1 if self.stage == 1 else 2,
                lr=cfg.lr,
                betas=(cfg.beta1, cfg.beta2),
                eps=1e-8,
            )
        return self.optimizer

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


class TensorParallel(DataParallel):
    """Our Megatron tensor parallelism over every rank: the ranks see the same rows and hold
    their slices of the blocks; checkpoints are gathered into the one-process format."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.names: dict[str, str] = {}
        self.model: nn.Module | None = None

    @property
    def data_rank(self) -> int:
        return 0

    @property
    def data_size(self) -> int:
        return 1

    def describe(self) -> str:
        return f"tensor parallel over {self.world_size} processes ({self.world.backend})"

    def wrap(self, model: nn.Module) -> nn.Module:
        tp.check_tensor_parallel(model, self.world_size)
        self.names = fsdp.tied_names(model)
        with collective_errors(self.rank):
            self.model = tp.apply_tensor_parallel(model)
        return model

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return collective_errors(self.rank)

    def finish_gradients(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        with collective_errors(self.rank):
            return tp.clip_grad_norm_tp(model, max_norm)

    def mean(self, value: float) -> float:
        return value  # every rank computed the same loss

    def save_model(self, model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        with collective_errors(self.rank):
            full = tp.gather_tensor_parallel_state(model)
        if self.is_main:
            unique = {k: v for k, v in full.items() if self.names.get(k) == k}
            ckpt.save_tensors(unique, path, metadata=metadata)

    def load_model(self, model: nn.Module, path: Path) -> None:
        saved = fsdp.read_model_file(path)
        expected = set(self.names.values())
        if set(saved) != expected:
            missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
            raise CheckpointError(
                f"{path} does not match the model: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]} (was it written for another config?)"
            )
        layout = tp.sharded_parameters(model)
        with torch.no_grad():
            for name, t in model.state_dict().items():
                full = saved[self.names[name]]
                if name in layout:
                    full = tp.shard(full, layout[name], self.rank, self.world_size)
                t.copy_(full)

    def save_optimizer(self, optimizer: Any, path: Path) -> None:
        live = optimizer.state_dict()  # its per-parameter dicts are the optimizer's own
        state = {"state": {}, "param_groups": live["param_groups"]}
        layout, names = self._optimizer_layout(optimizer)
        with collective_errors(self.rank):
            for i, entry in sorted(live["state"].items()):
                sharding = layout.get(names[i])
                state["state"][i] = full = dict(entry)
                for key, value in entry.items():
                    if sharding is not None and isinstance(value, torch.Tensor) and value.ndim:
                        parts = [torch.empty_like(value) for _ in range(self.world_size)]
                        dist.all_gather(parts, value.contiguous())
                        full[key] = tp.unshard(parts, sharding)
        if self.is_main:
            ckpt.save_optimizer_state(state, path)

    def load_optimizer(self, optimizer: Any, path: Path) -> None:
        saved = ckpt.read_optimizer_state(path)
        layout, names = self._optimizer_layout(optimizer)
        if len(names) != sum(len(g["params"]) for g in saved["param_groups"]):
            raise CheckpointError(f"{path} was saved for a different set of parameters")
        for i, entry in saved["state"].items():
            sharding = layout.get(names[i])
            for key, value in entry.items():
                if sharding is not None and isinstance(value, torch.Tensor) and value.ndim:
                    entry[key] = tp.shard(value, sharding, self.rank, self.world_size).clone()
        optimizer.load_state_dict(saved)

    def _optimizer_layout(self, optimizer: Any) -> tuple[dict[str, Any], list[str]]:
        """How each parameter is sharded, and the parameters' names in optimizer order."""
        assert self.model is not None
        names = [n for g in optimizer.param_groups for n in g["names"]]
        return tp.sharded_parameters(self.model), names


def build_parallelism(config: ParallelConfig, device: str = "auto") -> Parallelism:
    """The strategy ``config`` asks for, joined to torchrun's process group; one process
    (``Parallelism()``) when ``dp`` is 1."""
    option, degree = (
        (f"--parallel.tp {config.tp}", config.tp)
        if config.tp > 1
        else (f"--parallel.dp {config.dp}", config.dp)
    )
    require_torchrun(option, degree)
    if degree == 1:
        return Parallelism()
    world = init_world(device, timeout_s=config.timeout)
    if world.world_size != degree:
        raise ConfigError(
            f"{option} but torchrun started {world.world_size} processes: launch with "
            f"--nproc-per-node {degree} (x nodes), or set {option.split()[0]} {world.world_size}"
        )
    if config.tp > 1:
        return TensorParallel(world)
    if config.fsdp:
        return FullyShardedDataParallel(world)
    if config.zero:
        return ZeroDataParallel(world, config.zero)
    return DataParallel(world)
