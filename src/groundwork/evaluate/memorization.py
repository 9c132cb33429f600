r"""Memorisation: how much of its training text a language model gives back, word for word.

Carlini et al. 2021 ("Extracting Training Data from Large Language Models") recovered names,
phone numbers and code verbatim from GPT-2 by sampling it and ranking the samples. Carlini et
al. 2022 ("Quantifying Memorization Across Neural Language Models") turned this into a
measurement. A string $s$ of the training data is **k-extractable** when, prompted with the $k$
tokens $p$ that come before it in the data, greedy decoding produces $s$ exactly:

$$ \operatorname{argmax\ decode}(f, p, |s|) = s, \qquad p = x_{i-k:i},\ s = x_{i:i+|s|}. $$

The fraction of training sequences that are extractable grows log-linearly with the model's
size, with the number of times a sequence is duplicated in the data, and with the prefix length
$k$ (a longer prompt pins down where in the data the model is). Kandpal et al. 2022
("Deduplicating Training Data Mitigates Privacy Risks in Language Models") show most of what is
extracted was duplicated, and that deduplicating the corpus cuts it sharply.

:func:`extraction_rate` estimates the fraction at one prefix length: it samples $n$ start
offsets $o$ of a token stream, prompts with ``tokens[o : o + k]``, greedily decodes
``suffix_len`` tokens and counts exact matches with the stream, with a Wilson 95% interval. Since
exact extraction of 50 tokens is rare for small models, it also reports how many suffix tokens
matched before the first mistake, on average. :func:`extraction_curve` measures several prefix
lengths on the *same* suffixes (as Carlini et al. 2022 do), :func:`plot_extraction` draws the
curves. Chapter 22 (Law and ethics: copyright, privacy).

Example (a model trained on a byte stream holding 50 copies of a card number, as the tests do;
``starts`` are where the copies begin)::

    result = extraction_rate(model, shards.tokens, prefix_len=18, suffix_len=13, offsets=starts)
    result.rate  # 1.0: "my card number is " is continued by the very number, every time
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from groundwork.errors import ConfigError
from groundwork.evaluate.bias import binomial_ci
from groundwork.fileio import atomic_path
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import generate

__all__ = [
    "ExtractionResult",
    "extraction_curve",
    "extraction_rate",
    "matched_prefix",
    "plot_extraction",
]


@dataclass
class ExtractionResult:
    """How many sampled training suffixes a model reproduced from their prefixes."""

    prefix_len: int
    """$k$: tokens of the training stream given as the prompt."""
    suffix_len: int
    """Tokens greedily decoded and compared with the stream."""
    n: int
    """Number of (prefix, suffix) samples."""
    extracted: int
    """Samples whose whole suffix was reproduced exactly."""
    rate: float
    """``extracted / n``."""
    ci: tuple[float, float]
    """Wilson 95% interval of ``rate``."""
    matched_prefix_len: float = 0.0
    """Mean number of suffix tokens matched before the first mismatch (``suffix_len`` when
    extracted): a finer signal when exact extraction is rare."""
    offsets: list[int] = field(default_factory=list)
    """Start of each sample's prefix in the stream."""
    matched: list[int] = field(default_factory=list)
    """Per sample, the suffix tokens matched before the first mismatch."""


def _stream_length(tokens: Sequence[int] | np.ndarray) -> int:
    return int(tokens.shape[0]) if isinstance(tokens, np.ndarray) else len(tokens)


def _window(tokens: Sequence[int] | np.ndarray, start: int, length: int) -> list[int]:
    """``tokens[start : start + length]`` as Python ints (a memmap slice is read only here)."""
    return [int(t) for t in tokens[start : start + length]]


def _check_lengths(prefix_len: int, suffix_len: int, n: int, batch_size: int) -> None:
    for name, value in [
        ("prefix_len", prefix_len),
        ("suffix_len", suffix_len),
        ("n", n),
        ("batch_size", batch_size),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _sample_starts(low: int, high: int, n: int, seed: int, what: str) -> list[int]:
    """``n`` distinct integers of ``[low, high]``, sorted, chosen by a seeded generator."""
    count = high - low + 1
    if n > count:
        raise ConfigError(f"n={n} samples asked for, but {what}: lower n or give more tokens")
    rng = np.random.default_rng(seed)
    return sorted(int(low + i) for i in rng.choice(count, size=n, replace=False))


def matched_prefix(generated: Sequence[int], target: Sequence[int]) -> int:
    """How many leading tokens of ``generated`` equal ``target``'s, up to the first mismatch.

    >>> matched_prefix([5, 6, 9, 8], [5, 6, 7, 8])
    2
    """
    count = 0
    for a, b in zip(generated, target, strict=False):
        if a != b:
            break
        count += 1
    return count


# --8<-- [start:extraction_rate]
def extraction_rate(
    model: nn.Module,
    tokens: Sequence[int] | np.ndarray,
    *,
    prefix_len: int,
    suffix_len: int = 50,
    n: int = 100,
    seed: int = 0,
    batch_size: int = 32,
    offsets: Sequence[int] | None = None,
) -> ExtractionResult:
    """The fraction of ``n`` sampled suffixes of ``tokens`` that ``model`` reproduces exactly.

    Each sample starts at an offset $o$: the model is prompted with ``tokens[o : o +
    prefix_len]`` and greedily decodes ``suffix_len`` tokens, which are compared with
    ``tokens[o + prefix_len : o + prefix_len + suffix_len]`` (Carlini et al. 2022's
    *k-extractable*, with $k$ = ``prefix_len``). The model is put in eval mode for the
    measurement and left as it was.

    Args:
        model: A causal LM :func:`~groundwork.generate.decode.generate` can decode from.
        tokens: The training token stream (a list, or a ``TokenShards(...).tokens`` memmap).
        prefix_len: Prompt length $k$ in tokens (at most the model's ``max_seq_len``).
        suffix_len: Tokens decoded and compared (Carlini et al. use 50).
        n: Number of samples, distinct offsets drawn uniformly (ignored with ``offsets``).
        seed: Seed of the offset sampling: the same seed gives the same offsets.
        batch_size: Prompts decoded together.
        offsets: Prefix starts to test instead of sampled ones (e.g. where a planted string
            begins).

    Returns:
        Counts, the rate with its Wilson 95% interval, and per-sample matched lengths.

    Raises:
        ConfigError: a length, ``n`` or ``batch_size`` below 1; a stream too short for ``n``
            distinct windows of ``prefix_len + suffix_len`` tokens; an offset whose window
            runs off the stream; a prefix longer than the model's context.
    """
    _check_lengths(prefix_len, suffix_len, n, batch_size)
    length, window = _stream_length(tokens), prefix_len + suffix_len
    last = length - window  # the last offset whose suffix ends inside the stream
    if offsets is None:
        what = (
            f"a stream of {length} tokens has {max(last + 1, 0)} start offsets for windows of "
            f"prefix_len + suffix_len = {prefix_len} + {suffix_len} tokens"
        )
        starts = _sample_starts(0, last, n, seed, what)
    else:
        starts = [int(o) for o in offsets]
        if not starts:
            raise ConfigError("offsets is empty: give at least one, or None to sample n")
        bad = [o for o in starts if not 0 <= o <= last]
        if bad:
            raise ConfigError(
                f"offset {bad[0]} is outside 0..{last}: a window of prefix_len + suffix_len = "
                f"{prefix_len} + {suffix_len} tokens must fit in the stream of {length} tokens"
            )
    config = GenerationConfig(max_new_tokens=suffix_len, temperature=0.0)  # greedy
    was_training = model.training
    model.eval()
    matched: list[int] = []
    try:
        for i in range(0, len(starts), batch_size):
            batch = starts[i : i + batch_size]
            prompts = [_window(tokens, o, prefix_len) for o in batch]
            out = generate(model, prompts, config)
            for o, generated in zip(batch, out.sequences, strict=True):
                target = _window(tokens, o + prefix_len, suffix_len)
                matched.append(matched_prefix(generated, target))
    finally:
        model.train(was_training)
    extracted = sum(m == suffix_len for m in matched)
    return ExtractionResult(
        prefix_len=prefix_len,
        suffix_len=suffix_len,
        n=len(starts),
        extracted=extracted,
        rate=extracted / len(starts),
        ci=binomial_ci(extracted, len(starts)),
        matched_prefix_len=sum(matched) / len(matched),
        offsets=starts,
        matched=matched,
    )


# --8<-- [end:extraction_rate]


def extraction_curve(
    model: nn.Module,
    tokens: Sequence[int] | np.ndarray,
    prefix_lens: Sequence[int],
    *,
    suffix_len: int = 50,
    n: int = 100,
    seed: int = 0,
    batch_size: int = 32,
) -> list[ExtractionResult]:
    """:func:`extraction_rate` at each prefix length, on the same ``n`` suffixes.

    The suffix starts are sampled once (they need ``max(prefix_lens)`` tokens before them), and
    each prefix length prompts with the tokens just before each suffix, so the curve shows what a
    longer prompt adds, not a different sample (Carlini et al. 2022, Figure 1c).

    Raises:
        ConfigError: no prefix lengths, or as :func:`extraction_rate`.
    """
    if not prefix_lens:
        raise ConfigError("prefix_lens is empty: give at least one prefix length")
    for k in prefix_lens:
        _check_lengths(k, suffix_len, n, batch_size)
    longest, length = max(prefix_lens), _stream_length(tokens)
    what = (
        f"a stream of {length} tokens has {max(length - longest - suffix_len + 1, 0)} suffix "
        f"starts with {longest} tokens (the longest prefix) before {suffix_len} suffix tokens"
    )
    suffix_starts = _sample_starts(longest, length - suffix_len, n, seed, what)
    return [
        extraction_rate(
            model,
            tokens,
            prefix_len=k,
            suffix_len=suffix_len,
            batch_size=batch_size,
            offsets=[t - k for t in suffix_starts],
        )
        for k in prefix_lens
    ]


def plot_extraction(
    curves: dict[str, list[ExtractionResult]], out: str | Path, *, metric: str = "rate"
) -> Path:
    """Extraction against prefix length, one line per model or condition. Written atomically as
    a PNG; returns its path.

    Args:
        curves: Name -> results at several prefix lengths.
        out: The PNG's path (its folder is made).
        metric: ``"rate"``: the fraction extracted, with Wilson 95% error bars; ``"matched"``:
            the mean number of suffix tokens reproduced before the first mistake
            (``matched_prefix_len``), the finer signal when exact extraction is rare.

    Raises:
        ConfigError: no curves, an empty one, or an unknown metric.
    """
    if not curves or any(not c for c in curves.values()):
        raise ConfigError("plot_extraction needs at least one non-empty curve")
    if metric not in ("rate", "matched"):
        raise ConfigError(f"metric must be 'rate' or 'matched', got {metric!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for name, results in curves.items():
        rows = sorted(results, key=lambda r: r.prefix_len)
        ks = [r.prefix_len for r in rows]
        if metric == "matched":
            ax.plot(ks, [r.matched_prefix_len for r in rows], "o-", label=name)
            continue
        rates = [r.rate for r in rows]
        below = [r.rate - r.ci[0] for r in rows]
        above = [r.ci[1] - r.rate for r in rows]
        ax.errorbar(ks, rates, yerr=[below, above], fmt="o-", capsize=3, label=name)
    suffix_lens = sorted({r.suffix_len for c in curves.values() for r in c})
    suffix = "/".join(map(str, suffix_lens))
    ax.set_xlabel("prefix length k (tokens)")
    if metric == "matched":
        ax.set_ylabel(f"suffix tokens matched (of {suffix})")
        ax.set_ylim(bottom=0)
    else:
        ax.set_ylabel(f"fraction extracted ({suffix}-token suffix)")
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
