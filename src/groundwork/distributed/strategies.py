"""The parallel plan from the command line (``--parallel.dp``, ``--parallel.tp``, ...) and the
engine hooks of each strategy: the :class:`~groundwork.train.parallel.Parallelism` the training
engine calls, so the same loop runs in one process or under ``torchrun``.

* :class:`DataParallel`: torch's ``DistributedDataParallel`` (gradients all-reduced in buckets
  during the last micro-batch's backward, skipped with ``no_sync`` on the others);
* :class:`FullyShardedDataParallel`: torch's FSDP2 (``fully_shard``; ZeRO stage 3), parameters
  sharded too, gathered block by block;
* :class:`TensorParallel`: our Megatron tensor parallelism
  (:func:`~groundwork.distributed.tensor_parallel.apply_tensor_parallel`): every rank sees the
  whole batch and holds its slice of each block's matrices;
* :class:`HybridParallel`: 2-D, ``--parallel.dp`` with ``--parallel.tp``
  (:func:`~groundwork.distributed.hybrid.apply_fsdp_tp`): DTensor tensor parallelism within each
  group of ``tp`` ranks, which see the same rows, FSDP2 across the ``dp`` groups;
* :class:`PipelineParallel`: our pipeline (:mod:`groundwork.distributed.pipeline`): rank ``s``
  trains stage ``s`` of the blocks, micro-batches flow through GPipe or 1F1B;
* :class:`ZeroDataParallel`: our ZeRO-1/2 (:class:`~groundwork.distributed.zero.ZeroOptimizer`):
  the AdamW state sharded over the ranks, gradients all-reduced (1) or reduce-scattered (2) after
  backward, parameters all-gathered after the step.

The module is long because it holds one class of engine hooks per strategy, each small.
Chapter 17.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from groundwork.distributed import fsdp, hybrid, pipeline
from groundwork.distributed import tensor_parallel as tp
from groundwork.distributed.ddp import apply_ddp
from groundwork.distributed.world import World, collective_errors, init_world, require_torchrun
from groundwork.distributed.zero import ZeroOptimizer
from groundwork.errors import CheckpointError, ConfigError
from groundwork.train import checkpoint as ckpt
from groundwork.train.config import TrainConfig
from groundwork.train.objectives import CausalLMObjective
from groundwork.train.optim import build_adamw, parameter_groups
from groundwork.train.parallel import Parallelism


@dataclass(frozen=True)
class ParallelConfig:
    """How to spread training over the processes ``torchrun`` started."""

    dp: int = 1
    """Data-parallel degree: the number of processes, each with a replica of the model and its
    share of every batch (must equal torchrun's ``--nproc-per-node`` x nodes; with tp, dp x tp
    must)."""
    zero: int = 0
    """ZeRO stage over the data-parallel ranks: 0 (replicated optimizer state, torch's DDP),
    1 (optimizer state sharded) or 2 (gradients sharded too), ours."""
    fsdp: bool = False
    """Shard the parameters too with torch's FSDP2 (ZeRO stage 3), instead of DDP or ZeRO (with
    dp and tp both > 1 the data-parallel dimension is FSDP2 in any case)."""
    tp: int = 1
    """Tensor-parallel degree: split each block's attention heads and MLP over this many
    processes, which all see the same batch (ours, Megatron-style); with dp > 1, a dp x tp
    mesh: DTensor tensor parallelism within each group of tp ranks, FSDP2 across the groups."""
    pp: int = 1
    """Pipeline-parallel degree: cut the blocks into this many stages, one per process."""
    microbatches: int = 4
    """With pp: the micro-batches each batch is cut into (at least pp for 1f1b)."""
    schedule: Literal["1f1b", "gpipe"] = "1f1b"
    """With pp: the pipeline schedule."""
    timeout: float = 300.0
    """Seconds a collective waits for the other ranks before the run fails."""

    def __post_init__(self) -> None:
        if self.dp < 1:
            raise ConfigError(f"parallel.dp must be at least 1, got {self.dp}")
        if self.tp < 1:
            raise ConfigError(f"parallel.tp must be at least 1, got {self.tp}")
        if self.pp < 1 or self.microbatches < 1:
            raise ConfigError(
                f"parallel.pp and parallel.microbatches must be at least 1, got {self.pp} and "
                f"{self.microbatches}"
            )
        if self.schedule not in ("1f1b", "gpipe"):
            raise ConfigError(f"parallel.schedule must be 1f1b or gpipe, got {self.schedule!r}")
        if self.zero not in (0, 1, 2):
            raise ConfigError(
                f"parallel.zero must be 0, 1 or 2, got {self.zero} (stage 3, parameters "
                "sharded too, is FSDP)"
            )
        if self.fsdp and self.zero:
            raise ConfigError(
                "parallel.fsdp shards everything (ZeRO stage 3): drop parallel.zero, or fsdp"
            )
        if self.pp > 1 and (self.dp > 1 or self.zero or self.fsdp or self.tp > 1):
            raise ConfigError(
                "parallel.pp and parallel.dp (with zero or fsdp) or parallel.tp do not combine "
                "in groundwork pretrain yet: a pipeline runs alone (2-D FSDP x TP is "
                "--parallel.dp N --parallel.tp M)"
            )
        if self.tp > 1 and self.zero:
            raise ConfigError(
                "parallel.zero does not combine with parallel.tp: with parallel.dp > 1 the "
                "data-parallel dimension of tensor parallelism is FSDP; drop parallel.zero"
            )
        if self.tp > 1 and self.fsdp and self.dp == 1:
            raise ConfigError(
                "parallel.fsdp with parallel.tp shards over the data-parallel dimension: set "
                "parallel.dp > 1 (a dp x tp mesh), or drop parallel.fsdp"
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
        saved = _read_weights(path, self.names)
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


class HybridParallel(DataParallel):
    """2-D parallelism over a ``dp x tp`` mesh (:func:`~groundwork.distributed.apply_fsdp_tp`):
    rank ``i_dp * tp + i_tp`` holds its slice of the blocks (DTensor tensor parallelism over the
    ``tp`` ranks of its group, which see the same rows) sharded again by FSDP2 over the ``dp``
    groups. Checkpoints are the one-process format: gathered on rank 0, GPT's q/k/v (split for
    tensor parallelism) fused back into ``qkv_proj``, and split again on load."""

    def __init__(self, world: World, dp: int, tp: int) -> None:
        super().__init__(world)
        self.dp, self.tp = dp, tp
        self.model: nn.Module | None = None
        self.names: dict[str, str] = {}
        self.order: list[list[str]] = []
        """The one-process optimizer's parameter names, group by group (its index order)."""
        self.parts: dict[str, list[tuple[str, int]]] = {}
        """Each fused one-process name (GPT's ``qkv_proj``) -> its parts' names and rows."""

    @property
    def data_rank(self) -> int:
        return self.rank // self.tp  # the mesh's dp coordinate (make_mesh)

    @property
    def data_size(self) -> int:
        return self.dp

    def describe(self) -> str:
        return (
            f"FSDP x tensor parallel over a {self.dp} x {self.tp} mesh ({self.world.backend}; "
            "FSDP2 across dp, DTensor tensor parallelism within tp)"
        )

    def wrap(self, model: nn.Module) -> nn.Module:
        self.names = fsdp.tied_names(model)  # the one-process names, before q/k/v are split
        self.order = [cast(list[str], g["names"]) for g in parameter_groups(model, 0.0)]
        with collective_errors(self.rank):
            self.model = hybrid.apply_fsdp_tp(model, hybrid.make_mesh(self.dp, self.tp))
        self.parts = _qkv_parts(model)
        return model

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        forward.set_requires_gradient_sync(last)  # type: ignore[operator]
        return collective_errors(self.rank)

    def finish_gradients(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        with collective_errors(self.rank):
            return hybrid.clip_grad_norm_fsdp_tp(model, max_norm)

    # mean: every rank of a tp group has its group's loss, so the mean over all is dp's mean

    def _fuse(self, by_name: dict[str, Any], join: Any) -> dict[str, Any]:
        """``by_name`` under the one-process names: each fused tensor's ``join`` of its parts."""
        out = dict(by_name)
        for fused, parts in self.parts.items():
            if parts[0][0] in out:
                out[fused] = join([out.pop(name) for name, _ in parts])
        return out

    def _split(self, by_name: dict[str, Any], cut: Any) -> dict[str, Any]:
        """The inverse of :meth:`_fuse`: ``cut(value, start, rows)`` gives each part."""
        out = dict(by_name)
        for fused, parts in self.parts.items():
            if fused in out:
                whole, start = out.pop(fused), 0
                for name, rows in parts:
                    out[name], start = cut(whole, start, rows), start + rows
        return out

    def save_model(self, model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        with collective_errors(self.rank):  # on rank 0 (cpu_offload); the others get nothing
            state: dict[str, Any] = dict(get_model_state_dict(model, options=fsdp.FULL))
        if self.is_main:
            full = self._fuse(state, torch.cat)
            unique = {k: v.contiguous() for k, v in full.items() if self.names.get(k) == k}
            ckpt.save_tensors(unique, path, metadata=metadata)

    def load_model(self, model: nn.Module, path: Path) -> None:
        saved = _read_weights(path, self.names)
        full = {name: saved[source] for name, source in self.names.items()}
        split = self._split(full, lambda t, start, rows: t.narrow(0, start, rows))
        with collective_errors(self.rank):
            set_model_state_dict(model, split, options=StateDictOptions(full_state_dict=True))

    def save_optimizer(self, optimizer: Any, path: Path) -> None:
        assert self.model is not None
        with collective_errors(self.rank):
            state: dict[str, Any] = dict(
                get_optimizer_state_dict(self.model, optimizer, options=fsdp.FULL)
            )
        if not self.is_main:
            return
        by_name = self._fuse(dict(state["state"]), _join_moments)
        index = {n: i for i, n in enumerate(n for names in self.order for n in names)}
        groups, start = [], 0
        for names, own in zip(self.order, state["param_groups"], strict=True):
            hyper = {k: v for k, v in own.items() if k not in ("params", "names")}
            groups.append(
                {**hyper, "names": names, "params": list(range(start, start + len(names)))}
            )
            start += len(names)
        full = {index[n]: entry for n, entry in by_name.items()}
        ckpt.save_optimizer_state({"state": full, "param_groups": groups}, path)

    def load_optimizer(self, optimizer: Any, path: Path) -> None:
        assert self.model is not None
        saved = ckpt.read_optimizer_state(path)
        order = [n for names in self.order for n in names]
        if len(order) != sum(len(g["params"]) for g in saved["param_groups"]):
            raise CheckpointError(f"{path} was saved for a different set of parameters")
        state = self._split({order[i]: s for i, s in saved["state"].items()}, _cut_moments)
        groups = []
        for own, old in zip(optimizer.param_groups, saved["param_groups"], strict=True):
            hyper = {k: v for k, v in old.items() if k not in ("params", "names")}
            groups.append({**hyper, "names": own["names"], "params": list(own["names"])})
        with collective_errors(self.rank):
            set_optimizer_state_dict(
                self.model,
                optimizer,
                {"state": state, "param_groups": groups},
                options=StateDictOptions(full_state_dict=True),
            )


def _qkv_parts(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """For GPT's fused ``qkv_proj`` weight and bias, split by
    :func:`~groundwork.distributed.apply_tensor_parallel_dtensor`: the names of the parts that
    replaced it and their (global) rows, in order."""
    out = {}
    for prefix, m in model.named_modules():
        if not getattr(m, "split_from_fused_qkv", False):
            continue
        for kind in ("weight", "bias"):
            layers = {p: getattr(m, p) for p in ("q_proj", "k_proj", "v_proj")}
            if getattr(layers["q_proj"], kind) is not None:
                out[f"{prefix}.qkv_proj.{kind}"] = [
                    (f"{prefix}.{p}.{kind}", getattr(layer, kind).shape[0])
                    for p, layer in layers.items()
                ]
    return out


def _join_moments(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One AdamW state from its parts' (q, k, v): moments concatenated, the step shared."""
    return {
        k: torch.cat([e[k] for e in entries]) if isinstance(v, torch.Tensor) and v.ndim else v
        for k, v in entries[0].items()
    }


def _cut_moments(entry: dict[str, Any], start: int, rows: int) -> dict[str, Any]:
    """A part's AdamW state: rows ``start:start + rows`` of the moments, the same step (each
    part's own copy: AdamW increments a step tensor in place)."""
    return {
        k: (v.narrow(0, start, rows) if v.ndim else v).clone() if isinstance(v, torch.Tensor) else v
        for k, v in entry.items()
    }


class PipelineParallel(DataParallel):
    """Our pipeline over every rank: rank ``s`` keeps stage ``s``'s blocks up to date and runs
    its part of each step's schedule; the whole model is gathered for evaluation and
    checkpoints (one-process files)."""

    def __init__(self, world: World, microbatches: int, schedule: str) -> None:
        super().__init__(world)
        self.microbatches, self.schedule = microbatches, schedule
        self.stage: pipeline.PipelineStage | None = None
        self.model: nn.Module | None = None
        self.owner: dict[str, int] = {}

    @property
    def data_rank(self) -> int:
        return 0

    @property
    def data_size(self) -> int:
        return 1

    def describe(self) -> str:
        return (
            f"pipeline parallel over {self.world_size} stages ({self.schedule}, "
            f"{self.microbatches} micro-batches)"
        )

    def check(self, cfg: TrainConfig) -> None:
        if cfg.batch_size % self.microbatches:
            raise ConfigError(
                f"train.batch_size ({cfg.batch_size}) must be divisible by "
                f"parallel.microbatches ({self.microbatches})"
            )
        if self.schedule == "1f1b" and self.microbatches < self.world_size:
            raise ConfigError(
                f"1f1b needs at least as many micro-batches as stages ({self.world_size}): "
                f"raise parallel.microbatches or use parallel.schedule gpipe"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        stages = pipeline.split_stages(model, self.world_size)
        self.stage, self.model = stages[self.rank], model
        for s in reversed(range(len(stages))):  # a tied weight belongs to the first stage
            for name in stages[s].state_dict():
                self.owner[name] = s
        return self.stage

    def build_optimizer(self, model: nn.Module, cfg: TrainConfig) -> Any:
        assert self.stage is not None
        return build_adamw(
            self.stage, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)
        )

    def forward_backward(
        self, forward: nn.Module, batches: list[Any], objective: Any, cfg: TrainConfig
    ) -> tuple[torch.Tensor, int]:
        if type(objective) is not CausalLMObjective:
            raise ConfigError(
                f"pipeline parallelism trains with the plain next-token loss, not "
                f"{type(objective).__name__} (e.g. a mixture of experts' router losses)"
            )
        assert self.stage is not None
        n = len(batches)
        total = torch.zeros(())
        with collective_errors(self.rank):
            for x, y in batches:
                result = pipeline.pipeline_step(
                    self.stage,
                    x,
                    y,
                    microbatches=self.microbatches,
                    schedule=self.schedule,  # type: ignore[arg-type]
                    loss_fn=lambda logits, t: pipeline.causal_lm_loss(logits, t) / n,
                )
                if result.loss is not None:
                    total += result.loss.detach().cpu()
            dist.broadcast(total, src=self.world_size - 1)  # the last stage has the loss
        return total, sum(y.numel() for _, y in batches)

    def mean(self, value: float) -> float:
        return value  # already the whole batch's, on every rank

    def finish_gradients(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        assert self.stage is not None
        with collective_errors(self.rank):
            pipeline.sync_tied_gradients(self.stage)
            return pipeline.clip_grad_norm_pipeline(self.stage, max_norm)

    def sync_model(self, model: nn.Module) -> None:
        """Every stage's weights to every rank: one broadcast per tensor from its owner."""
        with collective_errors(self.rank), torch.no_grad():
            for name, t in model.state_dict().items():
                dist.broadcast(t, src=self.owner.get(name, 0))

    def save_model(self, model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        self.sync_model(model)
        super().save_model(model, path, metadata)

    def save_optimizer(self, optimizer: Any, path: Path) -> None:
        assert self.model is not None
        mine = optimizer.state_dict()
        names = [n for g in mine["param_groups"] for n in g["names"]]
        local = {names[i]: entry for i, entry in mine["state"].items()}
        gathered: list[Any] = [None] * self.world_size
        with collective_errors(self.rank):
            dist.all_gather_object(gathered, local)
        if not self.is_main:
            return
        merged: dict[str, Any] = {}
        for stage_state in gathered:  # a tied weight: the first stage's (the copies agree)
            for name, entry in stage_state.items():
                merged.setdefault(name, entry)
        groups = parameter_groups(self.model, mine["param_groups"][0]["weight_decay"])
        group_names = [cast(list[str], g["names"]) for g in groups]  # the one-process order
        index = {n: i for i, n in enumerate(n for names in group_names for n in names)}
        full_groups, start = [], 0
        for names, own in zip(group_names, mine["param_groups"], strict=True):
            ids = list(range(start, start + len(names)))
            full_groups.append({**own, "names": names, "params": ids})
            start += len(ids)
        state = {index[n]: entry for n, entry in merged.items()}
        ckpt.save_optimizer_state({"state": state, "param_groups": full_groups}, path)

    def load_optimizer(self, optimizer: Any, path: Path) -> None:
        saved = ckpt.read_optimizer_state(path)
        order = [n for g in saved["param_groups"] for n in g["names"]]
        by_name = {order[i]: entry for i, entry in saved["state"].items()}
        mine = optimizer.state_dict()
        names = [n for g in mine["param_groups"] for n in g["names"]]
        missing = [n for n in names if n not in order]
        if missing:
            raise CheckpointError(f"{path} has no optimizer state for {missing[:5]}")
        state = {i: by_name[n] for i, n in enumerate(names) if n in by_name}
        optimizer.load_state_dict({"state": state, "param_groups": mine["param_groups"]})


def _read_weights(path: Path, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """A one-process weights file, checked to hold exactly the tensors ``names`` (the model's
    state-dict names -> the name each is saved under) says it should."""
    saved = fsdp.read_model_file(path)
    expected = set(names.values())
    if set(saved) != expected:
        missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (was it written for another config?)"
        )
    return saved


def build_parallelism(config: ParallelConfig, device: str = "auto") -> Parallelism:
    """The strategy ``config`` asks for, joined to torchrun's process group; one process
    (``Parallelism()``) when every degree is 1."""
    hybrid_mesh = config.dp > 1 and config.tp > 1
    option, degree = (
        (f"--parallel.dp {config.dp} --parallel.tp {config.tp}", config.dp * config.tp)
        if hybrid_mesh
        else (f"--parallel.tp {config.tp}", config.tp)
        if config.tp > 1
        else (f"--parallel.pp {config.pp}", config.pp)
        if config.pp > 1
        else (f"--parallel.dp {config.dp}", config.dp)
    )
    require_torchrun(option, degree)
    if degree == 1:
        return Parallelism()
    world = init_world(device, timeout_s=config.timeout)
    if hybrid_mesh and world.world_size != degree:
        raise ConfigError(
            f"{option} is a {config.dp} x {config.tp} mesh of {degree} processes, but torchrun "
            f"started {world.world_size}: launch with --nproc-per-node {degree} (x nodes), or "
            f"choose --parallel.dp and --parallel.tp whose product is {world.world_size}"
        )
    if world.world_size != degree:
        raise ConfigError(
            f"{option} but torchrun started {world.world_size} processes: launch with "
            f"--nproc-per-node {degree} (x nodes), or set {option.split()[0]} {world.world_size}"
        )
    if hybrid_mesh:
        return HybridParallel(world, config.dp, config.tp)
    if config.tp > 1:
        return TensorParallel(world)
    if config.pp > 1:
        return PipelineParallel(world, config.microbatches, config.schedule)
    if config.fsdp:
        return FullyShardedDataParallel(world)
    if config.zero:
        return ZeroDataParallel(world, config.zero)
    return DataParallel(world)
