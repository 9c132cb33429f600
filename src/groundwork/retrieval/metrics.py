r"""Retrieval metrics: recall@k and mean reciprocal rank.

For queries $i = 1 \dots Q$, each with a ranked list of retrieved items and a set $R_i$ of
relevant ones, and $\mathrm{rank}_i$ the position (from 1) of the first relevant item:

$$\mathrm{Recall@}k = \frac{1}{Q} \sum_i [\mathrm{rank}_i \le k], \qquad
  \mathrm{MRR} = \frac{1}{Q} \sum_i \frac{1}{\mathrm{rank}_i}$$

(a query with no relevant item retrieved, or none within the cut-off, adds 0). Recall@k is the
"top-k retrieval accuracy" of Karpukhin et al. (2020, Dense Passage Retrieval): whether *some*
passage that holds the answer reaches the reader. MRR (Voorhees 1999, TREC-8 question answering)
also rewards putting it first.

Chapter 15 (Prompting, agents and retrieval).
"""

from collections.abc import Collection, Sequence

from groundwork.checks import positive_int
from groundwork.errors import ConfigError


def _relevant_sets(
    ranked: Sequence[Sequence[int]], relevant: Sequence[int | Collection[int]]
) -> list[Collection[int]]:
    """``relevant`` as one collection per query; checks the two lists match."""
    if len(ranked) != len(relevant):
        raise ConfigError(
            f"{len(ranked)} rankings but {len(relevant)} relevance entries: give one of each "
            "per query"
        )
    if not ranked:
        raise ConfigError("no queries to score: pass at least one ranking")
    return [set(r) if isinstance(r, Collection) else {r} for r in relevant]


def first_relevant_rank(ranking: Sequence[int], relevant: Collection[int]) -> int | None:
    """The position (from 1) of the first relevant item of ``ranking``, or ``None``.

    >>> first_relevant_rank([4, 9, 2], {2, 9})
    2
    """
    for rank, item in enumerate(ranking, start=1):
        if item in relevant:
            return rank
    return None


# --8<-- [start:metrics]
def recall_at_k(
    ranked: Sequence[Sequence[int]], relevant: Sequence[int | Collection[int]], k: int
) -> float:
    """The fraction of queries with at least one relevant item among their top ``k``.

    Args:
        ranked: For each query, the retrieved items, best first.
        relevant: For each query, its relevant item or collection of items.
        k: The cut-off (>= 1).

    Raises:
        ConfigError: ``ranked`` and ``relevant`` differ in length, are empty, or ``k < 1``.

    Example:
        >>> recall_at_k([[3, 1], [5, 6]], [1, {7}], k=2)
        0.5
    """
    positive_int("k", k)
    sets = _relevant_sets(ranked, relevant)
    hits = sum(
        first_relevant_rank(r[:k], rel) is not None for r, rel in zip(ranked, sets, strict=True)
    )
    return hits / len(ranked)


def mean_reciprocal_rank(
    ranked: Sequence[Sequence[int]],
    relevant: Sequence[int | Collection[int]],
    *,
    k: int | None = None,
) -> float:
    """The mean over queries of 1 / (rank of the first relevant item), 0 when there is none.

    Args:
        ranked: For each query, the retrieved items, best first.
        relevant: For each query, its relevant item or collection of items.
        k: Only look at the top ``k`` of each ranking (MRR@k); ``None`` looks at all of it.

    Raises:
        ConfigError: ``ranked`` and ``relevant`` differ in length, are empty, or ``k < 1``.

    Example:
        >>> mean_reciprocal_rank([[3, 1], [5, 6], [8]], [1, 5, 0])  # (1/2 + 1 + 0) / 3
        0.5
    """
    if k is not None:
        positive_int("k", k)
    sets = _relevant_sets(ranked, relevant)
    total = 0.0
    for ranking, rel in zip(ranked, sets, strict=True):
        rank = first_relevant_rank(ranking if k is None else ranking[:k], rel)
        total += 0.0 if rank is None else 1.0 / rank
    return total / len(ranked)


# --8<-- [end:metrics]
