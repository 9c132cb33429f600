"""Retrieval (chapter 15): sparse and dense search, rank fusion, retrieve-then-read, kNN-LM.

* :mod:`groundwork.retrieval.base`: what every retriever returns (:class:`Hit`) and its one
  method (:class:`Retriever`).
* :mod:`groundwork.retrieval.bm25`: Okapi BM25, equal to ``rank_bm25``'s ``BM25Okapi``, scored
  from a precomputed sparse term-by-document matrix.
* :mod:`groundwork.retrieval.dense`: MiniLM sentence embeddings searched exactly (or with FAISS).
* :mod:`groundwork.retrieval.fusion`: reciprocal rank fusion of several retrievers.
* :mod:`groundwork.retrieval.metrics`: recall@k and mean reciprocal rank.
* :mod:`groundwork.retrieval.chunking`, :mod:`groundwork.retrieval.datasets`: passages of
  words, and evaluation sets built from real text (inverse cloze queries, fill-in-the-year
  questions).
* :mod:`groundwork.retrieval.rag`: retrieve-then-read with numbered passages and citations.
* :mod:`groundwork.retrieval.knnlm`: the kNN-LM, a datastore of (context, next token) pairs
  interpolated with the model's prediction.
"""

from groundwork.retrieval.base import Hit, Retriever
from groundwork.retrieval.bm25 import BM25, BM25Retriever, bm25_tokenize
from groundwork.retrieval.chunking import Passage, chunk_documents, chunk_words
from groundwork.retrieval.datasets import cloze_questions, sentence_queries
from groundwork.retrieval.dense import DenseIndex, DenseRetriever
from groundwork.retrieval.fusion import HybridRetriever, reciprocal_rank_fusion
from groundwork.retrieval.knnlm import Datastore, build_datastore, interpolate, knnlm_evaluate
from groundwork.retrieval.metrics import mean_reciprocal_rank, recall_at_k
from groundwork.retrieval.rag import RAGAnswer, RAGPipeline

__all__ = [
    "BM25",
    "BM25Retriever",
    "Datastore",
    "DenseIndex",
    "DenseRetriever",
    "Hit",
    "HybridRetriever",
    "Passage",
    "RAGAnswer",
    "RAGPipeline",
    "Retriever",
    "bm25_tokenize",
    "build_datastore",
    "chunk_documents",
    "chunk_words",
    "cloze_questions",
    "interpolate",
    "knnlm_evaluate",
    "mean_reciprocal_rank",
    "recall_at_k",
    "reciprocal_rank_fusion",
    "sentence_queries",
]
