"""Evaluation sets from real documents: the inverse cloze task on wiki-sample (query sentences
absent from the index, relevance = the source document's passages, determinism) and cloze
questions (the blank holds the answer); hand-made corner cases; bad input."""

import re

import pytest

from groundwork.corpus.document import Document
from groundwork.corpus.documents import load_documents
from groundwork.errors import ConfigError
from groundwork.retrieval.chunking import Passage, chunk_documents
from groundwork.retrieval.datasets import (
    BLANK,
    CLOZE_PROMPT,
    YEAR,
    ClozeQuestion,
    RetrievalQuery,
    cloze_questions,
    sentence_queries,
    split_sentences,
)


@pytest.fixture(scope="module")
def wiki() -> list[Document]:
    return load_documents("wiki-sample")


@pytest.fixture(scope="module")
def ict(wiki: list[Document]) -> tuple[list[Passage], list[RetrievalQuery]]:
    return sentence_queries(wiki, n=60, seed=0)


def test_split_sentences() -> None:
    text = "History\n\n\nIt began in 1900.  Then it grew! Did it? yes.\nMr. Smith left. e.g. this"
    assert split_sentences(text) == [
        "History",
        "It began in 1900.",
        "Then it grew!",
        "Did it? yes.",
        "Mr.",
        "Smith left. e.g. this",
    ]
    assert " ".join(split_sentences(text)).split() == text.split()  # every word, in order


# --- the inverse cloze task -----------------------------------------------------------------


def test_query_sentences_are_not_in_the_index(
    ict: tuple[list[Passage], list[RetrievalQuery]],
) -> None:
    passages, queries = ict
    assert len(queries) == 60 and len({q.text for q in queries}) == 60
    for q in queries:
        assert 8 <= len(q.text.split()) <= 50 and q.text.endswith((".", "!", "?"))
        assert not any(q.text in p.text for p in passages), q.text


def test_relevant_passages_are_those_of_the_source_document(
    wiki: list[Document], ict: tuple[list[Passage], list[RetrievalQuery]]
) -> None:
    passages, queries = ict
    by_id = {d.id: d for d in wiki}
    for q in queries:
        assert q.relevant == frozenset(i for i, p in enumerate(passages) if p.doc_id == q.doc_id)
        assert q.text in " ".join(by_id[q.doc_id].text.split())  # taken from that document


def test_only_the_query_sentences_are_removed(
    wiki: list[Document], ict: tuple[list[Passage], list[RetrievalQuery]]
) -> None:
    passages, queries = ict
    removed = {q.text for q in queries}
    pruned = [
        Document(d.id, " ".join(s for s in split_sentences(d.text) if s not in removed), d.source)
        for d in wiki
    ]
    assert passages == chunk_documents(pruned, 100, 20)
    n_words = sum(len(d.text.split()) for d in wiki)
    assert n_words - sum(len(d.text.split()) for d in pruned) == sum(
        len(t.split()) for t in removed
    )


def test_sentence_queries_are_deterministic(wiki: list[Document]) -> None:
    docs = wiki[:40]
    first = sentence_queries(docs, n=20, seed=1)
    assert sentence_queries(docs, n=20, seed=1) == first
    assert sentence_queries(docs, n=20, seed=2)[1] != first[1]


def test_sentence_queries_by_hand() -> None:
    docs = [
        Document("a", "One two three four five. Six seven eight nine ten.", "user"),
        Document("b", "Only one sentence here at all.", "user"),  # would be emptied: never drawn
        Document("c", "Repeated words are here. Repeated words are here. End.", "user"),
    ]
    passages, queries = sentence_queries(docs, n=1, seed=0, min_words=4, size=3, overlap=0)
    assert len(queries) == 1 and queries[0].doc_id == "a"  # c's sentence occurs twice
    kept = (
        "Six seven eight nine ten."
        if queries[0].text.startswith("One")
        else "One two three four five."
    )
    assert [p.text for p in passages if p.doc_id == "a"] == chunk_words_of(kept, 3)
    assert queries[0].relevant == frozenset(i for i, p in enumerate(passages) if p.doc_id == "a")
    with pytest.raises(ConfigError, match="only 1 sentences of 4-50 words can be queries, 2"):
        sentence_queries(docs, n=2, min_words=4)


def chunk_words_of(text: str, size: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def test_sentence_queries_errors(wiki: list[Document]) -> None:
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        sentence_queries(wiki, n=0)
    with pytest.raises(ConfigError, match="overlap"):
        sentence_queries(wiki[:5], n=1, size=10, overlap=10)
    with pytest.raises(ConfigError, match="ask for fewer"):
        sentence_queries([], n=1)


# --- cloze questions ------------------------------------------------------------------------


def test_cloze_answers_fill_the_blank(wiki: list[Document]) -> None:
    questions = cloze_questions(wiki, n=80, seed=0)
    assert len({q.sentence for q in questions}) == 80
    by_id = {d.id: " ".join(d.text.split()) for d in wiki}
    for q in questions:
        assert q.question.startswith(CLOZE_PROMPT) and q.question.count(BLANK) == 1
        blanked = q.question.removeprefix(CLOZE_PROMPT)
        assert blanked.replace(BLANK, q.answer) == q.sentence
        assert YEAR.fullmatch(q.answer) and YEAR.findall(blanked) == []
        assert 10 <= len(q.sentence.split()) <= 40
        assert q.sentence in by_id[q.doc_id]
    assert cloze_questions(wiki, n=80, seed=0) == questions
    assert cloze_questions(wiki, n=80, seed=1) != questions


def test_cloze_by_hand() -> None:
    text = (
        "The bridge over the river was finally opened to traffic in 1878. "
        "The war lasted from 1939 to 1945 and changed the whole of Europe forever. "
        "In 1999 the 1999 edition of the guide was printed in a great many copies. "
        "There were 5000 of them in the big city, far more than anyone expected then."
    )
    questions = cloze_questions([Document("d", text, "user")], n=1)
    assert questions == [
        ClozeQuestion(
            "Fill in the blank: The bridge over the river was finally opened to traffic in ____.",
            "1878",
            "d",
            "The bridge over the river was finally opened to traffic in 1878.",
        )
    ]  # two years: ambiguous; the same year twice: given away; 5000 is not a year
    four_digits = re.compile(r"\b\d{4}\b")
    numbers = cloze_questions([Document("d", text, "user")], n=2, answer=four_digits)
    assert {q.answer for q in numbers} == {"1878", "5000"}
    with pytest.raises(ConfigError, match="only 1 sentences"):
        cloze_questions([Document("d", text, "user")], n=2)
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        cloze_questions([], n=-1)
