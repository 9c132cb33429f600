"""The ``groundwork`` command: parsing, errors, and every command end to end on real data."""

import json
import re
import shlex
from pathlib import Path

import pytest

from groundwork import cli
from groundwork.errors import GroundworkError


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 0
    assert "data" in out and "tokenizer" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from groundwork import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert __version__ in out


def test_help_comes_from_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tokenizer", "train", "--help")
    assert code == 0
    assert "Size of the vocabulary, special tokens included." in out
    assert "default: 4096" in out


def test_misspelt_option_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tokenizer", "train", "--vocab-sise", "10")
    assert code == 2
    assert err.count("\n") == 1, "the error is one line"
    assert "--vocab-sise" in err and "did you mean '--vocab-size'" in err


def test_unknown_command_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tokeniser", "train")
    assert code == 2
    assert "tokenizer" in err


def test_dashes_and_underscores_both_work() -> None:
    assert cli._normalise_argv(["--vocab-size", "3", "--out=a-b", "--", "--x-y"]) == [
        "--vocab_size",
        "3",
        "--out=a-b",
        "--",
        "--x-y",
    ]


def test_unknown_source_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "data", "fetch", "shakespear")
    assert code == 2
    assert "shakespeare" in err and err.startswith("groundwork: error:")


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GroundworkError):
        cli.main(["data", "fetch", "no-such-source", "--debug"])


def test_bad_vocab_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tokenizer", "train", "--vocab-size", "0", "--out", str(tmp_path))
    assert code == 2
    assert "--vocab-size" in err


def test_missing_tokenizer_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tokenizer", "encode", str(tmp_path / "nope.json"), "hi")
    assert code == 2
    assert "nope.json" in err


def test_train_on_own_text_and_encode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = tmp_path / "mine.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log.\n" * 50, encoding="utf-8")
    tok = tmp_path / "tok.json"
    code, out, _ = run(
        capsys,
        "tokenizer",
        "train",
        "--text",
        str(text),
        "--vocab-size",
        "300",
        "--out",
        str(tok),
    )
    assert code == 0, out
    assert tok.exists()
    code, out, _ = run(capsys, "tokenizer", "encode", str(tok), "the cat sat", "--color", "false")
    assert code == 0
    ids = json.loads(re.search(r"ids:\s+(\[.*\])", out).group(1))  # type: ignore[union-attr]
    assert len(ids) < len("the cat sat"), "merges learnt from the text compress it"
    assert "|".join(["the", " cat", " sat"]) in out


def test_invalid_utf8_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text then \xff\xfe broken")
    code, _, err = run(capsys, "tokenizer", "train", "--text", str(bad), "--out", str(tmp_path))
    assert code == 2
    assert "bad.txt" in err and "UTF-8" in err


def _readme_commands() -> list[list[str]]:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## The command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.strip().splitlines():
        line = line.split("  #", 1)[0].strip()
        argv = shlex.split(line)
        assert argv[0] == "groundwork"
        commands.append(argv[1:])
    return commands


@pytest.mark.slow
def test_readme_commands_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands the README shows run as written, in order, on real data."""
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert len(commands) >= 5
    for argv in commands:
        code, _, err = run(capsys, *argv)
        assert code == 0, f"groundwork {' '.join(argv)} failed: {err}"
    meta = json.loads((tmp_path / "runs/data/meta.json").read_text())
    assert meta["vocab_size"] == 4096
    assert (tmp_path / "lengths.png").stat().st_size > 1000
