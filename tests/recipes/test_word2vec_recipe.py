"""The word2vec runner: tokenisation into sentences, the results table, and the command end to end
on a small synthetic text (the full run on Shakespeare + wiki-sample lives in chapter 3)."""

import json
import random

import pytest
import torch

from groundwork import runs
from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.evaluate.word_vectors import WORDSIM353, benchmark_file
from groundwork.models.word2vec import Word2Vec
from groundwork.recipes import word2vec as runner


def test_text_to_sentences_lowercases_splits_lines_and_drops_punctuation() -> None:
    text = "KING: O Romeo, Romeo!\n\nwherefore art thou 2nd-best?\n  ...  \nCafé au lait"
    assert runner.text_to_sentences(text) == [
        ["king", "o", "romeo", "romeo"],
        ["wherefore", "art", "thou", "nd", "best"],
        ["café", "au", "lait"],
    ]


def test_long_lines_are_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "MAX_SENTENCE", 3)
    assert runner.text_to_sentences("a b c d e f g") == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


def test_load_sentences_errors() -> None:
    with pytest.raises(EmptyCorpusError, match="no words"):
        runner.load_sentences([])


def test_results_table() -> None:
    row = {
        "model": "groundwork",
        "arch": "skipgram",
        "loss": "negative",
        "epochs": 5,
        "train_words": 1447384,
        "vocab_size": 20000,
        "train_seconds": 61.25,
        "analogy_accuracy": 0.0213,
        "analogy_coverage": 0.5,
        "wordsim353_spearman": 0.5,
        "simlex999_spearman": 0.25,
    }
    table = runner.results_table([row])
    assert table.splitlines()[0].startswith("| model | arch | loss |")
    assert table.splitlines()[2] == (
        "| groundwork | skipgram | negative | 5 | 1,447,384 | 20,000 | 61.2 | 2.1% | 50.0% "
        "| 0.500 | 0.250 |"
    )


def _synthetic_sentences() -> list[list[str]]:
    """Random sentences over the words of WordSim-353, so that every evaluation has pairs."""
    words = sorted(
        {
            w
            for line in benchmark_file(WORDSIM353).read_text().splitlines()
            if not line.startswith("#")
            for w in line.lower().split("\t")[:2]
        }
    )
    rng = random.Random(0)
    return [[rng.choice(words) for _ in range(10)] for _ in range(300)]


def test_word2vec_command_end_to_end(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(runner, "load_sentences", lambda sources: _synthetic_sentences())
    out, md = tmp_path / "run", tmp_path / "results.md"
    threads = torch.get_num_threads()
    runner.word2vec(
        out=out,
        dim=8,
        epochs=1,
        min_count=1,
        batch_size=256,
        neighbours=("tiger", "notaword"),
        markdown=md,
        progress=False,
    )
    assert torch.get_num_threads() == threads  # restored after training with threads=1
    printed = capsys.readouterr().out
    assert "analogies:" in printed and "WordSim-353 Spearman" in printed
    assert (
        "nearest to tiger:" in printed and "nearest to notaword: not in the vocabulary" in printed
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["wordsim353_oov"] + metrics["wordsim353_pairs"] == 353
    assert metrics["wordsim353_pairs"] > 300
    assert metrics["train_words"] == 3000 and metrics["config"]["dim"] == 8
    assert metrics["analogy_malformed_lines"] == 0 and 0 < metrics["analogy_coverage"] < 1
    near = {w: [(v, s) for v, s in pairs] for w, pairs in metrics["neighbours"].items()}
    assert list(near) == ["tiger"] and len(near["tiger"]) == 6
    assert md.read_text().startswith(runner.results_table([metrics]) + "\n| word | nearest")
    model = Word2Vec.load(out)
    assert model.vectors.shape == (metrics["vocab_size"], 8)
    assert (out / "vectors.txt").read_text().startswith(f"{metrics['vocab_size']} 8\n")
    # a run directory: load_run gives the model, its vocabulary (which splits text as the
    # runner did) and the config
    loaded, vocab, config = runs.load_run(out)
    assert config["kind"] == "word2vec" and config["model"]["dim"] == 8
    assert config["data"]["word_pattern"] == runner.WORD_PATTERN.pattern
    assert torch.equal(loaded.vectors, model.vectors) and vocab.tokens == model.vocab.tokens
    assert vocab.split("The TIGER's") == ["the", "tiger", "s"]
    assert not (out / "word2vec_config.json").exists()


def test_word2vec_command_bad_config(tmp_path) -> None:
    with pytest.raises(ConfigError, match="dim"):
        runner.word2vec(out=tmp_path, dim=0, progress=False)
    with pytest.raises(ConfigError, match="arch"):
        runner.word2vec(out=tmp_path, arch="glove", progress=False)  # type: ignore[arg-type]


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(runner)
    assert result.failed == 0 and result.attempted > 0
