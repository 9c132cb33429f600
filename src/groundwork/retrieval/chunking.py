"""Cutting documents into passages: fixed windows of words that overlap.

Retrievers index passages, not whole documents: a 10,000-word article scored as one unit drowns
the few sentences that answer a query, and an encoder reads at most a few hundred tokens of it.
DPR (Karpukhin et al. 2020) splits Wikipedia into disjoint 100-word passages; here windows of
``size`` whitespace-separated words start every ``size - overlap`` words, so that a sentence cut
by one window boundary appears whole in the next window.

Chapter 15 (Prompting, agents and retrieval).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from groundwork.checks import non_negative_int, positive_int
from groundwork.corpus.document import Document
from groundwork.errors import ConfigError


@dataclass(frozen=True)
class Passage:
    """A window of a document.

    Attributes:
        doc_id: The :attr:`~groundwork.corpus.document.Document.id` it comes from.
        index: Its position among the passages of that document (from 0).
        text: Its words, joined by single spaces.
    """

    doc_id: str
    index: int
    text: str


def _check_window(size: int, overlap: int) -> None:
    positive_int("size", size)
    non_negative_int("overlap", overlap)
    if overlap >= size:
        raise ConfigError(
            f"overlap ({overlap}) must be smaller than size ({size}): windows would not advance"
        )


# --8<-- [start:chunk_words]
def chunk_words(text: str, size: int = 100, overlap: int = 20) -> list[str]:
    """Windows of ``size`` words, each sharing ``overlap`` words with the previous one.

    Words are the runs of non-whitespace (``str.split``); a window's text joins them with single
    spaces. The last window may be shorter; an empty text has no window.

    Args:
        text: The text to cut.
        size: Words per window (>= 1).
        overlap: Words shared by consecutive windows, ``0 <= overlap < size``.

    Raises:
        ConfigError: ``size < 1`` or ``overlap`` not in ``[0, size)``.

    Example:
        >>> chunk_words("a b c d e f g", size=3, overlap=1)
        ['a b c', 'c d e', 'e f g']
    """
    _check_window(size, overlap)
    words = text.split()
    stride = size - overlap
    windows = []
    for start in range(0, len(words), stride):
        windows.append(" ".join(words[start : start + size]))
        if start + size >= len(words):  # this window reached the end
            break
    return windows


# --8<-- [end:chunk_words]


def chunk_documents(docs: Sequence[Document], size: int = 100, overlap: int = 20) -> list[Passage]:
    """The passages of every document, in document order (see :func:`chunk_words`).

    Raises:
        ConfigError: A bad ``size`` or ``overlap``.
    """
    _check_window(size, overlap)
    return [
        Passage(doc.id, i, window)
        for doc in docs
        for i, window in enumerate(chunk_words(doc.text, size, overlap))
    ]
