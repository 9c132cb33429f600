"""Intrinsic evaluation of word vectors: analogies (3CosAdd) and word similarity (Spearman).

- Analogies: Mikolov, Chen, Corrado, Dean (2013), "Efficient Estimation of Word Representations
  in Vector Space" — the ``questions-words.txt`` test set (a : b :: c : ?), answered with 3CosAdd
  (Levy & Goldberg 2014, "Linguistic Regularities in Sparse and Explicit Word Representations"):
  the word closest in cosine to b - a + c, excluding a, b and c. Scored as in gensim's
  ``KeyedVectors.evaluate_word_analogies`` (case-insensitive, vocabulary restricted to the most
  frequent words, questions with an unknown word skipped and reported as coverage).
- Similarity: Finkelstein et al. (2002), "Placing Search in Context: The Concept Revisited"
  (WordSim-353) and Hill, Reichart, Korhonen (2015), "SimLex-999": Spearman's rank correlation
  between human scores and cosine similarities, pairs with an unknown word skipped and counted.

The three files ship with gensim and are part of the ``wiki-sample`` data source
(:func:`benchmark_file`). Docs: chapter 3, "Word vectors and neural basics".
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from groundwork.corpus.clean import read_text_file
from groundwork.corpus.fetch import fetch
from groundwork.errors import ConfigError, DataError

BENCHMARK_SOURCE = "wiki-sample"
ANALOGIES = "questions-words.txt"
WORDSIM353 = "wordsim353.tsv"
SIMLEX999 = "simlex999.txt"


def benchmark_file(name: str) -> Path:
    """Path of a word-vector benchmark file of the ``wiki-sample`` source (fetched once if needed).

    Args:
        name: ``"questions-words.txt"``, ``"wordsim353.tsv"`` or ``"simlex999.txt"``.
    """
    if name not in (ANALOGIES, WORDSIM353, SIMLEX999):
        raise ConfigError(
            f"unknown benchmark file {name!r}; choose {ANALOGIES}, {WORDSIM353} or {SIMLEX999}"
        )
    return fetch(BENCHMARK_SOURCE) / name


def _as_numpy(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().to(torch.float32).cpu().numpy()
    return np.asarray(vectors, dtype=np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _lookup(words: Sequence[str], restrict_vocab: int | None) -> dict[str, int]:
    """Lower-cased word -> row, over the first ``restrict_vocab`` words; when two words differ
    only in case the more frequent (earlier) one wins, as in gensim."""
    n = len(words) if restrict_vocab is None else min(restrict_vocab, len(words))
    table: dict[str, int] = {}
    for i in range(n - 1, -1, -1):  # reversed: earlier (more frequent) words overwrite later ones
        table[words[i].lower()] = i
    return table


# --- analogies ----------------------------------------------------------------------------------


@dataclass
class SectionScore:
    """Score of one section of the analogy file (e.g. ``capital-common-countries``).

    Attributes:
        name: Section name (the text after ``:`` in the file).
        correct: Questions answered correctly.
        evaluated: Questions whose four words are all in the (restricted) vocabulary.
        questions: Questions in the section.
    """

    name: str
    correct: int = 0
    evaluated: int = 0
    questions: int = 0

    @property
    def accuracy(self) -> float:
        """``correct / evaluated`` (0 when nothing was evaluated)."""
        return self.correct / self.evaluated if self.evaluated else 0.0

    @property
    def coverage(self) -> float:
        """``evaluated / questions``."""
        return self.evaluated / self.questions if self.questions else 0.0


@dataclass
class AnalogyResult:
    """Analogy scores per section and in total.

    Attributes:
        sections: One :class:`SectionScore` per section, in file order.
        total: The sum over all sections.
        malformed: Line numbers (1-based) that were skipped: not ``: section`` and not four
            words, or a question before the first section header.
        restrict_vocab: The vocabulary restriction used (``None``: none).
    """

    sections: list[SectionScore]
    total: SectionScore
    malformed: list[int] = field(default_factory=list)
    restrict_vocab: int | None = None

    @property
    def accuracy(self) -> float:
        """Total accuracy over the questions answered."""
        return self.total.accuracy

    @property
    def coverage(self) -> float:
        """Fraction of all questions whose words are all in the vocabulary."""
        return self.total.coverage

    def summary(self) -> str:
        """One line: accuracy, coverage, and the malformed lines if any."""
        line = (
            f"analogies: accuracy {self.accuracy:.2%} on {self.total.evaluated} of "
            f"{self.total.questions} questions (coverage {self.coverage:.1%})"
        )
        if self.malformed:
            line += f"; skipped {len(self.malformed)} malformed lines ({self.malformed[:5]}...)"
        return line


def read_analogies(
    path: Path,
) -> tuple[list[tuple[str, list[tuple[str, str, str, str]]]], list[int]]:
    """Parse an analogy file: ``: section`` headers, then lines of four words ``a b c d``.

    Malformed lines (not four words, or a question before any header) are skipped and returned
    by line number; blank lines are ignored.

    Returns:
        ``(sections, malformed)`` with ``sections = [(name, [(a, b, c, d), ...]), ...]``.

    Raises:
        DataError: The file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"analogy file {path} not found; fetch the 'wiki-sample' source")
    sections: list[tuple[str, list[tuple[str, str, str, str]]]] = []
    malformed: list[int] = []
    for n, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
            continue
        parts = line.lower().split()
        if len(parts) != 4 or not sections:
            malformed.append(n)
            continue
        sections[-1][1].append((parts[0], parts[1], parts[2], parts[3]))
    return sections, malformed


# --8<-- [start:analogy]
def evaluate_analogies(
    words: Sequence[str],
    vectors: torch.Tensor | np.ndarray,
    path: Path | None = None,
    *,
    restrict_vocab: int | None = 30000,
    batch_size: int = 1024,
) -> AnalogyResult:
    """Answer a : b :: c : ? with 3CosAdd and score per section (gensim's rules).

    The answer is argmax over x not in {a, b, c} of cos(x, b^ - a^ + c^) (^ = unit length),
    searched among the ``restrict_vocab`` most frequent words; questions with a word outside
    them are skipped (coverage < 1). Words are compared in lower case.

    Args:
        words: The vocabulary, most frequent first (row ``i`` of ``vectors`` is ``words[i]``).
        vectors: ``(V, D)`` word vectors.
        path: Analogy file; default gensim's ``questions-words.txt`` from ``wiki-sample``.
        restrict_vocab: Only the first (most frequent) this many words take part (gensim's
            ``restrict_vocab``); ``None`` uses all.
        batch_size: Questions scored per matrix product.
    """
    if restrict_vocab is not None and restrict_vocab < 1:
        raise ConfigError(f"restrict_vocab must be >= 1 or None, got {restrict_vocab}")
    sections, malformed = read_analogies(path or benchmark_file(ANALOGIES))
    table = _lookup(words, restrict_vocab)
    n = len(words) if restrict_vocab is None else min(restrict_vocab, len(words))
    unit = _unit(_as_numpy(vectors)[:n])  # (n, D)
    scores = []
    for name, questions in sections:
        score = SectionScore(name, questions=len(questions))
        known = [q for q in questions if all(w in table for w in q)]
        ids = np.array([[table[w] for w in q] for q in known], dtype=np.int64).reshape(-1, 4)
        for start in range(0, len(ids), batch_size):
            a, b, c, d = ids[start : start + batch_size].T  # each (Q,)
            query = _unit(unit[b] - unit[a] + unit[c])  # (Q, D)
            sims = query @ unit.T  # (Q, n)
            rows = np.arange(len(a))
            sims[rows, a] = sims[rows, b] = sims[rows, c] = -np.inf  # never answer a, b or c
            score.correct += int((sims.argmax(1) == d).sum())
        score.evaluated = len(known)
        scores.append(score)
    total = SectionScore(
        "total",
        correct=sum(s.correct for s in scores),
        evaluated=sum(s.evaluated for s in scores),
        questions=sum(s.questions for s in scores),
    )
    return AnalogyResult(scores, total, malformed, restrict_vocab)


# --8<-- [end:analogy]


# --- similarity ---------------------------------------------------------------------------------


# --8<-- [start:spearman]
def rankdata(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the average of the ranks they span.

    >>> rankdata([10, 20, 20, 5]).tolist()
    [2.0, 3.5, 3.5, 1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # runs of equal values: [start, end) in sorted order share the rank (start + 1 + end) / 2
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties averaged).

    rho = sum (r_i - mean r)(s_i - mean s) / sqrt(sum (r_i - mean r)^2 sum (s_i - mean s)^2)

    Raises:
        DataError: Fewer than two pairs, different lengths, or a constant input.
    """
    if len(x) != len(y) or len(x) < 2:
        raise DataError(
            f"spearman needs two equally long sequences of >= 2 values, got {len(x)}, {len(y)}"
        )
    r, s = rankdata(x), rankdata(y)
    r, s = r - r.mean(), s - s.mean()
    denom = np.sqrt((r * r).sum() * (s * s).sum())
    if denom == 0:
        raise DataError("spearman is undefined when one input is constant")
    return float((r * s).sum() / denom)


# --8<-- [end:spearman]


@dataclass
class SimilarityResult:
    """Spearman correlation of cosine similarity with human judgements.

    Attributes:
        name: The file's name.
        spearman: Rank correlation over the pairs whose two words are in the vocabulary.
        pairs: Pairs used.
        oov: Pairs skipped because a word is not in the (restricted) vocabulary.
        malformed: Line numbers (1-based) skipped because they are not ``word<TAB>word<TAB>score``.
    """

    name: str
    spearman: float
    pairs: int
    oov: int
    malformed: list[int] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """``pairs / (pairs + oov)``."""
        return self.pairs / (self.pairs + self.oov) if self.pairs + self.oov else 0.0

    def summary(self) -> str:
        """One line with the correlation and the counts."""
        line = (
            f"{self.name}: Spearman {self.spearman:.3f} on {self.pairs} pairs "
            f"({self.oov} skipped as out of vocabulary)"
        )
        if self.malformed:
            line += f"; skipped {len(self.malformed)} malformed lines"
        return line


def evaluate_similarity(
    words: Sequence[str],
    vectors: torch.Tensor | np.ndarray,
    path: Path | None = None,
    *,
    restrict_vocab: int | None = None,
) -> SimilarityResult:
    """Spearman correlation between cosine similarities and the human scores of a pair file.

    The file has lines ``word1<TAB>word2<TAB>score``; lines starting with ``#`` are comments.
    Pairs with a word outside the vocabulary are skipped and counted (gensim's
    ``evaluate_word_pairs`` does the same and reports their ratio).

    Args:
        words: The vocabulary, most frequent first.
        vectors: ``(V, D)`` word vectors.
        path: Pair file; default ``wordsim353.tsv`` from ``wiki-sample``.
        restrict_vocab: Only the first this many words count as known (``None``: all).

    Raises:
        DataError: The file is missing, or fewer than two pairs are in the vocabulary.
    """
    path = Path(path or benchmark_file(WORDSIM353))
    if not path.is_file():
        raise DataError(f"word-pair file {path} not found; fetch the 'wiki-sample' source")
    table = _lookup(words, restrict_vocab)
    unit = _unit(_as_numpy(vectors))
    gold, model, oov, malformed = [], [], 0, []
    for n, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.lower().split("\t")
        try:
            a, b, score = parts[0].strip(), parts[1].strip(), float(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (IndexError, ValueError):
            malformed.append(n)
            continue
        if a not in table or b not in table:
            oov += 1
            continue
        gold.append(score)
        model.append(float(unit[table[a]] @ unit[table[b]]))
    if len(gold) < 2:
        raise DataError(
            f"only {len(gold)} pairs of {path.name} are in the vocabulary ({oov} out of "
            "vocabulary); train on more text or lower min_count"
        )
    return SimilarityResult(path.name, spearman(gold, model), len(gold), oov, malformed)
