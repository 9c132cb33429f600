"""Learning-rate schedules: warmup, cosine, constant, warmup-stable-decay."""

import itertools
import math

import pytest

from groundwork.train import learning_rate


def lrs(schedule: str, **kw: float) -> list[float]:
    return [
        learning_rate(
            s, lr=1.0, max_steps=100, warmup_steps=10, min_lr=0.1, schedule=schedule, **kw
        )  # type: ignore[arg-type]
        for s in range(101)
    ]


def test_warmup_is_linear_to_peak() -> None:
    for schedule in ("cosine", "constant", "wsd"):
        values = lrs(schedule)
        assert values[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
        assert values[10] == pytest.approx(1.0)


def test_cosine_reaches_min_and_is_half_way_at_the_middle() -> None:
    values = lrs("cosine")
    assert values[55] == pytest.approx(0.1 + 0.9 * 0.5)  # (55 - 10) / 90 = half of the decay
    assert values[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[10:])), "monotone decay"
    assert values[40] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 30 / 90)))


def test_constant_and_wsd() -> None:
    assert set(lrs("constant")[10:]) == {1.0}
    values = lrs("wsd", decay_fraction=0.2)
    assert set(values[10:80]) == {1.0}, "stable until the last 20% of steps"
    assert values[90] == pytest.approx(0.55)
    assert values[100] == pytest.approx(0.1)


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate(50, lr=1.0, max_steps=100, schedule="linear")  # type: ignore[arg-type]
