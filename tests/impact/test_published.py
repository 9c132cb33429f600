"""The three published estimates reproduced from their inputs, to the precision they are stated
in: BLOOM 433 MWh and 24.7 t (50.5 t with idle and embodied), GPT-3 1,287 MWh and 552 t, Llama 2
per model to two decimals and 539.00 t in all."""

import math

import pytest

from groundwork.impact.published import (
    LLAMA2_RUNS,
    bloom,
    bloom_life_cycle,
    gpt3,
    llama2,
    llama2_total,
    reproductions,
    truncate,
)


def test_bloom() -> None:
    e = bloom()
    assert e.energy_kwh == pytest.approx(433_196)  # 1,082,990 GPU-h x 0.4 kW, as the paper says
    assert round(e.energy_kwh / 1000) == 433
    assert round(e.emissions_kg / 1000, 1) == 24.7


def test_bloom_life_cycle() -> None:
    e = bloom_life_cycle()
    idle_t = (e.energy_kwh - bloom().energy_kwh) * 57 / 1e6
    assert round(idle_t, 1) == 14.6  # the idle draw, 256,646 kWh
    assert round(e.embodied_kg / 1000, 1) == 11.2
    assert round(e.total_kg / 1000, 1) == 50.5


def test_gpt3() -> None:
    e = gpt3()
    assert round(e.device_hours / 10_000 / 24, 1) == 14.8  # days on 10,000 V100s
    assert round(e.device_hours / 8760) == 405  # processor-years, as in their table
    assert round(e.energy_kwh / 1000) == 1287
    assert round(e.emissions_kg / 1000) == 552


@pytest.mark.parametrize("size", list(LLAMA2_RUNS))
def test_llama2_per_model(size: str) -> None:
    hours, watts, published = LLAMA2_RUNS[size]
    e = llama2(size)
    assert truncate(e.emissions_kg / 1000, 2) == published  # the card cuts to two decimals
    assert abs(e.emissions_kg / 1000 - published) < 0.01
    implied = published * 1e6 / (hours * watts / 1000)  # gCO2e per kWh at the stated power
    assert implied == pytest.approx(423.5, abs=0.1)  # = PUE 1.1 x 385 g


def test_llama2_total() -> None:
    e = llama2_total()
    assert e.device_hours == 3_311_616
    assert truncate(e.emissions_kg / 1000, 2) == 539.00
    assert math.isclose(e.emissions_kg, sum(llama2(s).emissions_kg for s in LLAMA2_RUNS))


def test_rounding_would_not_reproduce_the_card() -> None:
    assert round(llama2("13B").emissions_kg / 1000, 2) == 62.45  # the card says 62.44
    assert round(llama2("34B").emissions_kg / 1000, 2) == 153.91  # the card says 153.90


def test_every_reproduction_matches() -> None:
    rows = reproductions()
    assert len(rows) == 8
    assert [r.model for r in rows if not r.matches] == []
