"""Reciprocal rank fusion: scores computed by hand (Cormack et al. 2009, k = 60), ties, the
hybrid retriever over stand-in retrievers, bad input."""

import pytest

from groundwork.errors import ConfigError, DataError
from groundwork.retrieval.base import Hit, Retriever
from groundwork.retrieval.fusion import HybridRetriever, reciprocal_rank_fusion


def test_rrf_by_hand() -> None:
    # doc 1: ranks 1 and 2 -> 1/61 + 1/62; doc 3: ranks 3 and 1 -> 1/63 + 1/61;
    # doc 4: rank 1 once -> 1/61; doc 2: rank 2 once -> 1/62
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1], [4]])
    assert [h.index for h in fused] == [1, 3, 4, 2]
    expected = [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 61, 1 / 62]
    assert [h.score for h in fused] == pytest.approx(expected, abs=1e-15)


def test_rrf_k_and_ties() -> None:
    assert reciprocal_rank_fusion([[5], [2]]) == [Hit(2, 1 / 61), Hit(5, 1 / 61)]  # tie: index
    fused = reciprocal_rank_fusion([[7, 3], [3]], k=0)  # 1/rank
    assert fused == [Hit(3, 1 / 2 + 1), Hit(7, 1.0)]
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], [0]]) == [Hit(0, 1 / 61)]


def test_rrf_errors() -> None:
    with pytest.raises(DataError, match="ranking 1 lists a document more than once"):
        reciprocal_rank_fusion([[1, 2], [3, 3]])
    with pytest.raises(ConfigError, match="k must be an integer >= 0"):
        reciprocal_rank_fusion([[1]], k=-1)


class Fixed:
    """A stand-in retriever: always the same ranking; remembers the k it was asked for."""

    def __init__(self, ranking: list[int]) -> None:
        self.ranking = ranking
        self.asked: list[int] = []

    def retrieve(self, query: str, k: int) -> list[Hit]:
        self.asked.append(k)
        return [Hit(i, 1.0 / (r + 1)) for r, i in enumerate(self.ranking[:k])]


def test_hybrid_fuses_its_retrievers() -> None:
    sparse, dense = Fixed([1, 2, 3, 9]), Fixed([3, 1, 4])
    hybrid = HybridRetriever([sparse, dense], depth=3)
    assert isinstance(hybrid, Retriever)
    hits = hybrid.retrieve("q", 2)
    assert sparse.asked == dense.asked == [3]  # depth hits of each
    assert hits == reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]])[:2]
    assert [h.index for h in hits] == [1, 3]
    hybrid.retrieve("q", 5)
    assert sparse.asked[-1] == 5  # never fewer than k
    assert [h.index for h in HybridRetriever([dense], rrf_k=0).retrieve("q", 10)] == [3, 1, 4]


def test_hybrid_errors() -> None:
    with pytest.raises(ConfigError, match="at least one retriever"):
        HybridRetriever([])
    with pytest.raises(ConfigError, match="depth"):
        HybridRetriever([Fixed([1])], depth=0)
    with pytest.raises(ConfigError, match="rrf_k"):
        HybridRetriever([Fixed([1])], rrf_k=-5)
    with pytest.raises(ConfigError, match="k must be"):
        HybridRetriever([Fixed([1])]).retrieve("q", 0)
