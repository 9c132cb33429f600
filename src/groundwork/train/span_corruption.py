r"""Span corruption, T5's pretraining objective (Raffel et al. 2020, §3.1.4 and §3.3).

A sequence of ``L`` tokens is corrupted by dropping a fraction ``noise_density`` (15%) of them,
in spans whose mean length is ``mean_noise_span_length`` (3). Each dropped span is replaced in the
encoder's input by one *sentinel* token, a vocabulary entry of its own; the decoder's target lists
each sentinel followed by the tokens it stands for::

    original   Thank you for inviting me to your party last week .
    inputs     Thank you <X> me to your party <Y> week . </s>
    targets    <X> for inviting <Y> last </s>

The noise mask is drawn exactly as T5's released ``t5.data.preprocessors.random_spans_noise_mask``:

$$ n_\text{noise} = \operatorname{clip}(\operatorname{round}(L\,\rho),\ 1,\ L-1), \qquad
   n_\text{spans} = \max\bigl(1, \operatorname{round}(n_\text{noise} / \mu)\bigr) $$

(rounding half to even, in float32 as the reference's ``tf.round(tf.cast(..., tf.float32))``);
the ``n_noise`` noise tokens are cut into ``n_spans`` non-empty spans by a uniformly random
composition (shuffle ``n_spans - 1`` "first of a segment" flags among the ``n_noise - 1`` gaps),
the ``L - n_noise`` kept tokens likewise, and the two lists of spans are interleaved starting
with kept tokens, so the first token is never noise and the last always is. Every sequence of a
given length therefore has the same number of noise tokens and spans, hence the same input and
target lengths: :func:`compute_input_and_target_lengths` (T5's ``random_spans_helper``) finds
the raw length whose corrupted input is a wanted length, so batches need no padding
(``inputs_length=512`` reads 568 raw tokens and gives 114 target tokens).

Sentinels count down from ``sentinel_start``: ``<extra_id_0>`` is the last id of the tokenizer
(32099 in T5's 32100, whose embedding matrix is padded to 32128 rows), ``<extra_id_1>`` the one
before, and so on; EOS ends both sequences.
One difference from the reference: where ``n_spans`` would exceed the number of kept tokens
(only at noise densities above one half, where the reference fails), it is lowered to that number.

Chapter 6 (Model families: the encoder-decoder) and chapter 8 (Training).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from groundwork.checks import in_range, positive_int, positive_number
from groundwork.errors import ConfigError, DataError

__all__ = [
    "compute_input_and_target_lengths",
    "noise_span_counts",
    "random_spans_noise_mask",
    "restore_spans",
    "sentinel_spans",
    "span_corrupt",
]


def _round_f32(x: np.floating[Any]) -> int:
    """``tf.round`` of a float32: round half to even, in single precision."""
    return int(np.round(np.float32(x)))


# --8<-- [start:counts]
def noise_span_counts(
    length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """How many noise tokens and noise spans a sequence of ``length`` tokens gets.

    Example:
        >>> noise_span_counts(568), noise_span_counts(10), noise_span_counts(1)
        ((85, 28), (2, 1), (1, 1))
    """
    _check(noise_density, mean_noise_span_length)
    length = max(length, 2)  # as the reference: a length-1 sequence is masked as if of length 2
    density = np.float32(noise_density)
    num_noise = _round_f32(np.float32(length) * density)
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = _round_f32(np.float32(num_noise) / np.float32(mean_noise_span_length))
    num_spans = max(num_spans, 1)
    return num_noise, min(num_spans, num_noise, length - num_noise)


# --8<-- [end:counts]


def _check(noise_density: float, mean_noise_span_length: float) -> None:
    in_range("noise_density", noise_density, 0.0, 1.0, high_inclusive=False)
    if noise_density == 0:
        raise ConfigError("noise_density must be in (0, 1), got 0")
    positive_number("mean_noise_span_length", mean_noise_span_length)


def _random_segmentation(
    num_items: int, num_segments: int, generator: torch.Generator
) -> torch.Tensor:
    """Lengths of ``num_segments`` non-empty segments that partition ``num_items`` items, every
    composition equally likely: ``num_segments - 1`` of the ``num_items - 1`` gaps, chosen by a
    shuffle, start a new segment."""
    first = (torch.arange(num_items - 1) < num_segments - 1).long()  # (num_items - 1,)
    first = first[torch.randperm(num_items - 1, generator=generator)]
    segment_id = torch.cat([torch.zeros(1, dtype=torch.long), first]).cumsum(0)  # (num_items,)
    return torch.bincount(segment_id, minlength=num_segments)  # (num_segments,)


# --8<-- [start:noise_mask]
def random_spans_noise_mask(
    length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """T5's noise mask: ``(length,)`` bool, True on the tokens to drop, in random spans.

    Args:
        length: Tokens in the sequence (>= 1).
        noise_density: Fraction of the tokens that are noise, in (0, 1).
        mean_noise_span_length: Mean length of a noise span (> 0).
        generator: The only source of randomness (two shuffles: noise spans, then kept spans).
    """
    positive_int("length", length)
    orig_length, length = length, max(length, 2)
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)  # (S,)
    kept_lengths = _random_segmentation(length - num_noise, num_spans, generator)  # (S,)
    interleaved = torch.stack([kept_lengths, noise_lengths], dim=1).reshape(-1)  # (2S,)
    span_starts = interleaved.cumsum(0)[:-1]  # (2S - 1,) where each span after the first begins
    start_indicator = torch.zeros(length, dtype=torch.long)
    start_indicator[span_starts] = 1
    span_num = start_indicator.cumsum(0)  # (length,) 0 for the first kept span, 1 for noise, ...
    return (span_num % 2 == 1)[:orig_length]


# --8<-- [end:noise_mask]


def _spans_to_sentinels(
    tokens: torch.Tensor, mask: torch.Tensor, sentinel_start: int
) -> torch.Tensor:
    """Replace each run of True in ``mask`` by one sentinel (counting down from
    ``sentinel_start``), as the reference's ``noise_span_to_unique_sentinel``."""
    prev = torch.cat([mask.new_zeros(1), mask[:-1]])  # (L,) the previous token is masked
    first = mask & ~prev
    subsequent = mask & prev
    sentinel = sentinel_start + 1 - first.long().cumsum(0)  # (L,)
    out = torch.where(first, sentinel, tokens)
    return out[~subsequent]


# --8<-- [start:span_corrupt]
def span_corrupt(
    tokens: torch.Tensor, noise_mask: torch.Tensor, *, sentinel_start: int, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder inputs and decoder targets of a span-corrupted sequence, each ending with EOS.

    Args:
        tokens: ``(L,)`` token ids (none of them a sentinel).
        noise_mask: ``(L,)`` bool, True on noise (:func:`random_spans_noise_mask`).
        sentinel_start: Id of the first sentinel ``<extra_id_0>``; span ``k`` gets
            ``sentinel_start - k``.
        eos_id: End-of-sequence id appended to both.

    Returns:
        ``inputs``: the kept tokens with one sentinel per noise span, then EOS;
        ``targets``: for each span, its sentinel and its tokens, then EOS (a sequence that ends
        with kept tokens, which T5's masks never do, adds one more sentinel before EOS).

    Example:
        >>> x = torch.tensor([10, 11, 12, 13, 14, 15, 16])
        >>> m = torch.tensor([0, 1, 1, 0, 0, 1, 0]).bool()
        >>> inputs, targets = span_corrupt(x, m, sentinel_start=99, eos_id=1)
        >>> inputs.tolist(), targets.tolist()
        ([10, 99, 13, 14, 98, 16, 1], [99, 11, 12, 98, 15, 97, 1])
    """
    if tokens.shape != noise_mask.shape or tokens.dim() != 1:
        raise DataError(
            f"tokens and noise_mask must be 1-D of the same length, got {tuple(tokens.shape)} "
            f"and {tuple(noise_mask.shape)}"
        )
    noise_mask = noise_mask.bool()
    n_spans = int((noise_mask & ~torch.cat([noise_mask.new_zeros(1), noise_mask[:-1]])).sum())
    lowest = sentinel_start - n_spans  # the targets may use one sentinel more than the inputs
    if bool(((tokens >= lowest) & (tokens <= sentinel_start)).any()):
        raise DataError(
            f"the tokens include sentinel ids ({lowest}..{sentinel_start}); sentinels must be "
            "ids that text never encodes to (T5's <extra_id_*> at the top of the vocabulary)"
        )
    eos = tokens.new_full((1,), eos_id)
    inputs = _spans_to_sentinels(tokens, noise_mask, sentinel_start)
    targets = _spans_to_sentinels(tokens, ~noise_mask, sentinel_start)
    return torch.cat([inputs, eos]), torch.cat([targets, eos])


# --8<-- [end:span_corrupt]


def sentinel_spans(
    targets: Sequence[int], *, sentinel_start: int, num_sentinels: int, eos_id: int | None = None
) -> list[list[int]]:
    """Split a target sequence into the spans after each sentinel (stopping at ``eos_id``).

    >>> sentinel_spans([99, 11, 12, 98, 15, 1], sentinel_start=99, num_sentinels=10, eos_id=1)
    [[11, 12], [15]]
    """
    lowest = sentinel_start - num_sentinels + 1
    spans: list[list[int]] = []
    for t in targets:
        if t == eos_id:
            break
        if lowest <= t <= sentinel_start:
            if t != sentinel_start - len(spans):
                raise DataError(
                    f"sentinel {t} out of order: expected {sentinel_start - len(spans)}"
                )
            spans.append([])
        elif not spans:
            raise DataError("the targets must start with a sentinel")
        else:
            spans[-1].append(t)
    return spans


def restore_spans(
    inputs: Sequence[int],
    targets: Sequence[int],
    *,
    sentinel_start: int,
    num_sentinels: int = 100,
    eos_id: int | None = None,
) -> list[int]:
    """Undo :func:`span_corrupt`: put each target span back in place of its sentinel.

    >>> restore_spans([10, 99, 13, 14, 98, 16, 1], [99, 11, 12, 98, 15, 97, 1],
    ...               sentinel_start=99, num_sentinels=10, eos_id=1)
    [10, 11, 12, 13, 14, 15, 16]
    """
    spans = sentinel_spans(targets, sentinel_start=sentinel_start, num_sentinels=num_sentinels,
                           eos_id=eos_id)  # fmt: skip
    lowest = sentinel_start - num_sentinels + 1
    out: list[int] = []
    for t in inputs:
        if t == eos_id:
            break
        if lowest <= t <= sentinel_start:
            k = sentinel_start - t
            if k >= len(spans):
                raise DataError(f"sentinel {t} has no span in the targets")
            out.extend(spans[k])
        else:
            out.append(t)
    return out


# --8<-- [start:lengths]
def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """The raw length to corrupt so that the inputs (with EOS) have ``inputs_length`` tokens,
    and the length of the targets (with EOS): T5's ``random_spans_helper``.

    The largest ``tokens_length`` whose inputs (kept tokens, a sentinel per span, EOS) fit in
    ``inputs_length``. The counts are :func:`noise_span_counts`, the very ones the masks use, so
    every mask of that length gives inputs of the returned size (the reference recomputes them
    in double precision and without the clipping, which can differ by a token at some lengths).

    Example:
        >>> compute_input_and_target_lengths(512), compute_input_and_target_lengths(128)
        ((568, 114), (141, 29))
    """
    positive_int("inputs_length", inputs_length)
    if inputs_length < 3:
        raise ConfigError(
            f"inputs_length must be >= 3 (a token, a sentinel, EOS), got {inputs_length}"
        )

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise, num_spans = noise_span_counts(
            tokens_length, noise_density, mean_noise_span_length
        )
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    targets_length = lengths(tokens_length)[1]
    # the reference's "minor hack": at density 0.5 keep the targets no longer than the inputs
    # (the inputs are then a token short, and padded)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length = lengths(tokens_length)[1]
    return tokens_length, targets_length


# --8<-- [end:lengths]
