"""Carbon intensity of electricity grids, gCO2e per kWh, each with its source and year.

Two kinds of entry. The *papers'* values are the intensities the three published estimates of
:mod:`groundwork.impact.published` multiplied by; they reproduce those estimates, whatever the
grid emits today. The *regions* give a sense of the range: from a few grams per kWh on a hydro
grid to seven hundred on a coal-heavy one, a factor of a hundred that no other choice in this
chapter comes near.

An intensity is *location-based* (the average of the grid the data centre draws from, what
every entry here is) or *market-based* (what the operator's contracts say it bought, e.g.
renewable certificates: Meta reports its Llama 3.1 training at 11,390 t location-based and 0 t
market-based). Entries also differ in scope: Ember's figures count the life cycle of the power
stations (fuel supply, construction, methane leaks), a utility's *direct* figure only what its
chimneys emit. Compare like with like. Regional values change every year as grids decarbonise
(France's fell from 104 gCO2e/kWh in 1990 to 56 in 2023); refresh them from the sources before
relying on them.

The 2023 country values are Ember's (Ember & Energy Institute, via Our World in Data), the same
numbers codecarbon 3.3 ships in ``global_energy_mix.json``; the EU and world averages are their
generation-weighted means (243.8 over the EU-27; 480.6 over all 213 countries, Ember's published
world figure being 480). Chapter 23.
"""

from dataclasses import dataclass

from groundwork.errors import ConfigError, did_you_mean

__all__ = ["GRID_INTENSITY", "GridIntensity", "grid_intensity"]


# --8<-- [start:table]
@dataclass(frozen=True, kw_only=True)
class GridIntensity:
    """One grid's carbon intensity."""

    gco2_per_kwh: float
    year: int
    """The year the value describes (for a paper's value, the paper's year)."""
    source: str
    approximate: bool = False
    """True where the value is quoted from memory of the source, not checked against it."""

    def citation(self) -> str:
        """``Ember via Our World in Data, 2023`` (``approximate, from ...`` where so)."""
        kind = "approximate, from " if self.approximate else ""
        return f"{kind}{self.source}, {self.year}"


GRID_INTENSITY: dict[str, GridIntensity] = {
    # the values the published estimates used
    "bloom-france": GridIntensity(
        gco2_per_kwh=57, year=2023, source="French grid used for BLOOM, Luccioni et al."
    ),
    "gpt3-patterson": GridIntensity(
        gco2_per_kwh=429, year=2021, source="gross intensity used for GPT-3, Patterson et al."
    ),
    "llama-us-average": GridIntensity(
        gco2_per_kwh=385, year=2023, source="US average used by LLaMA, Touvron et al."
    ),
    "llama2-implied": GridIntensity(
        gco2_per_kwh=423.5,
        year=2023,
        source="implied by the Llama 2 model card per W stated (= PUE 1.1 x 385)",
    ),
    # regions, location-based annual averages
    "world": GridIntensity(gco2_per_kwh=480, year=2023, source="Ember Global Electricity Review"),
    "us": GridIntensity(gco2_per_kwh=369, year=2023, source="Ember via Our World in Data"),
    "eu": GridIntensity(
        gco2_per_kwh=244, year=2023, source="Ember, generation-weighted over the EU-27"
    ),
    "france": GridIntensity(gco2_per_kwh=56, year=2023, source="Ember via Our World in Data"),
    "germany": GridIntensity(gco2_per_kwh=381, year=2023, source="Ember via Our World in Data"),
    "china": GridIntensity(gco2_per_kwh=582, year=2023, source="Ember via Our World in Data"),
    "india": GridIntensity(gco2_per_kwh=713, year=2023, source="Ember via Our World in Data"),
    "poland": GridIntensity(
        gco2_per_kwh=662, year=2023, source="Ember; coal-heavy, the EU's highest"
    ),
    "quebec": GridIntensity(
        gco2_per_kwh=0.36, year=2016, source="Hydro-Quebec, direct CO2 only (hydro grid)"
    ),
    # life-cycle medians of single technologies, for the two ends of the range
    "hydro-lifecycle": GridIntensity(
        gco2_per_kwh=24, year=2014, source="IPCC AR5 WGIII Annex III median", approximate=True
    ),
    "coal-lifecycle": GridIntensity(
        gco2_per_kwh=820, year=2014, source="IPCC AR5 WGIII Annex III median", approximate=True
    ),
}
"""Grid intensities by name (``groundwork impact estimate --region NAME``)."""
# --8<-- [end:table]


def grid_intensity(name: str) -> GridIntensity:
    """The entry ``name`` of :data:`GRID_INTENSITY` (case-insensitive).

    Raises:
        ConfigError: no such entry (the message names the closest).
    """
    key = name.strip().lower()
    if key not in GRID_INTENSITY:
        raise ConfigError(
            f"unknown grid region {name!r}: {did_you_mean(key, GRID_INTENSITY)} "
            "(or give the intensity itself in gCO2e/kWh)"
        )
    return GRID_INTENSITY[key]
