"""Okapi BM25: equal to ``rank_bm25.BM25Okapi`` (idf, average length, every score) on the
wiki-sample passages and on a hand-made corpus that takes the epsilon path; top-k order and
ties; the retriever over raw texts; bad input."""

import numpy as np
import pytest

from groundwork.corpus.documents import load_documents
from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.retrieval.base import Hit, Retriever
from groundwork.retrieval.bm25 import BM25, BM25Retriever, bm25_tokenize, top_k
from groundwork.retrieval.chunking import chunk_documents
from groundwork.retrieval.datasets import sentence_queries

TOL = 1e-9

# "the" is in 4 of 6 documents (negative idf -> epsilon * average idf), "cat" in 3 of 6 (idf
# log(3.5) - log(3.5) = 0: kept, not floored); one document is empty.
SMALL = [
    ["the", "cat", "sat", "on", "the", "mat"],
    ["the", "dog", "chased", "the", "cat", "the", "end"],
    ["a", "cat", "and", "a", "dog"],
    [],
    ["the", "bird", "sang"],
    ["the", "mat", "mat", "mat", "is", "red", "the"],
]
SMALL_QUERIES = [
    ["cat"],
    ["the", "cat"],
    ["mat", "mat", "the"],  # a repeated term counts twice
    ["unknown", "words", "only"],  # nothing known: every score is 0
    ["dog", "unknown", "dog", "bird", "the", "the"],
    [],
]


@pytest.fixture(scope="module")
def wiki_passages() -> list[list[str]]:
    docs = load_documents("wiki-sample")
    return [bm25_tokenize(p.text) for p in chunk_documents(docs, 100, 20)]


@pytest.fixture(scope="module")
def wiki_queries() -> list[list[str]]:
    docs = load_documents("wiki-sample")
    _, queries = sentence_queries(docs, n=25, seed=3)
    extra = ["the history of the the state", "anarchism anarchism zzzunknownzzz 1990"]
    return [bm25_tokenize(q.text) for q in queries] + [bm25_tokenize(t) for t in extra]


# --- parity with rank_bm25 ------------------------------------------------------------------


def _assert_same_as_rank_bm25(corpus: list[list[str]], queries: list[list[str]]) -> None:
    rank_bm25 = pytest.importorskip("rank_bm25")
    ref = rank_bm25.BM25Okapi(corpus)
    ours = BM25(corpus)
    assert ours.n_docs == ref.corpus_size
    assert ours.avgdl == ref.avgdl
    assert ours.average_idf == pytest.approx(ref.average_idf, abs=TOL)
    assert ours.idf.keys() == ref.idf.keys()
    for term, value in ref.idf.items():
        assert ours.idf[term] == pytest.approx(value, abs=TOL), term
    for query in queries:
        expected = ref.get_scores(query)
        got = ours.get_scores(query)
        assert got.dtype == np.float64 and got.shape == (len(corpus),)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=str(query))


@pytest.mark.parity
def test_equals_rank_bm25_on_the_wiki_sample_passages(
    wiki_passages: list[list[str]], wiki_queries: list[list[str]]
) -> None:
    assert len(wiki_passages) > 5000
    _assert_same_as_rank_bm25(wiki_passages, wiki_queries)


@pytest.mark.parity
def test_equals_rank_bm25_with_negative_idfs_repeats_and_unknown_terms() -> None:
    ours = BM25(SMALL)
    # n_t > N / 2 gives a negative raw idf: floored at epsilon * average idf, as rank_bm25
    assert ours.idf["the"] == pytest.approx(0.25 * ours.average_idf)
    assert ours.idf["cat"] == 0.0
    _assert_same_as_rank_bm25(SMALL, SMALL_QUERIES)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("k1", "b", "epsilon"), [(1.2, 0.75, 0.25), (0.5, 0.0, 0.5), (2.0, 1.0, 0)]
)
def test_equals_rank_bm25_for_other_parameters(k1: float, b: float, epsilon: float) -> None:
    rank_bm25 = pytest.importorskip("rank_bm25")
    corpus = [doc for doc in SMALL if doc]  # b = 1 and an empty document: 0 / 0 in rank_bm25
    ref = rank_bm25.BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
    ours = BM25(corpus, k1=k1, b=b, epsilon=epsilon)
    for query in SMALL_QUERIES:
        np.testing.assert_allclose(ours.get_scores(query), ref.get_scores(query), atol=TOL)


def test_k1_zero_scores_presence_only() -> None:
    """k1 = 0: a present term adds its idf whatever its frequency (rank_bm25 gives 0 / 0 = NaN
    for the documents without it; the sparse index never computes those)."""
    bm25 = BM25(SMALL, k1=0.0)
    scores = bm25.get_scores(["mat"])
    np.testing.assert_allclose(scores, [bm25.idf["mat"], 0, 0, 0, 0, bm25.idf["mat"]])


def test_scores_by_hand() -> None:
    """Three documents, "x" in one: idf(x) = log(3 - 1 + 0.5) - log(1 + 0.5)."""
    corpus = [["x", "y"], ["y"], ["y", "y", "z"]]
    bm25 = BM25(corpus, k1=1.5, b=0.75)
    avgdl = 2.0
    idf_x = np.log(3 - 1 + 0.5) - np.log(1 + 0.5)
    expected = idf_x * (1 * 2.5) / (1 + 1.5 * (1 - 0.75 + 0.75 * 2 / avgdl))
    assert bm25.avgdl == avgdl
    np.testing.assert_allclose(bm25.get_scores(["x"]), [expected, 0, 0], atol=1e-12)
    np.testing.assert_allclose(bm25.get_scores(["x", "x"]), [2 * expected, 0, 0], atol=1e-12)


# --- search ------------------------------------------------------------------------------------


def test_search_returns_the_best_first_and_agrees_with_get_scores() -> None:
    bm25 = BM25(SMALL)
    query = ["mat", "dog", "the"]
    scores = bm25.get_scores(query)
    indices, top = bm25.search(query, 3)
    assert indices.tolist() == sorted(range(len(SMALL)), key=lambda i: (-scores[i], i))[:3]
    np.testing.assert_array_equal(top, scores[indices])
    assert list(top) == sorted(top, reverse=True)


def test_search_caps_k_and_breaks_ties_by_index() -> None:
    bm25 = BM25([["a"], ["b"], ["a"], ["c"], ["a"]])
    indices, scores = bm25.search(["a"], 10)
    assert indices.tolist() == [0, 2, 4, 1, 3]  # equal scores in document order
    assert scores[0] == scores[1] == scores[2] > 0 == scores[3] == scores[4]
    assert bm25.search(["zzz"], 2)[0].tolist() == [0, 1]  # all zero: the first documents


@pytest.mark.parametrize("k", [1, 5, 17, 100, 200])
def test_top_k_equals_a_full_stable_sort(k: int) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=100).astype(float)  # many ties
    expected = np.lexsort((np.arange(100), -scores))[:k]
    np.testing.assert_array_equal(top_k(scores, k), expected)


# --- the retriever over raw texts -----------------------------------------------------------


def test_bm25_tokenize() -> None:
    assert bm25_tokenize("The Cat's 2 mats, in 1990!") == [
        "the",
        "cat",
        "s",
        "2",
        "mats",
        "in",
        "1990",
    ]
    assert bm25_tokenize("  ") == []


def test_retriever_tokenizes_texts_and_queries_alike() -> None:
    texts = ["The cat sat.", "A DOG barked at the cat!", "Birds sing."]
    retriever = BM25Retriever(texts)
    assert isinstance(retriever, Retriever)
    hits = retriever.retrieve("dog", 2)
    indices, scores = BM25([bm25_tokenize(t) for t in texts]).search(["dog"], 2)
    assert hits == [Hit(int(i), float(s)) for i, s in zip(indices, scores, strict=True)]
    assert hits[0].index == 1 and isinstance(hits[0].index, int)
    upper = BM25Retriever(texts, tokenize=str.split)  # case-sensitive: "DOG" is not "dog"
    assert upper.retrieve("DOG", 1)[0].index == 1
    assert upper.retrieve("dog", 1)[0].score == 0.0


# --- bad input ------------------------------------------------------------------------------


def test_errors() -> None:
    with pytest.raises(EmptyCorpusError, match="at least one document"):
        BM25([])
    with pytest.raises(EmptyCorpusError, match="none of the 2 documents"):
        BM25([[], []])
    with pytest.raises(ConfigError, match="k1"):
        BM25(SMALL, k1=-1)
    with pytest.raises(ConfigError, match="b must be in"):
        BM25(SMALL, b=1.5)
    with pytest.raises(ConfigError, match="tokenised"):
        BM25(["a whole text"])
    bm25 = BM25(SMALL)
    with pytest.raises(ConfigError, match="bm25_tokenize"):
        bm25.get_scores("the cat")
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        bm25.search(["cat"], 0)
    with pytest.raises(EmptyCorpusError, match="at least one text"):
        BM25Retriever([])
    with pytest.raises(EmptyCorpusError, match="none of the 1"):
        BM25Retriever(["!!! ..."])
