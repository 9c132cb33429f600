"""Three published estimates of training emissions, reproduced from their inputs.

* **BLOOM-176B** (Luccioni, Viguier & Ligozat 2023, JMLR 24(253)): 1,082,990 A100-80GB
  GPU-hours at the card's 400 W TDP give 433,196 kWh, and at the French grid's 57 gCO2e/kWh
  24.7 t of *dynamic* emissions. The paper adds the idle draw of the cluster, 256,646 kWh more
  (14.6 t), and the embodied emissions of the servers and GPUs, 11.2 t: 50.5 t in all. We
  rebuild the embodied part from the paper's inputs as we read them (150 kgCO2e per GPU and
  2,500 kgCO2e per 8-GPU server, spread over six years of life at an 85% use rate); their
  product gives its 11.2 t.
* **GPT-3 175B** (Patterson et al. 2021, table 4): 3.14e23 FLOPs on V100s, which achieved 24.6
  TFLOP/s each (MFU 0.197 of their 125 TFLOP/s peak), so 3.55 million GPU-hours (10,000 GPUs
  for 14.8 days); at 330 W per GPU and a PUE of 1.1 that is 1,287 MWh, and at the 0.429
  kgCO2e/kWh they assumed, 552 t.
* **Llama 2** (Touvron et al. 2023, table 2; the model card): 3,311,616 A100-80GB GPU-hours
  (7B 184,320; 13B 368,640; 34B 1,038,336 on the production cluster capped at 350 W; 70B
  1,720,320; the others at 400 W), 539 t. The card gives no intensity. Dividing its tonnes by
  GPU-hours x watts gives 0.4235 kgCO2e/kWh for every model, which is LLaMA 1's method exactly
  (Touvron et al. 2023a: PUE 1.1 and the US average, 0.385 kgCO2e/kWh; 1.1 x 0.385 = 0.4235).
  The card's figures are those products *truncated* to two decimals (62.4476 -> 62.44).

Each function returns an :class:`~groundwork.impact.energy.ImpactEstimate`;
:func:`reproductions` pairs them with the published numbers. Chapter 23.
"""

import math
from dataclasses import dataclass

from groundwork.errors import ConfigError, did_you_mean
from groundwork.impact.energy import ImpactEstimate, estimate, from_flops

__all__ = [
    "LLAMA2_RUNS",
    "Reproduction",
    "bloom",
    "bloom_life_cycle",
    "gpt3",
    "llama2",
    "llama2_total",
    "reproductions",
]


# --8<-- [start:bloom]
BLOOM_GPU_HOURS = 1_082_990  # A100-80GB, final training run
BLOOM_GPU_POWER_W = 400  # the card's TDP
BLOOM_GRID = 57  # gCO2e/kWh, France
BLOOM_IDLE_KWH = 256_646  # idle draw of the cluster's nodes during the run
BLOOM_EMBODIED_KG_PER_GPU = 150 + 2_500 / 8  # a GPU, plus its share of an 8-GPU server
BLOOM_LIFETIME_HOURS = 6 * 8_760 * 0.85  # six years at an 85% use rate


def bloom() -> ImpactEstimate:
    """BLOOM-176B's dynamic emissions: 433 MWh, 24.7 t (Luccioni et al. 2023)."""
    return estimate(
        device_hours=BLOOM_GPU_HOURS, device_power_w=BLOOM_GPU_POWER_W, grid_gco2_per_kwh=BLOOM_GRID
    )


def bloom_life_cycle() -> ImpactEstimate:
    """BLOOM-176B with the idle draw and the embodied emissions: 50.5 t."""
    return estimate(
        device_hours=BLOOM_GPU_HOURS,
        device_power_w=BLOOM_GPU_POWER_W,
        grid_gco2_per_kwh=BLOOM_GRID,
        extra_kwh=BLOOM_IDLE_KWH,
        embodied_kg_per_device=BLOOM_EMBODIED_KG_PER_GPU,
        device_lifetime_hours=BLOOM_LIFETIME_HOURS,
    )


# --8<-- [end:bloom]


# --8<-- [start:gpt3]
GPT3_FLOPS = 3.14e23
V100_PEAK_FLOPS = 125e12  # fp16 tensor cores
GPT3_ACHIEVED_FLOPS = 24.6e12  # per V100, as Patterson et al. report


def gpt3() -> ImpactEstimate:
    """GPT-3 175B from its FLOPs: 1,287 MWh, 552 t (Patterson et al. 2021)."""
    return from_flops(
        GPT3_FLOPS,
        peak_flops=V100_PEAK_FLOPS,
        mfu=GPT3_ACHIEVED_FLOPS / V100_PEAK_FLOPS,
        device_power_w=330,
        pue=1.1,
        grid_gco2_per_kwh=429,
    )


# --8<-- [end:gpt3]


# --8<-- [start:llama2]
LLAMA2_RUNS: dict[str, tuple[int, float, float]] = {
    # size: (A100-80GB GPU-hours, W per GPU, tCO2e on the card)
    "7B": (184_320, 400, 31.22),
    "13B": (368_640, 400, 62.44),
    "34B": (1_038_336, 350, 153.90),
    "70B": (1_720_320, 400, 291.42),
}
LLAMA_PUE = 1.1
LLAMA_GRID = 385  # gCO2e/kWh, the US average LLaMA 1 used


def llama2(size: str) -> ImpactEstimate:
    """One Llama 2 model's pretraining (``7B``, ``13B``, ``34B`` or ``70B``)."""
    if size not in LLAMA2_RUNS:
        raise ConfigError(f"no Llama 2 {size!r}: {did_you_mean(size, LLAMA2_RUNS)}")
    hours, watts, _ = LLAMA2_RUNS[size]
    return estimate(
        device_hours=hours, device_power_w=watts, pue=LLAMA_PUE, grid_gco2_per_kwh=LLAMA_GRID
    )


def llama2_total() -> ImpactEstimate:
    """All four Llama 2 models: 3,311,616 GPU-hours at their average power, 539 t."""
    hours = sum(h for h, _, _ in LLAMA2_RUNS.values())
    watt_hours = sum(h * w for h, w, _ in LLAMA2_RUNS.values())
    return estimate(
        device_hours=hours,
        device_power_w=watt_hours / hours,  # 384.3 W: 350 W for 34B, 400 W for the rest
        pue=LLAMA_PUE,
        grid_gco2_per_kwh=LLAMA_GRID,
    )


# --8<-- [end:llama2]


def truncate(value: float, decimals: int) -> float:
    """``value`` cut (not rounded) to ``decimals`` decimals, as the Llama 2 card does.

    >>> truncate(62.4476, 2)
    62.44
    """
    scale = 10**decimals
    return math.floor(value * scale + 1e-9) / scale  # 1e-9: 31.22 stored as 31.2199999...


@dataclass(frozen=True, kw_only=True)
class Reproduction:
    """A published estimate next to ours."""

    model: str
    source: str
    estimate: ImpactEstimate
    published_mwh: float | None
    """The energy the source states, MWh (None where it states none)."""
    published_t: float
    """The emissions the source states, tCO2e."""
    decimals: int
    """The precision of ``published_t``."""
    truncated: bool = False
    """The source cuts its figures to ``decimals`` instead of rounding them."""

    @property
    def reproduced_t(self) -> float:
        """Our tCO2e (operational plus embodied) at the source's precision."""
        t = self.estimate.total_kg / 1000
        return truncate(t, self.decimals) if self.truncated else round(t, self.decimals)

    @property
    def reproduced_mwh(self) -> float:
        """Our energy, MWh, to the nearest MWh."""
        return round(self.estimate.energy_kwh / 1000)

    @property
    def matches(self) -> bool:
        """Ours equals the published figures at their stated precision."""
        energy_ok = self.published_mwh is None or self.reproduced_mwh == self.published_mwh
        return energy_ok and math.isclose(self.reproduced_t, self.published_t, abs_tol=1e-9)


def reproductions() -> list[Reproduction]:
    """The three published estimates (BLOOM twice, Llama 2 per model and in total), reproduced."""
    luccioni, patterson = "Luccioni et al. 2023", "Patterson et al. 2021"
    card = "Touvron et al. 2023, table 2"
    rows = [
        Reproduction(
            model="BLOOM-176B, dynamic",
            source=luccioni,
            estimate=bloom(),
            published_mwh=433,
            published_t=24.7,
            decimals=1,
        ),
        Reproduction(
            model="BLOOM-176B, + idle + embodied",
            source=luccioni,
            estimate=bloom_life_cycle(),
            published_mwh=None,
            published_t=50.5,
            decimals=1,
        ),
        Reproduction(
            model="GPT-3 175B",
            source=patterson,
            estimate=gpt3(),
            published_mwh=1287,
            published_t=552,
            decimals=0,
        ),
    ]
    for size, (_, _, tonnes) in LLAMA2_RUNS.items():
        rows.append(
            Reproduction(
                model=f"Llama 2 {size}",
                source=card,
                estimate=llama2(size),
                published_mwh=None,
                published_t=tonnes,
                decimals=2,
                truncated=True,
            )
        )
    rows.append(
        Reproduction(
            model="Llama 2, all four",
            source=card,
            estimate=llama2_total(),
            published_mwh=None,
            published_t=539.00,
            decimals=2,
            truncated=True,
        )
    )
    return rows
