"""Retrieve-then-read: the passages the retriever finds are the ones in the prompt, numbered;
citations are read back; closed book puts none."""

import pytest

from groundwork.errors import ConfigError
from groundwork.retrieval.base import Hit
from groundwork.retrieval.rag import (
    CLOSED_BOOK,
    RAGPipeline,
    format_passages,
    parse_citations,
    plain_prompt,
    rag_messages,
)

PASSAGES = ["Paris is the capital of France.", "Rome is in Italy.", "Bern is in Switzerland."]


class Fixed:
    """A retriever that returns the same ranking for every query."""

    def __init__(self, order: list[int]) -> None:
        self.order = order
        self.queries: list[str] = []

    def retrieve(self, query: str, k: int) -> list[Hit]:
        self.queries.append(query)
        return [Hit(index=i, score=1.0 / (r + 1)) for r, i in enumerate(self.order[:k])]


def test_prompt_holds_the_retrieved_passages_in_rank_order() -> None:
    seen: list[str] = []

    def complete(prompts: list[str]) -> list[str]:
        seen.extend(prompts)
        return ["Rome [1]" for _ in prompts]

    pipeline = RAGPipeline(Fixed([1, 0, 2]), PASSAGES, complete, k=2)
    answer = pipeline.answer("Where is Rome?")
    assert seen[0] == (
        f"{rag_messages('Where is Rome?', [PASSAGES[1], PASSAGES[0]])[0]['content']}\n\n"
        "[1] Rome is in Italy.\n\n[2] Paris is the capital of France.\n\nQuestion: Where is Rome?"
        "\nAnswer:"
    )
    assert answer.passages == [1, 0] and answer.citations == [1]
    assert answer.cited_passages == [1] and answer.answer == "Rome [1]"


def test_closed_book_retrieves_nothing() -> None:
    retriever = Fixed([0])
    pipeline = RAGPipeline(retriever, PASSAGES, lambda ps: ["x" for _ in ps], k=0)
    answer = pipeline.answer("q?")
    assert answer.passages == [] and retriever.queries == []
    assert plain_prompt(rag_messages("q?", [])).startswith(CLOSED_BOOK)


def test_citations_and_formatting() -> None:
    assert parse_citations("[3] and [1], [1], [9]", 3) == [3, 1]
    assert format_passages([" a ", "b"]) == "[1] a\n\n[2] b"


def test_errors() -> None:
    with pytest.raises(ConfigError, match="a retriever is needed"):
        RAGPipeline(None, PASSAGES, lambda ps: [], k=2)
    with pytest.raises(ConfigError, match="k"):
        RAGPipeline(None, PASSAGES, lambda ps: [], k=-1)
    with pytest.raises(ConfigError, match="question is empty"):
        RAGPipeline(Fixed([0]), PASSAGES, lambda ps: ["a"]).answer("  ")
