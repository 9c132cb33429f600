"""Tests for groundwork.corpus.dedup: exact dedup, MinHash estimates, LSH and near-dedup."""

import random

import numpy as np
import pytest

from groundwork.corpus import Document, exact_dedup, minhash_dedup, normalize_text
from groundwork.corpus.dedup import (
    MinHasher,
    candidate_probability,
    estimate_jaccard,
    jaccard,
    lsh_candidates,
    lsh_params,
    shingles,
)
from groundwork.errors import ConfigError


def random_text(rng: random.Random, n_words: int = 300) -> str:
    vocab = [f"w{i}" for i in range(5000)]
    return " ".join(rng.choice(vocab) for _ in range(n_words))


def perturb(text: str, rng: random.Random, n_changes: int) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), n_changes):
        words[i] = f"changed{i}"
    return " ".join(words)


def test_exact_dedup_keeps_first_and_reports_removed() -> None:
    docs = [
        Document("a", "same text", "t"),
        Document("b", "other", "t"),
        Document("c", "same text", "t"),
    ]
    kept, removed = exact_dedup(docs)
    assert [d.id for d in kept] == ["a", "b"]
    assert [(r.id, r.of, r.similarity) for r in removed] == [("c", "a", 1.0)]


def test_exact_dedup_after_normalisation() -> None:
    raw = ["line\r\nnext  \r\n", "line\nnext\n"]
    docs = [Document(str(i), normalize_text(t), "t") for i, t in enumerate(raw)]
    kept, removed = exact_dedup(docs)
    assert len(kept) == 1 and len(removed) == 1


def test_shingles_words_and_chars() -> None:
    assert shingles("A rose is a rose", k=2) == {"a rose", "rose is", "is a"}
    assert shingles("abcd", k=3, unit="char") == {"abc", "bcd"}
    assert shingles("short", k=5) == {"short"}
    assert shingles("", k=5) == set()


def test_minhash_estimate_close_to_exact_jaccard() -> None:
    """On random set pairs, |estimate - J| stays within 4 standard errors sqrt(J(1-J)/P)."""
    rng = random.Random(0)
    hasher = MinHasher(num_perm=256, seed=1)
    for _ in range(20):
        universe = [f"s{i}" for i in range(2000)]
        a = set(rng.sample(universe, rng.randint(200, 800)))
        b = set(rng.sample(sorted(a), len(a) // 2)) | set(
            rng.sample(universe, rng.randint(50, 800))
        )
        j = jaccard(a, b)
        est = estimate_jaccard(hasher.signature(a), hasher.signature(b))
        tolerance = 4 * np.sqrt(max(j * (1 - j), 0.01) / 256)
        assert abs(est - j) <= tolerance, (j, est)


def test_minhash_identical_and_disjoint_sets() -> None:
    hasher = MinHasher(num_perm=64)
    a = {f"x{i}" for i in range(100)}
    b = {f"y{i}" for i in range(100)}
    assert estimate_jaccard(hasher.signature(a), hasher.signature(a)) == 1.0
    assert estimate_jaccard(hasher.signature(a), hasher.signature(b)) < 0.1


def test_signature_is_deterministic_across_instances_and_order() -> None:
    items = [f"shingle {i}" for i in range(500)]
    s1 = MinHasher(128, seed=7).signature(items)
    s2 = MinHasher(128, seed=7).signature(reversed(items))
    assert np.array_equal(s1, s2)
    assert not np.array_equal(s1, MinHasher(128, seed=8).signature(items))


def test_lsh_params_s_curve() -> None:
    bands, rows = lsh_params(0.8, 128)
    assert bands * rows <= 128
    assert candidate_probability(0.9, bands, rows) > 0.99
    assert candidate_probability(0.5, bands, rows) < 0.05
    # Higher thresholds need more rows per band.
    assert lsh_params(0.9, 128)[1] > lsh_params(0.5, 128)[1]
    with pytest.raises(ConfigError):
        lsh_params(1.5, 128)


def test_lsh_candidates_groups_identical_bands() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.uint64)
    b = np.array([1, 2, 9, 9], dtype=np.uint64)
    c = np.array([7, 7, 7, 7], dtype=np.uint64)
    assert lsh_candidates([a, b, c], bands=2, rows=2) == {(0, 1)}


def test_minhash_dedup_removes_planted_near_duplicates_keeps_distinct() -> None:
    rng = random.Random(42)
    originals = [Document(f"doc{i}", random_text(rng), "t") for i in range(30)]
    planted = [
        Document(f"copy{i}", perturb(originals[i].text, rng, n_changes=3), "t") for i in range(5)
    ]
    docs = originals + planted
    kept, removed = minhash_dedup(docs, threshold=0.8)
    assert [d.id for d in kept] == [d.id for d in originals]
    assert sorted((r.id, r.of) for r in removed) == sorted(
        (f"copy{i}", f"doc{i}") for i in range(5)
    )
    assert all(r.similarity >= 0.8 for r in removed)


def test_minhash_dedup_keeps_loosely_related_documents() -> None:
    rng = random.Random(3)
    base = random_text(rng, 400)
    other = perturb(base, rng, n_changes=150)  # Jaccard of 5-shingles far below 0.8
    kept, removed = minhash_dedup([Document("a", base, "t"), Document("b", other, "t")])
    assert len(kept) == 2 and removed == []


def test_minhash_dedup_is_deterministic() -> None:
    rng = random.Random(5)
    docs = [Document(f"d{i}", random_text(rng, 100), "t") for i in range(10)]
    docs += [Document("dup", perturb(docs[0].text, rng, 1), "t")]
    assert minhash_dedup(docs) == minhash_dedup(docs)


def test_minhash_dedup_transitive_groups_keep_earliest() -> None:
    rng = random.Random(9)
    a = random_text(rng, 500)
    b = perturb(a, rng, 2)
    c = perturb(b, rng, 2)
    kept, removed = minhash_dedup(
        [Document(x, t, "t") for x, t in zip("abc", [a, b, c], strict=True)]
    )
    assert [d.id for d in kept] == ["a"]
    assert {r.id for r in removed} == {"b", "c"}
    assert {r.of for r in removed} == {"a"}
