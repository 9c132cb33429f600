"""The accounting of chapter 23 on examples worked by hand: energy = (device-hours x W / 1000 +
host kWh) x PUE, emissions = energy x gCO2e/kWh / 1000, embodied = device-hours / lifetime x
kgCO2e per device; device-hours from FLOPs; and the errors bad inputs get."""

import math

import pytest

from groundwork.errors import ConfigError
from groundwork.impact import (
    GRID_INTENSITY,
    device_hours_from_flops,
    estimate,
    explain,
    from_flops,
    grid_intensity,
)


def test_estimate_by_hand() -> None:
    # 8 GPUs x 10 h = 80 device-h at 300 W = 24 kWh; PUE 1.5 -> 36 kWh; x 400 g = 14.4 kg
    e = estimate(device_hours=80, device_power_w=300, pue=1.5, grid_gco2_per_kwh=400)
    assert math.isclose(e.energy_kwh, 36.0)
    assert math.isclose(e.emissions_kg, 14.4)
    assert e.embodied_kg == 0.0
    assert e.total_kg == e.emissions_kg
    assert (e.device_hours, e.device_power_w, e.pue, e.grid_gco2_per_kwh) == (80, 300, 1.5, 400)


def test_host_energy_gets_the_pue_and_embodied_is_amortised() -> None:
    # (100 h x 0.5 kW + 10 kWh) x 1.2 = 72 kWh; x 100 g = 7.2 kg
    # embodied: 100 h of a 10,000 h life of a 300 kg device = 3 kg
    e = estimate(
        device_hours=100,
        device_power_w=500,
        pue=1.2,
        grid_gco2_per_kwh=100,
        extra_kwh=10,
        embodied_kg_per_device=300,
        device_lifetime_hours=10_000,
    )
    assert math.isclose(e.energy_kwh, 72.0)
    assert math.isclose(e.emissions_kg, 7.2)
    assert math.isclose(e.embodied_kg, 3.0)
    assert math.isclose(e.total_kg, 10.2)


def test_zero_hours_and_a_clean_grid_emit_nothing() -> None:
    assert estimate(device_hours=0, device_power_w=400, grid_gco2_per_kwh=500).total_kg == 0
    assert estimate(device_hours=10, device_power_w=400, grid_gco2_per_kwh=0).emissions_kg == 0


def test_device_hours_from_flops() -> None:
    # 3.6e18 FLOPs at 40% of 1e15 FLOP/s: 9,000 s = 2.5 h
    assert math.isclose(device_hours_from_flops(3.6e18, peak_flops=1e15, mfu=0.4), 2.5)
    e = from_flops(3.6e18, peak_flops=1e15, mfu=0.4, device_power_w=400, grid_gco2_per_kwh=100)
    assert math.isclose(e.device_hours, 2.5)
    assert math.isclose(e.energy_kwh, 1.0)  # 2.5 h x 0.4 kW
    assert math.isclose(e.emissions_kg, 0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_hours": -1}, "device_hours must be a finite number >= 0"),
        ({"device_power_w": -5}, "device_power_w"),
        ({"pue": 0.9}, "pue must be >= 1"),
        ({"grid_gco2_per_kwh": float("nan")}, "grid_gco2_per_kwh"),
        ({"extra_kwh": -1}, "extra_kwh"),
        ({"embodied_kg_per_device": 150}, "need both"),
        ({"device_lifetime_hours": 1000}, "need both"),
        ({"embodied_kg_per_device": 150, "device_lifetime_hours": 0}, "lifetime_hours must be > 0"),
        ({"embodied_kg_per_device": -1, "device_lifetime_hours": 10}, "embodied_kg_per_device"),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"device_hours": 10, "device_power_w": 400, "grid_gco2_per_kwh": 57}
    with pytest.raises(ConfigError, match=message):
        estimate(**{**args, **kwargs})


@pytest.mark.parametrize(("mfu", "peak"), [(0.0, 1e15), (1.5, 1e15), (0.4, 0.0)])
def test_bad_flops_conversions_are_refused(mfu: float, peak: float) -> None:
    with pytest.raises(ConfigError, match=r"mfu must be in|peak_flops must be"):
        device_hours_from_flops(1e20, peak_flops=peak, mfu=mfu)


def test_explain_shows_every_factor() -> None:
    e = estimate(
        device_hours=1000,
        device_power_w=400,
        pue=1.1,
        grid_gco2_per_kwh=57,
        embodied_kg_per_device=150,
        device_lifetime_hours=50_000,
    )
    text = explain(e, intensity_label="France")
    assert "energy    = (1,000 device-h x 400 W / 1000) x PUE 1.1 = 440 kWh" in text
    assert "440 kWh x 57 gCO2e/kWh (France) / 1000 = 25.08 kg CO2e" in text
    assert "1,000 device-h / 50,000 h x 150 kg = 3 kg CO2e" in text
    assert "total     = 28.08 kg CO2e" in text


def test_intensity_table_is_sourced_and_found_by_name() -> None:
    for name, entry in GRID_INTENSITY.items():
        assert entry.gco2_per_kwh >= 0 and entry.source and 1990 < entry.year < 2030, name
    assert grid_intensity("France").gco2_per_kwh == 56
    assert grid_intensity("bloom-france").gco2_per_kwh == 57
    assert grid_intensity("llama2-implied").gco2_per_kwh == pytest.approx(1.1 * 385)
    assert "approximate, from IPCC" in grid_intensity("coal-lifecycle").citation()
    with pytest.raises(ConfigError, match="did you mean 'france'"):
        grid_intensity("frnace")
