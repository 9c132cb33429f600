"""Entity-level scores of tagged sequences: hand-worked chunks and scores, exact parity with
seqeval's default mode (the real CoNLL sample against perturbed predictions, and a few hundred
random, often ill-formed tag sequences), and bad input."""

import math
import random
import warnings
from types import ModuleType

import pytest

from groundwork.corpus.conll import conll_sample
from groundwork.errors import DataError, EmptyCorpusError
from groundwork.evaluate.labelling import entity_scores, get_entities, token_accuracy

TOL = 1e-12

# --- hand-worked examples (no seqeval needed) -----------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "entities"),
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER", "I-PER", "O"], [("PER", 0, 1)]),
        (["O", "B-LOC"], [("LOC", 1, 1)]),  # a chunk open at the end is closed
        (["O", "I-PER", "I-PER"], [("PER", 1, 2)]),  # I- after O starts a chunk (IOB1)
        (["I-PER", "O"], [("PER", 0, 0)]),  # ... and so does I- at the start
        (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),  # a type change: end and start
        (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),
        (["I-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),  # IOB1's B- between two
        (["B-PER", "I-PER", "E-PER", "I-PER"], [("PER", 0, 2), ("PER", 3, 3)]),  # E- ends
        (["S-LOC", "S-LOC", "I-LOC"], [("LOC", 0, 0), ("LOC", 1, 1), ("LOC", 2, 2)]),
        (["B-ORG", "S-ORG", "E-ORG"], [("ORG", 0, 0), ("ORG", 1, 1), ("ORG", 2, 2)]),
        (["O", "E-MISC", "O"], [("MISC", 1, 1)]),  # E- after O starts (and ends) a chunk
        (["B", "I", "O", "B-", "I"], [("_", 0, 1), ("_", 3, 4)]),  # no type: "_"
        (["B-I-PER", "I-I-PER"], [("I-PER", 0, 1)]),  # the type is all after the first "-"
    ],
)
def test_get_entities(tags: list[str], entities: list[tuple[str, int, int]]) -> None:
    assert get_entities(tags) == entities


def test_hand_worked_scores() -> None:
    """Sentence 0: true PER(0,1) LOC(3,3); predicted PER(0,1) ORG(3,3).
    Sentence 1: true MISC(0,1) PER(3,3); predicted MISC(0,0) (too short) and PER(3,3).

    PER: 2 true, 2 predicted, 2 correct -> P = R = F1 = 1.  LOC: 1 true, none predicted -> 0.
    ORG: 1 predicted, none true -> 0.  MISC: 1 true, 1 predicted, wrong boundary -> 0.
    Micro: 2 correct of 4 predicted and 4 true -> P = R = F1 = 1/2.  Macro: (1 + 0 + 0 + 0) / 4.
    Weighted by support (LOC 1, MISC 1, ORG 0, PER 2): 2/4.  Tokens: 8 of 10 right.
    """
    true = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-MISC", "I-MISC", "O", "B-PER", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-MISC", "O", "O", "B-PER", "O"]]
    r = entity_scores(true, pred)
    assert list(r.per_type) == ["LOC", "MISC", "ORG", "PER"]
    assert [(s.support, s.predicted, s.correct) for s in r.per_type.values()] == [
        (1, 0, 0),
        (1, 1, 0),
        (0, 1, 0),
        (2, 2, 2),
    ]
    assert [s.f1 for s in r.per_type.values()] == [0.0, 0.0, 0.0, 1.0]
    assert (r.precision, r.recall, r.f1) == (0.5, 0.5, 0.5)
    assert (r.micro.support, r.micro.predicted, r.micro.correct) == (4, 4, 2)
    assert (r.macro.precision, r.macro.recall, r.macro.f1) == (0.25, 0.25, 0.25)
    assert (r.weighted.precision, r.weighted.recall, r.weighted.f1) == (0.5, 0.5, 0.5)
    assert token_accuracy(true, pred) == 0.8
    assert r.as_dict()["PER"] == {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 2}


def test_f1_from_precision_and_recall() -> None:
    """1 correct of 3 predicted, of 2 true: P = 1/3, R = 1/2, F1 = 2PR / (P + R) = 2/5."""
    r = entity_scores([["B-X", "O", "B-X", "O"]], [["B-X", "B-X", "O", "B-X"]])
    assert (r.precision, r.recall) == (1 / 3, 1 / 2)
    assert r.f1 == pytest.approx(0.4, abs=TOL)


def test_docstring_examples() -> None:
    import doctest

    from groundwork.evaluate import labelling

    assert doctest.testmod(labelling).failed == 0


def test_no_entities_anywhere() -> None:
    """Nothing to find and nothing found: every score is 0 (seqeval's macro average is nan)."""
    r = entity_scores([["O", "O"]], [["O", "O"]])
    assert r.per_type == {}
    assert (r.micro.f1, r.macro.f1, r.weighted.f1, r.macro.support) == (0.0, 0.0, 0.0, 0)
    assert token_accuracy([["O", "O"]], [["O", "O"]]) == 1.0


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input() -> None:
    with pytest.raises(DataError, match="true has 2 sentences but pred has 1"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(DataError, match="sentence 1 has 2 true tags but 3 predicted"):
        entity_scores([["O"], ["O", "B-X"]], [["O"], ["O", "B-X", "O"]])
    with pytest.raises(DataError, match="sentence 1 has 2 true tags but 1"):
        token_accuracy([["O"], ["O", "B-X"]], [["O"], ["O"]])
    with pytest.raises(EmptyCorpusError, match="no sentences"):
        entity_scores([], [])
    with pytest.raises(EmptyCorpusError, match="all 2 sentences are empty"):
        token_accuracy([[], []], [[], []])
    with pytest.raises(DataError, match="not strings"):
        entity_scores(["B-PER", "O"], ["B-PER", "O"])
    with pytest.raises(DataError, match=r"'U-PER' \(tag 1 of pred sentence 0\) is not a BIO"):
        entity_scores([["O", "B-PER"]], [["O", "U-PER"]])
    for bad in ["PER", "o", "", "BPER", "B_PER", "PER-B"]:
        with pytest.raises(DataError, match="is not a BIO/IOBES tag"):
            get_entities(["O", bad])


# --- parity with seqeval --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seqeval() -> ModuleType:
    return pytest.importorskip("seqeval.metrics")


def assert_matches_seqeval(
    seqeval: ModuleType, true: list[list[str]], pred: list[list[str]]
) -> None:
    ours = entity_scores(true, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning on zero division
        theirs = seqeval.classification_report(true, pred, output_dict=True)
        p, r, f = (
            seqeval.precision_score(true, pred),
            seqeval.recall_score(true, pred),
            seqeval.f1_score(true, pred),
        )
        accuracy = seqeval.accuracy_score(true, pred)
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx((p, r, f), abs=TOL)
    assert token_accuracy(true, pred) == pytest.approx(accuracy, abs=TOL)
    mine = ours.as_dict()
    assert list(mine) == list(theirs)
    for name, row in theirs.items():
        assert mine[name]["support"] == int(row["support"]), name  # exact
        for key in ("precision", "recall", "f1-score"):
            if name == "macro avg" and not ours.per_type:
                assert math.isnan(row[key]) and mine[name][key] == 0.0  # the documented difference
            else:
                assert mine[name][key] == pytest.approx(float(row[key]), abs=TOL), (name, key)
    # the counts seqeval's report leaves out: predicted and correct entities per type
    found = set(seqeval.sequence_labeling.get_entities(pred))  # offsets in the joined sentences
    correct = found & set(seqeval.sequence_labeling.get_entities(true))
    for name, s in ours.per_type.items():
        assert s.predicted == sum(e[0] == name for e in found), name
        assert s.correct == sum(e[0] == name for e in correct), name


@pytest.fixture(scope="module")
def gold() -> list[list[str]]:
    return [list(s.ner) for s in conll_sample()]


TYPES = ("PER", "LOC", "ORG", "MISC")


def flip_tags(gold: list[list[str]], rng: random.Random, p: float) -> list[list[str]]:
    """Replace each tag, with probability ``p``, by any tag of the tag set (often ill-formed)."""
    tags = ["O"] + [f"{b}-{t}" for b in "BI" for t in TYPES]
    return [[rng.choice(tags) if rng.random() < p else t for t in s] for s in gold]


def shift_boundaries(gold: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Move the start or end of about half of the entities by one token, keeping IOB2."""
    out = []
    for s in gold:
        tags = ["O"] * len(s)
        for type_, start, end in get_entities(s):
            move = rng.choice(["start-", "start+", "end-", "end+", "none", "none"])
            start += {"start-": -1, "start+": 1}.get(move, 0)
            end += {"end-": -1, "end+": 1}.get(move, 0)
            start, end = max(start, 0), min(end, len(s) - 1)
            if start <= end:
                tags[start : end + 1] = [f"B-{type_}"] + [f"I-{type_}"] * (end - start)
        out.append(tags)
    return out


def swap_types(gold: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Give about a third of the entities another type (or half of one: a type change inside)."""
    out = []
    for s in gold:
        tags = list(s)
        for _, start, end in get_entities(s):
            if rng.random() < 1 / 3:
                new, cut = rng.choice(TYPES), rng.randint(start, end)
                for i in range(cut, end + 1):
                    tags[i] = tags[i][:2] + new
        out.append(tags)
    return out


def test_real_sample_identity(gold: list[list[str]]) -> None:
    """In IOB2 each entity has one B- tag: the sample has B-LOC 165, B-MISC 46, B-ORG 63 and
    B-PER 280 times (``grep -c``), 554 entities."""
    r = entity_scores(gold, gold)
    assert {t: s.support for t, s in r.per_type.items()} == {
        "LOC": 165,
        "MISC": 46,
        "ORG": 63,
        "PER": 280,
    }
    assert (r.micro.support, r.micro.predicted, r.micro.correct) == (554, 554, 554)
    assert (r.precision, r.recall, r.f1, r.macro.f1, r.weighted.f1) == (1.0,) * 5
    assert token_accuracy(gold, gold) == 1.0


@pytest.mark.parity
@pytest.mark.parametrize("seed", range(2))
def test_real_sample_perturbed(seqeval: ModuleType, gold: list[list[str]], seed: int) -> None:
    rng = random.Random(seed)
    assert_matches_seqeval(seqeval, gold, gold)
    for pred in (
        flip_tags(gold, rng, 0.1),
        flip_tags(gold, rng, 0.5),
        shift_boundaries(gold, rng),
        swap_types(gold, rng),
    ):
        assert pred != gold
        assert_matches_seqeval(seqeval, gold, pred)
        assert_matches_seqeval(seqeval, pred, gold)  # predicted as gold: more types of errors
        r = entity_scores(gold, pred)
        assert 0.0 < r.f1 < 1.0


ALPHABET = [
    "O",
    "O",
    "O",
    "B-A",
    "I-A",
    "E-A",
    "S-A",
    "B-B",
    "I-B",
    "E-B",
    "S-B",
    "B",
    "I",
    "E",
    "S",
]
ALPHABET += ["B-", "I-", "I-A-B"]


def random_sentences(rng: random.Random, n: int) -> list[list[str]]:
    return [[rng.choice(ALPHABET) for _ in range(rng.randint(0, 9))] for _ in range(n)]


@pytest.mark.parity
def test_random_sequences(seqeval: ModuleType) -> None:
    """300 random sentences: every transition of prefixes and types, typed and untyped."""
    rng = random.Random(0)
    sentences = random_sentences(rng, 300)
    for s in sentences:
        assert get_entities(s) == seqeval.sequence_labeling.get_entities(s), s
    for _ in range(40):  # corpora of random pairs, some with rare or absent types
        n = rng.randint(1, 8)
        true = random_sentences(rng, n)
        pred = [[rng.choice(ALPHABET) for _ in s] for s in true]
        if not any(true):
            continue
        assert_matches_seqeval(seqeval, true, pred)


@pytest.mark.parity
def test_degenerate_cases(seqeval: ModuleType) -> None:
    for true, pred in [
        ([["O", "O"]], [["O", "O"]]),  # nothing anywhere
        ([["B-X", "O"]], [["O", "O"]]),  # nothing predicted
        ([["O", "O"]], [["B-X", "O"]]),  # nothing true: weighted average over no support
        ([[], ["B-X"], []], [[], ["B-Y"], []]),
    ]:
        assert_matches_seqeval(seqeval, true, pred)
