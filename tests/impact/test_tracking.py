"""Our own runs measured with codecarbon, offline: a short CPU workload leaves codecarbon's CSV
and our ``emissions.json`` in the run directory, with positive energy at France's intensity; if
codecarbon is missing or fails, the block still runs, one warning line says why, and no file is
written. The tests that start a real tracker are marked slow: codecarbon spends about two
seconds finding out what hardware it is on (once per process)."""

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from groundwork.impact import read_emissions, track_emissions
from groundwork.impact import tracking as tracking_module
from groundwork.impact.tracking import CODECARBON_FILE, EMISSIONS_FILE, Tracking


def _work() -> float:
    a = torch.randn(128, 128)
    for _ in range(20):
        a = torch.tanh(a @ a)  # (128, 128)
    return float(a.sum())


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Tracking:
    pytest.importorskip("codecarbon")
    run_dir = tmp_path_factory.mktemp("run") / "not-yet-created"
    with track_emissions(run_dir, country_iso_code="FRA", project_name="test") as tracking:
        _work()
    return tracking


@pytest.mark.slow
def test_files_are_written(measured: Tracking) -> None:
    assert (measured.run_dir / CODECARBON_FILE).exists()
    assert (measured.run_dir / EMISSIONS_FILE).exists()
    assert read_emissions(measured.run_dir) == measured.result


@pytest.mark.slow
def test_energy_and_emissions_are_positive(measured: Tracking) -> None:
    result = measured.result
    assert result is not None
    assert result["energy_kwh"] > 0 and result["emissions_kg"] > 0 and result["duration_s"] > 0
    parts = result["cpu_energy_kwh"] + result["gpu_energy_kwh"] + result["ram_energy_kwh"]
    assert parts == pytest.approx(result["energy_kwh"])
    assert result["country_iso_code"] == "FRA"
    assert 50 < result["grid_gco2_per_kwh"] < 60  # codecarbon 3.3: 56 g for France (Ember 2023)
    assert result["ram_power_w"] > 0 and result["power_model"]


def test_failures_do_not_stop_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon -> ImportError
    with track_emissions(tmp_path / "run") as tracking:
        ran = _work()
    assert ran == ran  # the block ran
    assert tracking.result is None and read_emissions(tmp_path / "run") is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "codecarbon is not installed" in err


def test_a_tracker_that_fails_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    codecarbon = pytest.importorskip("codecarbon")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no power readings here")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", broken)
    with track_emissions(tmp_path) as tracking:
        pass
    assert tracking.result is None and not (tmp_path / EMISSIONS_FILE).exists()
    err = capsys.readouterr().err
    assert "codecarbon could not start (RuntimeError: no power readings here)" in err


@pytest.mark.slow
def test_a_run_that_fails_is_still_measured(tmp_path: Path) -> None:
    pytest.importorskip("codecarbon")
    with pytest.raises(ValueError, match="diverged"), track_emissions(tmp_path) as tracking:
        raise ValueError("diverged")
    assert tracking.result is not None and (tmp_path / EMISSIONS_FILE).exists()


class _FakeTracker:
    """Stands in for codecarbon's tracker: 1 Wh at 50 g/kWh over 10 s per block."""

    def __init__(self) -> None:
        self.final_emissions_data = SimpleNamespace(
            energy_consumed=0.001,
            emissions=0.00005,
            duration=10.0,
            country_iso_code="FRA",
            country_name="France",
            cpu_power=6.0,
            gpu_power=0.0,
            ram_power=4.0,
            cpu_energy=0.0006,
            gpu_energy=0.0,
            ram_energy=0.0004,
            cpu_model="test CPU",
            cpu_count=2,
            gpu_model="",
            gpu_count=0,
            tracking_mode="machine",
            pue=1.0,
            codecarbon_version="test",
        )
        self._conf = {"hardware": ["RAM()", "CPU(Cpu Load)"]}

    def stop(self) -> None:
        pass


def test_resumed_blocks_add_up_and_a_fresh_run_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking_module, "_start", lambda *args: _FakeTracker())
    for resume in (False, True, True):
        with track_emissions(tmp_path, resume=resume):
            pass
    record = read_emissions(tmp_path)
    assert record is not None
    assert record["blocks"] == 3 and record["energy_kwh"] == 0.001  # the last block's own
    assert record["total_energy_kwh"] == pytest.approx(0.003)
    assert record["total_emissions_kg"] == pytest.approx(0.00015)
    assert record["total_duration_s"] == pytest.approx(30.0)
    assert record["grid_gco2_per_kwh"] == pytest.approx(50.0)
    assert record["power_model"] == ["RAM()", "CPU(Cpu Load)"]
    (tmp_path / CODECARBON_FILE).write_text("an overwritten run's line\n")
    with track_emissions(tmp_path):  # not resume: the earlier run's files go
        assert not (tmp_path / EMISSIONS_FILE).exists()
        assert not (tmp_path / CODECARBON_FILE).exists()
    record = read_emissions(tmp_path)
    assert record is not None and record["blocks"] == 1
