"""BLEU and chrF: hand-worked examples, the 13a tokenizer's rules, exact parity with sacreBLEU's
defaults (fixed edge cases and a few hundred random segments), and bad input."""

import math
import random
from collections.abc import Callable
from types import ModuleType

import pytest

from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.evaluate.overlap import (
    BleuScore,
    corpus_bleu,
    corpus_chrf,
    sentence_chrf,
    tokenize_13a,
)

TOL = 1e-9

# --- hand-worked examples (no sacreBLEU needed) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hi, there.", "Hi , there ."),  # period and comma after a letter
        ("It costs $1,000.50 today", "It costs $ 1,000.50 today"),  # between digits: kept
        (".5 and 3.14.", ". 5 and 3.14 ."),
        ("1,a", "1 , a"),  # comma before a non-digit
        ("1939-1945 and well-known", "1939 - 1945 and well-known"),  # dash after a digit only
        ("don't (sic)", "don't ( sic )"),  # apostrophe kept, brackets split
        ("&quot;Tis&quot; &amp; &lt;b&gt;", '" Tis " & < b >'),
        ("&amp;lt;", "<"),  # &amp; is unescaped before &lt;
        ("hy-\nphen and line\nbreak", "hyphen and line break"),
        ("a<skipped> b", "a b"),
        ("  spaced \t out  ", "spaced out"),
    ],
)
def test_tokenize_13a_rules(text: str, tokens: str) -> None:
    assert tokenize_13a(text) == tokens


def test_bleu_hand_worked() -> None:
    """hyp "the cat sat on the mat", ref "the cat is on the mat" (6 tokens each, BP = 1).

    1-grams: the x2, cat, on, mat match -> 5/6. 2-grams: "the cat", "on the", "the mat" -> 3/5.
    3-grams: "on the mat" -> 1/4. 4-grams: none of 3 -> smoothed 1/(2 * 3) = 1/6.
    BLEU = 100 * (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = 100 * (1/48) ** (1/4).
    """
    s = corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert isinstance(s, BleuScore)
    assert (s.hyp_len, s.ref_len, s.brevity_penalty) == (6, 6, 1.0)
    assert s.precisions == pytest.approx((500 / 6, 60.0, 25.0, 100 / 6), abs=TOL)
    assert s.score == pytest.approx(100 * (1 / 48) ** 0.25, abs=TOL)


def test_bleu_brevity_and_unsmoothed_zero_by_hand() -> None:
    """2 hypothesis tokens for 3 reference tokens: BP = exp(1 - 3/2); no 3-grams: BLEU = 0."""
    s = corpus_bleu(["the cat"], ["the cat sat"])
    assert s.brevity_penalty == pytest.approx(math.exp(-0.5), abs=TOL)
    assert s.precisions == (100.0, 100.0, 0.0, 0.0)
    assert s.score == 0.0


def test_chrf_hand_worked() -> None:
    """hyp "ab", ref "a b c" (whitespace is dropped: "abc").

    Order 1: P = 2/2, R = 2/3. Order 2: P = 1/1, R = 1/2. Order 3: no hypothesis 3-gram, left out.
    Mean P = 1, mean R = 7/12; chrF2 = 100 * 5 * 7/12 / (4 + 7/12) = 100 * 35/55.
    """
    assert corpus_chrf(["ab"], ["a b c"]) == pytest.approx(100 * 35 / 55, abs=TOL)
    # beta = 1: the harmonic mean of 1 and 7/12
    assert corpus_chrf(["ab"], ["abc"], beta=1.0) == pytest.approx(100 * 14 / 19, abs=TOL)


def test_identical_corpora_score_100() -> None:
    lines = ["To be, or not to be: that is the question.", "Frailty, thy name is woman!"]
    assert corpus_bleu(lines, lines).score == pytest.approx(100.0, abs=TOL)  # exp(log 100)
    assert corpus_chrf(lines, lines) == pytest.approx(100.0, abs=TOL)
    assert corpus_chrf(lines, lines, word_order=2) == pytest.approx(100.0, abs=TOL)


# --- parity with sacreBLEU ------------------------------------------------------------------------

SHAKESPEARE_HYPS = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune,",
    "Now is the winter of our discontent made glorious summer by this sun of York;",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "All the world's a stage, and all the men and women merely players.",
    "The quality of mercy is not strain'd; it droppeth as the gentle rain from heaven.",
]
SHAKESPEARE_REFS = [
    "To be, or not to be: that is the question.",
    "Whether 'tis nobler in the mind to suffer The slings and arrows of outrageous fortune,",
    "Now is the winter of our discontent Made glorious summer by this sun of York;",
    "O Romeo, Romeo, wherefore art thou Romeo?",
    "All the world's a stage, And all the men and women merely players;",
    "The quality of mercy is not strained. It droppeth as the gentle rain from heaven",
]

CASES = {
    "shakespeare": (SHAKESPEARE_HYPS, SHAKESPEARE_REFS),
    "numbers": (
        ["It cost $1,234.56 in 1939-1945, or 3.5% (approx.) at 10.30-11.00.", "Call 555-1234."],
        ["It cost $1,234.56 in 1939 - 1945, or 3,5 % approx. at 10.30 - 11.00", "Call 555-1234!"],
    ),
    "html_entities": (
        ["&quot;Tis&quot; said the king &amp; his &lt;fool&gt;.", "a &amp;lt; b"],
        ['"Tis" said the king & his <fool>.', "a &lt; b"],
    ),
    "skipped_and_line_breaks": (
        ["the hy-\nphen <skipped> came\nback  ", "trailing spaces   \n"],
        ["the hyphen came back", "trailing spaces"],
    ),
    "empty_hypotheses": (["", "the cat sat on the mat", ""], ["a dog", "the cat sat on a mat", ""]),
    "all_empty_hypotheses": (["", ""], ["a dog barks", "loudly"]),
    "shorter_hypotheses": (
        ["the cat sat", "on the mat"],
        ["the cat sat down quietly", "on the old mat by the door"],
    ),
    "no_higher_order_matches": (
        ["cat the mat on sat the", "dog a barks"],
        ["the cat sat on the mat", "a dog barks"],
    ),
    "no_matches_at_all": (["alpha beta gamma delta"], ["one two three four"]),
    "shorter_than_four_tokens": (["the cat", "a dog"], ["the cat", "a dog"]),
    "case_differs": (
        ["THE Cat Sat ON the MAT", "Frailty, THY name is Woman!"],
        ["the cat sat on the mat", "frailty, thy name is woman!"],
    ),
    "identical": (SHAKESPEARE_REFS, SHAKESPEARE_REFS),
}


@pytest.fixture(scope="module")
def sacrebleu() -> ModuleType:
    return pytest.importorskip("sacrebleu")


def assert_bleu_matches(
    sacrebleu: ModuleType, hyps: list[str], refs: list[str], lowercase: bool = False
) -> BleuScore:
    ours = corpus_bleu(hyps, refs, lowercase=lowercase)
    theirs = sacrebleu.corpus_bleu(hyps, [refs], lowercase=lowercase)
    assert ours.score == pytest.approx(theirs.score, abs=TOL)
    assert ours.precisions == pytest.approx(theirs.precisions, abs=TOL)
    assert ours.brevity_penalty == pytest.approx(theirs.bp, abs=TOL)
    assert (ours.hyp_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    return ours


def assert_chrf_matches(
    sacrebleu: ModuleType, hyps: list[str], refs: list[str], **kwargs: int
) -> float:
    ours = corpus_chrf(hyps, refs, **kwargs)
    assert ours == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], **kwargs).score, abs=TOL)
    return ours


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
def test_bleu_matches_sacrebleu(sacrebleu: ModuleType, case: str) -> None:
    hyps, refs = CASES[case]
    assert_bleu_matches(sacrebleu, hyps, refs)


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_matches_sacrebleu(sacrebleu: ModuleType, case: str, word_order: int) -> None:
    hyps, refs = CASES[case]
    assert_chrf_matches(sacrebleu, hyps, refs, word_order=word_order)


@pytest.mark.parity
def test_cases_exercise_what_they_name(sacrebleu: ModuleType) -> None:
    """The edge cases really hit the code paths they are named after (and still match)."""
    assert assert_bleu_matches(sacrebleu, *CASES["shorter_hypotheses"]).brevity_penalty < 1.0
    assert assert_bleu_matches(sacrebleu, *CASES["all_empty_hypotheses"]).brevity_penalty == 0.0
    # 'exp' smoothing: 3- and 4-grams have no match, so p3 = 1/(2 t3), p4 = 1/(4 t4), BLEU > 0
    smoothed = assert_bleu_matches(sacrebleu, *CASES["no_higher_order_matches"])
    assert smoothed.precisions[2:] == pytest.approx((100 / (2 * 5), 100 / (4 * 3)), abs=TOL)
    assert smoothed.score > 0
    assert assert_bleu_matches(sacrebleu, *CASES["no_matches_at_all"]).score == 0.0
    assert assert_bleu_matches(sacrebleu, *CASES["shorter_than_four_tokens"]).score == 0.0
    assert assert_bleu_matches(sacrebleu, *CASES["identical"]).score == pytest.approx(100.0)
    assert assert_chrf_matches(sacrebleu, *CASES["identical"], word_order=2) == pytest.approx(100)


@pytest.mark.parity
def test_lowercase_bleu_matches_sacrebleu(sacrebleu: ModuleType) -> None:
    hyps, refs = CASES["case_differs"]
    cased = assert_bleu_matches(sacrebleu, hyps, refs)
    lowered = assert_bleu_matches(sacrebleu, hyps, refs, lowercase=True)
    assert lowered.score == pytest.approx(100.0)
    assert cased.score < 50.0


@pytest.mark.parity
@pytest.mark.parametrize(
    ("char_order", "word_order", "beta"), [(4, 0, 1.0), (6, 1, 3.0), (2, 3, 2)]
)
def test_chrf_orders_and_beta_match_sacrebleu(
    sacrebleu: ModuleType, char_order: int, word_order: int, beta: float
) -> None:
    ours = corpus_chrf(
        SHAKESPEARE_HYPS, SHAKESPEARE_REFS, char_order=char_order, word_order=word_order, beta=beta
    )
    theirs = sacrebleu.corpus_chrf(
        SHAKESPEARE_HYPS, [SHAKESPEARE_REFS], char_order, word_order, beta
    ).score
    assert ours == pytest.approx(theirs, abs=TOL)


# Fragments that random segments are built from: words, digits, every kind of 13a punctuation,
# entities, markers and odd whitespace, so that the tokenizer's rules meet each other.
FRAGMENTS = [
    *["the", "cat", "sat", "on", "mat", "a", "b", "A", "B", "Thé"],
    *["0", "1", "9", "12", "3.5", "1,000"],
    *list(".,-'\"!?;:()[]{}<>/\\@#$%^&*_+=|~`"),
    "&quot;", "&amp;", "&lt;", "&gt;", "amp;", "quot;", "<skipped>", "-\n", "\n",
    " ", " ", " ", "  ", "\t", "\xa0",
]  # fmt: skip


def random_fragments(rng: random.Random) -> list[str]:
    return [rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 25))]


def edited(rng: random.Random, fragments: list[str]) -> list[str]:
    """A copy of ``fragments`` with a few of them replaced, dropped or inserted (so that
    higher-order n-grams of a hypothesis and its reference sometimes match)."""
    fragments = list(fragments)
    for _ in range(rng.randint(0, 4)):
        i = rng.randint(0, len(fragments))
        op = rng.choice(["insert", "drop", "replace"])
        if op == "insert" or i == len(fragments):
            fragments.insert(i, rng.choice(FRAGMENTS))
        elif op == "drop":
            del fragments[i]
        else:
            fragments[i] = rng.choice(FRAGMENTS)
    return fragments


@pytest.mark.parity
def test_random_segments_match_sacrebleu(sacrebleu: ModuleType) -> None:
    """300 random hypothesis/reference pairs: the tokenizer on every string, sentence chrF and
    chrF++ on every pair, corpus BLEU/chrF/chrF++ (cased and lowercased BLEU) on 10 corpora."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    rng = random.Random(0)
    reference_tokenizer = Tokenizer13a()
    hyp_fragments = [random_fragments(rng) for _ in range(300)]
    hyps = ["".join(f) for f in hyp_fragments]
    refs = [
        "".join(edited(rng, f) if rng.random() < 0.8 else random_fragments(rng))
        for f in hyp_fragments
    ]

    for text in hyps + refs:
        assert tokenize_13a(text) == reference_tokenizer(text), repr(text)
    for h, r in zip(hyps, refs, strict=True):
        for word_order in (0, 2):
            theirs = sacrebleu.sentence_chrf(h, [r], word_order=word_order).score
            assert sentence_chrf(h, r, word_order=word_order) == pytest.approx(theirs, abs=TOL)

    scores = []
    for start in range(0, 300, 30):
        hs, rs = hyps[start : start + 30], refs[start : start + 30]
        scores.append(assert_bleu_matches(sacrebleu, hs, rs).score)
        assert_bleu_matches(sacrebleu, hs, rs, lowercase=True)
        assert_chrf_matches(sacrebleu, hs, rs)
        assert_chrf_matches(sacrebleu, hs, rs, word_order=2)
    assert min(scores) > 0 and max(scores) < 100  # the corpora are neither disjoint nor equal


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [corpus_bleu, corpus_chrf])
def test_different_counts_are_rejected(metric: Callable[..., object]) -> None:
    with pytest.raises(ConfigError, match="2 hypotheses but 1 references") as info:
        metric(["a", "b"], ["a"])
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("metric", [corpus_bleu, corpus_chrf])
def test_non_strings_are_rejected(metric: Callable[..., object]) -> None:
    with pytest.raises(ConfigError, match=r"references\[1\] must be a str, got NoneType"):
        metric(["a", "b"], ["a", None])
    with pytest.raises(ConfigError, match=r"hypotheses\[0\] must be a str, got list"):
        metric([["a"]], ["a"])
    with pytest.raises(ConfigError, match="sequence of strings"):
        metric("the cat", "the cat")


@pytest.mark.parametrize("metric", [corpus_bleu, corpus_chrf])
def test_empty_corpus_is_rejected(metric: Callable[..., object]) -> None:
    with pytest.raises(EmptyCorpusError, match="no segments"):
        metric([], [])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"word_order": -1}, "word_order must be an int >= 0"),
        ({"char_order": 2.5}, "char_order must be an int >= 0"),
        ({"char_order": 0, "word_order": 0}, "both 0"),
        ({"beta": 0.0}, "beta must be a finite number > 0"),
        ({"beta": math.inf}, "beta must be a finite number > 0"),
    ],
)
def test_bad_chrf_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        corpus_chrf(["a"], ["a"], **kwargs)
