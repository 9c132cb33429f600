"""``groundwork scaling optimal`` prints the published compute-optimal split; ``groundwork scaling
fit`` fits a small synthetic sweep, prints a summary and writes fits.json and the plots; bad
input is refused in one line."""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from groundwork.errors import CheckpointError, ConfigError
from groundwork.fileio import read_json
from groundwork.recipes.scaling import scaling_fit, scaling_optimal
from groundwork.scaling.laws import CHINCHILLA

PNG = b"\x89PNG\r\n\x1a\n"


def write_results(path: Path, budgets: list[float], *, extra: list[dict] | None = None) -> Path:
    """A sweep's results.json: five sizes per budget around the Chinchilla optimum, the loss
    from CHINCHILLA with 0.2% noise, the FLOPs a little above 6ND (attention), as the sweep
    writes them."""
    rng = np.random.default_rng(0)
    runs = []
    for C in budgets:
        N_opt, _ = CHINCHILLA.optimal(C)
        for v in (-1.2, -0.6, 0.0, 0.6, 1.2):
            N = round(N_opt * math.exp(v))
            D = round(C / (6 * N))
            loss = CHINCHILLA(N, D) * math.exp(0.002 * rng.standard_normal())
            runs.append(
                dict(name=f"n{N}-c{C:.0e}", params=N, tokens=D, flops=6.1 * N * D, loss=loss)
                | dict(budget=C, seconds=1.0)
            )
    path.write_text(json.dumps({"runs": runs + (extra or [])}), encoding="utf-8")
    return path


def test_optimal_prints_the_chinchilla_split(capsys: pytest.CaptureFixture[str]) -> None:
    scaling_optimal(flops=5.76e23)
    out = capsys.readouterr().out
    assert "Hoffmann et al. 2022" in out
    assert "(32.2B)" in out and "(2.98T)" in out  # the rounded eq. 10 coefficients
    assert "tokens / parameter: 92.6" in out
    assert "predicted loss:     1.9307" in out


def test_optimal_with_the_replication(capsys: pytest.CaptureFixture[str]) -> None:
    scaling_optimal(flops=5.76e23, law="besiroglu")
    out = capsys.readouterr().out
    assert "Besiroglu et al. 2024" in out
    assert "(72.2B)" in out and "(1.33T)" in out and "tokens / parameter: 18.4" in out


@pytest.mark.parametrize(
    ("flops", "law", "message"),
    [
        (None, "chinchilla", "--flops is required"),
        (0.0, "chinchilla", "finite and positive"),
        (-1e20, "chinchilla", "finite and positive"),
        (1e20, "kaplan", "--law must be chinchilla or besiroglu"),
    ],
)
def test_optimal_refuses_bad_input(flops: float | None, law: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        scaling_optimal(flops=flops, law=law)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A sweep of three budgets (five sizes each) and one with only two sizes, fitted once
    (``scaling fit`` imports matplotlib and L-BFGS's dependencies, seconds the first time);
    the directory and what the command printed."""
    two_sizes = [
        dict(params=N, tokens=6e16 / (6 * N), flops=6e16, loss=CHINCHILLA(N, 1e16 / N), budget=6e16)
        for N in (1e7, 2e7)
    ]
    tmp = tmp_path_factory.mktemp("sweep")
    results = write_results(tmp / "results.json", [1e18, 1e19, 1e20], extra=two_sizes)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        scaling_fit(results, starts=2)
    return tmp, printed.getvalue()


def test_fit_prints_a_summary(fitted: tuple[Path, str]) -> None:
    _, out = fitted
    assert "17 runs from" in out
    assert "Kaplan L(N)" in out and "Kaplan L(C)" in out and "Chinchilla L(N, D)" in out
    assert "| C | N_opt | D_opt | D/N | loss | sizes |" in out
    assert "budget 6e+16 FLOPs skipped: only 2 model size(s)" in out
    assert "allocation: N_opt ~ C^0.4" in out


def test_fit_writes_the_plots_next_to_the_results(fitted: tuple[Path, str]) -> None:
    tmp, _ = fitted
    for name in ("isoflops.png", "frontier.png", "fit.png"):
        assert (tmp / name).read_bytes().startswith(PNG), name


def test_fit_writes_fits_json(fitted: tuple[Path, str]) -> None:
    tmp, _ = fitted
    fits = read_json(tmp / "fits.json")
    assert fits["n_runs"] == 17 and fits["plots"] == ["isoflops.png", "frontier.png", "fit.png"]
    assert [m["budget"] for m in fits["isoflop"]["minima"]] == [1e18, 1e19, 1e20]
    assert all(m["interior"] and m["n_sizes"] == 5 for m in fits["isoflop"]["minima"])
    assert fits["isoflop"]["notes"] == [
        "budget 6e+16 FLOPs skipped: only 2 model size(s), a parabola needs 3"
    ]
    # The same valley shape at every budget (see test_isoflop): a comes out close to
    # beta / (alpha + beta) = 0.4516, up to the noise and the rounding of N and D.
    assert fits["isoflop"]["allocation"]["a"] == pytest.approx(0.4516, abs=0.03)
    chinchilla = fits["chinchilla"]
    assert chinchilla["n_points"] == 17 and chinchilla["starts"] == 2
    assert set(chinchilla) >= {"E", "A", "B", "alpha", "beta", "objective", "a", "b"}
    assert fits["kaplan_params"]["alpha"] > 0 and fits["kaplan_flops"]["alpha"] > 0
    assert len(fits["frontier"]) == 4  # the best run of each budget, each beating the last


def test_fit_writes_to_out_and_skips_what_too_few_runs_cannot_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        dict(params=1e6, tokens=2e7, flops=1.2e14, loss=4.0),
        dict(params=2e6, tokens=1e7, flops=1.2e14, loss=4.1),
        dict(params=1e6, tokens=2e8, flops=1.2e15, loss=3.6),
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": runs}), encoding="utf-8")
    scaling_fit(results, out=tmp_path / "fits")
    out = capsys.readouterr().out
    assert "Chinchilla L(N, D) skipped: fitting L(N, D) needs at least 5 runs" in out
    assert "allocation skipped" in out
    fits = read_json(tmp_path / "fits" / "fits.json")
    assert "skipped" in fits["chinchilla"] and "skipped" in fits["isoflop"]["allocation"]
    assert fits["plots"] == ["isoflops.png", "frontier.png"]  # no law, no fit.png
    assert not (tmp_path / "fits" / "fit.png").exists()
    assert not (tmp_path / "fits.json").exists()


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, CheckpointError, "does not exist"),
        ("{not json", CheckpointError, "not valid JSON"),
        ('{"runs": []}', ConfigError, "at least one run"),
        ("[1, 2]", ConfigError, "must hold"),
        ('{"runs": [{"params": 1, "tokens": 1, "flops": 1}]}', ConfigError, "no 'loss'"),
    ],
)
def test_fit_refuses_bad_results(
    tmp_path: Path, content: str | None, error: type[Exception], message: str
) -> None:
    results = tmp_path / "results.json"
    if content is not None:
        results.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=message):
        scaling_fit(results)


def test_fit_refuses_bad_starts(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results.json", [1e18])
    with pytest.raises(ConfigError, match="--starts must be at least 1"):
        scaling_fit(results, starts=0)
