"""Logit processors: equal to ``transformers``' warpers, and samplers with the right statistics."""

import itertools

import pytest
import torch

from groundwork.generate.config import GenerationConfig
from groundwork.generate.processors import (
    apply_temperature,
    min_p_filter,
    process_logits,
    repetition_penalty,
    sample_next,
    top_k_filter,
    top_p_filter,
)

B, V = 4, 50


@pytest.fixture
def logits() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(B, V) * 3  # (B, V), no ties


@pytest.fixture
def input_ids() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, V, (B, 12))  # (B, T), with repeats


# ------------------------------------------------------------------------------------------
# Parity with transformers.generation.logits_process


def hf_processor(name: str, *args: float) -> object:
    lp = pytest.importorskip("transformers.generation.logits_process")
    return getattr(lp, name)(*args)


@pytest.mark.parity
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_temperature_matches_transformers(logits: torch.Tensor, t: float) -> None:
    hf = hf_processor("TemperatureLogitsWarper", t)
    torch.testing.assert_close(apply_temperature(logits, t), hf(None, logits.clone()))  # type: ignore[operator]


@pytest.mark.parity
@pytest.mark.parametrize("k", [1, 5, 49, 50, 80])
def test_top_k_matches_transformers(logits: torch.Tensor, k: int) -> None:
    hf = hf_processor("TopKLogitsWarper", k)
    assert torch.equal(top_k_filter(logits, k), hf(None, logits.clone()))  # type: ignore[operator]


@pytest.mark.parity
@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_matches_transformers(logits: torch.Tensor, p: float) -> None:
    hf = hf_processor("TopPLogitsWarper", p)
    assert torch.equal(top_p_filter(logits, p), hf(None, logits.clone()))  # type: ignore[operator]


@pytest.mark.parity
@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 0.9, 1.0])
def test_min_p_matches_transformers(logits: torch.Tensor, min_p: float) -> None:
    hf = hf_processor("MinPLogitsWarper", min_p)
    assert torch.equal(min_p_filter(logits, min_p), hf(None, logits.clone()))  # type: ignore[operator]


@pytest.mark.parity
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 3.0])
def test_repetition_penalty_matches_transformers(
    logits: torch.Tensor, input_ids: torch.Tensor, penalty: float
) -> None:
    hf = hf_processor("RepetitionPenaltyLogitsProcessor", penalty)
    ours = repetition_penalty(logits, input_ids, penalty)
    torch.testing.assert_close(ours, hf(input_ids, logits.clone()), rtol=0, atol=1e-6)  # type: ignore[operator]


@pytest.mark.parity
@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.7, top_k=10, top_p=0.8, min_p=0.05, repetition_penalty=1.2),
        dict(temperature=1.5, top_p=0.5),
        dict(temperature=0.0, top_k=3, repetition_penalty=1.5),  # greedy: penalty only
    ],
)
def test_process_logits_matches_transformers_chain(
    logits: torch.Tensor, input_ids: torch.Tensor, settings: dict[str, float]
) -> None:
    """Our composition equals ``transformers``' processors applied in its order."""
    config = GenerationConfig(**settings)  # type: ignore[arg-type]
    expected = logits.clone()
    chain = [("RepetitionPenaltyLogitsProcessor", config.repetition_penalty)]
    if config.do_sample:
        chain += [
            ("TemperatureLogitsWarper", config.temperature),
            ("TopKLogitsWarper", config.top_k),
            ("TopPLogitsWarper", config.top_p),
            ("MinPLogitsWarper", config.min_p),
        ]
    for name, value in chain:
        if value is not None:
            expected = hf_processor(name, value)(input_ids, expected)  # type: ignore[operator]
    torch.testing.assert_close(
        process_logits(logits, input_ids, config), expected, rtol=0, atol=1e-6
    )


# ------------------------------------------------------------------------------------------
# What the filters keep


def test_top_k_keeps_exactly_the_k_largest(logits: torch.Tensor) -> None:
    kept = top_k_filter(logits, 7).isfinite()  # (B, V)
    expected = torch.zeros_like(kept).scatter(1, logits.topk(7).indices, True)
    assert torch.equal(kept, expected)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75, 0.95])
def test_top_p_keeps_the_smallest_set_with_mass_p(p: float) -> None:
    """Brute force: among all subsets of 8 tokens, the smallest with mass >= p (the most massive
    among those of that size) is what the filter keeps."""
    torch.manual_seed(2)
    for _ in range(5):
        z = torch.randn(8, dtype=torch.float64) * 2
        probs = z.softmax(-1).tolist()
        best: tuple[int, float, frozenset[int]] | None = None
        for size in range(1, 9):
            for subset in itertools.combinations(range(8), size):
                mass = sum(probs[i] for i in subset)
                if mass >= p and (best is None or (size, -mass) < (best[0], -best[1])):
                    best = (size, mass, frozenset(subset))
            if best is not None:
                break
        assert best is not None
        kept = frozenset(top_p_filter(z[None], p)[0].isfinite().nonzero().flatten().tolist())
        assert kept == best[2]


def test_filters_always_keep_the_most_likely_token() -> None:
    z = torch.tensor([[0.0, 10.0, 0.0]])  # (1, 3), one token holds ~all the mass
    for filtered in (top_p_filter(z, 1e-9), min_p_filter(z, 1.0), top_k_filter(z, 1)):
        assert filtered.isfinite().tolist() == [[False, True, False]]


# ------------------------------------------------------------------------------------------
# Sampling statistics (seeded, so deterministic; the thresholds allow a 1-in-1000 failure)

CHI2_999_4DOF = 18.47
"""0.999 quantile of the chi-square distribution with 4 degrees of freedom."""


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    r"""Pearson's statistic $\sum_i (O_i - E_i)^2 / E_i$ with $E_i = n p_i$."""
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=torch.float64)
    n = 20_000
    logits = probs.log().float().expand(n, 5)  # (n, 5): n independent draws in one call
    generator = torch.Generator().manual_seed(1234)
    draws = sample_next(logits, GenerationConfig(temperature=1.0), generator)  # (n,)
    counts = torch.bincount(draws, minlength=5).double()
    assert chi_square(counts, probs) < CHI2_999_4DOF


def test_temperature_sampling_follows_the_sharpened_distribution() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=torch.float64)
    config = GenerationConfig(temperature=0.5)
    sharpened = (probs.log() / 0.5).softmax(-1)
    logits = process_logits(probs.log().float().expand(20_000, 5), torch.zeros(1, 1).long(), config)
    draws = sample_next(logits, config, torch.Generator().manual_seed(99))
    assert chi_square(torch.bincount(draws, minlength=5).double(), sharpened) < CHI2_999_4DOF


def test_top_k_never_samples_outside_the_top_k(logits: torch.Tensor) -> None:
    config = GenerationConfig(temperature=2.0, top_k=5)  # flat: the tail would be sampled often
    n = 2_000
    many = logits.repeat_interleave(n, dim=0)  # (B * n, V)
    draws = sample_next(
        process_logits(many, many[:, :1].long(), config), config, torch.Generator().manual_seed(0)
    )
    allowed = logits.topk(5).indices.repeat_interleave(n, dim=0)  # (B * n, 5)
    assert (draws[:, None] == allowed).any(dim=1).all()


def test_greedy_is_argmax(logits: torch.Tensor) -> None:
    assert torch.equal(sample_next(logits, GenerationConfig(temperature=0)), logits.argmax(-1))
