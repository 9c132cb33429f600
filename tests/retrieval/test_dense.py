"""Dense retrieval: all-MiniLM-L6-v2 through our BERT scores passages as transformers' MiniLM with
mean pooling does (1e-5); exact and FAISS search agree; blocks of queries change nothing; bad
input."""

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import groundwork
from groundwork.corpus.documents import load_documents
from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.pretrained import Pretrained
from groundwork.retrieval.base import Hit, Retriever
from groundwork.retrieval.chunking import chunk_documents
from groundwork.retrieval.dense import DenseIndex, DenseRetriever, exact_search

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def minilm() -> Pretrained:
    return groundwork.load("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def passages() -> list[str]:
    """24 wiki-sample passages of 60 words, from four articles."""
    docs = [d for d in load_documents("wiki-sample") if d.id.startswith("wiki/")][:4]
    chunks = chunk_documents(docs, 60, 0)
    return [p.text for doc in docs for p in [c for c in chunks if c.doc_id == doc.id][:6]]


QUERIES = [
    "What is anarchism?",
    "a developmental disorder that affects communication",
    "How much sunlight does a surface reflect?",
]


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


# --- parity with transformers ---------------------------------------------------------------


@pytest.mark.parity
def test_scores_are_the_cosines_of_transformers_minilm(
    minilm: Pretrained, passages: list[str], minilm_dir: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = hf(**batch).last_hidden_state  # (B, T, d)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)  # (B, d)

    expected = embed(QUERIES) @ embed(passages).T  # (Q, N): cosine similarities
    retriever = DenseRetriever(minilm.model, minilm.tokenizer, passages, batch_size=8)
    k = 5
    results = retriever.retrieve_many(QUERIES, k)
    for q, hits in enumerate(results):
        assert len(hits) == k
        got = torch.tensor([h.score for h in hits])
        torch.testing.assert_close(got, expected[q].topk(k).values, **TOL)  # the best k, sorted
        torch.testing.assert_close(got, expected[q, [h.index for h in hits]], **TOL)
    assert results[0][0].index in range(6)  # "What is anarchism?" -> an Anarchism passage
    alone = retriever.retrieve(QUERIES[1], k)  # one query: no padding, the same up to rounding
    assert [h.index for h in alone] == [h.index for h in results[1]]
    assert [h.score for h in alone] == pytest.approx([h.score for h in results[1]], abs=1e-5)


def test_retriever_follows_the_protocol_and_caps_k(minilm: Pretrained, passages: list[str]) -> None:
    retriever = DenseRetriever(minilm.model, minilm.tokenizer, passages[:3])
    assert isinstance(retriever, Retriever)
    hits = retriever.retrieve(passages[1], 10)
    assert len(hits) == 3 and isinstance(hits[0], Hit)
    assert hits[0].index == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)


# --- the search -----------------------------------------------------------------------------


def test_exact_and_faiss_return_the_same_passages() -> None:
    pytest.importorskip("faiss")
    embeddings, queries = unit(2000, 64, seed=0), unit(50, 64, seed=1)
    exact = DenseIndex(embeddings).search(queries, 10)
    faiss = DenseIndex(embeddings, backend="faiss").search(queries, 10)
    torch.testing.assert_close(faiss[0], exact[0], **TOL)
    assert torch.equal(faiss[1], exact[1])
    assert faiss[1].dtype == exact[1].dtype == torch.long


def test_exact_search_by_hand_and_in_blocks() -> None:
    index = DenseIndex(torch.eye(3))
    scores, indices = index.search(torch.tensor([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]]), 2)
    assert indices.tolist() == [[2, 1], [0, 1]] or indices.tolist() == [[2, 1], [0, 2]]
    torch.testing.assert_close(scores[0], torch.tensor([0.8, 0.6]))
    assert len(index) == 3
    assert index.search(torch.ones(1, 3), 5)[1].shape == (1, 3)  # k capped at N

    embeddings, queries = unit(300, 16, seed=2), unit(40, 16, seed=3)
    whole = exact_search(embeddings, queries, 7)
    for max_scores, query_block in [(40 * 22, 1024), (300 * 3, 3), (7, 1)]:
        # blocks of 22 passages x all 40 queries; of 300 passages x 3 queries; 7 x 1
        blocks = exact_search(
            embeddings, queries, 7, max_scores=max_scores, query_block=query_block
        )
        torch.testing.assert_close(blocks[0], whole[0])
        assert torch.equal(blocks[1], whole[1])
    brute = (queries @ embeddings.T).topk(7)
    torch.testing.assert_close(whole[0], brute.values)


def test_queries_follow_the_index_dtype() -> None:
    index = DenseIndex(unit(10, 8, seed=4).double())
    scores, _ = index.search(unit(2, 8, seed=5), 3)
    assert scores.dtype == torch.float64


# --- bad input ------------------------------------------------------------------------------


def test_index_errors() -> None:
    with pytest.raises(ConfigError, match="2-D"):
        DenseIndex(torch.ones(5))
    with pytest.raises(ConfigError, match="empty"):
        DenseIndex(torch.ones(0, 4))
    with pytest.raises(ConfigError, match="floating point"):
        DenseIndex(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="unknown backend 'annoy'"):
        DenseIndex(torch.ones(3, 4), backend="annoy")  # type: ignore[arg-type]
    index = DenseIndex(unit(5, 4, seed=6))
    with pytest.raises(ConfigError, match="unsqueeze"):
        index.search(torch.ones(4), 1)
    with pytest.raises(ConfigError, match="dimension 3 but the index holds vectors of dimension 4"):
        index.search(torch.ones(2, 3), 1)
    with pytest.raises(ConfigError, match="floating point"):
        index.search(torch.ones(2, 4, dtype=torch.long), 1)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        index.search(torch.ones(2, 4), 0)


def test_faiss_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'groundwork\[retrieval\]'"):
        DenseIndex(torch.ones(3, 4), backend="faiss")


def test_retriever_errors(minilm: Pretrained) -> None:
    with pytest.raises(EmptyCorpusError, match="at least one text"):
        DenseRetriever(minilm.model, minilm.tokenizer, [])
    with pytest.raises(ConfigError, match="unknown backend"):
        DenseRetriever(minilm.model, minilm.tokenizer, ["a"], backend="hnsw")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="BERT-style encoder"):
        DenseRetriever(torch.nn.Linear(2, 2), minilm.tokenizer, ["a"])
    with pytest.raises(ConfigError, match="max_length"):
        DenseRetriever(minilm.model, minilm.tokenizer, ["a"], max_length=0)
    retriever = DenseRetriever(minilm.model, minilm.tokenizer, ["a cat", "a dog"])
    with pytest.raises(ConfigError, match="no queries"):
        retriever.retrieve_many([], 1)
    with pytest.raises(ConfigError, match="use retrieve"):
        retriever.retrieve_many("a cat", 1)
    with pytest.raises(ConfigError, match="k must be"):
        retriever.retrieve("a cat", 0)
