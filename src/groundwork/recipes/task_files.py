"""A classification task from the user's own labelled files: :func:`task_from_files` (chapter 12).

Two files, one for training and one for testing, each in one of two formats, told by its suffix:

* ``.csv`` or ``.tsv``: a header row naming the columns, then one example per row (a CSV text
  holding commas or newlines is quoted, as spreadsheets write it; a TSV has no quoting);
* ``.jsonl`` or ``.json``: JSON lines, one object per line (blank lines are skipped).

For example, a ``train.csv`` and a ``test.jsonl``::

    text,label                     {"text": "win a free phone", "label": "spam"}
    "see you at 6, ok?",ham        {"text": "lunch?", "label": "ham"}
    WIN CASH NOW,spam

Labels are strings (a JSON ``1`` is the label ``"1"``); the task's labels are the distinct labels
of the *training* file, sorted, and a test label outside them is an error rather than a class
the head could never predict. A binary task is scored by macro-F1 (``positive`` is ``None``):
which class is "positive" is the user's to say, not the alphabet's. Every example's id is the
file's name and its line (``train.csv:7``), so the validation split that ``groundwork finetune``
draws from the training examples by a hash of their ids is the same on every run.

The result is a :class:`~groundwork.recipes.finetune_classify.ClassificationTask`, the same as a
bundled task (``dreaddit``, ``sms-spam``), so fine-tuning, scoring and the bag-of-words baseline
run on it unchanged.
"""

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from groundwork.errors import DataError, InputEncodingError, UnknownNameError
from groundwork.recipes.finetune_classify import ClassificationTask

__all__ = ["FORMATS", "read_labelled", "task_from_files"]

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}
"""File suffixes and the format each one is read as."""

Example = tuple[int, str, str]
"""``(line, text, label)``: one labelled example and the line of its file it starts on."""


def _lines_of(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark dropped, as Excel writes one)."""
    if path.suffix.lower() not in FORMATS:
        raise DataError(
            f"{path}: unknown format {path.suffix or '(no suffix)'!r}: use .csv or .tsv (a header "
            "row, then one example per row) or .jsonl/.json (one JSON object per line)"
        )
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a file of labelled texts")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputEncodingError(
            f"{path} is not valid UTF-8 ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from err


def _fields_hint(available: list[str]) -> str:
    return f"its fields: {', '.join(repr(f) for f in available) or 'none'}"


def _delimited_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: value})`` for each row after the header (blank rows skipped)."""
    lines = text.splitlines(keepends=True)
    if delimiter == "\t":  # TSV has no quoting: a quote is part of the text
        reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    line = 0
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span several lines
            if not cells or all(not c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                continue
            if len(cells) != len(header):
                raise DataError(
                    f"{path} line {start} has {len(cells)} fields but the header has "
                    f"{len(header)}"
                    + (
                        " (a text holding commas must be in double quotes)"
                        if delimiter == ","
                        else ""
                    )
                )
            yield start, dict(zip(header, cells, strict=True))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: not valid {path.suffix} ({err})") from err


def _json_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` for each non-blank line of a JSON-lines file."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            hint = ""
            if number == 1 and line.lstrip().startswith("["):
                hint = " (it looks like one JSON array: write one object per line, JSON lines)"
            raise DataError(f"{path} line {number} is not valid JSON ({err.msg}){hint}") from err
        if not isinstance(row, dict):
            raise DataError(
                f"{path} line {number} holds a JSON {type(row).__name__}, not an object "
                '(write one {"text": ..., "label": ...} per line)'
            )
        yield number, row


def read_labelled(
    path: Path, *, text_field: str = "text", label_field: str = "label"
) -> list[Example]:
    """The ``(line, text, label)`` examples of one file (format by suffix, see the module).

    Raises:
        DataError: An unknown suffix, a missing or empty file, a row without the text or label
            field, an empty text or label, or a malformed row; the message names the file and
            the line.
        InputEncodingError: The file is not UTF-8.
    """
    path = Path(path)
    content = _lines_of(path)
    fmt = FORMATS[path.suffix.lower()]
    rows: Iterator[tuple[int, dict[str, Any]]]
    if fmt == "jsonl":
        rows = _json_rows(path, content)
    else:
        rows = _delimited_rows(path, content, "\t" if fmt == "tsv" else ",")
    examples: list[Example] = []
    for line, row in rows:
        for name, what in ((text_field, "text"), (label_field, "label")):
            if row.get(name) is None:
                where = "column" if fmt != "jsonl" else "field"
                option = "text_field" if what == "text" else "label_field"
                raise DataError(
                    f"{path} line {line} has no {what} {where} {name!r} "
                    f"({_fields_hint(list(row))}); name the {what}'s {where} with {option}"
                )
        text, label = row[text_field], row[label_field]
        if not isinstance(text, str):
            raise DataError(
                f"{path} line {line}: the text {text_field!r} is a {type(text).__name__}, "
                "not a string"
            )
        if isinstance(label, dict | list):
            raise DataError(
                f"{path} line {line}: the label {label_field!r} is a {type(label).__name__}, "
                "not a single value"
            )
        if not text.strip():
            raise DataError(f"{path} line {line} has an empty text: remove the row or fill it in")
        label = str(label).strip()
        if not label:
            raise DataError(f"{path} line {line} has an empty label")
        examples.append((line, text, label))
    if not examples:
        raise DataError(f"{path} holds no examples" + (" (only a header)" if content else ""))
    return examples


def task_from_files(
    train: Path,
    test: Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    name: str | None = None,
) -> ClassificationTask:
    """A classification task read from a training and a test file of labelled texts.

    Args:
        train: The training examples (``.csv``, ``.tsv``, ``.jsonl`` or ``.json``); a
            validation split is drawn from them when fine-tuning.
        test: The test examples, scored once at the end; every label must occur in ``train``.
        text_field: The column (CSV/TSV) or key (JSON lines) holding the text.
        label_field: The column or key holding the label.
        name: The task's name (default: the training file's name without its suffix).

    Returns:
        A task whose labels are the training file's distinct labels, sorted, and whose examples'
        ids are ``<file name>:<line>``; ``positive`` is ``None`` (scored by macro-F1).

    Raises:
        DataError: Either file is missing, empty or malformed (the message names the file and
            the line), the training file has fewer than 2 labels, or a test label never occurs
            in the training file.
        InputEncodingError: A file is not UTF-8.
    """
    train, test = Path(train), Path(test)
    fields = {"text_field": text_field, "label_field": label_field}
    train_examples = read_labelled(train, **fields)
    test_examples = read_labelled(test, **fields)
    labels = tuple(sorted({label for _, _, label in train_examples}))
    if len(labels) < 2:
        raise DataError(
            f"{train} has only one label ({labels[0]!r}): a classifier needs at least 2 "
            f"(is {label_field!r} the label column?)"
        )
    index = {label: k for k, label in enumerate(labels)}
    for line, _, label in test_examples:
        if label not in index:
            raise DataError(
                f"label {label!r} in {test} line {line} never occurs in the training file "
                f"{train}: a head cannot learn it (the training labels are "
                f"{', '.join(repr(x) for x in labels)})"
            )
    splits = {
        "train": [
            (f"{train.name}:{line}", text, index[label]) for line, text, label in train_examples
        ],
        "test": [
            (f"{test.name}:{line}", text, index[label]) for line, text, label in test_examples
        ],
    }

    def examples(split: str) -> list[tuple[str, str, int]]:
        if split not in splits:
            raise UnknownNameError(
                f"a task from files has the splits 'train' and 'test', not {split!r}"
            )
        return list(splits[split])

    return ClassificationTask(
        name=name or train.stem,
        description=f"labelled texts from {train} (training) and {test} (test)",
        labels=labels,
        examples=examples,
        positive=None,
    )
