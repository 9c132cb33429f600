r"""Okapi BM25 (Robertson et al. 1994), scored eagerly from a precomputed sparse index.

BM25 scores a document $d$ for a query $q = (q_1, \dots, q_m)$ by summing, over the query
tokens (a repeated token counts each time, an unknown one adds nothing), the token's inverse
document frequency times a saturating function of its frequency $f(q_i, d)$ in the document:

$$\mathrm{score}(d, q) = \sum_{i=1}^{m} \mathrm{idf}(q_i)\,
  \frac{f(q_i, d)\,(k_1 + 1)}{f(q_i, d) + k_1 \left(1 - b + b\,\frac{|d|}{\mathrm{avgdl}}\right)},
\qquad \mathrm{idf}(t) = \log(N - n_t + 0.5) - \log(n_t + 0.5)$$

with $N$ documents, $n_t$ of them containing $t$, $|d|$ the length of $d$ in tokens and avgdl the
average length. $k_1$ (default 1.5) sets how fast repeated occurrences saturate, $b$ (0.75) how
much long documents are penalised. A token in more than half the documents would get a negative
idf; as ``rank_bm25.BM25Okapi`` does, its idf is replaced by $\varepsilon$ times the average idf
of the vocabulary ($\varepsilon = 0.25$). Scores are tested equal to ``rank_bm25.BM25Okapi``'s
(to 1e-9, in practice bit for bit).

The fraction above depends only on the term and the document, so it is computed once, at
indexing time, for every (term, document) pair that occurs, the "eager" sparse scoring of bm25s
(Lù 2024, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring"). The
index holds, term by term (CSR layout), the documents containing the term and the term's weight
in each; scoring a query gathers the postings of its tokens and sums them per document
(``np.bincount``) instead of passing over every document for every token.

Chapter 15 (Prompting, agents and retrieval).
"""

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from groundwork.checks import in_range, positive_int
from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.retrieval.base import Hit

_WORD = re.compile(r"\w+")


def bm25_tokenize(text: str) -> list[str]:
    """The default tokenizer: lower-cased runs of word characters (``\\w+``).

    It is the tokenisation of the parity tests against ``rank_bm25`` and of the benchmark.

    >>> bm25_tokenize("Hello, World! It's 2024.")
    ['hello', 'world', 'it', 's', '2024']
    """
    return _WORD.findall(text.lower())


# --8<-- [start:top_k]
def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, ties broken by the lower index.

    The k-th best score is found by a partial selection (``torch.topk``, linear time and faster
    than ``np.partition`` on the many equal zeros of a BM25 score vector); every score at least
    as good is then sorted by (score descending, index ascending).

    >>> top_k(np.array([1.0, 3.0, 2.0, 3.0]), 3)
    array([1, 3, 2])
    """
    n = len(scores)
    k = min(k, n)
    if k < n:
        kth = torch.topk(torch.from_numpy(scores), k, sorted=False).values.min().item()
        candidates = np.flatnonzero(scores >= kth)  # ascending; ties at kth all kept
    else:
        candidates = np.arange(n)
    order = np.argsort(-scores[candidates], kind="stable")  # stable: lower index first on ties
    return candidates[order[:k]]


# --8<-- [end:top_k]


class BM25:
    """An Okapi BM25 index over tokenised documents.

    Args:
        corpus: The documents, each a sequence of tokens.
        k1: Term-frequency saturation, >= 0.
        b: Length normalisation, in [0, 1].
        epsilon: Negative idfs become ``epsilon`` times the average idf.

    Attributes:
        n_docs: Number of documents.
        avgdl: Average document length in tokens.
        idf: The idf of every term of the corpus (after the epsilon floor).
        average_idf: The average idf before the floor.

    Raises:
        EmptyCorpusError: No documents, or no document holds a token.
        ConfigError: ``k1`` or ``b`` out of range.

    Example:
        >>> bm25 = BM25([["a", "cat"], ["a", "dog"], ["the", "dog", "barks"], ["a"], ["fish"]])
        >>> bm25.search(["dog"], 2)[0]  # the shorter document first
        array([1, 2])
    """

    # --8<-- [start:index]
    def __init__(
        self,
        corpus: Sequence[Sequence[str]],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> None:
        if not corpus:
            raise EmptyCorpusError("BM25 needs at least one document; the corpus is empty")
        if any(isinstance(doc, str) for doc in corpus):
            raise ConfigError(
                "BM25 takes tokenised documents (sequences of tokens), got a str: tokenise it "
                "(bm25_tokenize) or use BM25Retriever over raw texts"
            )
        number = isinstance(k1, int | float) and not isinstance(k1, bool)
        if not (number and math.isfinite(k1) and k1 >= 0):
            raise ConfigError(f"k1 must be a finite number >= 0, got {k1!r}")
        self.k1, self.b = float(k1), in_range("b", b, 0.0, 1.0)
        self.epsilon = float(epsilon)
        self.n_docs = len(corpus)

        # term ids in order of first appearance (the order rank_bm25 sums the idfs in)
        self.vocab: dict[str, int] = {}
        term_ids = np.array(
            [self.vocab.setdefault(t, len(self.vocab)) for doc in corpus for t in doc],
            dtype=np.int64,
        )  # (total tokens,)
        doc_len = np.array([len(doc) for doc in corpus], dtype=np.int64)  # (N,)
        if not self.vocab:
            raise EmptyCorpusError(
                f"none of the {self.n_docs} documents holds a token: check the tokenizer"
            )
        self.avgdl = int(doc_len.sum()) / self.n_docs
        doc_ids = np.repeat(np.arange(self.n_docs, dtype=np.int64), doc_len)  # (total tokens,)

        # (term, doc) pairs sorted by term then document, with the term's frequency in the doc
        pairs, tf = np.unique(term_ids * self.n_docs + doc_ids, return_counts=True)
        pair_term, self.doc_ids = np.divmod(pairs, self.n_docs)  # (P,), (P,)
        df = np.bincount(pair_term, minlength=len(self.vocab))  # (V,): n_t
        self.indptr = np.concatenate([[0], np.cumsum(df)])  # (V + 1,): term t at [t], [t + 1])

        # idf(t) = log(N - n_t + 0.5) - log(n_t + 0.5); negative ones -> epsilon * average
        idf = [math.log(self.n_docs - n + 0.5) - math.log(n + 0.5) for n in df.tolist()]
        idf_sum = 0.0
        for value in idf:  # a plain running sum, as rank_bm25 (not sum(): 3.12 compensates)
            idf_sum += value
        self.average_idf = idf_sum / len(idf)
        floor = self.epsilon * self.average_idf
        idf_array = np.array([v if v >= 0 else floor for v in idf])  # (V,)
        self.idf = dict(zip(self.vocab, idf_array.tolist(), strict=True))

        # the weight of term t in doc d, in rank_bm25's order of operations (same bits)
        length_norm = self.k1 * (1 - self.b + self.b * doc_len / self.avgdl)  # (N,)
        saturation = tf * (self.k1 + 1) / (tf + length_norm[self.doc_ids])  # (P,)
        self.weights = idf_array[pair_term] * saturation  # (P,)

    # --8<-- [end:index]

    # --8<-- [start:get_scores]
    def get_scores(self, query: Sequence[str]) -> np.ndarray:
        """The BM25 score of every document for ``query`` (a sequence of tokens).

        Returns:
            Scores ``(n_docs,)`` in float64; 0 for documents sharing no token with the query.

        Raises:
            ConfigError: ``query`` is a str rather than its tokens.
        """
        if isinstance(query, str):
            raise ConfigError(
                "get_scores takes the query's tokens, got a str: pass bm25_tokenize(query)"
            )
        known = [self.vocab[t] for t in query if t in self.vocab]  # unknown terms add 0
        if not known:
            return np.zeros(self.n_docs)
        postings = [slice(self.indptr[t], self.indptr[t + 1]) for t in known]
        docs = np.concatenate([self.doc_ids[p] for p in postings])  # (P_q,)
        weights = np.concatenate([self.weights[p] for p in postings])  # (P_q,)
        # bincount adds each document's weights in order: the same sums, bit for bit, as
        # rank_bm25's loop over the query tokens (a repeated token counted each time)
        scores = np.bincount(docs, weights=weights, minlength=self.n_docs)  # (N,)
        return scores

    # --8<-- [end:get_scores]

    def search(self, query: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best documents for ``query``.

        Args:
            query: The query's tokens.
            k: How many documents (capped at ``n_docs``).

        Returns:
            ``(indices, scores)``, each ``(min(k, n_docs),)``, best first; equal scores in
            document order.

        Raises:
            ConfigError: ``k`` is not a positive integer.
        """
        positive_int("k", k)
        scores = self.get_scores(query)
        indices = top_k(scores, k)
        return indices, scores[indices]


class BM25Retriever:
    """BM25 over raw texts: tokenises the texts and the queries with the same function.

    Args:
        texts: The passages to search.
        tokenize: Text to tokens (default :func:`bm25_tokenize`).
        k1: See :class:`BM25`.
        b: See :class:`BM25`.
        epsilon: See :class:`BM25`.

    Raises:
        EmptyCorpusError: No texts, or no token in any of them.
        ConfigError: ``k1`` or ``b`` out of range.
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        tokenize: Callable[[str], list[str]] = bm25_tokenize,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> None:
        if not texts:
            raise EmptyCorpusError("BM25Retriever needs at least one text; got none")
        self.tokenize = tokenize
        self.index = BM25([tokenize(t) for t in texts], k1=k1, b=b, epsilon=epsilon)

    def retrieve(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first."""
        indices, scores = self.index.search(self.tokenize(query), k)
        return [Hit(int(i), float(s)) for i, s in zip(indices, scores, strict=True)]
