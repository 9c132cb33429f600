"""Environmental impact (chapter 23): the energy and emissions of training, estimated from
device-hours, power, PUE and grid intensity (:mod:`~groundwork.impact.energy`), a table of grid
intensities with their sources (:mod:`~groundwork.impact.intensity`), three published estimates
reproduced from their inputs (:mod:`~groundwork.impact.published`: BLOOM, GPT-3, Llama 2), and
our own runs measured with codecarbon (:mod:`~groundwork.impact.tracking`).
"""

from groundwork.impact.energy import (
    ImpactEstimate,
    device_hours_from_flops,
    estimate,
    explain,
    from_flops,
)
from groundwork.impact.intensity import GRID_INTENSITY, GridIntensity, grid_intensity
from groundwork.impact.tracking import read_emissions, track_emissions

__all__ = [
    "GRID_INTENSITY",
    "GridIntensity",
    "ImpactEstimate",
    "device_hours_from_flops",
    "estimate",
    "explain",
    "from_flops",
    "grid_intensity",
    "read_emissions",
    "track_emissions",
]
