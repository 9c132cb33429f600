"""`groundwork finetune MODEL --task TASK` for classification: a head over a backbone run trained
through the engine, scored beside a bag-of-words logistic regression; the run directory; errors."""

import json
from pathlib import Path

import pytest

import helpers
from groundwork import cli
from groundwork.errors import DataError, UnknownNameError
from groundwork.recipes import finetune_classify as fc
from groundwork.runs import load_run, read_config
from groundwork.train import TrainConfig, read_metrics

CALM, STRESS, _examples = helpers.CALM, helpers.STRESS, helpers.calm_or_stressed


def tiny_train(**kw: object) -> TrainConfig:
    return helpers.tiny_train(
        **{"batch_size": 8, "lr": 1e-3, "best_metric": "val_f1", "best_mode": "max", **kw}
    )


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helpers.tiny_bert_run(tmp_path_factory.mktemp("bert"), CALM + STRESS)


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> str:
    task = fc.ClassificationTask("toy", "calm or stressed", ("calm", "stress"), _examples, 1)
    monkeypatch.setitem(fc.CLASSIFICATION_TASKS, "toy", task)
    return "toy"


def test_a_head_is_fine_tuned_and_scored_beside_the_baseline(
    bert_run: Path, toy_task: str, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    result = fc.finetune_classifier(
        str(bert_run),
        task=toy_task,
        train_config=tiny_train(max_steps=60, eval_every=20, lr=3e-3),
        out=out,
    )
    assert result.stopped == "finished"
    config = read_config(out)
    assert config["kind"] == "task-head" and config["task"] == "toy"
    assert config["head"] == {
        "kind": "sequence",
        "pooling": "cls",
        "num_labels": 2,
        "labels": ["calm", "stress"],
    }
    assert config["backbone"] == str(bert_run) and config["model"]["d_model"] == 32
    evals = [m for m in read_metrics(out / "metrics.jsonl") if "val_f1" in m]
    assert [m["step"] for m in evals] == [20, 40, 60]
    metrics = json.loads((out / fc.METRICS_FILE).read_text())
    # the words tell the classes apart: the baseline is perfect, and so is the head
    assert metrics["bag_of_words_baseline"]["accuracy"] == 1.0
    assert result.model.accuracy == metrics["test"]["accuracy"] == 1.0
    # the run loads back as the trained head, with the backbone's tokenizer
    head, tokenizer, _ = load_run(out, device="cpu")
    seqs = fc.encode_for(tokenizer, "bert", CALM + STRESS, 16)
    data = fc.LabelledTexts(seqs, [0] * 8, batch_size=8)
    assert fc.predict(head, data, seqs) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_the_validation_split_is_held_out_of_training_by_id() -> None:
    task = fc.ClassificationTask("toy", "", ("calm", "stress"), _examples, 1)
    splits = fc.task_splits(task)
    assert len(splits["train"]) + len(splits["val"]) == 24 and len(splits["test"]) == 8
    assert splits["val"]  # at 10%, some of 24 ids
    again = fc.task_splits(task)
    assert again == splits


def test_predictions_do_not_depend_on_the_batch(bert_run: Path) -> None:
    backbone, tokenizer, family = fc.load_backbone(str(bert_run))
    from groundwork.adapt import head_for

    head = head_for(backbone, "sequence", 2)
    seqs = fc.encode_for(tokenizer, family, CALM + STRESS, 16)
    assert all(s[0] == tokenizer.token_to_id("[CLS]") for s in seqs)
    data = fc.LabelledTexts(seqs, [0] * 8, batch_size=4, val_batch_size=3)
    one = [fc.predict(head, fc.LabelledTexts([s], [0], batch_size=1), [s])[0] for s in seqs]
    assert fc.predict(head, data, seqs) == one


def test_the_baseline_is_a_logistic_regression_on_word_counts() -> None:
    splits = {
        "train": [("good day", 0), ("bad day", 1), ("good good", 0), ("bad bad", 1)],
        "test": [("good", 0), ("bad", 1), ("a good day", 0), ("bad!", 1)],
    }
    report = fc.bag_of_words_baseline(splits, 2, min_count=1)
    assert report.accuracy == 1.0 and report.support == [2, 2]
    # "day" is in both classes, unseen words count for nothing: a coin toss, class 0 or 1
    tie = fc.bag_of_words_baseline({**splits, "test": [("day unseen", 0)]}, 2, min_count=1)
    assert tie.support == [1, 0]


def test_the_command_prints_the_table(
    bert_run: Path, toy_task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["finetune", str(bert_run), "--task", toy_task, "--out", str(tmp_path / "ft")]
    argv += ["--train.max-steps", "2", "--train.progress", "false"]
    argv += ["--train.tensorboard", "false", "--train.batch-size", "8"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| bag-of-words logistic regression |" in printed and "F1 (stress)" in printed


def test_bad_input(bert_run: Path, toy_task: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown task"):
        fc.finetune_classifier(str(bert_run), task="tyo", train_config=tiny_train(), out=tmp_path)
    with pytest.raises(UnknownNameError, match="neither a run directory nor a named model"):
        fc.finetune_classifier(
            "no-such-model", task=toy_task, train_config=tiny_train(), out=tmp_path / "x"
        )
    bad = fc.ClassificationTask("bad", "", ("a", "b"), lambda s: [(s, "text", 5)], 1)
    with pytest.raises(DataError, match="label 5"):
        fc.task_splits(bad)
    empty = fc.ClassificationTask("empty", "", ("a", "b"), lambda s: [(s, "  ", 0)], 1)
    with pytest.raises(DataError, match="empty text"):
        fc.task_splits(empty)
    assert (
        cli.main(["finetune", str(bert_run), "--task", "dreadit", "--out", str(tmp_path / "y")])
        == 2
    )


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["post", "mood"])
        writer.writerows(rows)
    return path


def test_a_task_of_ones_own_from_label_files(
    bert_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(t, "calm") for t in CALM] + [(t, "tense") for t in STRESS]
    train = _write_csv(tmp_path / "train.csv", rows * 3)
    test = _write_csv(tmp_path / "test.csv", rows)
    out = tmp_path / "own"
    argv = ["finetune", str(bert_run), "--task", "moods", "--out", str(out)]
    argv += ["--train-file", str(train), "--test-file", str(test)]
    argv += ["--text-field", "post", "--label-field", "mood"]
    argv += ["--train.max-steps", "2", "--train.progress", "false", "--train.batch-size", "8"]
    argv += ["--train.tensorboard", "false"]
    assert cli.main(argv) == 0
    assert "macro-F1" in capsys.readouterr().out
    config = read_config(out)
    assert config["task"] == "moods" and config["head"]["labels"] == ["calm", "tense"]
    assert config["task_files"] == {"train_file": str(train), "test_file": str(test)}
    # a label the training file never had is refused before anything is trained
    unseen = _write_csv(tmp_path / "unseen.csv", [("a storm", "furious")])
    argv[argv.index(str(test))] = str(unseen)
    argv[argv.index(str(out))] = str(tmp_path / "unseen-run")
    assert cli.main(argv) == 2
    assert "never occurs in the training file" in capsys.readouterr().err
    assert not (tmp_path / "unseen-run").exists()
    only_train = ["finetune", str(bert_run), "--train-file", str(train), "--out", str(tmp_path)]
    assert cli.main(only_train) == 2
    assert "needs both --train-file and --test-file" in capsys.readouterr().err
