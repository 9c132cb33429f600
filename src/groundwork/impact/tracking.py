"""Measure the energy and emissions of our own runs with codecarbon, offline.

:func:`track_emissions` wraps a block (a training run) in codecarbon's
``OfflineEmissionsTracker``, which never touches the network: it samples the power of the
machine every ``measure_power_secs`` and at the end, integrates it into kWh, and multiplies by
the intensity of the country given (its own table of 2023 Ember values). Where the power comes
from depends on the machine:

* **GPUs**: NVML's power reading (``nvidia-smi``), per device;
* **CPU**: Intel RAPL energy counters (``/sys/class/powercap/intel-rapl``) where they exist and
  are readable; otherwise the CPU's TDP from codecarbon's table times its load; for an unknown
  CPU, 4 W per thread times the load;
* **RAM**: an estimate from the memory size (a guessed number of memory modules times about
  5 W each; 20 W for this book's 24 GB machine), never a measurement.

The run directory receives codecarbon's ``emissions.csv`` and our ``emissions.json``: energy,
emissions, duration, the powers codecarbon settled on and how it got them, and the totals over
the blocks of a run resumed several times (``resume=True``). If codecarbon is not
installed or fails, the block runs anyway: one line on stderr says so, and no file is written.
:func:`read_emissions` reads the JSON back. Chapter 23.
"""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import CheckpointError
from groundwork.fileio import read_json, write_json

__all__ = ["EMISSIONS_FILE", "Tracking", "emissions_line", "read_emissions", "track_emissions"]

EMISSIONS_FILE = "emissions.json"
"""Our summary, written in the run directory."""
CODECARBON_FILE = "emissions.csv"
"""codecarbon's own record (one line per tracked block, appended)."""


@dataclass
class Tracking:
    """What :func:`track_emissions` yields; ``result`` is set when the block ends."""

    run_dir: Path
    result: dict[str, Any] | None = None
    """The summary written to ``emissions.json``; None while running, or if tracking failed."""


def _warn(message: str) -> None:
    print(f"warning: {message}; no emissions record is written", file=sys.stderr)


# --8<-- [start:track]
@contextmanager
def track_emissions(
    run_dir: Path,
    *,
    country_iso_code: str = "FRA",
    project_name: str = "groundwork",
    measure_power_secs: float = 15.0,
    tracking_mode: Literal["machine", "process"] = "machine",
    resume: bool = False,
) -> Iterator[Tracking]:
    """Measure the energy and emissions of the block into ``run_dir``.

    >>> with track_emissions(run_dir) as tracking:  # doctest: +SKIP
    ...     train(...)
    >>> tracking.result["energy_kwh"], tracking.result["emissions_kg"]  # doctest: +SKIP

    Args:
        run_dir: Where ``emissions.csv`` and ``emissions.json`` go (created if missing).
        country_iso_code: Three-letter ISO code of the country whose grid intensity applies.
            The default, France (56 gCO2e/kWh in codecarbon 3.3's table), is BLOOM's grid, not
            where you are: codecarbon cannot locate an offline machine, so pass yours ("USA",
            "DEU", ...).
        project_name: The name in codecarbon's CSV.
        measure_power_secs: Seconds between power readings (and a last one at the end).
        tracking_mode: "machine" counts all the machine's CPU load and memory; "process" only
            this process's share (for a machine shared with other jobs).
        resume: The block continues a run measured before: add to the totals of its
            ``emissions.json`` and append to its CSV. Otherwise both files, if there, belong to
            an earlier run and are removed on entry, so enter only once ``run_dir`` is known to
            be writable (:func:`groundwork.runs.check_writable`).
    """
    run_dir = Path(run_dir)
    tracking = Tracking(run_dir)
    if not resume:
        for name in (EMISSIONS_FILE, CODECARBON_FILE):
            (run_dir / name).unlink(missing_ok=True)
    tracker = _start(run_dir, country_iso_code, project_name, measure_power_secs, tracking_mode)
    try:
        yield tracking
    finally:  # a run that fails has used energy too
        if tracker is not None:
            tracking.result = _stop(tracker, run_dir)


# --8<-- [end:track]


def _start(
    run_dir: Path, country: str, project: str, every: float, mode: str
) -> Any:  # codecarbon's tracker, or None
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        _warn('codecarbon is not installed (pip install "codecarbon>=3.0")')
        return None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)  # codecarbon needs its output_dir to exist
        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # the constructor logs at INFO
        tracker = OfflineEmissionsTracker(
            country_iso_code=country,
            project_name=project,
            output_dir=str(run_dir),
            output_file=CODECARBON_FILE,
            measure_power_secs=every,
            tracking_mode=mode,
            log_level="error",  # not its warnings about unknown CPUs: the JSON says what it did
            allow_multiple_runs=True,  # no lock file: runs in parallel are each measured
        )
        tracker.start()
    except Exception as err:  # codecarbon may fail in many ways; the run must not
        _warn(f"codecarbon could not start ({type(err).__name__}: {err})")
        return None
    return tracker


def _stop(tracker: Any, run_dir: Path) -> dict[str, Any] | None:
    try:
        tracker.stop()
        data = tracker.final_emissions_data
        energy = float(data.energy_consumed)
        emissions = float(data.emissions)
        result = {
            "energy_kwh": energy,
            "emissions_kg": emissions,
            "duration_s": float(data.duration),
            "grid_gco2_per_kwh": emissions / energy * 1000 if energy > 0 else None,
            "country_iso_code": data.country_iso_code,
            "country_name": data.country_name,
            "cpu_power_w": float(data.cpu_power),
            "gpu_power_w": float(data.gpu_power),
            "ram_power_w": float(data.ram_power),
            "cpu_energy_kwh": float(data.cpu_energy),
            "gpu_energy_kwh": float(data.gpu_energy),
            "ram_energy_kwh": float(data.ram_energy),
            "cpu_model": data.cpu_model,
            "cpu_count": data.cpu_count,
            "gpu_model": data.gpu_model,
            "gpu_count": data.gpu_count,
            "power_model": _power_model(tracker),
            "tracking_mode": data.tracking_mode,
            "pue": float(data.pue),
            "codecarbon_version": data.codecarbon_version,
            "csv": CODECARBON_FILE,
        }
        result.update(_totals(result, _previous(run_dir)))
        write_json(run_dir / EMISSIONS_FILE, result)
    except Exception as err:
        _warn(f"codecarbon failed to measure ({type(err).__name__}: {err})")
        return None
    return result


def _previous(run_dir: Path) -> dict[str, Any]:
    """The record an earlier block left (resume), or nothing (a fresh run removed it)."""
    try:
        return read_emissions(run_dir) or {}
    except CheckpointError:  # a corrupt record: count from this block
        return {}


def _totals(block: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """This block's energy, emissions and duration added to the earlier blocks' totals."""
    totals: dict[str, Any] = {"blocks": int(previous.get("blocks", 0)) + 1}
    for key in ("energy_kwh", "emissions_kg", "duration_s"):
        totals[f"total_{key}"] = float(previous.get(f"total_{key}", 0.0)) + block[key]
    return totals


def _power_model(tracker: Any) -> list[str]:
    """codecarbon's description of how it measures each part, e.g. ``["RAM()", "CPU(Cpu
    Load)"]`` (RAPL shows as ``CPU(Intel RAPL)``, GPUs as ``GPU(...)``); empty if unknown."""
    conf = getattr(tracker, "_conf", None)  # codecarbon keeps it there (no public accessor)
    hardware = conf.get("hardware") if isinstance(conf, dict) else None
    return [str(h) for h in hardware] if isinstance(hardware, list) else []


def read_emissions(run_dir: Path) -> dict[str, Any] | None:
    """The ``emissions.json`` of ``run_dir``, or None if the run was not measured.

    Raises:
        CheckpointError: the file exists but is not valid JSON.
    """
    path = Path(run_dir) / EMISSIONS_FILE
    if not path.exists():
        return None
    result: dict[str, Any] = read_json(path)
    return result


def emissions_line(result: dict[str, Any], run_dir: Path) -> str:
    """One line for the end of a command: the energy and emissions of a tracked block."""
    return (
        f"energy {result['total_energy_kwh'] * 1000:.2f} Wh, "
        f"{result['total_emissions_kg'] * 1000:.3f} gCO2e ({result['country_iso_code']}, "
        f"{result['grid_gco2_per_kwh']:.0f} g/kWh; {', '.join(result['power_model'])}); "
        f"measured by codecarbon into {Path(run_dir) / EMISSIONS_FILE}"
    )
