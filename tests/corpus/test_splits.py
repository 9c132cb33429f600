"""Tests for groundwork.corpus.splits: deterministic, order-free, never-empty document splits."""

import pytest

from groundwork.corpus import Document, split_documents
from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError, DataError


def docs(n: int) -> list[Document]:
    return [Document(f"doc-{i}", f"text {i}", "t") for i in range(n)]


def test_split_partitions_all_documents() -> None:
    out = split_documents(docs(1000), (0.8, 0.1, 0.1))
    ids = [d.id for s in out.values() for d in s]
    assert sorted(ids) == sorted(d.id for d in docs(1000))
    assert 720 < len(out["train"]) < 880
    assert 60 < len(out["val"]) < 140


def test_split_is_order_independent_and_stable_under_additions() -> None:
    base = docs(200)
    first = split_documents(base, (0.8, 0.1, 0.1))
    second = split_documents(list(reversed(base)) + docs(300)[200:], (0.8, 0.1, 0.1))
    for split in ("train", "val", "test"):
        assert {d.id for d in first[split]} <= {d.id for d in second[split]}


def test_salt_changes_assignment() -> None:
    a = split_documents(docs(100), (0.5, 0.5, 0.0))
    b = split_documents(docs(100), (0.5, 0.5, 0.0), salt="other")
    assert {d.id for d in a["val"]} != {d.id for d in b["val"]}


def test_small_corpus_gets_nonempty_requested_splits() -> None:
    for n in (3, 4, 5, 8):
        out = split_documents(docs(n), (0.98, 0.01, 0.01))
        assert len(out["val"]) >= 1 and len(out["test"]) >= 1 and len(out["train"]) >= 1, n


def test_zero_fraction_split_stays_empty() -> None:
    out = split_documents(docs(50), (0.9, 0.1, 0.0))
    assert out["test"] == []


def test_hash_fraction_is_uniform_enough_and_fixed() -> None:
    values = [hash_fraction(f"id{i}") for i in range(10000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.02
    assert hash_fraction("hamlet_gut") == hash_fraction("hamlet_gut")


def test_bad_fractions_and_inputs() -> None:
    with pytest.raises(ConfigError):
        split_documents(docs(10), (0.5, 0.2, 0.2))
    with pytest.raises(ConfigError):
        split_documents(docs(10), (0.9, 0.1))
    with pytest.raises(ConfigError):
        split_documents(docs(10), (1.2, -0.2, 0.0))
    with pytest.raises(DataError, match="cannot fill"):
        split_documents(docs(1), (0.8, 0.1, 0.1))
    with pytest.raises(DataError, match="unique"):
        split_documents(docs(3) + docs(1), (0.9, 0.1, 0.0))
