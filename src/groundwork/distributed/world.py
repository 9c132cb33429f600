"""The process group: who am I among how many, from ``torchrun``'s environment.

``torchrun --nproc-per-node N`` starts N copies of a command with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_world` reads them and joins
the default process group — gloo on CPU, NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``).
Every collective then runs under a timeout: if a rank dies, or stops answering, the others do not
hang forever but fail with a :class:`~groundwork.errors.DistributedError` that says so
(:func:`collective_errors`). Outside ``torchrun`` a one-process world is returned, so the same
command runs with or without it. Chapter 17.
"""

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from groundwork.errors import DistributedError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 300.0
"""Seconds a collective may wait for the other ranks before the run fails."""


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    """``gloo`` or ``nccl``; None for a one-process world (no process group)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes checkpoints and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its variables are all set)."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def init_world(
    device: str = "auto", *, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> World:
    """Join the process group ``torchrun`` set up (once; later calls return the same world).

    Args:
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``; with CUDA each
            process takes ``cuda:LOCAL_RANK``.
        backend: ``gloo`` or ``nccl`` (default: NCCL for CUDA, gloo for CPU).
        timeout_s: How long a collective waits for the other ranks before failing.

    Returns:
        This process's :class:`World`; a one-process world outside ``torchrun``.
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DistributedError(f"device {device!r} was asked for but no CUDA device is available")
    if not launched_by_torchrun():
        return World(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = backend or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    where = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(rank, world_size, local_rank, where, backend)


def close_world() -> None:
    """Leave the process group (if joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def require_torchrun(what: str, degree: int) -> None:
    """Raise unless ``degree`` processes were launched: a parallel degree > 1 needs ``torchrun``
    with as many processes (``what`` names the option, e.g. ``--parallel.dp 2``)."""
    if degree <= 1:
        return
    if not launched_by_torchrun():
        raise DistributedError(
            f"{what} asks for {degree} processes, but this process was not started by torchrun: "
            f"launch it as `torchrun --nproc-per-node {degree} -m groundwork ...`, or drop the "
            "option to train in one process"
        )


@contextlib.contextmanager
def collective_errors(rank: int) -> Iterator[None]:
    """Turn a failed or timed-out collective (another rank died, or hangs) into a
    :class:`DistributedError` naming this rank, instead of torch's backend traceback."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as err:  # DistBackendError and gloo's errors derive from RuntimeError
        text = str(err)
        if not any(k in text.lower() for k in ("timeout", "timed out", "connection", "closed")):
            raise
        raise DistributedError(
            f"rank {rank}: a collective failed ({text.splitlines()[0][:200]}); another rank has "
            "probably died or stopped answering — see its log above. The last checkpoint is "
            "intact; resume with --resume."
        ) from err
