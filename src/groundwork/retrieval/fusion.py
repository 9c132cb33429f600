r"""Reciprocal rank fusion: one ranking out of several, from the ranks alone.

Cormack, Clarke & Büttcher (2009), "Reciprocal Rank Fusion outperforms Condorcet and individual
Rank Learning Methods", score every document by the sum, over the rankings that contain it, of
one over a constant plus its rank there:

$$\mathrm{RRF}(d) = \sum_{r \in R,\ d \in r} \frac{1}{k + \mathrm{rank}_r(d)},
\qquad \mathrm{rank} = 1, 2, \dots$$

with $k = 60$. Only ranks are used, so scores on different scales (BM25's unbounded sums, dense
cosines in $[-1, 1]$) need no normalisation; $k$ damps the weight of the very top ranks so that
a document ranked well by several retrievers beats one ranked first by a single one. This is the
usual way to make a *hybrid* of sparse and dense retrieval (:class:`HybridRetriever`).

Chapter 15 (Prompting, agents and retrieval).
"""

from collections.abc import Sequence

from groundwork.checks import non_negative_int, positive_int
from groundwork.errors import ConfigError, DataError
from groundwork.retrieval.base import Hit, Retriever


# --8<-- [start:rrf]
def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], *, k: int = 60) -> list[Hit]:
    """Fuse rankings of document indices by reciprocal rank (Cormack et al. 2009).

    Args:
        rankings: Each a list of document indices, best first (they may differ in length and
            in which documents they hold).
        k: The constant added to every rank (>= 0).

    Returns:
        Every document of any ranking, by fused score (descending), equal scores by index.

    Raises:
        ConfigError: ``k < 0``.
        DataError: A ranking lists a document twice.

    Example:
        >>> [(h.index, round(h.score, 4)) for h in reciprocal_rank_fusion([[7, 3], [3]], k=0)]
        [(3, 1.5), (7, 1.0)]
    """
    non_negative_int("k", k)
    fused: dict[int, float] = {}
    for r, ranking in enumerate(rankings):
        if len(set(ranking)) != len(ranking):
            raise DataError(f"ranking {r} lists a document more than once: {list(ranking)}")
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    order = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(int(doc), score) for doc, score in order]


# --8<-- [end:rrf]


class HybridRetriever:
    """Several retrievers over the same passages, fused by reciprocal rank.

    Args:
        retrievers: Retrievers that index the same collection in the same order (e.g. a
            :class:`~groundwork.retrieval.bm25.BM25Retriever` and a
            :class:`~groundwork.retrieval.dense.DenseRetriever` built from one list of texts).
        depth: Hits asked of each retriever before fusing (at least the ``k`` asked for).
        rrf_k: The constant ``k`` of :func:`reciprocal_rank_fusion`.

    Raises:
        ConfigError: No retrievers, a bad ``depth`` or ``rrf_k``.
    """

    def __init__(
        self, retrievers: Sequence[Retriever], *, depth: int = 100, rrf_k: int = 60
    ) -> None:
        if not retrievers:
            raise ConfigError("HybridRetriever needs at least one retriever; got none")
        self.retrievers = list(retrievers)
        self.depth = positive_int("depth", depth)
        self.rrf_k = non_negative_int("rrf_k", rrf_k)

    def retrieve(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages for ``query`` by fused rank, best first (scores are RRF)."""
        positive_int("k", k)
        depth = max(self.depth, k)
        rankings = [[h.index for h in r.retrieve(query, depth)] for r in self.retrievers]
        return reciprocal_rank_fusion(rankings, k=self.rrf_k)[:k]
