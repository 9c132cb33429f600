"""Crash-safe file writing, shared by every stage that writes files a later stage reads.

A file is written to a temporary file in the same directory, flushed and fsync'ed, then moved over
the target with ``os.replace`` (atomic on POSIX) and the directory is fsync'ed: a process killed at
any instant leaves either the old file or the new one, never a torn one. Chapter 8 (Training) and
chapter 7 (Data) rely on it.
"""

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from groundwork.errors import CheckpointError


def _new_temp_file(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` and return its path.

    Unlike :func:`tempfile.mkstemp` (mode 0600, private), the file gets the mode any new file
    gets, ``0o666`` less the umask: what ends up at ``path`` must be as readable as if it had
    been written there directly.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")  # pragma: no cover


# --8<-- [start:atomic]
@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` atomically.

    If the body raises, the temporary file is removed and ``path`` is untouched. The file gets
    the usual mode of a new file (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # and the rename itself is on disk
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


# --8<-- [end:atomic]


def atomic_write(path: Path, data: bytes | Callable[[IO[bytes]], object]) -> None:
    """Write a file atomically: ``data`` is the bytes, or a callback given the open binary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            data(f)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (indented, UTF-8)."""
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")
    atomic_write(path, data)


def write_yaml(path: Path, obj: Any) -> None:
    """Write YAML atomically."""
    data = yaml.safe_dump(obj, sort_keys=False).encode("utf-8")
    atomic_write(path, data)


def _read(
    path: Path, parse: Callable[[str], Any], kind: str, errors: tuple[type[Exception], ...]
) -> Any:
    corrupt: tuple[type[Exception], ...] = (*errors, UnicodeDecodeError)
    try:
        return parse(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} does not exist") from err
    except corrupt as err:
        raise CheckpointError(f"{path} is corrupt (not valid {kind}: {err})") from err


def read_json(path: Path) -> Any:
    """Read a JSON file, with a clear error if it is missing or corrupt."""
    return _read(path, json.loads, "JSON", (json.JSONDecodeError,))


def read_yaml(path: Path) -> Any:
    """Read a YAML file, with a clear error if it is missing or corrupt."""
    return _read(path, yaml.safe_load, "YAML", (yaml.YAMLError,))
