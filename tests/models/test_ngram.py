"""n-gram language models: counts, hand-worked smoothing examples, normalisation, NLTK parity,
saving, errors."""

import collections
import doctest
import math

import numpy as np
import pytest

from groundwork.errors import CheckpointError, ConfigError, DataError, EmptyCorpusError
from groundwork.models import ngram, ngram_counts
from groundwork.models.ngram import (
    FALLBACK_DISCOUNTS,
    SMOOTHINGS,
    NGramConfig,
    NGramLM,
    modified_kn_discounts,
    vocab_fingerprint,
)

# The "San Francisco" corpus: ids san=0 francisco=1 the=2 cat=3 a=4 my=5; <s>=6, </s>=7 reserved.
SAN, FRANCISCO, THE, CAT, A, MY = range(6)
SF = [[SAN, FRANCISCO]] * 3 + [[THE, CAT], [A, CAT], [MY, CAT]]


def random_corpus(seed: int, vocab: int = 12, n_seq: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # a skewed distribution, so some n-grams repeat and others are seen once
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    return [list(rng.choice(vocab, size=rng.integers(0, 10), p=p)) for _ in range(n_seq)]


def brute_counts(seqs: list[list[int]], n: int, bos: int, eos: int) -> list[collections.Counter]:
    """Counter of the m-grams ending at every predicted position, m = 1..n, with tuples."""
    out: list[collections.Counter] = [collections.Counter() for _ in range(n)]
    for seq in seqs:
        padded = [bos] * (n - 1) + seq + [eos]
        for t in range(n - 1, len(padded)):
            for m in range(1, n + 1):
                out[m - 1][tuple(padded[t - m + 1 : t + 1])] += 1
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_counts_equal_a_brute_force_count_of_tuples(order: int) -> None:
    seqs = random_corpus(order)
    lm = NGramLM(NGramConfig(order=order)).fit(seqs, vocab_size=12)
    assert (lm.bos_id, lm.eos_id, lm.n_ids) == (12, 13, 14)
    expected = brute_counts(seqs, order, bos=12, eos=13)
    for m in range(1, order + 1):
        assert lm.counts(m) == dict(expected[m - 1])
    for m in range(1, order):  # N1+(. h w): distinct tokens before (h, w) among the (m+1)-grams
        cont = collections.Counter(gram[1:] for gram in expected[m])
        assert lm.counts(m, continuation=True) == dict(cont)
    assert lm.n_tokens == sum(len(s) for s in seqs)


def test_kneser_ney_continuation_counts_by_hand() -> None:
    """Continuation counts on the "San Francisco" corpus, worked by hand (bigram model).

    Sequences: "san francisco" three times, "the cat", "a cat", "my cat"; each is padded to
    ``<s> ... </s>``. Raw unigram counts (of predicted positions): san 3, francisco 3, cat 3,
    the 1, a 1, my 1, </s> 6 (18 in all). Continuation counts N1+(. w), the number of distinct
    tokens seen *before* w:

    * san: {<s>} -> 1, francisco: {san} -> 1, the, a, my: {<s>} -> 1 each,
    * cat: {the, a, my} -> 3, </s>: {francisco, cat} -> 2.

    Their total, 10, is the number of distinct bigrams. "francisco" and "cat" are equally frequent,
    but "cat" follows three different words: as a guess for a new context it is three times as
    likely. With one discount D = 0.75 and V = 7 outcomes (six words and </s>):

    * unigram level: gamma() = D * 7 types / 10 = 0.525, so
      p1(cat) = (3 - 0.75) / 10 + 0.525 / 7 = 0.225 + 0.075 = 0.3 and
      p1(francisco) = (1 - 0.75) / 10 + 0.075 = 0.1;
    * bigram level: "the" was seen once, followed by one type: gamma(the) = 0.75 * 1 / 1, so
      p(cat | the) = (1 - 0.75) / 1 + 0.75 * 0.3 = 0.475 and
      p(francisco | the) = 0 + 0.75 * 0.1 = 0.075.
    """
    lm = NGramLM(NGramConfig(order=2, discount=0.75)).fit(SF, vocab_size=6)
    bos, eos = lm.bos_id, lm.eos_id
    unigrams = lm.counts(1)
    assert unigrams == {(SAN,): 3, (FRANCISCO,): 3, (CAT,): 3, (THE,): 1, (A,): 1, (MY,): 1,
                        (eos,): 6}  # fmt: skip
    assert lm.counts(1, continuation=True) == {
        (SAN,): 1, (FRANCISCO,): 1, (THE,): 1, (A,): 1, (MY,): 1, (CAT,): 3, (eos,): 2,
    }  # fmt: skip
    assert sum(lm.counts(1, continuation=True).values()) == len(lm.counts(2)) == 10
    assert lm.n_outcomes == 7 and lm.distribution()[bos] == 0.0
    # (an empty context means the start of a text, <s>, so ask after </s> for the unigram level)
    assert math.isclose(lm.prob(CAT, [eos]), 0.3, rel_tol=1e-12)
    assert math.isclose(lm.prob(FRANCISCO, [eos]), 0.1, rel_tol=1e-12)
    assert math.isclose(lm.prob(CAT, [THE]), 0.475, rel_tol=1e-12)
    assert math.isclose(lm.prob(FRANCISCO, [THE]), 0.075, rel_tol=1e-12)


def test_witten_bell_by_hand() -> None:
    """Witten–Bell on the same corpus: p(w | h) = (c(h w) + T(h) p_lower(w)) / (c(h) + T(h)),
    with T(h) = N1+(h .) the number of distinct tokens seen after h.

    Unigram: c() = 18 tokens, T() = 7 types, p0 = 1/7, so p1(cat) = (3 + 7/7) / (18 + 7) = 0.16.
    Bigram: c(the) = 1, T(the) = 1: p(cat | the) = (1 + 1 * 0.16) / 2 = 0.58.
    """
    lm = NGramLM(NGramConfig(order=2, smoothing="witten-bell")).fit(SF, vocab_size=6)
    assert math.isclose(lm.prob(CAT, [THE]), 0.58, rel_tol=1e-12)
    # only the last token of a longer context counts: c(cat) = 3, T(cat) = 1 ({</s>}),
    # p1(</s>) = (6 + 1) / 25 = 0.28, so p(</s> | cat) = (3 + 0.28) / 4
    assert math.isclose(lm.prob(lm.eos_id, [MY, SAN, CAT]), 3.28 / 4, rel_tol=1e-12)


def test_add_k_by_hand() -> None:
    """Add-one bigram: p(w | h) = (c(h w) + 1) / (c(h) + V); an unseen context is uniform."""
    lm = NGramLM(NGramConfig(order=2, smoothing="add-k", k=1)).fit(SF, vocab_size=6)
    assert math.isclose(lm.prob(FRANCISCO, [SAN]), (3 + 1) / (3 + 7), rel_tol=1e-12)
    assert math.isclose(lm.prob(CAT, [SAN]), 1 / 10, rel_tol=1e-12)
    assert math.isclose(lm.prob(CAT, [lm.eos_id]), 1 / 7, rel_tol=1e-12)  # never a context


def test_modified_kn_discounts_by_hand() -> None:
    """n1 = 4, n2 = 2, n3 = 1, n4 = 1: Y = 4 / (4 + 2*2) = 0.5,
    D1 = 1 - 2 * 0.5 * 2/4 = 0.5, D2 = 2 - 3 * 0.5 * 1/2 = 1.25, D3+ = 3 - 4 * 0.5 * 1/1 = 1."""
    counts = np.array([1, 1, 1, 1, 2, 2, 3, 4, 7])
    assert modified_kn_discounts(counts) == pytest.approx((0.5, 1.25, 1.0), abs=1e-15)
    assert modified_kn_discounts(np.array([1, 1, 2, 3])) == FALLBACK_DISCOUNTS  # no n4


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_distribution_sums_to_one_for_seen_and_unseen_contexts(smoothing: str, order: int) -> None:
    seqs = random_corpus(10 + order)
    lm = NGramLM(NGramConfig(order=order, smoothing=smoothing, k=0.5)).fit(seqs, vocab_size=12)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    contexts = [[], [lm.bos_id] * 3, [11, 11, 11, 11], seqs[0][:3], seqs[1]]  # 11 is rare
    contexts += [list(rng.integers(0, 12, size=rng.integers(1, 6))) for _ in range(20)]
    for ctx in contexts:
        p = lm.distribution(ctx)
        assert p.shape == (lm.n_ids,) and (p > 0).sum() == lm.n_outcomes
        assert abs(p.sum() - 1.0) < 1e-9
        w = int(rng.integers(0, 12))
        assert lm.prob(w, ctx) == p[w]


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_shared_bos_eos_sums_to_one(smoothing: str) -> None:
    """GPT-2 style: one id (here 0) is both <s> and </s>, inside the vocabulary, so predictable."""
    seqs = [[t + 1 for t in s] for s in random_corpus(3)]
    lm = NGramLM(NGramConfig(order=3, smoothing=smoothing)).fit(  # type: ignore[arg-type]
        seqs, vocab_size=13, bos_id=0, eos_id=0
    )
    assert lm.n_ids == lm.n_outcomes == 13
    for ctx in ([], [0, 0], [0, 3], [5, 7]):
        assert abs(lm.distribution(ctx).sum() - 1.0) < 1e-9


def test_logprob_is_the_chain_rule_over_prob() -> None:
    seqs = random_corpus(5)
    lm = NGramLM(NGramConfig(order=3)).fit(seqs, vocab_size=12)
    seq = [3, 1, 4, 1, 5]
    expected = sum(math.log(lm.prob(w, seq[:t])) for t, w in enumerate([*seq, lm.eos_id]))
    assert math.isclose(lm.logprob(seq), expected, rel_tol=1e-12)
    total, n = lm.log_likelihood([seq, [2]])
    assert n == 6 + 2 and math.isclose(total, lm.logprob(seq) + lm.logprob([2]), rel_tol=1e-12)
    assert math.isclose(lm.perplexity([seq, [2]]), math.exp(-total / n), rel_tol=1e-12)


def test_more_context_fits_training_text_better() -> None:
    seqs = random_corpus(6, n_seq=200)
    ppl = [NGramLM(NGramConfig(order=n)).fit(seqs, 12).perplexity(seqs) for n in (1, 2, 3)]
    assert ppl[0] > ppl[1] > ppl[2]


def test_sample_is_seeded_stops_at_eos_and_stays_in_the_vocabulary() -> None:
    lm = NGramLM(NGramConfig(order=2)).fit(SF, vocab_size=6)
    a = [lm.sample(n=20, rng=np.random.default_rng(s)) for s in range(20)]
    assert a == [lm.sample(n=20, rng=s) for s in range(20)]
    assert all(all(0 <= t < 6 for t in s) and len(s) <= 20 for s in a)
    assert len(lm.sample([SAN], n=3, rng=0)) <= 3


def test_save_load_round_trip_and_vocabulary_mismatch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fp = vocab_fingerprint(["san", "francisco", "the", "cat", "a", "my"])
    lm = NGramLM(NGramConfig(order=3, smoothing="kneser-ney")).fit(SF, vocab_size=6, fingerprint=fp)
    path = tmp_path / "sf.npz"
    lm.save(path)
    again = NGramLM.load(path, vocab_size=6, fingerprint=fp)
    assert again.config == lm.config and again.counts(2) == lm.counts(2)
    for ctx in ([], [SAN], [THE, CAT]):
        assert np.array_equal(again.distribution(ctx), lm.distribution(ctx))
    with pytest.raises(CheckpointError, match=r"vocabulary mismatch.*6 ids.*7"):
        NGramLM.load(path, vocab_size=7)
    other = vocab_fingerprint(["san", "francisco", "the", "dog", "a", "my"])
    with pytest.raises(CheckpointError, match="vocabulary mismatch"):
        NGramLM.load(path, vocab_size=6, fingerprint=other)
    with pytest.raises(CheckpointError, match="does not exist"):
        NGramLM.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a valid saved n-gram model"):
        NGramLM.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 0}, "order must be a positive integer"),
        ({"order": -2}, "order must be a positive integer"),
        ({"order": 2.5}, "order must be a positive integer"),
        ({"smoothing": "kneser-nay"}, "did you mean 'kneser-ney'"),
        ({"smoothing": "good-turing"}, "unknown smoothing"),
        ({"k": 0}, "k must be a positive number"),
        ({"k": -1.0}, "k must be a positive number"),
        ({"k": float("nan")}, "k must be a positive number"),
        ({"discount": 0.0}, "discount must lie strictly between 0 and 1"),
        ({"discount": 1.0}, "discount must lie strictly between 0 and 1"),
        ({"discount": 1.5}, "discount must lie strictly between 0 and 1"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NGramConfig(**kwargs)


def test_bad_training_data_raises() -> None:
    lm = NGramLM(NGramConfig(order=2))
    with pytest.raises(DataError, match="call fit"):
        lm.prob(0)
    with pytest.raises(EmptyCorpusError, match="no tokens"):
        lm.fit([], vocab_size=5)
    with pytest.raises(EmptyCorpusError, match="no tokens"):
        lm.fit([[], []], vocab_size=5)
    with pytest.raises(DataError, match="token id 9 is outside the vocabulary"):
        lm.fit([[1, 2], [9]], vocab_size=5)
    with pytest.raises(DataError, match="token id -1 is outside"):
        lm.fit([[-1]], vocab_size=5)
    with pytest.raises(ConfigError, match="vocab_size must be a positive integer"):
        lm.fit([[1]], vocab_size=0)
    with pytest.raises(ConfigError, match="bos_id 5 is not in the vocabulary"):
        lm.fit([[1]], vocab_size=5, bos_id=5)
    lm.fit([[1, 2]], vocab_size=5)
    with pytest.raises(DataError, match="token id 7 is outside"):
        lm.perplexity([[1, 7]])
    with pytest.raises(DataError, match="token id 5 is outside"):
        lm.prob(5)  # 5 is the reserved <s>: context only, never a word
    with pytest.raises(EmptyCorpusError, match="no sequences"):
        lm.perplexity([])


# --- parity with NLTK ---------------------------------------------------------------------------


def _nltk_model(seqs: list[list[int]], lm: NGramLM, discount: float):  # type: ignore[no-untyped-def]
    """NLTK's KneserNeyInterpolated fitted on exactly our n-grams (all orders, our padding)."""
    lm_module = pytest.importorskip("nltk.lm")

    def name(t: int) -> str:
        return {lm.bos_id: "<s>", lm.eos_id: "</s>"}.get(t, str(t))

    n = lm.order
    text = []
    for seq in seqs:
        padded = [name(t) for t in [lm.bos_id] * (n - 1) + seq + [lm.eos_id]]
        text.append(
            [
                tuple(padded[t - m + 1 : t + 1])
                for t in range(n - 1, len(padded))
                for m in range(1, n + 1)
            ]
        )
    ref = lm_module.KneserNeyInterpolated(n, discount=discount)
    ref.fit(text, vocabulary_text=[name(t) for t in range(lm.n_ids)])
    return ref, name


@pytest.mark.parity
@pytest.mark.parametrize(("order", "discount"), [(2, 0.75), (3, 0.1), (3, 0.75), (4, 0.5)])
def test_kneser_ney_equals_nltk_above_the_unigram_level(order: int, discount: float) -> None:
    """Interpolated KN with one discount equals NLTK's ``KneserNeyInterpolated`` on the same counts.

    The definitions agree at every order above the unigram: highest order
    ``max(c(h w) - D, 0) / c(h) + D N1+(h .) / c(h) * p(w | h')``, lower orders the same with
    continuation counts ``N1+(. h w)`` and ``N1+(. h .)``; an unseen context passes the lower order
    through (NLTK: alpha = 0, gamma = 1). They differ at the unigram level, which NLTK leaves
    undiscounted, ``N1+(. w) / N1+(. .)``, while we discount it too and interpolate with the
    uniform distribution (Chen & Goodman), so that a word never seen gets a probability above zero
    (pinned in the next test). So NLTK's unigram is replaced by ours here, and everything above it
    must agree to rounding. NLTK is fed our own n-grams: its ``padded_everygram_pipeline`` pads
    with ``n - 1`` ``</s>`` on the right and counts n-grams made only of padding, which we do not.
    """
    seqs = random_corpus(100 + order, n_seq=25)
    lm = NGramLM(NGramConfig(order=order, discount=discount)).fit(seqs, vocab_size=12)
    ref, name = _nltk_model(seqs, lm, discount)

    def our_unigram(word: str) -> float:  # p(w | </s>): </s> is never a context -> unigram level
        return lm.prob(int(word) if word.isdigit() else lm.eos_id, [lm.eos_id])

    ref.estimator.unigram_score = our_unigram
    rng = np.random.default_rng(order)
    contexts = [seqs[i][-(order - 1) :] for i in range(5)]  # seen
    contexts += [list(rng.integers(0, 12, size=order - 1)) for _ in range(10)]  # mostly unseen
    contexts += [[lm.bos_id] * (order - 1)]
    checked = 0
    for ctx in contexts:
        if len(ctx) < order - 1:
            continue
        for w in [*range(12), lm.eos_id]:
            ours = lm.prob(w, ctx)
            theirs = ref.unmasked_score(name(w), tuple(name(t) for t in ctx))
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), (ctx, w)
            checked += 1
    assert checked >= 100


@pytest.mark.parity
def test_nltk_unigram_level_differs_as_documented() -> None:
    """NLTK's lowest order is the undiscounted continuation unigram; an unseen word gets 0.

    On the San Francisco corpus NLTK gives p(cat) = N1+(. cat) / N1+(. .) = 3/10 and, for a word in
    the vocabulary but never seen (id 6 here, vocabulary 7), zero in every context: its log-prob
    is -inf. Ours discounts the unigram level too and spreads D * types / N1+(. .) uniformly:
    p(cat) = (3 - 0.75) / 10 + 0.525 / 8 (V = 8 outcomes: seven words and </s>).
    """
    lm = NGramLM(NGramConfig(order=2, discount=0.75)).fit(SF, vocab_size=7)
    ref, name = _nltk_model(SF, lm, 0.75)
    assert ref.estimator.unigram_score(name(CAT)) == pytest.approx(3 / 10, rel=1e-12)
    assert lm.prob(CAT, [lm.eos_id]) == pytest.approx(2.25 / 10 + 0.525 / 8, rel=1e-12)
    unseen = 6
    assert ref.unmasked_score(name(unseen), (name(THE),)) == 0.0
    assert lm.prob(unseen, [THE]) == pytest.approx(0.75 * 0.525 / 8, rel=1e-12)


@pytest.mark.parametrize("module", [ngram, ngram_counts])
def test_docstring_examples(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def test_numpy_vocab_size_is_accepted() -> None:
    lm = NGramLM(NGramConfig(order=2)).fit([[0, 1]], vocab_size=np.int64(3))
    assert lm.vocab_size == 3 and isinstance(lm.vocab_size, int)
