"""What every retriever returns and the one method it has: ``retrieve(query, k) -> list[Hit]``.

A retriever ranks the passages of a fixed collection for a query; a :class:`Hit` names one
passage by its position in the collection and carries the retriever's score for it (a BM25 score,
a cosine similarity, a fused reciprocal-rank score: comparable within one ranking only). Sparse
(:mod:`~groundwork.retrieval.bm25`), dense (:mod:`~groundwork.retrieval.dense`) and fused
(:mod:`~groundwork.retrieval.fusion`) retrievers all follow the :class:`Retriever` protocol, so
retrieve-then-read code and the metrics of :mod:`~groundwork.retrieval.metrics` work with any.

Chapter 15 (Prompting, agents and retrieval).
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Hit:
    """One retrieved passage.

    Attributes:
        index: Position of the passage in the retriever's collection.
        score: The retriever's score for it (higher is better).
    """

    index: int
    score: float


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks a fixed collection of passages for a text query."""

    def retrieve(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first (fewer if there are fewer)."""
        ...
