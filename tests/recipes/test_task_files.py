"""`task_from_files`: a classification task from the user's CSV/TSV or JSON-lines files, with an
error naming the file and line for every way such files go wrong."""

import json
from pathlib import Path

import pytest

from groundwork.errors import DataError, InputEncodingError, UnknownNameError
from groundwork.recipes.finetune_classify import ClassificationTask, task_splits
from groundwork.recipes.task_files import task_from_files


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


TRAIN_CSV = 'text,label\n"see you at 6, ok?",ham\nWIN CASH NOW,spam\nlunch?,ham\n'


def test_a_csv_task(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", TRAIN_CSV)
    test = write(tmp_path / "test.csv", 'label,text\nspam,free phone\nham,"multi\nline"\n')
    task = task_from_files(train, test)
    assert isinstance(task, ClassificationTask)
    assert task.name == "train" and task.labels == ("ham", "spam") and task.positive is None
    assert task.examples("train") == [
        ("train.csv:2", "see you at 6, ok?", 0),
        ("train.csv:3", "WIN CASH NOW", 1),
        ("train.csv:4", "lunch?", 0),
    ]
    assert task.examples("test") == [
        ("test.csv:2", "free phone", 1),
        ("test.csv:3", "multi\nline", 0),
    ]
    with pytest.raises(UnknownNameError, match=r"'train' and 'test'"):
        task.examples("val")


def test_a_jsonl_task_with_other_fields_and_three_labels(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"body": "good", "y": "pos"},
        {"body": "bad", "y": "neg"},
        {"body": "meh", "y": "neutral", "extra": 1},
    ]
    train = jsonl(tmp_path / "reviews.jsonl", rows * 4)
    write(tmp_path / "test.json", '{"body": "fine", "y": "pos"}\n\n{"body": "awful", "y": "neg"}\n')
    task = task_from_files(
        train, tmp_path / "test.json", text_field="body", label_field="y", name="reviews"
    )
    assert task.name == "reviews" and task.labels == ("neg", "neutral", "pos")
    assert task.examples("test") == [("test.json:1", "fine", 2), ("test.json:3", "awful", 0)]
    splits = task_splits(task)  # what finetune does with it: a validation split by id hash
    assert len(splits["train"]) + len(splits["val"]) == 12 and len(splits["test"]) == 2


def test_numeric_json_labels_are_strings_and_tsv_has_no_quoting(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    test = write(tmp_path / "test.tsv", 'text\tlabel\n"quoted" word\t1\n')
    task = task_from_files(train, test)
    assert task.labels == ("0", "1")
    assert task.examples("test") == [("test.tsv:2", '"quoted" word', 1)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.txt", "text,label\na,b\n", r"train.txt: unknown format '.txt': use .csv"),
        ("train.csv", "", "train.csv holds no examples"),
        ("train.csv", "text,label\n", r"train.csv holds no examples \(only a header\)"),
        ("train.jsonl", "\n\n", "train.jsonl holds no examples"),
        (
            "train.csv",
            "body,label\nx,a\n",
            r"train.csv line 2 has no text column 'text' \(its "
            r"fields: 'body', 'label'\); name the text's column with text_field",
        ),
        ("train.csv", "text,y\nx,a\n", "train.csv line 2 has no label column 'label'"),
        ("train.csv", "text,label\nx,a\n  ,b\n", "train.csv line 3 has an empty text"),
        ("train.csv", "text,label\nx,a\ny,\n", "train.csv line 3 has an empty label"),
        (
            "train.csv",
            "text,label\nx,a\nhi, there,b\n",
            "train.csv line 3 has 3 fields but the "
            "header has 2 .a text holding commas must be in double quotes",
        ),
        (
            "train.jsonl",
            '{"text": "x", "label": "a"}\n{"text": "y"}\n',
            "train.jsonl line 2 has no label field 'label'",
        ),
        (
            "train.jsonl",
            '{"text": "x", "label": "a"}\n{oops\n',
            "train.jsonl line 2 is not valid JSON",
        ),
        (
            "train.json",
            '[\n  {"text": "x", "label": "a"}\n]\n',
            "line 1 is not valid JSON .* one JSON array",
        ),
        (
            "train.json",
            '[{"text": "x", "label": "a"}]\n',
            "line 1 holds a JSON list, not an object",
        ),
        ("train.jsonl", '["x", "a"]\n', "train.jsonl line 1 holds a JSON list, not an object"),
        ("train.jsonl", '{"text": 3, "label": "a"}\n', "line 1: the text 'text' is a int"),
        (
            "train.csv",
            "text,label\nx,a\ny,a\n",
            r"train.csv has only one label \('a'\): a "
            "classifier needs at least 2",
        ),
    ],
)
def test_bad_training_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    train = write(tmp_path / name, content)
    test = write(tmp_path / "test.csv", "text,label\nz,a\n")
    with pytest.raises(DataError, match=message):
        task_from_files(train, test)


def test_a_missing_file(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", TRAIN_CSV)
    with pytest.raises(DataError, match=r"test.csv does not exist"):
        task_from_files(train, tmp_path / "test.csv")


def test_a_test_label_never_seen_in_training(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", TRAIN_CSV)
    test = write(tmp_path / "test.csv", "text,label\n" + "a,ham\n" * 5 + "b,eggs\n")
    with pytest.raises(
        DataError,
        match=r"label 'eggs' in .*test.csv line 7 never occurs in the training file .*train.csv: "
        r".*the training labels are 'ham', 'spam'",
    ):
        task_from_files(train, test)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_bytes(b"text,label\ncaf\xe9,a\n")
    with pytest.raises(InputEncodingError, match=r"train.csv is not valid UTF-8"):
        task_from_files(train, write(tmp_path / "test.csv", "text,label\nz,a\n"))
