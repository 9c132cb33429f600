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
(:mod:`groundwork.models.word2vec_softmax`, with the noise distribution and the Huffman tree;
the tests compare them with autograd) and applied as sparse SGD updates with ``index_add_``: a
step takes a batch of many (input, target) examples (:mod:`groundwork.models.word2vec_examples`:
subsampling, dynamic windows, batches), computes all their dot products at once and adds the
updates into the rows they touch. Unlike the C code (one example at a time, so each update sees
the previous one) the examples of a batch all read the same parameters and the updates of a row
that occurs several times in a batch are summed. With a vocabulary of thousands of words and
batches of a few thousand examples that changes the result very little (chapter 3 measures it
against gensim); with a tiny vocabulary a large batch adds hundreds of updates to the same row at
once and can diverge (training then stops with a :class:`~groundwork.errors.TrainingError`).

The vocabulary is a :class:`groundwork.tokenize.words.Vocabulary` without special tokens (ties
in first-seen order, as gensim; unknown words are dropped). :meth:`Word2Vec.save` writes a run
directory (``config.yaml``, ``vectors.safetensors``, ``vocab.json``).

Docs: chapter 3, "Word vectors and neural basics".
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from groundwork.checks import positive_int
from groundwork.errors import CheckpointError, ConfigError, EmptyCorpusError, TrainingError
from groundwork.fileio import (
    atomic_path,
    atomic_write,
    read_json,
    read_yaml,
    write_json,
    write_yaml,
)
from groundwork.models.word2vec_examples import keep_probabilities, training_examples
from groundwork.models.word2vec_softmax import (
    HuffmanTree,
    hierarchical_softmax_grads,
    hierarchical_softmax_loss,
    huffman_tree,
    negative_sampling_grads,
    negative_sampling_loss,
    noise_distribution,
)
from groundwork.tokenize.words import Vocabulary, WordPattern, count_words

Arch = Literal["skipgram", "cbow"]
Loss = Literal["negative", "hs"]

CONFIG_FILE = "config.yaml"
"""The run directory's config: ``kind: word2vec`` and the :class:`Word2VecConfig` as ``model``."""
VECTORS_FILE = "vectors.safetensors"
"""Input and output vectors."""
VOCAB_FILE = "vocab.json"
"""The :class:`~groundwork.tokenize.words.Vocabulary` (words, counts, the splitting regex)."""
LEGACY_CONFIG_FILE = "word2vec_config.json"
"""Where directories written before run directories keep the config."""


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
            positive_int(name, getattr(self, name))
        if self.loss == "negative":  # hierarchical softmax draws no noise words
            positive_int("negative", self.negative)
        if self.max_vocab is not None:
            positive_int("max_vocab", self.max_vocab)
        if self.sample < 0:
            raise ConfigError(f"sample must be >= 0 (0 disables subsampling), got {self.sample}")
        if not self.alpha > 0 or not 0 <= self.min_alpha <= self.alpha:
            raise ConfigError(
                f"need alpha > 0 and 0 <= min_alpha <= alpha, got alpha={self.alpha}, "
                f"min_alpha={self.min_alpha}"
            )


# --8<-- [end:config]


# --- vocabulary and learning rate ---------------------------------------------------------------


def build_vocab(
    sentences: Iterable[Sequence[str]],
    *,
    min_count: int = 5,
    max_vocab: int | None = None,
    pattern: WordPattern | None = None,
) -> Vocabulary:
    """Count words and keep those seen at least ``min_count`` times (at most ``max_vocab``),
    most frequent first, ties in first-seen order (as gensim); no special tokens. ``pattern``
    records how the sentences were split from text (``None``: unknown).

    >>> build_vocab([["a", "b", "a"], ["c", "a", "b"]], min_count=2).tokens
    ['a', 'b']

    Raises:
        EmptyCorpusError: The text has no words, or none reaches ``min_count``.
    """
    counts = count_words(sentences)
    if not counts:
        raise EmptyCorpusError("the training text has no words; give word2vec some text")
    if max(counts.values()) < min_count:
        raise EmptyCorpusError(
            f"no word occurs at least min_count={min_count} times ({len(counts)} distinct words, "
            f"the most frequent {counts.most_common(1)[0][1]} times); lower min_count or add text"
        )
    return Vocabulary.from_counts(
        counts,
        min_count=min_count,
        max_words=max_vocab,
        specials=(),
        ties="first-seen",
        pattern=pattern,
    )


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

    def __init__(self, vocab: Vocabulary, config: Word2VecConfig) -> None:
        if vocab.counts is None or not len(vocab):
            raise ConfigError("word2vec needs a non-empty vocabulary with word counts")
        self.vocab = vocab
        self.config = config
        counts = vocab.counts
        gen = torch.Generator().manual_seed(config.seed)
        v, d = len(vocab), config.dim
        # word2vec.c: syn0 ~ U(-0.5/d, 0.5/d), output vectors start at zero
        self.input = (torch.rand(v, d, generator=gen, dtype=torch.float32) - 0.5) / d
        n_out = v if config.loss == "negative" else max(v - 1, 1)
        self.output = torch.zeros(n_out, d)
        self.tree: HuffmanTree | None = None
        if config.loss == "hs":
            self.tree = huffman_tree(counts)
            length = max(len(c) for c in self.tree.codes)
            self._points = torch.zeros(v, length, dtype=torch.long)  # (V, L)
            self._codes = torch.zeros(v, length)  # (V, L)
            self._mask = torch.zeros(v, length)  # (V, L)
            for w, (code, path) in enumerate(zip(self.tree.codes, self.tree.points, strict=True)):
                self._points[w, : len(path)] = torch.tensor(path)
                self._codes[w, : len(code)] = torch.tensor(code, dtype=torch.float32)
                self._mask[w, : len(code)] = 1
        else:
            p = noise_distribution(counts, config.ns_exponent)
            self._noise_cdf = torch.cumsum(p, 0).to(torch.float32)
            self._noise_cdf[-1] = 1.0
        self.words_trained = 0

    @property
    def vectors(self) -> torch.Tensor:
        """The word vectors, ``(V, D)`` (row ``i`` is ``vocab.tokens[i]``)."""
        return self.input

    # ----- training --------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        sentences: Sequence[Sequence[str]],
        config: Word2VecConfig | None = None,
        *,
        progress: bool = False,
        pattern: WordPattern | None = None,
    ) -> "Word2Vec":
        """Build the vocabulary from ``sentences`` (lists of words) and train.

        ``pattern``, the regex the sentences were split from text with, is kept in the
        vocabulary, so that a loaded model splits new text the same way.

        Raises:
            EmptyCorpusError: No words, or none reaches ``min_count``.
        """
        config = config or Word2VecConfig()
        vocab = build_vocab(
            sentences, min_count=config.min_count, max_vocab=config.max_vocab, pattern=pattern
        )
        model = cls(vocab, config)
        model.fit(sentences, progress=progress)
        return model

    def fit(self, sentences: Sequence[Sequence[str]], *, progress: bool = False) -> None:
        """Train for ``config.epochs`` passes over ``sentences`` with a linearly decaying rate."""
        cfg = self.config
        encoded = [self.vocab.ids(s) for s in sentences]  # out-of-vocabulary words dropped
        ids = np.fromiter((i for s in encoded for i in s), dtype=np.int64)
        if ids.size == 0:
            raise EmptyCorpusError("no in-vocabulary word in the training text")
        lengths = np.array([len(s) for s in encoded], dtype=np.int64)
        sentence_of = np.repeat(np.arange(len(encoded)), lengths)  # sentence index per token
        assert self.vocab.counts is not None  # checked in __init__
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
            batches = training_examples(
                words, sent, reach, pos, arch=cfg.arch, window=cfg.window, batch_size=cfg.batch_size
            )
            for inputs, targets, raw_pos in batches:
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
            (self.vocab.tokens[i], float(s)) for s, i in zip(top.values, top.indices, strict=True)
        ]

    # ----- saving and loading ----------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        """Write a run directory that :func:`groundwork.runs.load_run` reads: ``config.yaml``
        (``kind: word2vec``, the config as the model section), then :meth:`save_weights`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_yaml(directory / CONFIG_FILE, {"kind": "word2vec", "model": asdict(self.config)})
        self.save_weights(directory)
        return directory

    def save_weights(self, directory: Path) -> None:
        """Write ``vectors.safetensors`` (input and output vectors) and ``vocab.json``."""
        with atomic_path(Path(directory) / VECTORS_FILE) as tmp:
            save_file({"input": self.input.contiguous(), "output": self.output.contiguous()}, tmp)
        write_json(Path(directory) / VOCAB_FILE, self.vocab.to_json())

    @classmethod
    def load(
        cls, directory: Path, config: Word2VecConfig | None = None, *, weights: bool = True
    ) -> "Word2Vec":
        """Load a model written by :meth:`save` (``config``: instead of ``config.yaml``'s;
        ``weights=False``: freshly initialised vectors). Directories of older versions
        (``word2vec_config.json``, a vocabulary of ``words`` and ``counts``) load too.

        Raises:
            CheckpointError: A file is missing or does not match the others.
        """
        directory = Path(directory)
        try:
            if config is None and (directory / CONFIG_FILE).is_file():
                config = Word2VecConfig(**read_yaml(directory / CONFIG_FILE)["model"])
            elif config is None:  # written before run directories
                config = Word2VecConfig(**read_json(directory / LEGACY_CONFIG_FILE))
            voc = read_json(directory / VOCAB_FILE)
            if "words" in voc:  # written before tokenize.words.Vocabulary
                voc = {
                    "tokens": voc["words"],
                    "counts": voc["counts"],
                    "specials": [],
                    "pattern": None,
                }
            vocab = Vocabulary.from_json(voc)
            tensors = load_file(directory / VECTORS_FILE) if weights else {}
        except (OSError, ValueError, KeyError, TypeError, ConfigError, CheckpointError) as e:
            raise CheckpointError(
                f"cannot load word2vec vectors from {directory}: {e}; train with "
                "`groundwork word2vec --out DIR` first"
            ) from e
        model = cls(vocab, config)
        if not weights:
            return model
        if tensors.get("input") is None or tensors["input"].shape != model.input.shape:
            raise CheckpointError(
                f"{directory}/{VECTORS_FILE} does not match {VOCAB_FILE}/config "
                f"({len(model.vocab)} words x {model.config.dim} dims expected)"
            )
        model.input = tensors["input"]
        model.output = tensors.get("output", model.output)
        return model

    def save_word2vec_format(self, path: Path) -> None:
        """Write the vectors in the text format of word2vec.c (``gensim`` loads it with
        ``KeyedVectors.load_word2vec_format(path)``): a header ``V D``, then ``word x1 ... xD``."""
        lines = [f"{len(self.vocab)} {self.config.dim}"]
        for word, row in zip(self.vocab.tokens, self.input.tolist(), strict=True):
            lines.append(word + " " + " ".join(f"{x:.6f}" for x in row))
        atomic_write(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))


__all__ = [  # the softmax replacements are re-exported: they were defined here before
    "HuffmanTree",
    "Word2Vec",
    "Word2VecConfig",
    "build_vocab",
    "hierarchical_softmax_grads",
    "hierarchical_softmax_loss",
    "huffman_tree",
    "keep_probabilities",
    "learning_rate",
    "negative_sampling_grads",
    "negative_sampling_loss",
    "noise_distribution",
    "training_examples",
]
