"""``groundwork impact estimate`` and ``groundwork impact published``: the energy and emissions
of a training run from its GPU-hours, and the published estimates of BLOOM, GPT-3 and Llama 2
reproduced next to the papers' numbers.

``impact estimate`` prints each step of the accounting with its numbers (energy, operational
emissions, embodied emissions when a device's manufacturing emissions and lifetime are given),
with the grid's intensity given directly (``--grid-gco2-kwh``) or looked up by region
(``--region``, :data:`groundwork.impact.intensity.GRID_INTENSITY`). A run of our own measured by
codecarbon has its numbers in ``emissions.json`` in its run directory. Chapter 23.
"""

from groundwork.errors import ConfigError
from groundwork.impact.energy import estimate, explain
from groundwork.impact.intensity import GRID_INTENSITY, grid_intensity
from groundwork.impact.published import reproductions
from groundwork.tables import markdown_table

__all__ = ["impact_estimate", "impact_published"]


def impact_estimate(
    gpu_hours: float,
    gpu_power_w: float,
    pue: float = 1.0,
    grid_gco2_kwh: float | None = None,
    region: str | None = None,
    embodied_kg: float | None = None,
    lifetime_hours: float | None = None,
) -> None:
    """Estimate the energy and emissions of a run from its GPU-hours, and show the formula.

    Args:
        gpu_hours: GPUs times wall-clock hours (8 GPUs for 10 hours: 80).
        gpu_power_w: Average power of one GPU in watts (its TDP is an upper bound: A100 400,
            H100 SXM 700).
        pue: Power usage effectiveness of the data centre (facility / IT energy, >= 1).
        grid_gco2_kwh: Carbon intensity of the electricity, gCO2e/kWh (or give --region).
        region: A grid from the table instead of --grid-gco2-kwh: world, us, eu, france,
            germany, china, india, poland, quebec, hydro-lifecycle, coal-lifecycle, or a paper's
            (bloom-france, gpt3-patterson, llama-us-average, llama2-implied).
        embodied_kg: Manufacturing emissions of one GPU (with its server share), kgCO2e; needs
            --lifetime-hours.
        lifetime_hours: Hours of use over which a GPU's manufacturing emissions are spread
            (six years at full use: 52560).
    """
    if (grid_gco2_kwh is None) == (region is None):
        raise ConfigError(
            "give exactly one of --grid-gco2-kwh (gCO2e/kWh) and --region (one of "
            + ", ".join(GRID_INTENSITY)
            + ")"
        )
    label = ""
    if region is not None:
        entry = grid_intensity(region)
        grid_gco2_kwh, label = entry.gco2_per_kwh, f"{region.lower()}: {entry.citation()}"
    assert grid_gco2_kwh is not None
    result = estimate(
        device_hours=gpu_hours,
        device_power_w=gpu_power_w,
        pue=pue,
        grid_gco2_per_kwh=grid_gco2_kwh,
        embodied_kg_per_device=embodied_kg,
        device_lifetime_hours=lifetime_hours,
    )
    print(explain(result, intensity_label=label))


def impact_published() -> None:
    """Reproduce the published emissions of BLOOM, GPT-3 and Llama 2 from their inputs."""
    rows = []
    for r in reproductions():
        ours_t = f"{r.reproduced_t:.{r.decimals}f}"
        exact = r.estimate.total_kg / 1000
        rows.append(
            [
                r.model,
                "-" if r.published_mwh is None else f"{r.published_mwh:,.0f}",
                f"{r.estimate.energy_kwh / 1000:,.1f}",
                f"{r.published_t:.{r.decimals}f}",
                f"{ours_t} ({exact:.4f}{', cut' if r.truncated else ''})",
                "yes" if r.matches else "NO",
                r.source,
            ]
        )
    header = ["run", "MWh, published", "MWh, ours", "tCO2e, published", "tCO2e, ours", "match"]
    print(markdown_table([*header, "source"], rows, align="lrrrrll"), end="")
    print(
        "\nours at the source's precision, the exact value in brackets; 'cut': the Llama 2 card"
        "\ntruncates to two decimals (rounding would give 62.45 and 153.91)"
    )
