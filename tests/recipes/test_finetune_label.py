"""`groundwork finetune MODEL --task conll-ner`: a token head trained on the CoNLL sample, each
word labelled at its first sub-token, scored by entity F1 beside the majority-tag baseline."""

import json
from pathlib import Path

import pytest

import helpers
from groundwork import cli
from groundwork.corpus.conll import conll_sample
from groundwork.errors import ConfigError
from groundwork.recipes import finetune_label as fl
from groundwork.runs import load_run, read_config
from groundwork.train import TrainConfig
from groundwork.train.objectives import IGNORE_INDEX


def tiny_train(**kw: object) -> TrainConfig:
    return helpers.tiny_train(**{"batch_size": 16, "lr": 3e-3, **kw})


def test_a_word_is_labelled_on_its_first_piece_only(conll_bert_run: Path) -> None:
    _, tokenizer, _ = load_run(conll_bert_run, device="cpu")
    words = ["Unbelievably", "EU", "rejects"]
    ids, targets, first = fl.align_labels(tokenizer, words, [3, 1, 0], "bert")
    assert len(ids) == len(targets) and targets[0] == targets[-1] == IGNORE_INDEX
    assert [targets[i] for i in first] == [3, 1, 0]
    assert sum(t != IGNORE_INDEX for t in targets) == 3


def test_the_majority_tag_baseline() -> None:
    train = [
        (["Paris", "is", "big"], ["B-LOC", "O", "O"]),
        (["Paris", "Hilton"], ["B-PER", "I-PER"]),
    ]
    train += [(["Paris"], ["B-LOC"])]
    predicted = fl.majority_tag_baseline(train, [["Paris", "Hilton", "x"]])
    assert predicted == [["B-LOC", "I-PER", "O"]]


def test_finetune_writes_a_run_and_scores_entities(
    conll_bert_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ner"
    argv = ["finetune", str(conll_bert_run), "--task", "conll-ner", "--out", str(out)]
    argv += ["--train.max-steps", "4", "--train.eval-every", "2", "--train.batch-size", "16"]
    argv += ["--train.progress", "false", "--train.tensorboard", "false"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| most frequent tag per word |" in printed and "F1 PER" in printed
    config = read_config(out)
    assert config["kind"] == "task-head" and config["head"]["kind"] == "token"
    assert config["head"]["labels"] == sorted({t for s in conll_sample() for t in s.ner})
    metrics = json.loads((out / fl.METRICS_FILE).read_text())
    assert set(metrics["majority_tag_baseline"]) >= {"micro avg", "PER", "LOC"}
    assert 0 < metrics["majority_tag_baseline"]["micro avg"]["f1-score"] < 1
    head, _, _ = load_run(out, device="cpu")  # the trained token head, back from the run
    assert type(head).__name__ == "TokenClassifier" and head.num_labels == len(
        config["head"]["labels"]
    )
    assert (
        metrics["test"]["micro avg"]["support"]
        == metrics["majority_tag_baseline"]["micro avg"]["support"]
    )


def test_a_sentence_longer_than_max_tokens_is_refused(conll_bert_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="longer than max_tokens=8"):
        fl.finetune_labeller(
            str(conll_bert_run),
            task="conll-ner",
            train_config=tiny_train(),
            out=tmp_path,
            max_tokens=8,
        )
