"""`groundwork retrieve`, `rag` and `agent` end to end on a folder of text files and a tiny
random Llama run: what they print, and their errors."""

from pathlib import Path

import pytest

from groundwork import cli
from helpers import tiny_llama_run

DOCS = {
    "paris.txt": "Paris is the capital of France. The Seine flows through Paris.",
    "rome.txt": "Rome is the capital of Italy. The Tiber flows through Rome.",
    "bern.txt": "Bern is the capital of Switzerland. The Aare flows through Bern.",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = list(DOCS.values()) * 4
    return tiny_llama_run(tmp_path_factory.mktemp("llama"), texts, max_seq_len=2048)


def test_retrieve_ranks_the_matching_file_first(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["retrieve", "Tiber river", "--corpus", str(corpus), "--k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1. ") and "rome.txt #0" in out[0]
    assert sum(line[:2] in ("1.", "2.") for line in out) == 2


def test_rag_prints_an_answer_and_the_passages(
    run: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rag", str(run), "Which river flows through Bern?", "--corpus", str(corpus)]
    assert cli.main([*argv, "--k", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Answer:")
    assert "[1] " in out and "bern.txt #0" in out.split("[2]")[0]


def test_agent_prints_a_trace(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["agent", str(run), "What is 2 + 2?", "--corpus", "none"]
    assert cli.main([*argv, "--max-steps", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Question: What is 2 + 2?")
    assert "Answer:" in out or "No answer (stopped:" in out


def test_errors(run: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["retrieve", " ", "--corpus", str(corpus)]) == 2
    assert "query is empty" in capsys.readouterr().err
    assert cli.main(["retrieve", "x", "--corpus", "no-such-source"]) == 2
    assert "no-such-source" in capsys.readouterr().err
    assert cli.main(["rag", str(run), "q?", "--corpus", str(corpus), "--method", "sparse"]) == 2
    capsys.readouterr()
    assert cli.main(["agent", str(run), "", "--corpus", "none"]) == 2
    assert "question is empty" in capsys.readouterr().err
