"""Few-shot selection and ordering: random draws, nearest neighbours (most similar last),
permutations, rendering with per-document shots."""

import math

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.evaluate.task import Task
from groundwork.prompting.fewshot import nearest_shots, orderings, random_shots, render_with_shots


def test_random_shots_are_distinct_and_seeded() -> None:
    a = random_shots(50, 8, seed=3)
    assert len(set(a)) == 8 and all(0 <= i < 50 for i in a)
    assert a == random_shots(50, 8, seed=3)
    assert a != random_shots(50, 8, seed=4)
    assert random_shots(5, 0, seed=0) == []
    with pytest.raises(ConfigError, match="pool holds only 5"):
        random_shots(5, 6, seed=0)


def test_nearest_shots_orders_most_similar_last() -> None:
    torch.manual_seed(0)
    pool = torch.randn(20, 8)
    query = torch.randn(8)
    picks = nearest_shots(query, pool, 5)
    sims = torch.nn.functional.cosine_similarity(pool, query[None], dim=1)
    expected = sims.argsort(descending=True)[:5].tolist()[::-1]
    assert picks == expected
    assert sims[picks[-1]] == sims.max()
    with pytest.raises(ConfigError, match=r"query \(d,\) and a pool \(N, d\)"):
        nearest_shots(torch.randn(4), pool, 2)
    with pytest.raises(ConfigError, match="pool holds only 20"):
        nearest_shots(query, pool, 21)


def test_orderings_are_distinct_permutations_identity_first() -> None:
    perms = orderings(4, 10, seed=1)
    assert perms[0] == (0, 1, 2, 3)
    assert len(set(perms)) == 10
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms)
    assert len(orderings(3, 100)) == math.factorial(3)


def test_render_with_shots_uses_each_documents_own_shots() -> None:
    task = Task(
        name="toy",
        docs=lambda: [],
        doc_to_text=lambda d: f"Q: {d['q']}\nA:",
        doc_to_choices=lambda d: ["no", "yes"],
        doc_to_target=lambda d: d["y"],
    )
    docs = [{"q": "a", "y": 0}, {"q": "b", "y": 1}]
    shots = [[{"q": "s1", "y": 1}], []]
    first, second = render_with_shots(task, docs, shots)
    assert first.context == "Q: s1\nA: yes\n\nQ: a\nA:"
    assert second.context == "Q: b\nA:" and second.gold == 1
    with pytest.raises(ConfigError, match="2 documents but 1 lists"):
        render_with_shots(task, docs, shots[:1])
