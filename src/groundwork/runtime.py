"""Where and how torch runs: device choice, CPU threads, evaluation mode as a context, and the
peak resident memory of the process.

Shared by training, evaluation, generation and the recipes, so each is written once.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from groundwork.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(
            f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was asked for but no CUDA device is available; use 'cpu'"
        )
    return device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the body with ``threads`` CPU threads for PyTorch (``None`` or 0: leave PyTorch's
    setting), then restore the previous setting; yields the number in use.

    Small models (word2vec, text classifiers) are many small kernels, for which one thread is
    often faster than several.
    """
    if threads is not None and threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)  # leave the process as we found it


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in evaluation mode for the body, then restore the mode it had.

    >>> net = nn.Dropout(0.5)
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def reset_peak_rss() -> None:
    """Start a new peak of resident memory from now (Linux: ``clear_refs`` 5 resets ``VmHWM``);
    elsewhere a no-op, and :func:`peak_rss_mb` is then the whole process's peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory since :func:`reset_peak_rss` or the start (Linux ``VmHWM``), in
    MiB; where there is no ``/proc``, the process's peak (``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
