"""Word windows with overlap: worked examples, every word covered in order, documents to
passages, bad input."""

import pytest

from groundwork.corpus.document import Document
from groundwork.errors import ConfigError
from groundwork.retrieval.chunking import Passage, chunk_documents, chunk_words

SEVEN = "a b c d e f g"


@pytest.mark.parametrize(
    ("size", "overlap", "windows"),
    [
        (3, 1, ["a b c", "c d e", "e f g"]),  # the last window ends exactly at the end
        (3, 0, ["a b c", "d e f", "g"]),  # the last window is short
        (4, 2, ["a b c d", "c d e f", "e f g"]),
        (7, 3, [SEVEN]),
        (100, 20, [SEVEN]),
        (1, 0, list("abcdefg")),
    ],
)
def test_chunk_words(size: int, overlap: int, windows: list[str]) -> None:
    assert chunk_words(SEVEN, size, overlap) == windows


def test_windows_cover_every_word_in_order() -> None:
    words = [f"w{i}" for i in range(253)]
    windows = chunk_words("\n ".join(words), size=50, overlap=10)
    assert all(len(w.split()) == 50 for w in windows[:-1])
    rebuilt = windows[0].split() + [x for w in windows[1:] for x in w.split()[10:]]
    assert rebuilt == words


def test_whitespace_is_normalised_and_empty_text_has_no_window() -> None:
    assert chunk_words("  one\n\ttwo   three ", 2, 1) == ["one two", "two three"]
    assert chunk_words("", 5, 1) == []
    assert chunk_words(" \n ", 5, 1) == []


def test_chunk_documents() -> None:
    docs = [
        Document("x", "a b c d e", "user"),
        Document("y", "", "user"),
        Document("z", "q", "user"),
    ]
    assert chunk_documents(docs, 3, 1) == [
        Passage("x", 0, "a b c"),
        Passage("x", 1, "c d e"),
        Passage("z", 0, "q"),
    ]


@pytest.mark.parametrize(
    ("size", "overlap", "message"),
    [
        (0, 0, "size must be a positive integer"),
        (3, 3, r"overlap \(3\) must be smaller than size"),
        (3, -1, "overlap must be an integer >= 0"),
        (2.5, 0, "size"),
    ],
)
def test_errors(size: int, overlap: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        chunk_words(SEVEN, size, overlap)
    with pytest.raises(ConfigError, match=message):
        chunk_documents([], size, overlap)
