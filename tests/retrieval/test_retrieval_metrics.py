"""Recall@k and mean reciprocal rank, worked by hand, and bad input."""

from typing import Any

import numpy as np
import pytest

from groundwork.errors import ConfigError
from groundwork.retrieval.metrics import first_relevant_rank, mean_reciprocal_rank, recall_at_k

# query 0: relevant 7 at rank 2; query 1: relevant {4, 5}, first at rank 1;
# query 2: relevant 9 at rank 4; query 3: nothing relevant retrieved
RANKED = [[3, 7, 1, 0], [5, 4, 2, 6], [1, 2, 3, 9], [8, 9, 10]]
RELEVANT: list[int | set[int]] = [7, {4, 5}, 9, {42}]


def test_first_relevant_rank() -> None:
    assert [
        first_relevant_rank(r, {x} if isinstance(x, int) else x)
        for r, x in zip(RANKED, RELEVANT, strict=True)
    ] == [2, 1, 4, None]


@pytest.mark.parametrize(
    ("k", "expected"), [(1, 1 / 4), (2, 2 / 4), (3, 2 / 4), (4, 3 / 4), (9, 3 / 4)]
)
def test_recall_at_k(k: int, expected: float) -> None:
    assert recall_at_k(RANKED, RELEVANT, k) == pytest.approx(expected)


def test_mean_reciprocal_rank() -> None:
    assert mean_reciprocal_rank(RANKED, RELEVANT) == pytest.approx((1 / 2 + 1 + 1 / 4 + 0) / 4)
    assert mean_reciprocal_rank(RANKED, RELEVANT, k=3) == pytest.approx((1 / 2 + 1) / 4)
    assert mean_reciprocal_rank([[0]], [0]) == 1.0


def test_accepts_arrays_and_frozensets() -> None:
    ranked: list[Any] = [np.array([4, 2]), np.array([1, 0])]
    relevant: list[Any] = [frozenset({2}), np.int64(0)]
    assert recall_at_k(ranked, relevant, 1) == 0.0
    assert mean_reciprocal_rank(ranked, relevant) == 0.5


def test_errors() -> None:
    with pytest.raises(ConfigError, match="2 rankings but 1 relevance"):
        recall_at_k([[1], [2]], [1], 1)
    with pytest.raises(ConfigError, match="2 rankings but 3 relevance"):
        mean_reciprocal_rank([[1], [2]], [1, 2, 3])
    with pytest.raises(ConfigError, match="no queries"):
        recall_at_k([], [], 1)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        recall_at_k([[1]], [1], 0)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        mean_reciprocal_rank([[1]], [1], k=0)
