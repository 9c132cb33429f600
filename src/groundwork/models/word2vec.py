"""word2vec: skip-gram and CBOW with negative sampling or hierarchical softmax, trained by hand.

Implements the two architectures and the two cheap replacements for the full softmax of

- Mikolov, Chen, Corrado, Dean (2013), "Efficient Estimation of Word Representations in Vector
  Space" (skip-gram, CBOW, hierarchical softmax over a Huffman tree), and
- Mikolov, Sutskever, Chen, Corrado, Dean (2013), "Distributed Representations of Words and Phrases
  and their Compositionality" (negative sampling with unigram^0.75 noise, subsampling of frequent
  words),

following the reference C code (``word2vec.c``) and gensim where the papers leave details open:
the dynamic (shrunk) window, the subsampling formula, the initialisation, the linear decay of the
learning rate from ``alpha`` to ``min_alpha`` and the exact updates.

There is no autograd and no optimizer here. The gradients of both losses are derived by hand
(:func:`negative_sampling_grads`, :func:`hierarchical_softmax_grads`; the tests compare them with
autograd) and applied as sparse SGD updates with ``index_add_``: a step takes a batch of many
(input, target) examples, computes all their dot products at once and adds the updates into the
rows they touch. Unlike the C code (one example at a time, so each update sees the previous one)
the examples of a batch all read the same parameters and the updates of a row that occurs
several times in a batch are summed. With a vocabulary of thousands of words and batches of a
few thousand examples that changes the result very little (chapter 3 measures it against
gensim); with a tiny vocabulary a large batch adds hundreds of updates to the same row at once
and can diverge (training then stops with a :class:`~groundwork.errors.TrainingError`).

Docs: chapter 3, "Word vectors and neural basics".
"""

import heapq
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from groundwork.errors import CheckpointError, ConfigError, EmptyCorpusError, TrainingError
from groundwork.fileio import atomic_path, atomic_write, write_json

Arch = Literal["skipgram", "cbow"]
Loss = Literal["negative", "hs"]


# --8<-- [start:config]
@dataclass(kw_only=True)
class Word2VecConfig:
    """Settings of a word2vec model and its training (defaults follow gensim 4)."""

    arch: Arch = "skipgram"
    """``"skipgram"`` (predict each context word from the centre word) or ``"cbow"`` (predict the
    centre word from the mean of its context words)."""
    loss: Loss = "negative"
    """``"negative"`` (negative sampling) or ``"hs"`` (hierarchical softmax)."""
    dim: int = 100
    """Dimension of the word vectors."""
    window: int = 5
    """Maximum distance between the centre word and a context word; each centre word draws its
    own window uniformly from 1..window (the dynamic window)."""
    negative: int = 5
    """Noise words per positive example (negative sampling only)."""
    ns_exponent: float = 0.75
    """Noise distribution: P(w) proportional to count(w) ** ns_exponent."""
    sample: float = 1e-3
    """Subsampling threshold t: words with frequency above t are randomly dropped; 0 disables."""
    min_count: int = 5
    """Words seen fewer times are dropped from the vocabulary (and from the text)."""
    max_vocab: int | None = None
    """Keep at most this many of the most frequent words (``None``: no limit)."""
    epochs: int = 5
    """Passes over the training text."""
    alpha: float = 0.025
    """Initial learning rate."""
    min_alpha: float = 0.0001
    """Learning rate at the end of training (linear decay from ``alpha``)."""
    batch_size: int = 2048
    """Training examples per sparse SGD step: centre words for CBOW; for skip-gram about this
    many (input, target) pairs (whole windows are kept together, so up to twice as many)."""
    max_row_updates: int = 32
    """Hierarchical softmax: an inner node that receives n > max_row_updates updates in one batch
    has their sum scaled by max_row_updates / n (the root is on every word's path, so it gets
    one update per example; summed at once they overshoot, see :meth:`Word2Vec._step`)."""
    seed: int = 1
    """Seed of the initialisation, subsampling, windows and noise samples."""

    def __post_init__(self) -> None:
        if self.arch not in ("skipgram", "cbow"):
            raise ConfigError(f"arch must be 'skipgram' or 'cbow', got {self.arch!r}")
        if self.loss not in ("negative", "hs"):
            raise ConfigError(f"loss must be 'negative' or 'hs', got {self.loss!r}")
        for name in ("dim", "window", "min_count", "epochs", "batch_size", "max_row_updates"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.loss == "negative" and (not isinstance(self.negative, int) or self.negative < 1):
            raise ConfigError(f"negative must be >= 1 with loss='negative', got {self.negative!r}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ConfigError(f"max_vocab must be >= 1 or None, got {self.max_vocab!r}")
        if self.sample < 0:
            raise ConfigError(f"sample must be >= 0 (0 disables subsampling), got {self.sample}")
        if not self.alpha > 0 or not 0 <= self.min_alpha <= self.alpha:
            raise ConfigError(
                f"need alpha > 0 and 0 <= min_alpha <= alpha, got alpha={self.alpha}, "
                f"min_alpha={self.min_alpha}"
            )


# --8<-- [end:config]


# --- vocabulary, noise distribution, subsampling ------------------------------------------------


@dataclass
class Vocab:
    """Words sorted by count, most frequent first (ties: first seen first, as in gensim).

    Attributes:
        words: ``words[i]`` is the word with id ``i``.
        counts: ``counts[i]`` is how often it occurs in the training text.
    """

    words: list[str]
    counts: list[int]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, sentence: Sequence[str]) -> list[int]:
        """Ids of the in-vocabulary words of ``sentence`` (out-of-vocabulary words are dropped)."""
        index = self.index
        return [index[w] for w in sentence if w in index]


def build_vocab(
    sentences: Iterable[Sequence[str]], *, min_count: int = 5, max_vocab: int | None = None
) -> Vocab:
    """Count words and keep those seen at least ``min_count`` times.

    >>> build_vocab([["a", "b", "a"], ["c", "a", "b"]], min_count=2).words
    ['a', 'b']

    Raises:
        EmptyCorpusError: The text has no words, or none reaches ``min_count``.
    """
    counts: Counter[str] = Counter()
    for sentence in sentences:
        counts.update(sentence)
    if not counts:
        raise EmptyCorpusError("the training text has no words; give word2vec some text")
    kept = [(w, c) for w, c in counts.items() if c >= min_count]  # insertion order = first seen
    if not kept:
        raise EmptyCorpusError(
            f"no word occurs at least min_count={min_count} times ({len(counts)} distinct words, "
            f"the most frequent {counts.most_common(1)[0][1]} times); lower min_count or add text"
        )
    kept.sort(key=lambda wc: -wc[1])  # stable: ties keep first-seen order
    if max_vocab is not None:
        kept = kept[:max_vocab]
    return Vocab([w for w, _ in kept], [c for _, c in kept])


# --8<-- [start:noise]
def noise_distribution(counts: Sequence[int], exponent: float = 0.75) -> torch.Tensor:
    """The negative-sampling noise distribution P_n(w) = count(w)^0.75 / sum_v count(v)^0.75.

    Raising counts to 3/4 flattens the unigram distribution: rare words are drawn more often than
    their frequency. Counts 16 and 1 give 8 : 1 instead of 16 : 1.

    >>> noise_distribution([16, 1]).tolist()
    [0.8888888888888888, 0.1111111111111111]
    """
    p = torch.tensor(counts, dtype=torch.float64) ** exponent
    return p / p.sum()


# --8<-- [end:noise]


# --8<-- [start:subsample]
def keep_probabilities(counts: Sequence[int], sample: float) -> torch.Tensor:
    """Probability of keeping each occurrence of a word when subsampling frequent words.

    With f(w) = count(w) / total and threshold t (``sample``), word2vec.c and gensim keep a word
    with probability

        P_keep(w) = (sqrt(f(w) / t) + 1) * t / f(w)      (clipped to 1),

    a smoothed version of the paper's 1 - P_discard = sqrt(t / f). Words with f <= t are always
    kept; ``sample=0`` keeps everything. With counts [1000, 10] (total 1010) and t = 0.01:
    f = 1000/1010, t/f = 0.0101, P_keep = (sqrt(1/0.0101) + 1) * 0.0101 = 0.1106.
    """
    c = torch.tensor(counts, dtype=torch.float64)
    if sample <= 0:
        return torch.ones_like(c)
    threshold = sample * c.sum()  # t * total, in counts
    return (((c / threshold).sqrt() + 1) * threshold / c).clamp(max=1.0)


# --8<-- [end:subsample]


# --8<-- [start:lr]
def learning_rate(alpha: float, min_alpha: float, done: int, total: int) -> float:
    """Linear decay, as word2vec.c and gensim: alpha_t = alpha - (alpha - min_alpha) * done/total.

    ``done`` counts the raw words of the text already processed over all epochs (before
    subsampling), ``total`` is ``epochs`` times the words in the text.

    >>> learning_rate(0.025, 0.0001, 0, 100), learning_rate(0.025, 0.0001, 100, 100)
    (0.025, 0.0001)
    """
    return max(min_alpha, alpha - (alpha - min_alpha) * done / max(total, 1))


# --8<-- [end:lr]


# --- Huffman tree -------------------------------------------------------------------------------


@dataclass
class HuffmanTree:
    """The binary tree of hierarchical softmax.

    Attributes:
        codes: ``codes[w]`` is the path from the root to leaf ``w``: 0 = left, 1 = right.
        points: ``points[w]`` are the inner nodes on that path (ids ``0..V-2``, root = ``V-2``);
            ``points[w][j]`` is the node at which the ``j``-th bit ``codes[w][j]`` is decided.
    """

    codes: list[list[int]]
    points: list[list[int]]


# --8<-- [start:huffman]
def huffman_tree(counts: Sequence[int]) -> HuffmanTree:
    """Build the Huffman tree over word counts (Mikolov et al. 2013a, as in word2vec.c).

    Repeatedly merge the two least frequent nodes into a new inner node; the first popped
    becomes the left child (bit 0), the second the right child (bit 1). Inner node ``k`` (the
    ``k``-th merge) has id ``k``, so the root is ``V - 2``. Frequent words end up near the root:
    short codes, few sigmoids per prediction (about log2 V on average).

    Worked example, ids 0..3 = a, b, c, d with counts 4, 2, 1, 1 (ties: the older node first):
    merge c + d -> inner node 0 (count 2); merge b (2) + node 0 (2) -> node 1 (count 4); merge
    a (4) + node 1 (4) -> node 2, the root. Codes: a = 0, b = 10, c = 110, d = 111.

    >>> huffman_tree([4, 2, 1, 1]).codes
    [[0], [1, 0], [1, 1, 0], [1, 1, 1]]
    """
    n = len(counts)
    if n == 0:
        raise EmptyCorpusError("cannot build a Huffman tree over an empty vocabulary")
    if n == 1:  # one word: a single inner node with the word on the left
        return HuffmanTree(codes=[[0]], points=[[0]])
    # heap of (count, order, node): leaves are 0..n-1, inner nodes n..2n-2; order breaks ties
    heap = [(c, i, i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = [0] * (2 * n - 1)
    bit = [0] * (2 * n - 1)
    for k in range(n - 1):
        c1, _, left = heapq.heappop(heap)
        c2, _, right = heapq.heappop(heap)
        node = n + k
        parent[left], bit[left] = node, 0
        parent[right], bit[right] = node, 1
        heapq.heappush(heap, (c1 + c2, node, node))
    root = 2 * n - 2
    codes, points = [], []
    for w in range(n):
        code, path, node = [], [], w
        while node != root:  # walk up, then reverse to read root -> leaf
            code.append(bit[node])
            node = parent[node]
            path.append(node - n)  # inner node ids start at 0
        codes.append(code[::-1])
        points.append(path[::-1])
    return HuffmanTree(codes=codes, points=points)


# --8<-- [end:huffman]


# --- the two losses and their hand-derived gradients ---------------------------------------------


# --8<-- [start:ns_grads]
def negative_sampling_loss(
    h: torch.Tensor, u_pos: torch.Tensor, u_neg: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative-sampling loss summed over a batch.

    L = -log sigma(u_o . h) - sum_k log sigma(-u_k . h), with h the input vector, u_o the output
    vector of the true word and u_k those of k noise words.

    Args:
        h: Input vectors, ``(B, D)``.
        u_pos: Output vectors of the true words, ``(B, D)``.
        u_neg: Output vectors of the noise words, ``(B, K, D)``.
        valid: Optional ``(B, K)`` 0/1 weights of the noise terms (0 skips a noise word).
    """
    pos = (u_pos * h).sum(-1)  # (B,)
    neg = torch.einsum("bkd,bd->bk", u_neg, h)  # (B, K)
    neg_terms = torch.nn.functional.logsigmoid(-neg)  # (B, K)
    if valid is not None:
        neg_terms = neg_terms * valid
    return -(torch.nn.functional.logsigmoid(pos).sum() + neg_terms.sum())


def negative_sampling_grads(
    h: torch.Tensor, u_pos: torch.Tensor, u_neg: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`negative_sampling_loss`, derived by hand.

    With d/dx log sigma(x) = 1 - sigma(x) and d/dx log sigma(-x) = -sigma(x):

        dL/du_o = (sigma(u_o.h) - 1) h
        dL/du_k = sigma(u_k.h) h
        dL/dh   = (sigma(u_o.h) - 1) u_o + sum_k sigma(u_k.h) u_k

    i.e. with label t = 1 for the true word and 0 for noise, every output word j gets
    e_j = sigma(u_j.h) - t_j, dL/du_j = e_j h and dL/dh = sum_j e_j u_j. word2vec.c's update is
    u_j -= alpha e_j h, h -= alpha sum_j e_j u_j (its ``g = (label - f) * alpha`` is -alpha e_j).

    Returns:
        ``(dL/dh (B, D), dL/du_pos (B, D), dL/du_neg (B, K, D))``.
    """
    e_pos = torch.sigmoid((u_pos * h).sum(-1)) - 1  # (B,)
    e_neg = torch.sigmoid(torch.bmm(u_neg, h[:, :, None]).squeeze(2))  # (B, K)
    if valid is not None:
        e_neg = e_neg * valid
    grad_h = e_pos[:, None] * u_pos + torch.bmm(e_neg[:, None, :], u_neg).squeeze(1)  # (B, D)
    return grad_h, e_pos[:, None] * h, e_neg[:, :, None] * h[:, None, :]


# --8<-- [end:ns_grads]


# --8<-- [start:hs_grads]
def hierarchical_softmax_loss(
    h: torch.Tensor, nodes: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Hierarchical-softmax loss summed over a batch.

    P(w | h) = prod_j sigma((1 - 2 c_j) n_j . h) over the inner nodes n_j on the path to w with
    bits c_j (bit 0: go left with probability sigma(n.h); bit 1: right, sigma(-n.h)), so

        L = -sum_j log sigma((1 - 2 c_j) n_j . h).

    Args:
        h: Input vectors, ``(B, D)``.
        nodes: Inner-node vectors on each path, ``(B, L, D)`` (paths padded to length L).
        codes: The bits, ``(B, L)`` (float 0/1).
        mask: 1 where the path has a node, 0 in the padding, ``(B, L)``.
    """
    x = torch.einsum("bld,bd->bl", nodes, h)  # (B, L)
    return -(torch.nn.functional.logsigmoid((1 - 2 * codes) * x) * mask).sum()


def hierarchical_softmax_grads(
    h: torch.Tensor, nodes: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`hierarchical_softmax_loss`, derived by hand.

    Each node is a binary logistic regression with target t_j = 1 - c_j ("go left"):
    -log sigma(s x) with s = 1 - 2c has derivative -s (1 - sigma(s x)) = sigma(x) - (1 - c)
    (check both bits). So with e_j = sigma(n_j.h) - (1 - c_j):

        dL/dn_j = e_j h,     dL/dh = sum_j e_j n_j.

    word2vec.c writes ``g = (1 - code - f) * alpha`` = -alpha e_j.

    Returns:
        ``(dL/dh (B, D), dL/dnodes (B, L, D))``.
    """
    x = torch.bmm(nodes, h[:, :, None]).squeeze(2)  # (B, L)
    e = (torch.sigmoid(x) - (1 - codes)) * mask  # (B, L)
    return torch.bmm(e[:, None, :], nodes).squeeze(1), e[:, :, None] * h[:, None, :]


# --8<-- [end:hs_grads]


# --- the model ----------------------------------------------------------------------------------


class Word2Vec:
    """Word vectors (``input``, the result) and output vectors, trained by sparse SGD.

    ``input`` is word2vec.c's ``syn0``; ``output`` is ``syn1neg`` (one row per word, negative
    sampling) or ``syn1`` (one row per inner node of the Huffman tree, hierarchical softmax).

    Example:
        >>> sentences = [["king", "queen", "rules"], ["cat", "dog", "runs"]] * 50
        >>> model = Word2Vec.train(sentences, Word2VecConfig(dim=8, min_count=1, epochs=1))
        >>> model.vectors.shape
        torch.Size([6, 8])
    """

    def __init__(self, vocab: Vocab, config: Word2VecConfig) -> None:
        self.vocab = vocab
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        v, d = len(vocab), config.dim
        # word2vec.c: syn0 ~ U(-0.5/d, 0.5/d), output vectors start at zero
        self.input = (torch.rand(v, d, generator=gen, dtype=torch.float32) - 0.5) / d
        n_out = v if config.loss == "negative" else max(v - 1, 1)
        self.output = torch.zeros(n_out, d)
        self.tree: HuffmanTree | None = None
        if config.loss == "hs":
            self.tree = huffman_tree(vocab.counts)
            length = max(len(c) for c in self.tree.codes)
            self._points = torch.zeros(v, length, dtype=torch.long)  # (V, L)
            self._codes = torch.zeros(v, length)  # (V, L)
            self._mask = torch.zeros(v, length)  # (V, L)
            for w, (code, path) in enumerate(zip(self.tree.codes, self.tree.points, strict=True)):
                self._points[w, : len(path)] = torch.tensor(path)
                self._codes[w, : len(code)] = torch.tensor(code, dtype=torch.float32)
                self._mask[w, : len(code)] = 1
        else:
            p = noise_distribution(vocab.counts, config.ns_exponent)
            self._noise_cdf = torch.cumsum(p, 0).to(torch.float32)
            self._noise_cdf[-1] = 1.0
        self.words_trained = 0

    @property
    def vectors(self) -> torch.Tensor:
        """The word vectors, ``(V, D)`` (row ``i`` is ``vocab.words[i]``)."""
        return self.input

    # ----- training --------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        sentences: Sequence[Sequence[str]],
        config: Word2VecConfig | None = None,
        *,
        progress: bool = False,
    ) -> "Word2Vec":
        """Build the vocabulary from ``sentences`` (lists of words) and train.

        Raises:
            EmptyCorpusError: No words, or none reaches ``min_count``.
        """
        config = config or Word2VecConfig()
        vocab = build_vocab(sentences, min_count=config.min_count, max_vocab=config.max_vocab)
        model = cls(vocab, config)
        model.fit(sentences, progress=progress)
        return model

    def fit(self, sentences: Sequence[Sequence[str]], *, progress: bool = False) -> None:
        """Train for ``config.epochs`` passes over ``sentences`` with a linearly decaying rate."""
        cfg = self.config
        encoded = [self.vocab.encode(s) for s in sentences]
        ids = np.fromiter((i for s in encoded for i in s), dtype=np.int64)
        if ids.size == 0:
            raise EmptyCorpusError("no in-vocabulary word in the training text")
        lengths = np.array([len(s) for s in encoded], dtype=np.int64)
        sentence_of = np.repeat(np.arange(len(encoded)), lengths)  # sentence index per token
        keep_p = keep_probabilities(self.vocab.counts, cfg.sample).numpy()
        rng = np.random.default_rng(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        total = cfg.epochs * ids.size
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="word", desc="word2vec")
        for epoch in range(cfg.epochs):
            # subsampling: drop each occurrence with probability 1 - P_keep (before windowing)
            kept = rng.random(ids.size) < keep_p[ids]
            pos = np.flatnonzero(kept)  # positions of the kept tokens in the raw text
            words, sent = ids[pos], sentence_of[pos]
            # dynamic window: each centre draws b in 0..window-1 and uses window - b
            reach = cfg.window - rng.integers(0, cfg.window, size=words.size)
            for inputs, targets, raw_pos in self._examples(words, sent, reach, pos):
                done = epoch * ids.size + int(raw_pos)
                alpha = learning_rate(cfg.alpha, cfg.min_alpha, done, total)
                self._step(inputs, targets, alpha, gen)
                if bar is not None:
                    bar.n = done
                    bar.refresh()
            self.words_trained += int(ids.size)
            largest = max(self.input.abs().max().item(), self.output.abs().max().item())
            if not largest < 1e4:  # healthy entries are of order 1; NaN fails this test too
                raise TrainingError(
                    f"word2vec diverged in epoch {epoch + 1} (a vector entry reached "
                    f"{largest:.3g}): the "
                    f"{cfg.batch_size} examples of a batch add their updates to the same rows; "
                    "with a small vocabulary lower batch_size or alpha"
                )
        if bar is not None:
            bar.n = total
            bar.close()

    def _examples(
        self, words: np.ndarray, sent: np.ndarray, reach: np.ndarray, raw_pos: np.ndarray
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Batches of training examples in text order: ``(inputs, targets, raw position)``.

        Skip-gram: inputs ``(B,)`` context-word ids, targets ``(B,)`` centre-word ids (word2vec.c
        predicts the centre from each context word; over a whole text the pairs are the same set
        as centre -> context). CBOW: inputs ``(B, 2W)`` context ids (-1 = none), targets ``(B,)``.
        """
        cfg = self.config
        w = cfg.window
        offsets = np.concatenate([np.arange(-w, 0), np.arange(1, w + 1)])  # (2W,)
        n = words.size
        chunk = max(1, cfg.batch_size if cfg.arch == "cbow" else cfg.batch_size // w)
        carry_in: list[np.ndarray] = []
        carry_out: list[np.ndarray] = []
        carried = 0
        for start in range(0, n, chunk):
            centre = np.arange(start, min(start + chunk, n))  # (C,)
            ctx = centre[:, None] + offsets[None, :]  # (C, 2W)
            inside = (ctx >= 0) & (ctx < n)
            ctx_c = np.clip(ctx, 0, n - 1)
            ok = inside & (sent[ctx_c] == sent[centre][:, None])  # same sentence
            ok &= np.abs(offsets)[None, :] <= reach[centre][:, None]  # within the shrunk window
            if cfg.arch == "cbow":
                has = ok.any(1)
                ctx_ids = np.where(ok, words[ctx_c], -1)[has]  # (C', 2W)
                if ctx_ids.shape[0]:
                    yield (
                        torch.from_numpy(ctx_ids),
                        torch.from_numpy(words[centre[has]]),
                        int(raw_pos[centre[0]]),
                    )
                continue
            rows, cols = np.nonzero(ok)  # row-major: in text order of the centre
            carry_in.append(words[ctx_c[rows, cols]])
            carry_out.append(words[centre[rows]])
            carried += rows.size
            if carried >= cfg.batch_size or start + chunk >= n:
                if carried:
                    yield (
                        torch.from_numpy(np.concatenate(carry_in)),
                        torch.from_numpy(np.concatenate(carry_out)),
                        int(raw_pos[centre[0]]),
                    )
                carry_in, carry_out, carried = [], [], 0

    # --8<-- [start:step]
    @torch.no_grad()
    def _step(
        self, inputs: torch.Tensor, targets: torch.Tensor, alpha: float, gen: torch.Generator
    ) -> None:
        """One sparse SGD step on a batch: gather rows, hand-derived gradients, ``index_add_``."""
        if self.config.arch == "cbow":
            present = inputs >= 0  # (B, 2W)
            ctx = self.input[inputs.clamp(min=0)] * present[..., None]  # (B, 2W, D)
            h = ctx.sum(1) / present.sum(1, keepdim=True)  # (B, D): mean of the context
        else:
            h = self.input[inputs]  # (B, D)
        if self.config.loss == "negative":
            # noise words by inverse-CDF sampling of P_n; a noise word equal to the target is
            # skipped, as in word2vec.c
            u = torch.rand(targets.numel(), self.config.negative, generator=gen)
            noise = torch.searchsorted(self._noise_cdf, u).clamp(max=len(self.vocab) - 1)
            valid = (noise != targets[:, None]).float()  # (B, K)
            u_pos, u_neg = self.output[targets], self.output[noise]  # (B, D), (B, K, D)
            grad_h, grad_pos, grad_neg = negative_sampling_grads(h, u_pos, u_neg, valid)
            self.output.index_add_(0, targets, grad_pos, alpha=-alpha)
            rows = noise.reshape(-1)  # (B*K,)
            grads = grad_neg.reshape(-1, h.shape[1])  # (B*K, D)
        else:
            points = self._points[targets]  # (B, L)
            mask = self._mask[targets]  # (B, L)
            nodes = self.output[points]  # (B, L, D)
            grad_h, grad_nodes = hierarchical_softmax_grads(h, nodes, self._codes[targets], mask)
            rows = points.reshape(-1)  # (B*L,)
            grads = grad_nodes.reshape(-1, h.shape[1])  # (B*L, D)
            # nodes near the root are on (almost) every path: word2vec.c updates them once per
            # example, each update seeing the last; summing a whole batch at once overshoots, so
            # a node hit n > cap times gets its summed update scaled by cap / n
            hits = torch.bincount(rows, weights=mask.reshape(-1), minlength=self.output.shape[0])
            scale = (self.config.max_row_updates / hits.clamp(min=1)).clamp(max=1.0)  # (V-1,)
            grads = grads * scale[rows, None]
        self.output.index_add_(0, rows, grads, alpha=-alpha)
        if self.config.arch == "cbow":
            # word2vec.c adds the whole of -alpha dL/dh to every context word (not divided by
            # the number of context words, although h is their mean)
            flat = inputs.reshape(-1)  # (B*2W,)
            keep = flat >= 0
            per_ctx = grad_h[:, None, :].expand(-1, inputs.shape[1], -1).reshape(-1, h.shape[1])
            self.input.index_add_(0, flat[keep], per_ctx[keep], alpha=-alpha)
        else:
            self.input.index_add_(0, inputs, grad_h, alpha=-alpha)

    # --8<-- [end:step]

    # ----- queries ---------------------------------------------------------------------------

    def __getitem__(self, word: str) -> torch.Tensor:
        if word not in self.vocab:
            raise KeyError(f"{word!r} is not in the vocabulary ({len(self.vocab)} words)")
        return self.input[self.vocab.index[word]]

    def unit_vectors(self) -> torch.Tensor:
        """Word vectors scaled to length 1, ``(V, D)``."""
        return torch.nn.functional.normalize(self.input, dim=1)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(torch.nn.functional.cosine_similarity(self[a], self[b], dim=0))

    def nearest(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words with the highest cosine similarity to ``word`` (itself excluded)."""
        unit = self.unit_vectors()
        sims = unit @ unit[self.vocab.index[word]] if word in self.vocab else None
        if sims is None:
            raise KeyError(f"{word!r} is not in the vocabulary ({len(self.vocab)} words)")
        sims[self.vocab.index[word]] = -math.inf
        top = torch.topk(sims, min(k, len(self.vocab) - 1))
        return [
            (self.vocab.words[i], float(s)) for s, i in zip(top.values, top.indices, strict=True)
        ]

    # ----- saving and loading ----------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write ``vectors.safetensors`` (input and output vectors), ``vocab.json`` and
        ``word2vec_config.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "vectors.safetensors") as tmp:
            save_file({"input": self.input.contiguous(), "output": self.output.contiguous()}, tmp)
        write_json(
            directory / "vocab.json", {"words": self.vocab.words, "counts": self.vocab.counts}
        )
        write_json(directory / "word2vec_config.json", asdict(self.config))

    @classmethod
    def load(cls, directory: Path) -> "Word2Vec":
        """Load a model written by :meth:`save`.

        Raises:
            CheckpointError: A file is missing or does not match the others.
        """
        directory = Path(directory)
        try:
            cfg: dict[str, Any] = json.loads((directory / "word2vec_config.json").read_text())
            voc: dict[str, Any] = json.loads((directory / "vocab.json").read_text())
            tensors = load_file(directory / "vectors.safetensors")
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"cannot load word2vec vectors from {directory}: {e}; train with "
                "`groundwork word2vec --out DIR` first"
            ) from e
        model = cls(Vocab(voc["words"], voc["counts"]), Word2VecConfig(**cfg))
        if tensors.get("input") is None or tensors["input"].shape != model.input.shape:
            raise CheckpointError(
                f"{directory}/vectors.safetensors does not match vocab.json/config "
                f"({len(model.vocab)} words x {model.config.dim} dims expected)"
            )
        model.input = tensors["input"]
        model.output = tensors.get("output", model.output)
        return model

    def save_word2vec_format(self, path: Path) -> None:
        """Write the vectors in the text format of word2vec.c (``gensim`` loads it with
        ``KeyedVectors.load_word2vec_format(path)``): a header ``V D``, then ``word x1 ... xD``."""
        lines = [f"{len(self.vocab)} {self.config.dim}"]
        for word, row in zip(self.vocab.words, self.input.tolist(), strict=True):
            lines.append(word + " " + " ".join(f"{x:.6f}" for x in row))
        atomic_write(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))
