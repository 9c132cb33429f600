r"""Dense retrieval: passages and queries embedded by one encoder, ranked by inner product.

A bi-encoder (Karpukhin et al. 2020, "Dense Passage Retrieval for Open-Domain Question
Answering"; Reimers & Gurevych 2019, Sentence-BERT) maps each passage $p$ and the query $q$ to
vectors $E(p), E(q)$ and scores a passage by their inner product,

$$s(q, p) = E(q)^\top E(p),$$

a cosine similarity when the vectors have unit length, as all-MiniLM-L6-v2's mean-pooled,
normalised embeddings (:func:`~groundwork.evaluate.embeddings.sentence_embeddings`) do. Passages
are embedded once; a query costs one encoder pass and one matrix-vector product.

The search itself (:class:`DenseIndex`) is exact maximum inner-product search, done two ways:

* ``"exact"``: matrix products of the queries with blocks of passage vectors and ``torch.topk``,
  each block's best merged into the best so far, so that the score matrix stays small;
* ``"faiss"``: ``faiss.IndexFlatIP`` (Johnson et al. 2019, "Billion-scale similarity search with
  GPUs"), the same brute-force search in FAISS's BLAS-backed kernels (``pip install
  'groundwork[retrieval]'``). Both return the same passages and scores (tested to 1e-5).

Chapter 15 (Prompting, agents and retrieval).
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from groundwork.checks import positive_int
from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.evaluate.embeddings import sentence_embeddings
from groundwork.models.bert import Bert
from groundwork.retrieval.base import Hit
from groundwork.tokenize.base import Tokenizer

Backend = Literal["exact", "faiss"]
BACKENDS: tuple[str, ...] = ("exact", "faiss")
MAX_SCORES = 1 << 23
"""Most query-passage scores held at once by the exact search (32 MiB in float32)."""
QUERY_BLOCK = 1024
"""Most queries scored at once by the exact search."""


def _import_faiss() -> Any:
    """The ``faiss`` module, or a ConfigError saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise ConfigError(
            "the 'faiss' backend needs faiss-cpu: pip install 'groundwork[retrieval]' "
            "(or use backend='exact')"
        ) from e
    return faiss


# --8<-- [start:exact_search]
def exact_search(
    embeddings: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    *,
    max_scores: int = MAX_SCORES,
    query_block: int = QUERY_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum inner-product search by brute force: ``(N, d), (Q, d) -> (Q, k), (Q, k)``.

    Up to ``query_block`` queries at a time are scored against blocks of passages (as many as
    keep the score block within ``max_scores``); each block's top ``k`` is merged into the best
    found so far. Going through the passages once per query block, rather than once per few
    queries, reads the (large) embedding matrix fewer times, and the blocks stay in cache.

    Args:
        embeddings: The passage vectors ``(N, d)``.
        queries: The query vectors ``(Q, d)``, same dtype and device.
        k: Results per query, ``1 <= k <= N``.
        max_scores: Most scores held at once.
        query_block: Most queries scored at once.

    Returns:
        ``(scores, indices)``, best first in each row.
    """
    n = embeddings.shape[0]
    scores, indices = [], []
    for q_start in range(0, queries.shape[0], query_block):
        q = queries[q_start : q_start + query_block]  # (B, d)
        n_block = max(k, max_scores // q.shape[0])
        best = q.new_empty(q.shape[0], 0)  # (B, 0): the best scores so far
        best_idx = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)  # (B, 0)
        for start in range(0, n, n_block):
            sim = q @ embeddings[start : start + n_block].T  # (B, n_block)
            top = torch.topk(sim, min(k, sim.shape[1]), dim=1)  # (B, k') each
            merged = torch.cat([best, top.values], dim=1)  # (B, k + k'): the best so far + these
            merged_idx = torch.cat([best_idx, top.indices + start], dim=1)
            best, pos = torch.topk(merged, min(k, merged.shape[1]), dim=1)  # (B, k)
            best_idx = torch.gather(merged_idx, 1, pos)  # (B, k)
        scores.append(best)
        indices.append(best_idx)
    return torch.cat(scores), torch.cat(indices)  # (Q, k), (Q, k)


# --8<-- [end:exact_search]


class DenseIndex:
    """Exact inner-product search over a fixed set of vectors.

    Args:
        embeddings: The passage vectors ``(N, d)``, floating point (unit length for cosine).
        backend: ``"exact"`` (torch matmul + top-k, on the embeddings' device) or ``"faiss"``
            (``faiss.IndexFlatIP`` on the CPU, float32).

    Raises:
        ConfigError: ``embeddings`` is not a non-empty 2-D float tensor, an unknown backend, or
            ``"faiss"`` without faiss installed.

    Example:
        >>> index = DenseIndex(torch.eye(3))
        >>> index.search(torch.tensor([[0.0, 0.6, 0.8]]), 2)
        (tensor([[0.8000, 0.6000]]), tensor([[2, 1]]))
    """

    def __init__(self, embeddings: torch.Tensor, *, backend: Backend = "exact") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}: choose 'exact' or 'faiss'")
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else None
            raise ConfigError(
                f"embeddings must be a 2-D tensor (passages, dim), got {shape or type(embeddings)}"
            )
        if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
            raise ConfigError(
                f"embeddings of shape {tuple(embeddings.shape)} are empty: index at least one "
                "passage of dimension >= 1"
            )
        if not embeddings.is_floating_point():
            raise ConfigError(f"embeddings must be floating point, got {embeddings.dtype}")
        self.backend = backend
        self.embeddings = embeddings.detach()
        self.n, self.dim = embeddings.shape
        self._faiss_index: Any = None
        if backend == "faiss":
            faiss = _import_faiss()
            self._faiss_index = faiss.IndexFlatIP(self.dim)
            self._faiss_index.add(self._to_numpy(self.embeddings))

    def __len__(self) -> int:
        return self.n

    @staticmethod
    def _to_numpy(x: torch.Tensor) -> np.ndarray:
        """C-contiguous float32 on the CPU, as FAISS wants."""
        return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())

    # --8<-- [start:search]
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` passages of highest inner product with each query.

        Args:
            queries: ``(Q, d)`` query vectors (``d`` as the index's).
            k: Passages per query, capped at the number of passages.

        Returns:
            ``(scores, indices)``, each ``(Q, min(k, N))``, best first in every row (on the
            embeddings' device for ``"exact"``, on the CPU for ``"faiss"``).

        Raises:
            ConfigError: ``queries`` is not ``(Q, d)`` floating point, or ``k < 1``.
        """
        positive_int("k", k)
        if not isinstance(queries, torch.Tensor) or queries.ndim != 2:
            shape = tuple(queries.shape) if isinstance(queries, torch.Tensor) else type(queries)
            raise ConfigError(
                f"queries must be a 2-D tensor (queries, dim), got {shape}: for one query "
                "pass query.unsqueeze(0)"
            )
        if queries.shape[1] != self.dim:
            raise ConfigError(
                f"queries have dimension {queries.shape[1]} but the index holds vectors of "
                f"dimension {self.dim}: embed them with the same model"
            )
        if not queries.is_floating_point():
            raise ConfigError(f"queries must be floating point, got {queries.dtype}")
        k = min(k, self.n)
        if self.backend == "faiss":
            scores, indices = self._faiss_index.search(self._to_numpy(queries), k)  # (Q, k)
            return torch.from_numpy(scores), torch.from_numpy(indices).long()
        queries = queries.detach().to(self.embeddings.device, self.embeddings.dtype)
        with torch.no_grad():
            return exact_search(self.embeddings, queries, k)

    # --8<-- [end:search]


class DenseRetriever:
    """Retrieval with sentence embeddings: texts and queries through the same encoder.

    Args:
        model: A BERT-style encoder, a :class:`~groundwork.models.bert.Bert` (e.g.
            ``groundwork.load("all-minilm-l6-v2").model``).
        tokenizer: Its WordPiece tokenizer.
        texts: The passages to search; embedded once, here.
        batch_size: Texts per forward pass when embedding.
        max_length: Longest input in tokens (longer texts are cut; 256 is what
            sentence-transformers uses for all-MiniLM-L6-v2).
        backend: Search backend of the :class:`DenseIndex`.

    Raises:
        EmptyCorpusError: No texts.
        ConfigError: ``model`` is not a :class:`~groundwork.models.bert.Bert`, or a bad
            ``batch_size``, ``max_length`` or ``backend``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        max_length: int = 256,
        backend: Backend = "exact",
    ) -> None:
        if not texts:
            raise EmptyCorpusError("DenseRetriever needs at least one text to index; got none")
        if backend not in BACKENDS:  # before the (slow) embedding of every text
            raise ConfigError(f"unknown backend {backend!r}: choose 'exact' or 'faiss'")
        positive_int("max_length", max_length)
        if not isinstance(model, Bert):
            raise ConfigError(
                f"DenseRetriever needs a BERT-style encoder (groundwork.models.bert.Bert), got "
                f"{type(model).__name__}: e.g. groundwork.load('all-minilm-l6-v2').model"
            )
        self.model: Bert = model
        self.tokenizer = tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.index = DenseIndex(self.embed(texts), backend=backend)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length embeddings ``(len(texts), d)`` of ``texts``."""
        return sentence_embeddings(
            self.model,
            self.tokenizer,
            texts,
            batch_size=self.batch_size,
            normalize=True,
            max_length=self.max_length,
        )

    def retrieve(self, query: str, k: int) -> list[Hit]:
        """The ``k`` passages most similar to ``query`` (cosine), best first."""
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """:meth:`retrieve` for several queries, embedded in batches.

        Raises:
            ConfigError: No queries, or ``k < 1``.
        """
        positive_int("k", k)
        if isinstance(queries, str):
            raise ConfigError("retrieve_many takes a list of queries, got a str: use retrieve")
        if not queries:
            raise ConfigError("no queries: pass at least one")
        scores, indices = self.index.search(self.embed(queries), k)  # (Q, k), (Q, k)
        return [
            [Hit(int(i), float(s)) for i, s in zip(row_i, row_s, strict=True)]
            for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True)
        ]
