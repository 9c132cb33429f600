"""``groundwork scaling optimal`` and ``groundwork scaling fit``: the compute-optimal model for a
budget by the published Chinchilla laws, and the scaling laws fitted to a sweep. Chapter 9.

``scaling fit`` reads the ``results.json`` of a sweep (``groundwork scaling sweep`` writes it,
:mod:`groundwork.scaling.sweep`)::

    {"runs": [{"params": 1234567, "tokens": 20000000, "flops": 1.6e14, "loss": 3.21,
               "budget": 1e14, ...}, ...]}

one record per trained model: ``params`` $N$ (the parameters that multiply), ``tokens`` $D$
trained on, ``flops`` the training compute spent, ``loss`` the final validation loss in nats per
token, and optionally ``budget``, the compute budget the run was planned for (runs without one
are grouped by their ``flops``); other keys (``name``, ``d_model``, ``seconds``, ...) are
ignored. It fits Kaplan et al.'s $L(N)$ and $L(C)$ to the compute frontier, Chinchilla's
$L(N, D)$ to every run (approach 3), and one parabola per budget (approach 2), and writes
``fits.json`` and three plots: ``isoflops.png``, ``frontier.png`` and ``fit.png``.
"""

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import ConfigError
from groundwork.fileio import read_json, write_json
from groundwork.scaling.isoflop import (
    IsoFlopMinimum,
    IsoFlopWarning,
    Run,
    as_runs,
    fit_allocation,
    frontier,
    isoflop_minima,
    plot_fit,
    plot_frontier,
    plot_isoflops,
)
from groundwork.scaling.laws import (
    BESIROGLU,
    CHINCHILLA,
    ChinchillaLaw,
    PowerLaw,
    fit_chinchilla,
    fit_power_law,
)
from groundwork.tables import markdown_table

__all__ = ["scaling_fit", "scaling_optimal"]

FITS_FILE = "fits.json"
PLOTS = {"isoflops": "isoflops.png", "frontier": "frontier.png", "fit": "fit.png"}
LAWS = {
    "chinchilla": (CHINCHILLA, "Hoffmann et al. 2022, approach 3 as published"),
    "besiroglu": (BESIROGLU, "Besiroglu et al. 2024, the replication's re-fit"),
}


def _count(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def scaling_optimal(
    flops: float | None = None, law: Literal["chinchilla", "besiroglu"] = "chinchilla"
) -> None:
    """Print the compute-optimal model size and token count for a training budget.

    Example: ``groundwork scaling optimal --flops 5.76e23`` (Gopher's budget).

    Args:
        flops: The training compute budget C in FLOPs (C = 6 N D); required.
        law: The published L(N, D) to minimise: chinchilla (Hoffmann et al. 2022, eq. 10) or
            besiroglu (the 2024 replication's re-fit).
    """
    if flops is None:
        raise ConfigError("--flops is required: the training compute budget, e.g. 5.76e23")
    if law not in LAWS:
        raise ConfigError(f"--law must be chinchilla or besiroglu, got {law!r}")
    chosen, source = LAWS[law]
    N, D = chosen.optimal(flops)  # raises ConfigError for a bad budget
    a, b = chosen.exponents
    print(
        f"L(N, D) = {chosen.E} + {chosen.A} / N^{chosen.alpha} + {chosen.B} / D^{chosen.beta}"
        f"  ({source})"
    )
    print(f"compute C:          {flops:.3g} FLOPs (C = 6 N D)")
    print(f"parameters N_opt:   {N:.4g} ({_count(N)})  [N_opt ~ C^{a:.3f}]")
    print(f"tokens D_opt:       {D:.4g} ({_count(D)})  [D_opt ~ C^{b:.3f}]")
    print(f"tokens / parameter: {D / N:.1f}")
    print(f"predicted loss:     {chosen(N, D):.4f} nats/token")


def _minimum_row(m: IsoFlopMinimum) -> list[object]:
    ratio = m.tokens / m.params
    return [
        f"{m.budget:.3g}",
        _count(m.params),
        _count(m.tokens),
        f"{ratio:.1f}",
        f"{m.loss:.4f}",
        m.n_sizes,
    ]


def _read_runs(results: Path) -> list[Run]:
    data = read_json(results)
    records = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records:
        raise ConfigError(f'{results} must hold {{"runs": [...]}} with at least one run')
    return as_runs(records)


def _fit_kaplan(
    edge: list[Run], symbol: Literal["N", "C"]
) -> tuple[PowerLaw | None, dict[str, Any]]:
    """Kaplan et al.'s L(N) or L(C) on the compute frontier: the law (or None) and its record."""
    x = [r.params if symbol == "N" else r.flops for r in edge]
    try:
        law = fit_power_law(x, [r.loss for r in edge])
    except ConfigError as err:
        print(f"Kaplan L({symbol}) skipped: {err}")
        return None, {"skipped": str(err)}
    print(
        f"Kaplan L({symbol}) = ({symbol}_c / {symbol})^alpha on the compute frontier "
        f"({len(edge)} runs): {symbol}_c = {law.x_c:.4g}, alpha = {law.alpha:.4f}"
    )
    return law, {"x_c": law.x_c, "alpha": law.alpha, "n_points": len(edge)}


def _fit_chinchilla(runs: list[Run], starts: int) -> tuple[ChinchillaLaw | None, dict[str, Any]]:
    """Chinchilla's L(N, D) on every run: the law (or None) and its record."""
    N, D, loss = ([getattr(r, key) for r in runs] for key in ("params", "tokens", "loss"))
    try:
        fit = fit_chinchilla(N, D, loss, starts=starts)
    except ConfigError as err:
        print(f"Chinchilla L(N, D) skipped: {err}")
        return None, {"skipped": str(err)}
    law, (a, b) = fit.law, fit.law.exponents
    print(
        f"Chinchilla L(N, D) = E + A/N^alpha + B/D^beta ({fit.n_points} runs): "
        f"E = {law.E:.4g}, A = {law.A:.4g}, B = {law.B:.4g}, alpha = {law.alpha:.4f}, "
        f"beta = {law.beta:.4f}; N_opt ~ C^{a:.3f}, D_opt ~ C^{b:.3f}"
    )
    record = {**asdict(law), "objective": fit.objective, "n_points": fit.n_points}
    return law, record | {"starts": fit.starts, "a": a, "b": b}


def _fit_isoflop(
    runs: list[Run], window: int | None
) -> tuple[list[IsoFlopMinimum], dict[str, Any]]:
    """Approach 2: the minima of each budget's parabola, and the allocation exponents."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IsoFlopWarning)
        minima = isoflop_minima(runs, window=window)
    notes = [str(w.message) for w in caught if issubclass(w.category, IsoFlopWarning)]
    record: dict[str, Any] = {
        "minima": [{**asdict(m), "interior": m.interior} for m in minima],
        "notes": notes,
        "window": window,
    }
    if minima:
        print("IsoFLOP minima (a parabola in log N per budget):")
        header = ["C", "N_opt", "D_opt", "D/N", "loss", "sizes"]
        rows = [_minimum_row(m) for m in minima]
        print(markdown_table(header, rows, align="rrrrrr"), end="")
    else:
        print("IsoFLOP minima: none")
    for note in notes:
        print(f"  {note}")
    try:
        a, b = fit_allocation(minima)
    except ConfigError as err:
        record["allocation"] = {"skipped": str(err)}
        print(f"allocation skipped: {err}")
    else:
        record["allocation"] = {"a": a, "b": b}
        print(f"allocation: N_opt ~ C^{a:.3f}, D_opt ~ C^{b:.3f}")
    return minima, record


def scaling_fit(
    results: Path, out: Path | None = None, starts: int = 32, window: int | None = 5
) -> None:
    """Fit scaling laws to the results of a sweep; write fits.json and the plots.

    Example: ``groundwork scaling fit runs/scaling/results.json``.

    Args:
        results: The sweep's results.json: {"runs": [{"params", "tokens", "flops", "loss",
            "budget"}, ...]}.
        out: Directory for fits.json, isoflops.png, frontier.png and fit.png (default: the
            directory of results).
        starts: L-BFGS starting points of the Chinchilla fit (the best of Hoffmann et al.'s
            grid of 4,500).
        window: Fit each IsoFLOP parabola to this many runs, those nearest in log N to the
            budget's best (a valley is a parabola only near its bottom); null: all of them.
    """
    if starts < 1:
        raise ConfigError(f"--starts must be at least 1, got {starts}")
    results = Path(results)
    out = results.parent if out is None else Path(out)
    runs = _read_runs(results)
    print(f"{len(runs)} runs from {results}")
    edge = frontier(runs)
    _, kaplan_params = _fit_kaplan(edge, "N")
    compute_law, kaplan_flops = _fit_kaplan(edge, "C")
    law, chinchilla = _fit_chinchilla(runs, starts)
    minima, isoflop = _fit_isoflop(runs, window)
    written = [
        plot_isoflops(runs, minima, out / PLOTS["isoflops"]),
        plot_frontier(runs, out / PLOTS["frontier"], law=compute_law),
    ]
    if law is not None:
        written.append(plot_fit(runs, law, out / PLOTS["fit"]))
    fits = {
        "results": str(results),
        "n_runs": len(runs),
        "frontier": [asdict(r) for r in edge],
        "kaplan_params": kaplan_params,
        "kaplan_flops": kaplan_flops,
        "chinchilla": chinchilla,
        "isoflop": isoflop,
        "plots": [p.name for p in written],
    }
    write_json(out / FITS_FILE, fits)
    print(f"wrote {FITS_FILE} and {', '.join(p.name for p in written)} to {out}")
