"""`groundwork impact estimate` and `groundwork impact published` as Python calls: the formula
printed with its numbers, a region looked up in the table, the table of reproductions, and
bad input refused with a clear message."""

import pytest

from groundwork.errors import ConfigError
from groundwork.impact.intensity import GRID_INTENSITY
from groundwork.recipes.impact import impact_estimate, impact_published


def test_estimate_with_an_intensity(capsys: pytest.CaptureFixture[str]) -> None:
    impact_estimate(1000, 400, pue=1.1, grid_gco2_kwh=57)
    out = capsys.readouterr().out
    assert "(1,000 device-h x 400 W / 1000) x PUE 1.1 = 440 kWh" in out
    assert "440 kWh x 57 gCO2e/kWh / 1000 = 25.08 kg CO2e" in out
    assert "embodied" not in out


def test_estimate_with_a_region_and_embodied(capsys: pytest.CaptureFixture[str]) -> None:
    impact_estimate(80, 700, region="Poland", embodied_kg=350, lifetime_hours=35_000)
    out = capsys.readouterr().out
    assert "56 kWh x 662 gCO2e/kWh (poland: Ember" in out  # 80 h x 0.7 kW
    assert "= 37.07 kg CO2e" in out  # 56 x 0.662
    assert "80 device-h / 35,000 h x 350 kg = 0.8 kg CO2e" in out
    assert "total     = 37.87 kg CO2e" in out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --grid-gco2-kwh"),
        ({"grid_gco2_kwh": 57, "region": "france"}, "exactly one of --grid-gco2-kwh"),
        ({"region": "mars"}, "unknown grid region 'mars'"),
        ({"grid_gco2_kwh": 57, "pue": 0.5}, "pue must be >= 1"),
        ({"grid_gco2_kwh": 57, "embodied_kg": 150}, "need both"),
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        impact_estimate(100, 400, **kwargs)  # type: ignore[arg-type]


def test_published(capsys: pytest.CaptureFixture[str]) -> None:
    impact_published()
    out = capsys.readouterr().out
    assert "| BLOOM-176B, dynamic | 433 | 433.2 | 24.7 | 24.7 (24.6922) | yes |" in out
    assert "| GPT-3 175B | 1,287 | 1,287.1 | 552 | 552 (552.1486) | yes |" in out
    assert "| Llama 2, all four | - | 1,400.0 | 539.00 | 539.00 (539.0010, cut) | yes |" in out
    assert "| NO |" not in out


def test_the_help_names_every_region() -> None:
    doc = impact_estimate.__doc__ or ""
    assert all(name in doc for name in GRID_INTENSITY)
