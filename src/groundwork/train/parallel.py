"""What the engine needs to know of parallelism, and the one-process default.

Parallelism is applied from outside (``groundwork.distributed`` builds a :class:`Parallelism`
for data parallelism, ZeRO, ...); the engine only calls these hooks, so it is the same loop with
one process or many. Every rank draws the *same* global batch from the same generator and keeps
its rows (:func:`shard_rows`): the data order is the one-process run's whatever the world size,
so a run resumes at any world size, and with the gradients averaged the steps are the
one-process steps. Rank 0 alone writes the run directory. Chapter 17.
"""

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.train import checkpoint as ckpt
from groundwork.train.config import TrainConfig
from groundwork.train.data import Batch
from groundwork.train.optim import build_adamw, clip_grad_norm


class Parallelism:
    """One process: the defaults every strategy overrides where it differs."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The rank that logs, prints and writes checkpoints."""
        return self.rank == 0

    @property
    def data_rank(self) -> int:
        """This rank's place among the ranks that split the batch (data parallelism); ranks
        that split the model instead (tensor parallelism) see the same rows."""
        return self.rank

    @property
    def data_size(self) -> int:
        """How many ranks split each batch."""
        return self.world_size

    def describe(self) -> str:
        return "one process"

    def check(self, cfg: TrainConfig) -> None:
        """Refuse a batch that does not split evenly over the ranks."""
        if cfg.batch_size % self.data_size:
            raise ConfigError(
                f"train.batch_size ({cfg.batch_size}) is the global batch and must be divisible "
                f"by the {self.data_size} data-parallel ranks; use a multiple of "
                f"{self.data_size}"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the objective calls (e.g. a ``DistributedDataParallel`` wrapper)."""
        return model

    def build_optimizer(self, model: nn.Module, cfg: TrainConfig) -> Any:
        """AdamW over the model's parameter groups (a sharded one for ZeRO)."""
        return build_adamw(
            model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)
        )

    def micro_batch(self, forward: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        """The context of a micro-batch's forward and backward: gradient synchronisation is
        skipped on all but the ``last`` micro-batch of a step."""
        return contextlib.nullcontext()

    def finish_gradients(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        """Make each rank's gradients the mean over ranks, clip them to ``max_norm`` (global
        L2 norm), and return the norm before clipping."""
        return clip_grad_norm(model.parameters(), max_norm)

    def forward_backward(
        self, forward: nn.Module, batches: list[Batch], objective: Any, cfg: TrainConfig
    ) -> tuple[torch.Tensor, int] | None:
        """Run a step's forward and backward over its micro-batches and return the mean loss
        and the number of items, for strategies that schedule the step themselves (a
        pipeline); None: the engine's own loop over ``batches``."""
        return None

    def sync_model(self, model: nn.Module) -> None:
        """Make ``model`` whole on every rank before it is evaluated (a pipeline stage holds
        only its part up to date)."""

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks (the loss of the whole batch, for logging)."""
        return value

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is on any (e.g. one rank ran out of time)."""
        return flag

    def barrier(self) -> None:
        """Wait for every rank."""

    # checkpoints: every rank calls these (sharded state is gathered), rank 0 writes; the files
    # are the one-process format, whatever the world size

    def save_model(self, model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        """Write the whole model's weights to ``path`` (safetensors)."""
        if self.is_main:
            ckpt.save_model(model, path, metadata=metadata)

    def load_model(self, model: nn.Module, path: Path) -> None:
        """Load the weights :meth:`save_model` wrote (at any world size)."""
        ckpt.load_model_weights(model, path)

    def save_optimizer(self, optimizer: Any, path: Path) -> None:
        """Write the whole optimizer state to ``path``."""
        state = optimizer.state_dict()  # a sharded optimizer gathers it on every rank
        if self.is_main:
            ckpt.save_optimizer_state(state, path)

    def load_optimizer(self, optimizer: Any, path: Path) -> None:
        """Load the state :meth:`save_optimizer` wrote (at any world size)."""
        ckpt.load_optimizer(optimizer, path)


# --8<-- [start:shard_rows]
def shard_rows(batch: Batch, rank: int, world_size: int) -> Batch:
    """This rank's rows ``rank::world_size`` of every tensor in ``batch`` (nested in tuples,
    lists and dicts; other values are kept)."""
    if world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch[rank::world_size]
    if isinstance(batch, tuple | list):
        return type(batch)(shard_rows(b, rank, world_size) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_rows(v, rank, world_size) for k, v in batch.items()}
    return batch


# --8<-- [end:shard_rows]
