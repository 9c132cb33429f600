"""What an evaluation task is, and the registry of tasks by name.

A :class:`Task` is declarative, as in Gao et al.'s lm-evaluation-harness: where its documents
come from and how to render one as a context (an optional description, ``k`` solved examples,
then the question) followed by its candidate answers (:class:`Example`). :func:`register_task`
adds a task to :data:`TASKS`; :mod:`groundwork.evaluate.tasks` registers the real ones (PIQA,
BoolQ, MMLU, ...) when :mod:`groundwork.evaluate` is imported. The harness that scores a model on
a task is :mod:`groundwork.evaluate.harness`.

Brown et al. (2020), "Language Models are Few-Shot Learners" (GPT-3), section 2. Chapter 11.
"""

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import (
    ConfigError,
    DataError,
    EmptyCorpusError,
    UnknownNameError,
    did_you_mean,
)

Doc = dict[str, Any]
"""One raw record of a task's data file."""


@dataclass
class Example:
    """One rendered test item."""

    context: str
    """Everything the model reads before the answer (description, shots, question)."""
    choices: list[str]
    """Candidate continuations (multiple choice), each starting with the target delimiter;
    empty for generation tasks."""
    gold: int | str
    """Index of the right choice, or the expected answer text (generation)."""


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze spaces (SQuAD-style).

    >>> normalize_answer("  The Answer: 42! ")
    'answer 42'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@dataclass(kw_only=True)
class Task:
    """A declarative evaluation task: where its documents come from and how to render them."""

    name: str
    """Registry name, e.g. ``"piqa"``."""
    docs: Callable[[], list[Doc]]
    """Loads the evaluated documents (in a fixed order)."""
    doc_to_text: Callable[[Doc], str]
    """The question part of a document, e.g. ``"Question: ...\\nAnswer:"``."""
    doc_to_target: Callable[[Doc], int | str]
    """The gold answer: an index into the choices, or the answer text (generation)."""
    doc_to_choices: Callable[[Doc], list[str]] | None = None
    """The candidate answers (multiple choice)."""
    kind: Literal["multiple_choice", "generate"] = "multiple_choice"
    """Score choices by log-likelihood, or decode greedily and compare."""
    fewshot_docs: Callable[[], list[Doc]] | None = None
    """A separate split to draw shots from; ``None``: the evaluated split minus the example."""
    description: str = ""
    """Text put before everything else (e.g. the subject of an exam)."""
    fewshot_separator: str = "\n\n"
    """Between shots, and between the last shot and the question."""
    target_delimiter: str = " "
    """Between a question and its answer."""
    max_new_tokens: int = 16
    """Generation tasks: decode at most this many tokens (stopping at a newline)."""
    normalize: Callable[[str], str] = normalize_answer
    """Generation tasks: applied to prediction and gold before comparing."""
    about: str = ""
    """One line for listings: what the task is and where it comes from."""
    metrics: Callable[[Sequence[Doc], Sequence[Sequence[float]]], dict[str, Any]] | None = None
    """Multiple choice: task-level metrics beyond ``acc``, from the evaluated documents and each
    one's choice log-likelihoods (e.g. TruthfulQA's MC2, BBQ's bias score); a key with a
    ``<key>_stderr`` partner is shown with it. ``None``: ``acc`` and ``acc_norm`` only."""

    def __post_init__(self) -> None:
        if self.kind not in ("multiple_choice", "generate"):
            raise ConfigError(f"task {self.name!r}: kind must be multiple_choice or generate")
        if self.kind == "multiple_choice" and self.doc_to_choices is None:
            raise ConfigError(f"multiple-choice task {self.name!r} needs doc_to_choices")

    def target_text(self, doc: Doc) -> str:
        """The answer as text (what a solved shot shows after the question)."""
        target = self.doc_to_target(doc)
        if self.kind == "multiple_choice":
            assert self.doc_to_choices is not None
            return self.doc_to_choices(doc)[int(target)]
        return str(target)

    # --8<-- [start:render]
    def render(self, doc: Doc, shots: Sequence[Doc]) -> Example:
        """The :class:`Example` of ``doc`` preceded by the solved ``shots``."""
        parts = [self.doc_to_text(s) + self.target_delimiter + self.target_text(s) for s in shots]
        context = self.fewshot_separator.join([*parts, self.doc_to_text(doc)])
        if self.description:
            context = self.description + self.fewshot_separator + context
        gold = self.doc_to_target(doc)
        if self.kind == "generate":
            return Example(context=context, choices=[], gold=str(gold))
        assert self.doc_to_choices is not None
        choices = [self.target_delimiter + c for c in self.doc_to_choices(doc)]
        return Example(context=context, choices=choices, gold=int(gold))

    # --8<-- [end:render]


# --- reading task files ---------------------------------------------------------------------


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[Doc]:
    """Read a JSON-lines task file, checking that every record has the ``required`` fields.

    Raises:
        DataError: a missing file, a line that is not a JSON object, or a missing field (the
            message names file, line and field).
        EmptyCorpusError: the file holds no records.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"task file {path} does not exist")
    docs = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({err})") from err
            if not isinstance(doc, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object")
            for name in required:
                if name not in doc:
                    raise DataError(f"{path}, line {line_no}: missing field {name!r}")
            docs.append(doc)
    if not docs:
        raise EmptyCorpusError(f"task file {path} holds no examples")
    return docs


# --- the registry ---------------------------------------------------------------------------

TASKS: dict[str, Task] = {}
"""Registered tasks by name; :mod:`groundwork.evaluate.tasks` fills it."""


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` (replacing one of the same name) and return it."""
    TASKS[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """The registered task called ``name`` (a :class:`Task` is returned as is). The real tasks
    are registered by importing :mod:`groundwork.evaluate` (its ``__init__`` imports
    :mod:`groundwork.evaluate.tasks`), which importing any of its modules does first.

    Raises:
        UnknownNameError: no such task (with the closest name).
    """
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}: {did_you_mean(name, TASKS)}")
    return TASKS[name]


__all__ = [
    "TASKS",
    "Doc",
    "Example",
    "Task",
    "get_task",
    "normalize_answer",
    "read_jsonl",
    "register_task",
]
