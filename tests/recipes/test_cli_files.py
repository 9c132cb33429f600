"""Files the commands write get the mode any new file gets (``0o666`` less the umask), not the
private 0600 of a temporary file, although every write goes through one (atomic writes)."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundwork import cli
from groundwork.fileio import atomic_path, atomic_write, write_json, write_yaml


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    expected = 0o666 & ~umask
    atomic_write(tmp_path / "a.bin", b"data")
    write_json(tmp_path / "b.json", {"x": 1})
    write_yaml(tmp_path / "c.yaml", {"x": 1})
    with atomic_path(tmp_path / "d.txt") as tmp:
        tmp.write_text("written by the body")
    for name in ("a.bin", "b.json", "c.yaml", "d.txt"):
        assert mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.yaml", "d.txt"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_command_writes_readable_files(
    tmp_path: Path, umask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "mine.txt"
    text.write_text("the cat sat on the mat\n" * 20, encoding="utf-8")
    out = tmp_path / "tok.json"
    argv = ["tokenizer", "train", "--text", str(text), "--kind", "char", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert mode(out) == 0o666 & ~umask
