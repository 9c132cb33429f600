"""n-gram language models: counts of every order, with add-k, Witten–Bell and Kneser–Ney smoothing.

An order-``n`` model predicts a token from the previous ``n - 1`` tokens only (the Markov
assumption). It is trained by counting, over token ids (words or subwords), and the counts are
smoothed so that no continuation gets probability zero:

* **add-k** (Laplace when ``k = 1``): add ``k`` to every count of the highest order.
* **Witten–Bell**, interpolated: a context that was followed by many different tokens leaves more
  probability to the lower order.
* **Kneser–Ney**, interpolated and *modified*: absolute discounting with three discounts
  ``D1, D2, D3+`` estimated from the counts of counts, and lower orders built from *continuation*
  counts (in how many different contexts a token appears, not how often); or one fixed discount
  for every order, as NLTK does.

Every text is padded with ``n - 1`` beginning-of-sequence ids ``<s>`` on the left and one
end-of-sequence id ``</s>`` on the right: ``</s>`` is predicted like any token (so the
probabilities of all finite texts add up to one), ``<s>`` is only ever context, never predicted.

The counting is done with numpy, not dictionaries of tuples (:mod:`groundwork.models.ngram_counts`:
each order's n-grams are sorted int64 keys, look-ups are ``np.searchsorted``); this module smooths
the counts into probabilities, samples, and saves.

References:
    * Jurafsky & Martin, "Speech and Language Processing" (3rd ed. draft), chapter 3, "N-gram
      Language Models".
    * Witten & Bell 1991, "The zero-frequency problem: estimating the probabilities of novel events
      in adaptive text compression".
    * Kneser & Ney 1995, "Improved backing-off for m-gram language modeling".
    * Chen & Goodman 1998, "An Empirical Study of Smoothing Techniques for Language Modeling"
      (Harvard TR-10-98): interpolated modified Kneser–Ney and its discount estimates.

Chapter 1 of the docs, section 1.6 "n-gram language models".
"""

import hashlib
import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from groundwork.checks import positive_int, positive_number
from groundwork.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    EmptyCorpusError,
    did_you_mean,
)
from groundwork.fileio import atomic_path
from groundwork.models.ngram_counts import NGramCounts, count_ngrams, lookup, ngram_windows

Smoothing = Literal["add-k", "witten-bell", "kneser-ney"]
SMOOTHINGS: tuple[str, ...] = ("add-k", "witten-bell", "kneser-ney")
FORMAT_VERSION = 1
#: Discounts used where the counts of counts cannot give an estimate in ``(0, c)`` (tiny corpora);
#: the same fallback as KenLM's ``--discount_fallback``.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass(kw_only=True)
class NGramConfig:
    """Order and smoothing of an n-gram model."""

    order: int = 3
    """``n``: the model conditions on the previous ``n - 1`` tokens (1 = unigram)."""
    smoothing: Smoothing = "kneser-ney"
    """``"add-k"``, ``"witten-bell"`` or ``"kneser-ney"`` (interpolated)."""
    k: float = 1.0
    """The pseudo-count of add-k smoothing (1 = Laplace); must be positive."""
    discount: float | None = None
    """Kneser–Ney: ``None`` estimates three discounts per order (modified KN, Chen & Goodman);
    a number in ``(0, 1)`` uses that one discount for every count and order (as NLTK does)."""

    def __post_init__(self) -> None:
        positive_int("order", self.order)
        if self.smoothing not in SMOOTHINGS:
            hint = did_you_mean(str(self.smoothing), SMOOTHINGS)
            raise ConfigError(f"unknown smoothing {self.smoothing!r}: {hint}")
        positive_number("k", self.k)
        if self.discount is not None and not (
            isinstance(self.discount, int | float) and 0 < self.discount < 1
        ):
            raise ConfigError(
                f"discount must lie strictly between 0 and 1 (or be None to estimate the three "
                f"modified Kneser-Ney discounts), got {self.discount!r}"
            )


def vocab_fingerprint(tokens: Iterable[str]) -> str:
    """A short hash of a vocabulary (its tokens in id order), stored with a model.

    Loading a model against text encoded with a different vocabulary is then caught
    (:meth:`NGramLM.check_vocabulary`) instead of silently giving wrong probabilities.

    >>> vocab_fingerprint(["<unk>", "the", "a"]) == vocab_fingerprint(["<unk>", "the", "a"])
    True
    """
    digest = hashlib.sha256()
    for token in tokens:
        digest.update(token.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()[:16]


# --8<-- [start:discounts]
def modified_kn_discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's discounts ``D1, D2, D3+`` from the counts of counts of one order.

    With ``n_r`` the number of n-grams seen exactly ``r`` times and ``Y = n1 / (n1 + 2 n2)``:
    ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3``. Where a count of counts is
    zero or an estimate falls outside ``(0, r)`` (tiny corpora), :data:`FALLBACK_DISCOUNTS`.
    """
    n1, n2, n3, n4 = (int(np.sum(counts == r)) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d_r < r for r, d_r in zip((1, 2, 3), d, strict=True)):
        return FALLBACK_DISCOUNTS
    return d


# --8<-- [end:discounts]


@dataclass
class _Order:
    """The smoothed statistics of one order ``m``: its n-grams and, per context, the sums."""

    keys: np.ndarray  # (G,) sorted int64: context_id * n_ids + word
    counts: np.ndarray  # (G,) the count this order is smoothed with (raw or continuation)
    denominator: np.ndarray  # (C,) per context: c(h), c(h) + N1+(h .) or c(h) + k |V|
    backoff: np.ndarray  # (C,) the weight of the lower order, per context
    discounts: tuple[float, float, float]  # D1, D2, D3+ (Kneser–Ney only)


class NGramLM:
    """An n-gram language model over token ids ``0 .. vocab_size - 1``.

    Example:
        >>> lm = NGramLM(NGramConfig(order=2, smoothing="witten-bell"))
        >>> lm = lm.fit([[0, 1, 2], [0, 1, 1]], vocab_size=3)
        >>> round(float(lm.distribution([0]).sum()), 12)
        1.0
    """

    def __init__(self, config: NGramConfig | None = None) -> None:
        self.config = config or NGramConfig()
        self.vocab_size = 0
        self.bos_id = -1
        self.eos_id = -1
        self.n_ids = 0
        self.fingerprint: str | None = None
        self.n_sequences = 0
        self.n_tokens = 0
        self._counts: NGramCounts | None = None  # raw and continuation counts of every order
        self._orders: list[_Order] = []

    # --- training ---------------------------------------------------------------------------

    @property
    def order(self) -> int:
        """``n``, the order of the model."""
        return self.config.order

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has given the model its counts."""
        return self._counts is not None

    def fit(
        self,
        sequences: Iterable[Sequence[int]],
        vocab_size: int,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        fingerprint: str | None = None,
    ) -> "NGramLM":
        """Count the n-grams of every order ``1..n`` in ``sequences`` and smooth them.

        Args:
            sequences: Token-id sequences (sentences, lines or documents), each padded with
                ``n - 1`` ``<s>`` and one ``</s>``.
            vocab_size: Every id of the text lies in ``range(vocab_size)``.
            bos_id: The ``<s>`` id; ``None`` reserves ``vocab_size`` (a new id). It is never
                predicted (unless it equals ``eos_id``, as GPT-2's ``<|endoftext|>`` does).
            eos_id: The ``</s>`` id; ``None`` reserves a new id after the vocabulary.
            fingerprint: The vocabulary's :func:`vocab_fingerprint`, saved with the model.

        Returns:
            ``self``.

        Raises:
            ConfigError: ``vocab_size`` is not positive or a given ``bos_id``/``eos_id`` is not in
                the vocabulary.
            EmptyCorpusError: The sequences hold no token.
            DataError: A token id lies outside ``range(vocab_size)``.
        """
        vocab_size = positive_int(
            "vocab_size", int(vocab_size) if isinstance(vocab_size, np.integer) else vocab_size
        )
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            if value is not None and not 0 <= value < vocab_size:
                raise ConfigError(
                    f"{name} {value} is not in the vocabulary (0..{vocab_size - 1}); "
                    "pass None to reserve a new id"
                )
        self.vocab_size = vocab_size
        next_id = vocab_size
        if bos_id is None:
            bos_id, next_id = next_id, next_id + 1
        if eos_id is None:
            eos_id, next_id = next_id, next_id + 1
        self.bos_id, self.eos_id, self.n_ids = int(bos_id), int(eos_id), next_id
        self.fingerprint = fingerprint

        windows, self.n_sequences = ngram_windows(
            sequences, self.order, self.bos_id, self.eos_id, self.vocab_size
        )
        self.n_tokens = len(windows) - self.n_sequences
        if self.n_tokens <= 0:
            raise EmptyCorpusError(
                f"no tokens to count ({self.n_sequences} sequences, all empty): "
                "give the model some training text"
            )
        self._counts = count_ngrams(windows, self.n_ids)
        self._smooth()
        return self

    def _smooth(self) -> None:
        """Per order: the counts it uses, their sum and the lower order's weight per context."""
        n, width, cfg = self.order, self.n_ids, self.config
        stats = self._check_fitted()
        self._orders = []
        for m in range(1, n + 1):
            keys = stats.keys[m - 1]
            # Kneser–Ney smooths the lower orders with continuation counts, the others raw counts
            use_cont = cfg.smoothing == "kneser-ney" and m < n
            counts = stats.continuation[m - 1] if use_cont else stats.raw[m - 1]
            ctx = keys // width  # (G,) the context id of each m-gram
            n_ctx = len(stats.context_keys[m - 1])
            total: np.ndarray = np.bincount(ctx, weights=counts, minlength=n_ctx).astype(np.float64)
            types = np.bincount(ctx, minlength=n_ctx).astype(np.float64)  # N1+(h .)
            discounts = (0.0, 0.0, 0.0)
            denominator: np.ndarray = total
            if cfg.smoothing == "witten-bell":
                denominator = total + types
                backoff = types / denominator
            elif cfg.smoothing == "kneser-ney":
                if cfg.discount is not None:
                    discounts = (cfg.discount,) * 3
                else:
                    discounts = modified_kn_discounts(counts)
                d = np.asarray(discounts)[np.minimum(counts, 3) - 1]  # (G,) D(c) for c >= 1
                # gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h)
                backoff = np.bincount(ctx, weights=d, minlength=n_ctx) / total
            else:  # add-k: no lower order
                denominator = total + cfg.k * self.n_outcomes
                backoff = np.zeros(n_ctx)
            self._orders.append(_Order(keys, counts, denominator, backoff, discounts))

    def n_ngrams(self, order: int) -> int:
        """The number of distinct n-grams of one order ``1..n``."""
        return len(self._check_fitted().keys[order - 1])

    def counts(self, order: int, *, continuation: bool = False) -> dict[tuple[int, ...], int]:
        """The counts of one order as ``{(h_1, ..., h_{m-1}, w): count}`` (for reading and tests).

        ``continuation=True`` gives Kneser–Ney's ``N1+(. h w)``, the number of distinct tokens
        seen before ``h w`` (orders below ``n`` only). Builds Python tuples: slow on big models.
        """
        counts = self._check_fitted()
        if not 1 <= order <= self.order or (continuation and order == self.order):
            top = self.order - 1 if continuation else self.order
            raise ConfigError(f"order must be between 1 and {top} here, got {order}")
        return counts.as_dict(order, continuation=continuation)

    # --- probabilities ----------------------------------------------------------------------

    def _check_fitted(self) -> NGramCounts:
        """The counts, or ``DataError`` if the model has none yet."""
        if self._counts is None:
            raise DataError("the model has no counts yet: call fit() or load() first")
        return self._counts

    @property
    def n_outcomes(self) -> int:
        """How many ids can be predicted: the vocabulary and ``</s>``, not ``<s>``."""
        return self.n_ids - (self.bos_id != self.eos_id and self.bos_id >= self.vocab_size)

    def _excluded(self) -> int | None:
        """The id that is never predicted (a reserved ``<s>``), if any."""
        return self.bos_id if self.n_outcomes < self.n_ids else None

    # --8<-- [start:interpolate]
    def _probs(self, windows: np.ndarray) -> np.ndarray:
        """``p(w | h)`` for every row ``(h, w)`` of the ``(N, n)`` windows, all orders at once.

        Interpolation, from the uniform distribution up to order ``n``; a context never seen in
        training passes the lower order's probability through unchanged.
        """
        n, width, cfg = self.order, self.n_ids, self.config
        context_keys = self._check_fitted().context_keys
        word = windows[:, n - 1]
        p = np.full(len(windows), 1.0 / self.n_outcomes)  # order 0: uniform
        context_id = np.zeros(len(windows), dtype=np.int64)
        seen = np.ones(len(windows), dtype=bool)  # is the context of this order in the counts?
        for m in range(1, n + 1):
            o = self._orders[m - 1]
            c = lookup(o.keys, o.counts, context_id * width + word, seen)  # (N,) c(h, w)
            denominator, backoff = o.denominator[context_id], o.backoff[context_id]
            if cfg.smoothing == "add-k":
                if m == n:  # (c(h w) + k) / (c(h) + k |V|); an unseen context gives uniform
                    p = np.where(seen, (c + cfg.k) / denominator, p)
            elif cfg.smoothing == "witten-bell":
                # p(w | h) = (c(h w) + N1+(h .) p_lower(w | h')) / (c(h) + N1+(h .))
                p = np.where(seen, c / denominator + backoff * p, p)
            else:
                # p(w | h) = max(c(h w) - D(c), 0) / c(h) + gamma(h) p_lower(w | h')
                d = np.asarray((0.0, *o.discounts))[np.minimum(c, 3).astype(np.int64)]
                p = np.where(seen, np.maximum(c - d, 0.0) / denominator + backoff * p, p)
            if m < n:  # the context one token longer
                ctx_keys = context_keys[m]
                key = context_id * width + windows[:, n - 1 - m]
                idx = np.minimum(np.searchsorted(ctx_keys, key), len(ctx_keys) - 1)
                seen &= ctx_keys[idx] == key
                context_id = np.where(seen, idx, 0)
        if self._excluded() is not None:
            p[word == self._excluded()] = 0.0  # <s> is context only, never predicted
        return p

    # --8<-- [end:interpolate]

    def _context_windows(self, context: Sequence[int], words: np.ndarray) -> np.ndarray:
        """Rows ``(h, w)``: the last ``n - 1`` context ids, padded on the left with ``<s>``."""
        n = self.order
        ctx = [int(t) for t in context][-(n - 1) :] if n > 1 else []
        ctx = [self.bos_id] * (n - 1 - len(ctx)) + ctx
        self._check_ids(ctx, allow_bos=True)
        rows = np.empty((len(words), n), dtype=np.int64)
        rows[:, : n - 1] = np.asarray(ctx, dtype=np.int64)
        rows[:, n - 1] = words
        return rows

    def _check_ids(self, ids: Sequence[int], allow_bos: bool = False) -> None:
        for t in ids:
            ok = 0 <= t < self.vocab_size or t == self.eos_id or (allow_bos and t == self.bos_id)
            if not ok:
                raise DataError(
                    f"token id {t} is outside the vocabulary (0..{self.vocab_size - 1}, "
                    f"</s> = {self.eos_id}); was the text encoded with this model's tokenizer?"
                )

    def prob(self, word: int, context: Sequence[int] = ()) -> float:
        """``p(word | context)``: the context's last ``n - 1`` ids count (padded with ``<s>``)."""
        self._check_fitted()
        self._check_ids([word])
        return float(self._probs(self._context_windows(context, np.asarray([word])))[0])

    def distribution(self, context: Sequence[int] = ()) -> np.ndarray:
        """The next-token distribution: a float64 vector of length ``n_ids`` that sums to one.

        Entry ``eos_id`` is the probability of ending the text; a reserved ``<s>`` gets zero.
        """
        self._check_fitted()
        return self._probs(self._context_windows(context, np.arange(self.n_ids)))

    def log_likelihood(self, sequences: Iterable[Sequence[int]]) -> tuple[float, int]:
        """The total natural-log probability of ``sequences`` and the number of predictions.

        Each sequence is padded as in :meth:`fit`; its ``</s>`` is predicted and counted.

        Raises:
            DataError: An id lies outside the vocabulary.
        """
        self._check_fitted()
        windows, _ = ngram_windows(sequences, self.order, self.bos_id, self.eos_id, self.vocab_size)
        if len(windows) == 0:
            return 0.0, 0
        logp = np.log(self._probs(windows))
        return float(logp.sum()), len(windows)

    def logprob(self, sequence: Sequence[int]) -> float:
        """``ln p(sequence, </s>)``: the natural-log probability of one whole sequence."""
        return self.log_likelihood([sequence])[0]

    def perplexity(self, sequences: Iterable[Sequence[int]]) -> float:
        """``exp(-(1/N) sum ln p)`` over every predicted token (``</s>`` included).

        Raises:
            EmptyCorpusError: ``sequences`` is empty.
        """
        total, n = self.log_likelihood(sequences)
        if n == 0:
            raise EmptyCorpusError("no sequences to compute a perplexity on")
        return math.exp(-total / n)

    def sample(
        self,
        context: Sequence[int] = (),
        n: int = 50,
        rng: np.random.Generator | int | None = None,
    ) -> list[int]:
        """Draw up to ``n`` ids after ``context`` (ancestral sampling), stopping at ``</s>``.

        The ``</s>`` is not included in the result.
        """
        self._check_fitted()
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        history = [int(t) for t in context]
        out: list[int] = []
        for _ in range(n):
            p = self.distribution(history)
            token = int(gen.choice(self.n_ids, p=p / p.sum()))
            if token == self.eos_id:
                break
            out.append(token)
            history.append(token)
        return out

    # --- saving -----------------------------------------------------------------------------

    def check_vocabulary(self, vocab_size: int, fingerprint: str | None = None) -> None:
        """Raise ``CheckpointError`` unless the model was trained with this vocabulary."""
        if vocab_size != self.vocab_size or (
            fingerprint is not None
            and self.fingerprint is not None
            and fingerprint != self.fingerprint
        ):
            raise CheckpointError(
                f"vocabulary mismatch: the model was trained with {self.vocab_size} ids "
                f"(fingerprint {self.fingerprint}), the text has {vocab_size} "
                f"(fingerprint {fingerprint}); encode the text with the model's own tokenizer"
            )

    def save(self, path: str | Path) -> None:
        """Write the counts and settings to one ``.npz`` file (no pickle), atomically."""
        counts = self._check_fitted()
        meta = {
            "format": "groundwork-ngram",
            "version": FORMAT_VERSION,
            "config": asdict(self.config),
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "fingerprint": self.fingerprint,
            "n_sequences": self.n_sequences,
            "n_tokens": self.n_tokens,
        }
        arrays = {"meta": np.asarray(json.dumps(meta)), **counts.to_arrays()}
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(
        cls, path: str | Path, *, vocab_size: int | None = None, fingerprint: str | None = None
    ) -> "NGramLM":
        """Read a model written by :meth:`save`; check the vocabulary when one is given.

        Raises:
            CheckpointError: The file is missing, is not a saved n-gram model, is corrupt, or
                was trained with a different vocabulary than ``vocab_size``/``fingerprint``.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: save a model there with NGramLM.save")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            meta: dict[str, Any] = json.loads(str(arrays["meta"]))
            if meta.get("format") != "groundwork-ngram":
                raise ValueError("not a groundwork n-gram model")
            model = cls(NGramConfig(**meta["config"]))
            model.vocab_size, model.bos_id = int(meta["vocab_size"]), int(meta["bos_id"])
            model.eos_id, model.fingerprint = int(meta["eos_id"]), meta["fingerprint"]
            model.n_sequences, model.n_tokens = int(meta["n_sequences"]), int(meta["n_tokens"])
            model.n_ids = max(model.vocab_size, model.bos_id + 1, model.eos_id + 1)
            model._counts = NGramCounts.from_arrays(arrays, model.order, model.n_ids)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, ConfigError) as err:
            raise CheckpointError(f"{path} is not a valid saved n-gram model: {err}") from err
        model._smooth()
        if vocab_size is not None:
            model.check_vocabulary(vocab_size, fingerprint)
        return model


__all__ = [
    "FALLBACK_DISCOUNTS",
    "SMOOTHINGS",
    "NGramConfig",
    "NGramLM",
    "Smoothing",
    "modified_kn_discounts",
    "vocab_fingerprint",
]
