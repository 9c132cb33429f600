r"""Energy and emissions of a training run, from the hardware it used and where it ran.

**The accounting.** A run keeps $n$ devices (GPUs) busy for $t$ hours: $h = n t$ device-hours. A
device drawing an average power $P$ (watts) for $h$ hours uses $h P / 1000$ kWh. The host adds
its CPUs and memory, $E_{host}$ kWh where someone measured them. That is the energy of the IT
equipment; the building that houses it also cools it and loses some in power conversion, and the
*power usage effectiveness* is the ratio of the two, $\mathrm{PUE} = E_{facility} / E_{IT}
\geq 1$ (1.1 for a good hyperscale data centre, 1.5-2 for an ordinary machine room). So

$$ E = \Big(\frac{h\,P}{1000} + E_{host}\Big) \times \mathrm{PUE} \quad \text{kWh}. $$

Each kWh taken from a grid emits what the grid's power stations emitted to produce it, its
*carbon intensity* $I$ in gCO2e/kWh (grams of CO2 plus the other greenhouse gases, counted by
their warming over 100 years). The **operational** (or *dynamic*, when $P$ is the draw under
load) emissions are

$$ C_{op} = \frac{E \times I}{1000} \quad \text{kgCO2e}. $$

Building the hardware emitted too. A device whose manufacture emitted $M$ kgCO2e and that serves
$L$ hours in its life carries $M / L$ kgCO2e per hour of use, so the run's **embodied** share is

$$ C_{emb} = \frac{h}{L} \times M, \qquad C = C_{op} + C_{emb}. $$

Power draw that keeps idle machines up while the run waits (Luccioni et al. 2023 count it
separately for BLOOM) enters as host energy. From FLOPs instead of hours: a run of $F$ FLOPs on
devices of peak $R$ FLOP/s kept busy at model FLOPs utilisation $\mathrm{MFU}$
(:mod:`groundwork.train.flops`) lasts $h = F / (R \cdot \mathrm{MFU}) / 3600$ device-hours.

References: Patterson et al. 2021, "Carbon Emissions and Large Neural Network Training";
Luccioni, Viguier & Ligozat 2023, "Estimating the Carbon Footprint of BLOOM, a 176B Parameter
Language Model" (JMLR 24(253)); Lacoste et al. 2019, "Quantifying the Carbon Emissions of
Machine Learning". Chapter 23 (Environmental impact).
"""

import math
from dataclasses import dataclass

from groundwork.errors import ConfigError

__all__ = ["ImpactEstimate", "device_hours_from_flops", "estimate", "explain", "from_flops"]


# --8<-- [start:estimate]
@dataclass(frozen=True, kw_only=True)
class ImpactEstimate:
    """The energy and emissions of a run, with the inputs they came from."""

    device_hours: float
    device_power_w: float
    pue: float
    grid_gco2_per_kwh: float
    extra_kwh: float
    embodied_kg_per_device: float | None
    device_lifetime_hours: float | None
    energy_kwh: float
    """(device-hours x power / 1000 + extra) x PUE."""
    emissions_kg: float
    """Operational: energy x grid intensity / 1000."""
    embodied_kg: float
    """Manufacturing, amortised: device-hours / lifetime x embodied per device (0 if not given)."""
    total_kg: float
    """Operational plus embodied."""


def estimate(
    *,
    device_hours: float,
    device_power_w: float,
    pue: float = 1.0,
    grid_gco2_per_kwh: float,
    embodied_kg_per_device: float | None = None,
    device_lifetime_hours: float | None = None,
    extra_kwh: float = 0.0,
) -> ImpactEstimate:
    """Energy and emissions of ``device_hours`` of devices drawing ``device_power_w`` each.

    >>> e = estimate(device_hours=1000, device_power_w=400, pue=1.1, grid_gco2_per_kwh=57)
    >>> round(e.energy_kwh, 6), round(e.emissions_kg, 6)  # 1000 h x 0.4 kW x 1.1; x 0.057
    (440.0, 25.08)

    Args:
        device_hours: Devices times wall-clock hours (8 GPUs for 10 hours: 80).
        device_power_w: Average power of one device in watts (its TDP is an upper bound).
        pue: Power usage effectiveness of the data centre, facility energy / IT energy, >= 1.
        grid_gco2_per_kwh: Carbon intensity of the electricity, gCO2e/kWh
            (:data:`groundwork.impact.intensity.GRID_INTENSITY`).
        embodied_kg_per_device: Manufacturing emissions of one device, kgCO2e (with
            ``device_lifetime_hours``).
        device_lifetime_hours: Hours of use a device gives in its life, over which its embodied
            emissions are spread.
        extra_kwh: IT energy beyond the devices (host CPUs and memory, idle nodes), kWh; the PUE
            applies to it too.

    Raises:
        ConfigError: a negative or non-finite input, a PUE below 1, or only one of
            ``embodied_kg_per_device`` and ``device_lifetime_hours``.
    """
    _check(device_hours=device_hours, device_power_w=device_power_w, extra_kwh=extra_kwh)
    _check(grid_gco2_per_kwh=grid_gco2_per_kwh)
    if not math.isfinite(pue) or pue < 1.0:
        raise ConfigError(
            f"pue must be >= 1 (facility energy / IT energy; 1.0 counts the devices alone), "
            f"got {pue}"
        )
    if (embodied_kg_per_device is None) != (device_lifetime_hours is None):
        raise ConfigError(
            "embodied emissions need both embodied_kg_per_device and device_lifetime_hours "
            "(the manufacturing emissions are spread over the device's life)"
        )
    embodied_kg = 0.0
    if embodied_kg_per_device is not None and device_lifetime_hours is not None:
        _check(embodied_kg_per_device=embodied_kg_per_device)
        if not math.isfinite(device_lifetime_hours) or device_lifetime_hours <= 0:
            raise ConfigError(f"device_lifetime_hours must be > 0, got {device_lifetime_hours}")
        embodied_kg = device_hours / device_lifetime_hours * embodied_kg_per_device  # h/L x M
    energy_kwh = (device_hours * device_power_w / 1000 + extra_kwh) * pue  # E = (hP + E_host) PUE
    emissions_kg = energy_kwh * grid_gco2_per_kwh / 1000  # C_op = E x I
    return ImpactEstimate(
        device_hours=device_hours,
        device_power_w=device_power_w,
        pue=pue,
        grid_gco2_per_kwh=grid_gco2_per_kwh,
        extra_kwh=extra_kwh,
        embodied_kg_per_device=embodied_kg_per_device,
        device_lifetime_hours=device_lifetime_hours,
        energy_kwh=energy_kwh,
        emissions_kg=emissions_kg,
        embodied_kg=embodied_kg,
        total_kg=emissions_kg + embodied_kg,
    )


# --8<-- [end:estimate]


# --8<-- [start:flops]
def device_hours_from_flops(flops: float, *, peak_flops: float, mfu: float) -> float:
    """Device-hours to compute ``flops`` on devices of peak ``peak_flops`` FLOP/s at ``mfu``:
    $F / (R \\cdot \\mathrm{MFU}) / 3600$.

    >>> device_hours_from_flops(3.6e18, peak_flops=1e15, mfu=0.5)  # 3.6e18 / 5e14 / 3600
    2.0

    Raises:
        ConfigError: negative FLOPs, a peak <= 0, or an MFU outside (0, 1].
    """
    _check(flops=flops)
    if not math.isfinite(peak_flops) or peak_flops <= 0:
        raise ConfigError(f"peak_flops must be > 0 FLOP/s, got {peak_flops}")
    if not math.isfinite(mfu) or not 0 < mfu <= 1:
        raise ConfigError(
            f"mfu must be in (0, 1] (the fraction of the peak a run achieves, e.g. 0.4), got {mfu}"
        )
    return flops / (peak_flops * mfu) / 3600


def from_flops(
    flops: float,
    *,
    peak_flops: float,
    mfu: float,
    device_power_w: float,
    pue: float = 1.0,
    grid_gco2_per_kwh: float,
    embodied_kg_per_device: float | None = None,
    device_lifetime_hours: float | None = None,
    extra_kwh: float = 0.0,
) -> ImpactEstimate:
    """:func:`estimate` for a run of ``flops`` FLOPs: its device-hours from the devices' peak
    FLOP/s and the MFU assumed (:func:`device_hours_from_flops`); the other arguments as there.
    """
    hours = device_hours_from_flops(flops, peak_flops=peak_flops, mfu=mfu)
    return estimate(
        device_hours=hours,
        device_power_w=device_power_w,
        pue=pue,
        grid_gco2_per_kwh=grid_gco2_per_kwh,
        embodied_kg_per_device=embodied_kg_per_device,
        device_lifetime_hours=device_lifetime_hours,
        extra_kwh=extra_kwh,
    )


# --8<-- [end:flops]


def _check(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")


def _num(x: float) -> str:
    """``1,082,990`` for large numbers, ``0.25`` or ``12.5`` for small ones."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _energy(kwh: float) -> str:
    """``1,287 MWh`` or ``440 kWh`` or ``0.012 kWh``: three significant figures or more."""
    if kwh >= 1000:
        return f"{kwh / 1000:,.4g} MWh" if kwh < 1e7 else f"{kwh / 1000:,.0f} MWh"
    return f"{kwh:.4g} kWh"


def _mass(kg: float) -> str:
    """``552.1 t`` or ``25.08 kg`` or ``0.0031 kg`` CO2e."""
    if kg >= 1000:
        return f"{kg / 1000:,.4g} t" if kg < 1e7 else f"{kg / 1000:,.0f} t"
    return f"{kg:.4g} kg"


def explain(e: ImpactEstimate, *, intensity_label: str = "") -> str:
    """The formula of each line of ``e`` with its numbers, one line each, e.g.::

        energy    = (1,000 device-h x 400 W / 1000) x PUE 1.1 = 440 kWh
        emissions = 440 kWh x 57 gCO2e/kWh / 1000 = 25.08 kg CO2e

    Args:
        e: The estimate.
        intensity_label: Said after the grid intensity (where it comes from).
    """
    label = f" ({intensity_label})" if intensity_label else ""
    host = f" + {_num(e.extra_kwh)} kWh" if e.extra_kwh else ""
    lines = [
        f"energy    = ({_num(e.device_hours)} device-h x {e.device_power_w:g} W / 1000{host}) "
        f"x PUE {e.pue:g} = {_energy(e.energy_kwh)}",
        f"emissions = {_energy(e.energy_kwh)} x {e.grid_gco2_per_kwh:g} gCO2e/kWh{label} / 1000 "
        f"= {_mass(e.emissions_kg)} CO2e",
    ]
    if e.embodied_kg_per_device is not None and e.device_lifetime_hours is not None:
        lines.append(
            f"embodied  = {_num(e.device_hours)} device-h / {_num(e.device_lifetime_hours)} h "
            f"x {e.embodied_kg_per_device:g} kg = {_mass(e.embodied_kg)} CO2e"
        )
        lines.append(f"total     = {_mass(e.total_kg)} CO2e")
    return "\n".join(lines)
