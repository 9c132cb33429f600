"""T5's span corruption: the noise and span counts of the reference formula (float32, half to
even), the mask's structure and randomness, inputs and targets that rebuild the original exactly,
the input/target lengths helper, determinism, and the error paths."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from groundwork.errors import ConfigError, DataError
from groundwork.train import (
    compute_input_and_target_lengths,
    noise_span_counts,
    random_spans_noise_mask,
    restore_spans,
    span_corrupt,
)
from groundwork.train.span_corruption import _random_segmentation, sentinel_spans


def reference_counts(length: int, density: float, mean: float) -> tuple[int, int]:
    """T5's formula, written out: float32 products, round half to even."""
    length = max(length, 2)
    noise = int(np.round(np.float32(length) * np.float32(density)))
    noise = min(max(noise, 1), length - 1)
    spans = max(int(np.round(np.float32(noise) / np.float32(mean))), 1)
    return noise, spans


def runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True."""
    out, n = [], 0
    for v in [*mask.tolist(), False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


@pytest.mark.parametrize("density", [0.05, 0.15, 0.3, 0.5])
@pytest.mark.parametrize("mean", [1.0, 3.0, 5.0])
def test_counts_follow_the_formula(density: float, mean: float) -> None:
    g = torch.Generator().manual_seed(0)
    for length in [*range(2, 120), 511, 568, 1024]:
        noise, spans = reference_counts(length, density, mean)
        spans = min(spans, length - noise)  # only binds where the reference would fail
        assert noise_span_counts(length, density, mean) == (noise, spans)
        mask = random_spans_noise_mask(length, density, mean, generator=g)
        assert mask.shape == (length,) and mask.dtype == torch.bool
        assert int(mask.sum()) == noise
        lengths = runs(mask)
        assert len(lengths) == spans and min(lengths) >= 1
        assert not mask[0] and mask[-1]  # kept tokens first, noise last
        assert len(runs(~mask)) == spans  # as many kept spans, none empty


def test_hand_worked_counts() -> None:
    assert noise_span_counts(568) == (85, 28)  # T5's 512-token inputs: 568 raw tokens
    assert noise_span_counts(10) == (2, 1)  # 10 * 0.15 = 1.5, rounded half to even: 2
    assert noise_span_counts(30) == (4, 1)  # 4.5 -> 4 (half to even), 4 / 3 -> 1
    # float32 as the reference: 190 * 0.15f = 28.500001 -> 29 (float64 gives 28.4999... -> 28)
    assert round(190 * 0.15) == 28 and noise_span_counts(190, 0.15, 1.0) == (29, 29)
    assert noise_span_counts(1) == (1, 1)
    assert random_spans_noise_mask(1, generator=torch.Generator()).tolist() == [False]


def test_one_span_is_at_the_end() -> None:
    # 10 tokens: 2 noise tokens in 1 span, 8 kept: the interleaving puts the noise last
    for seed in range(5):
        mask = random_spans_noise_mask(10, generator=torch.Generator().manual_seed(seed))
        assert mask.tolist() == [False] * 8 + [True] * 2


def test_mask_is_the_interleaving_of_two_random_compositions() -> None:
    length, g = 200, torch.Generator().manual_seed(7)
    noise, spans = noise_span_counts(length)  # 30 noise tokens in 10 spans
    replay = torch.Generator().set_state(g.get_state())
    mask = random_spans_noise_mask(length, generator=g)

    def composition(n: int) -> list[int]:
        flags = [i < spans - 1 for i in range(n - 1)]  # "first of a segment" for items 1..n-1
        flags = [flags[i] for i in torch.randperm(n - 1, generator=replay).tolist()]
        cuts = [0] + [i + 1 for i, f in enumerate(flags) if f] + [n]
        return [b - a for a, b in itertools.pairwise(cuts)]

    noise_lengths, kept_lengths = composition(noise), composition(length - noise)
    expected: list[bool] = []
    for kept, dropped in zip(kept_lengths, noise_lengths, strict=True):
        expected += [False] * kept + [True] * dropped
    assert mask.tolist() == expected


def test_segmentation_is_uniform_over_compositions() -> None:
    g = torch.Generator().manual_seed(0)
    n = 6000
    counts = Counter(tuple(_random_segmentation(5, 3, g).tolist()) for _ in range(n))
    assert len(counts) == 6  # the C(4, 2) compositions of 5 into 3 positive parts
    p = 1 / 6
    assert all(abs(c - n * p) <= 5 * math.sqrt(n * p * (1 - p)) for c in counts.values())
    assert all(sum(k) == 5 and min(k) >= 1 for k in counts)


def test_hand_worked_example() -> None:
    # "Thank you for inviting me to your party last week ." as ids 10..20
    tokens = torch.arange(10, 21)
    mask = torch.zeros(11, dtype=torch.bool)
    mask[[2, 3, 8]] = True  # "for inviting", "last"
    inputs, targets = span_corrupt(tokens, mask, sentinel_start=99, eos_id=1)
    assert inputs.tolist() == [10, 11, 99, 14, 15, 16, 17, 98, 19, 20, 1]
    assert targets.tolist() == [99, 12, 13, 98, 18, 97, 1]
    assert restore_spans(inputs.tolist(), targets.tolist(), sentinel_start=99, eos_id=1,
                         num_sentinels=10) == tokens.tolist()  # fmt: skip


def test_inputs_and_targets_rebuild_the_original() -> None:
    g = torch.Generator().manual_seed(0)
    vocab, extra = 32100, 300  # density 0.5 in spans of 1 needs 284 sentinels for 568 tokens
    for length in [2, 3, 7, 50, 114, 568]:
        for density, mean in [(0.15, 3.0), (0.3, 2.0), (0.5, 1.0)]:
            tokens = torch.randint(2, vocab - extra, (length,), generator=g)
            mask = random_spans_noise_mask(length, density, mean, generator=g)
            noise, spans = noise_span_counts(length, density, mean)
            inputs, targets = span_corrupt(tokens, mask, sentinel_start=vocab - 1, eos_id=1)
            assert len(inputs) == length - noise + spans + 1
            assert len(targets) == noise + spans + 1
            sentinels = [t for t in inputs.tolist() if t >= vocab - extra]
            assert sentinels == list(range(vocab - 1, vocab - 1 - spans, -1))
            assert targets[0] == vocab - 1 and inputs[-1] == 1 and targets[-1] == 1
            spans_ = sentinel_spans(targets.tolist(), sentinel_start=vocab - 1,
                                    num_sentinels=extra, eos_id=1)  # fmt: skip
            assert [len(s) for s in spans_] == runs(mask)
            rebuilt = restore_spans(inputs.tolist(), targets.tolist(), sentinel_start=vocab - 1,
                                    num_sentinels=extra, eos_id=1)  # fmt: skip
            assert rebuilt == tokens.tolist()


def t5_random_spans_helper(inputs_length: int, density: float, mean: float) -> tuple[int, int]:
    """T5's ``random_spans_helper`` as released (Python floats, no clipping)."""

    def lengths(n: int) -> tuple[int, int]:
        noise = round(n * density)
        spans = round(noise / mean)
        return n - noise + spans + 1, noise + spans + 1

    n = inputs_length - 1
    while lengths(n + 1)[0] <= inputs_length:
        n += 1
    return n, lengths(n)[1]


def test_input_and_target_lengths() -> None:
    assert compute_input_and_target_lengths(512) == (568, 114)  # T5's numbers
    assert compute_input_and_target_lengths(128) == (141, 29)
    g = torch.Generator().manual_seed(0)
    for inputs_length in range(3, 400):
        tokens_length, targets_length = compute_input_and_target_lengths(inputs_length)
        if inputs_length >= 10 and reference_counts(tokens_length, 0.15, 3.0)[0] == round(
            tokens_length * 0.15
        ):  # where float32 and float64 round alike, the released helper agrees
            assert (tokens_length, targets_length) == t5_random_spans_helper(
                inputs_length, 0.15, 3.0
            )
        # every mask of that length gives inputs and targets of exactly those lengths
        tokens = torch.randint(2, 1000, (tokens_length,), generator=g)
        mask = random_spans_noise_mask(tokens_length, generator=g)
        inputs, targets = span_corrupt(tokens, mask, sentinel_start=32099, eos_id=1)
        assert (len(inputs), len(targets)) == (inputs_length, targets_length)


def test_density_one_half_keeps_targets_no_longer_than_inputs() -> None:
    tokens_length, targets_length = compute_input_and_target_lengths(64, 0.5, 3.0)
    noise, spans = noise_span_counts(tokens_length, 0.5, 3.0)
    assert targets_length == noise + spans + 1 <= 64
    assert tokens_length - noise + spans + 1 <= 64


def test_deterministic_given_the_generator() -> None:
    a = random_spans_noise_mask(300, generator=torch.Generator().manual_seed(1))
    b = random_spans_noise_mask(300, generator=torch.Generator().manual_seed(1))
    c = random_spans_noise_mask(300, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_errors() -> None:
    g = torch.Generator()
    for density in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="noise_density"):
            random_spans_noise_mask(10, density, generator=g)
    with pytest.raises(ConfigError, match="mean_noise_span_length"):
        random_spans_noise_mask(10, 0.15, 0.0, generator=g)
    with pytest.raises(ConfigError, match="length"):
        random_spans_noise_mask(0, generator=g)
    with pytest.raises(ConfigError, match="inputs_length"):
        compute_input_and_target_lengths(2)
    mask = torch.tensor([False, True, False])
    with pytest.raises(DataError, match="sentinel"):
        span_corrupt(torch.tensor([5, 99, 6]), mask, sentinel_start=99, eos_id=1)
    with pytest.raises(DataError, match="same length"):
        span_corrupt(torch.tensor([5, 6]), mask, sentinel_start=99, eos_id=1)
