"""Word-vector evaluation: analogies (3CosAdd) on hand-made vectors, malformed and unknown words,
Spearman equal to scipy, and gensim's own evaluation on the same vectors (parity)."""

import doctest
import itertools

import numpy as np
import pytest

from groundwork.errors import ConfigError, DataError
from groundwork.evaluate import word_vectors as wv
from groundwork.evaluate.word_vectors import (
    ANALOGIES,
    SIMLEX999,
    WORDSIM353,
    benchmark_file,
    evaluate_analogies,
    evaluate_similarity,
    rankdata,
    read_analogies,
    spearman,
)

# axes: (royal, female, person); man : woman :: king : queen by construction
WORDS = ["man", "woman", "king", "queen", "apple", "Paris"]
VECTORS = np.array(
    [
        [0.0, 0.0, 1.0],  # man
        [0.0, 1.0, 1.0],  # woman
        [1.0, 0.0, 1.0],  # king
        [1.0, 1.0, 1.0],  # queen
        [0.0, 0.0, -1.0],  # apple
        [-1.0, 0.5, 0.0],  # Paris
    ]
)

ANALOGY_FILE = """\
man woman king queen
: gender
man woman king queen
MAN Woman KING Queen
man woman king apple
man woman king prince
man woman king

: other
king queen man woman
one two three four five
woman man queen king
"""


def test_docstring_examples() -> None:
    assert doctest.testmod(wv).failed == 0


def test_read_analogies_skips_and_counts_malformed_lines(tmp_path) -> None:
    path = tmp_path / "q.txt"
    path.write_text(ANALOGY_FILE)
    sections, malformed = read_analogies(path)
    # line 1: a question before any header; line 7: three words; line 11: five words
    assert malformed == [1, 7, 11]
    assert [name for name, _ in sections] == ["gender", "other"]
    assert [len(q) for _, q in sections] == [4, 2]
    assert sections[0][1][1] == ("man", "woman", "king", "queen")  # lower-cased


def test_analogies_by_hand(tmp_path) -> None:
    """gender: q1 and q2 (case-insensitive) are right (queen), q3 expects apple (wrong), q4 has
    'prince', unknown: skipped. other: king:queen::man:? -> woman right; woman:man::queen:? ->
    king right. Total 4 of 5 evaluated, 5 of 6 questions covered."""
    path = tmp_path / "q.txt"
    path.write_text(ANALOGY_FILE)
    result = evaluate_analogies(WORDS, VECTORS, path, restrict_vocab=None)
    gender, other = result.sections
    assert (gender.correct, gender.evaluated, gender.questions) == (2, 3, 4)
    assert (other.correct, other.evaluated, other.questions) == (2, 2, 2)
    assert (result.total.correct, result.total.evaluated, result.total.questions) == (4, 5, 6)
    assert result.accuracy == pytest.approx(4 / 5) and result.coverage == pytest.approx(5 / 6)
    assert result.malformed == [1, 7, 11]
    assert "skipped 3 malformed lines" in result.summary()


def test_restrict_vocab_drops_rare_words_from_questions_and_answers(tmp_path) -> None:
    path = tmp_path / "q.txt"
    path.write_text(ANALOGY_FILE)
    # only man, woman, king are known: every question needs a fourth word -> nothing evaluated
    result = evaluate_analogies(WORDS, VECTORS, path, restrict_vocab=3)
    assert result.total.evaluated == 0 and result.accuracy == 0.0
    with pytest.raises(ConfigError, match="restrict_vocab"):
        evaluate_analogies(WORDS, VECTORS, path, restrict_vocab=0)


def test_the_answer_is_never_a_question_word(tmp_path) -> None:
    """b - a + c with a = b: the query is c itself, but c is excluded, so the next word wins."""
    path = tmp_path / "q.txt"
    path.write_text(": s\nman man king queen\n")
    assert evaluate_analogies(WORDS, VECTORS, path, restrict_vocab=None).total.correct == 1


def _structured_vectors(seed: int = 0) -> tuple[list[str], np.ndarray, str]:
    """Capitals and countries with country = capital + offset + noise: most analogies hold."""
    rng = np.random.default_rng(seed)
    n, dim = 10, 8
    capitals = rng.normal(size=(n, dim))
    offset = rng.normal(size=dim)
    countries = capitals + offset + rng.normal(scale=0.6, size=(n, dim))
    words = [f"city{i}" for i in range(n)] + [f"land{i}" for i in range(n)] + ["noise"]
    vectors = np.vstack([capitals, countries, rng.normal(size=(1, dim))])
    lines = [": capitals"]
    for i, j in itertools.permutations(range(n), 2):
        lines.append(f"city{i} land{i} city{j} land{j}")
    lines.append("city0 land0 city1 unknownland")
    lines.append(": reverse")
    for i, j in itertools.permutations(range(4), 2):
        lines.append(f"land{i} city{i} land{j} city{j}")
    return words, vectors, "\n".join(lines) + "\n"


@pytest.mark.parity
def test_analogies_equal_gensim(tmp_path) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    words, vectors, text = _structured_vectors()
    path = tmp_path / "q.txt"
    path.write_text(text)
    kv = gensim_models.KeyedVectors(vector_size=vectors.shape[1])
    kv.add_vectors(words, vectors.astype(np.float32))
    for restrict in (None, 15):
        ours = evaluate_analogies(words, vectors, path, restrict_vocab=restrict)
        _, theirs = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict or len(words))
        by_name = {s["section"]: s for s in theirs}
        for section in ours.sections:
            assert section.correct == len(by_name[section.name]["correct"])
            assert section.evaluated - section.correct == len(by_name[section.name]["incorrect"])
        assert 0 < ours.total.correct < ours.total.evaluated  # the test is not trivial


# --- Spearman -----------------------------------------------------------------------------------


def test_rankdata_averages_ties() -> None:
    assert rankdata([3, 1, 4, 1, 5]).tolist() == [3.0, 1.5, 4.0, 1.5, 5.0]
    assert rankdata([2, 2, 2]).tolist() == [2.0, 2.0, 2.0]


def test_spearman_equals_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 353):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        # with many ties (human scores are rounded)
        xt, yt = np.round(x * 2) / 2, np.round(y)
        if len(set(xt)) > 1 and len(set(yt)) > 1:
            assert spearman(xt, yt) == pytest.approx(stats.spearmanr(xt, yt).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_spearman_errors() -> None:
    with pytest.raises(DataError, match="equally long"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="equally long"):
        spearman([1], [1])
    with pytest.raises(DataError, match="constant"):
        spearman([1, 1, 1], [1, 2, 3])


# --- similarity ---------------------------------------------------------------------------------

PAIRS_FILE = """\
# a comment
# Word 1\tWord 2\tHuman (mean)
king\tqueen\t8.5
man\twoman\t8.3
king\tapple\t0.5
Paris\tqueen\t2.0
man\tunicorn\t3.0
just two\tfields
king\tman\tnot-a-number
"""


def test_similarity_by_hand(tmp_path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS_FILE)
    result = evaluate_similarity(WORDS, VECTORS, path)
    assert (result.pairs, result.oov, result.malformed) == (4, 1, [8, 9])
    unit = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
    cos = [unit[2] @ unit[3], unit[0] @ unit[1], unit[2] @ unit[4], unit[5] @ unit[3]]
    assert result.spearman == pytest.approx(spearman([8.5, 8.3, 0.5, 2.0], cos))
    assert result.coverage == pytest.approx(4 / 5)
    assert "1 skipped as out of vocabulary" in result.summary()


@pytest.mark.parity
def test_similarity_equals_gensim(tmp_path) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS_FILE)
    kv = gensim_models.KeyedVectors(vector_size=3)
    kv.add_vectors(WORDS, VECTORS.astype(np.float32))
    _, (rho, _), oov_ratio = kv.evaluate_word_pairs(str(path))
    result = evaluate_similarity(WORDS, VECTORS, path)
    assert result.spearman == pytest.approx(rho, abs=1e-6)
    assert 100 * result.oov / (result.oov + result.pairs) == pytest.approx(oov_ratio)


def test_similarity_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        evaluate_similarity(WORDS, VECTORS, tmp_path / "missing.tsv")
    path = tmp_path / "pairs.tsv"
    path.write_text("king\tunicorn\t3.0\nking\tqueen\t5\n")
    with pytest.raises(DataError, match="only 1 pairs"):
        evaluate_similarity(WORDS, VECTORS, path)
    with pytest.raises(DataError, match="not found"):
        read_analogies(tmp_path / "missing.txt")


# --- the real benchmark files -------------------------------------------------------------------


def test_benchmark_files_of_wiki_sample() -> None:
    sections, malformed = read_analogies(benchmark_file(ANALOGIES))
    assert len(sections) == 14 and malformed == []
    assert sum(len(q) for _, q in sections) == 19544
    assert sections[0][0] == "capital-common-countries"
    for name in (WORDSIM353, SIMLEX999):
        words = {w for line in benchmark_file(name).read_text().splitlines()
                 if not line.startswith("#") for w in line.lower().split("\t")[:2]}  # fmt: skip
        vocab = sorted(words)
        vectors = np.random.default_rng(0).normal(size=(len(vocab), 4))
        result = evaluate_similarity(vocab, vectors, benchmark_file(name))
        assert result.oov == 0 and result.malformed == []
        assert result.pairs == (353 if name == WORDSIM353 else 999)
    with pytest.raises(ConfigError, match="unknown benchmark file"):
        benchmark_file("toefl.txt")
