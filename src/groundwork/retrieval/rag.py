r"""Retrieval-augmented generation: retrieve passages, put them in the prompt, read the answer.

Lewis et al. (2020, "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks") condition
a generator on the top-$k$ passages a retriever finds for the question; what the model does not
hold in its weights it can read from the prompt. This module is the *retrieve-then-read*
pipeline at inference (no joint training): chunk a corpus into passages
(:mod:`~groundwork.retrieval.chunking`), retrieve the top $k$ for the question (BM25, dense or
hybrid — anything with ``retrieve(query, k)``), number them ``[1]`` ... ``[k]`` in the prompt and
ask for an answer that cites the passage it used; :func:`parse_citations` reads the citations back
so they can be checked against the passages.

The model is reached only through a function from prompts to completions, so the same pipeline
runs on SmolLM2, a run directory, or a scripted fake in the tests; with a chat model, prompts are
rendered with its chat template.

Chapter 15 (Prompting, agents and retrieval).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from groundwork.errors import ConfigError
from groundwork.retrieval.base import Retriever

Message = dict[str, str]

SYSTEM = (
    "Answer the question using the numbered passages. Give a short answer, then the number of "
    "the passage you used in brackets, like [2]."
)
"""The instruction of a retrieve-then-read prompt."""

CLOSED_BOOK = "Answer the question with a short answer."
"""The instruction without retrieval (the baseline)."""

CITATION = re.compile(r"\[(\d+)\]")


# --8<-- [start:prompt]
def format_passages(passages: Sequence[str]) -> str:
    """The passages numbered from 1, one per paragraph.

    >>> print(format_passages(["Paris is in France.", "Rome is in Italy."]))
    [1] Paris is in France.
    <BLANKLINE>
    [2] Rome is in Italy.
    """
    return "\n\n".join(f"[{i}] {p.strip()}" for i, p in enumerate(passages, 1))


def rag_messages(question: str, passages: Sequence[str]) -> list[Message]:
    """The conversation a chat model answers: the instruction, the passages, the question;
    without passages, the closed-book baseline."""
    if not passages:
        return [
            {"role": "system", "content": CLOSED_BOOK},
            {"role": "user", "content": f"Question: {question}"},
        ]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{format_passages(passages)}\n\nQuestion: {question}"},
    ]


def parse_citations(answer: str, n_passages: int) -> list[int]:
    """The passage numbers an answer cites (``[2]``), 1-based, in order, without repeats;
    numbers outside ``1..n_passages`` are ignored.

    >>> parse_citations("It was 1901 [2][2], see also [7].", 3)
    [2]
    """
    cited: list[int] = []
    for match in CITATION.finditer(answer):
        number = int(match.group(1))
        if 1 <= number <= n_passages and number not in cited:
            cited.append(number)
    return cited


# --8<-- [end:prompt]


@dataclass
class RAGAnswer:
    """One answered question."""

    question: str
    answer: str
    passages: list[int] = field(default_factory=list)
    """Indices (into the pipeline's passages) of what was put in the prompt, best first."""
    scores: list[float] = field(default_factory=list)
    """The retriever's score of each passage."""
    citations: list[int] = field(default_factory=list)
    """Passage numbers cited by the answer (1 = the first passage in the prompt)."""

    @property
    def cited_passages(self) -> list[int]:
        """The corpus indices of the cited passages."""
        return [self.passages[c - 1] for c in self.citations]


# --8<-- [start:pipeline]
class RAGPipeline:
    """Retrieve-then-read over a list of passages.

    Args:
        retriever: Finds passages: ``retrieve(query, k) -> [Hit(index, score), ...]`` with
            indices into ``passages``.
        passages: The corpus, chunked.
        complete: Prompts in, completions out (batched), e.g. a closure over
            :func:`~groundwork.generate.stream.generate_texts`.
        render: Turns the messages of :func:`rag_messages` into the model's prompt (a chat
            template); default: the contents joined by blank lines, ending in ``"Answer:"``.
        k: Passages per question (``0``: closed book, no retrieval).
    """

    def __init__(
        self,
        retriever: Retriever | None,
        passages: Sequence[str],
        complete: Callable[[Sequence[str]], list[str]],
        *,
        render: Callable[[list[Message]], str] | None = None,
        k: int = 3,
    ) -> None:
        if k < 0:
            raise ConfigError(f"k (passages per question) must be >= 0, got {k}")
        if k > 0 and retriever is None:
            raise ConfigError("a retriever is needed to put passages in the prompt (k > 0)")
        self.retriever, self.passages, self.complete = retriever, list(passages), complete
        self.render = render or plain_prompt
        self.k = k

    def prompt(self, question: str) -> tuple[str, list[int], list[float]]:
        """The prompt for ``question`` and the indices and scores of the passages in it."""
        if not question.strip():
            raise ConfigError("the question is empty")
        hits = self.retriever.retrieve(question, self.k) if self.retriever and self.k else []
        indices = [h.index for h in hits]
        messages = rag_messages(question, [self.passages[i] for i in indices])
        return self.render(messages), indices, [h.score for h in hits]

    def answer_many(self, questions: Sequence[str]) -> list[RAGAnswer]:
        """Answer every question (one batched call of ``complete``)."""
        prompts = [self.prompt(q) for q in questions]
        completions = self.complete([p for p, _, _ in prompts])
        return [
            RAGAnswer(q, text.strip(), idx, scores, parse_citations(text, len(idx)))
            for q, (_, idx, scores), text in zip(questions, prompts, completions, strict=True)
        ]

    def answer(self, question: str) -> RAGAnswer:
        """Answer one question."""
        return self.answer_many([question])[0]


# --8<-- [end:pipeline]


def plain_prompt(messages: list[Message]) -> str:
    """A prompt for a model without a chat template: the contents, then ``"Answer:"``."""
    return "\n\n".join(m["content"] for m in messages) + "\nAnswer:"
