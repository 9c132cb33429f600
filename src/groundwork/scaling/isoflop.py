r"""IsoFLOP profiles (Hoffmann et al. 2022, approach 2) and the plots of a scaling sweep.

Train several model sizes $N$ on the same compute budget $C$, each on $D \approx C / (6N)$
tokens: small models see many tokens, large ones few, and the final loss traces a valley
against $\log N$. Near its bottom the valley is close to a parabola,

$$ L \approx c_2 (\ln N)^2 + c_1 \ln N + c_0, \qquad \ln N_{opt} = -\frac{c_1}{2 c_2}, $$

so each budget gives one compute-optimal size $N_{opt}(C)$ and $D_{opt}(C) = C / (6 N_{opt})$
(:func:`isoflop_minima`; when the runs' FLOPs also count attention, as the sweep's do, $6ND$
is a little less than $C$ and this $D_{opt}$ a little more than the tokens such a run trains
on). A straight line through $\log N_{opt}$ against $\log C$ then gives the
exponent $a$ of $N_{opt} \propto C^a$ (:func:`fit_allocation`), and $b = 1 - a$ for the tokens.
Hoffmann et al. found $a \approx 0.49$ this way: parameters and tokens in equal proportion.
Unlike approach 3 (:func:`~groundwork.scaling.laws.fit_chinchilla`) nothing is assumed about
the shape of $L(N, D)$, only that each valley is locally quadratic; a grid of sizes that is
wide or off-centre biases the minimum, since the true valley is not a parabola.

A run is a record (a :class:`Run`, or a mapping with the same keys as the sweep's
``results.json`` writes, :mod:`groundwork.scaling.sweep`): ``params`` $N$, ``tokens`` $D$,
``flops`` (its training compute) and ``loss``, and optionally ``budget``, the nominal $C$ it
was planned for. Runs with a ``budget`` are grouped by it; the others by their ``flops``,
those within a relative tolerance of each other forming one budget. Chapter 9.
"""

import contextlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundwork.errors import ConfigError
from groundwork.fileio import atomic_path
from groundwork.scaling.laws import ChinchillaLaw, PowerLaw, fit_power_law

__all__ = [
    "IsoFlopMinimum",
    "IsoFlopWarning",
    "Run",
    "as_runs",
    "fit_allocation",
    "frontier",
    "group_by_budget",
    "isoflop_minima",
    "plot_fit",
    "plot_frontier",
    "plot_isoflops",
]


@dataclass(frozen=True)
class Run:
    """One trained model of a sweep."""

    params: float
    """$N$: parameters."""
    tokens: float
    """$D$: training tokens."""
    flops: float
    """Training compute spent."""
    loss: float
    """Final validation loss (nats per token)."""
    budget: float | None = None
    """The compute budget the run was planned for, if known."""


RunLike = Run | Mapping[str, Any]


def as_runs(records: Iterable[RunLike]) -> list[Run]:
    """Records (a :class:`Run` or a mapping with ``params``, ``tokens``, ``flops``, ``loss`` and
    optionally ``budget``; other keys are ignored) as checked :class:`Run` records.

    Raises:
        ConfigError: A key is missing, or a value is not a finite positive number.
    """
    runs = []
    for i, record in enumerate(records):
        if isinstance(record, Run):
            record = vars(record)
        if not isinstance(record, Mapping):
            raise ConfigError(f"run {i} must be a mapping of params, tokens, flops, loss")
        params, tokens, flops, loss = (_number(record, key, i) for key in _KEYS)
        budget = None if record.get("budget") is None else _number(record, "budget", i)
        runs.append(Run(params, tokens, flops, loss, budget))
    return runs


_KEYS = ("params", "tokens", "flops", "loss")


def _number(record: Mapping[str, Any], key: str, i: int) -> float:
    if key not in record:
        raise ConfigError(f"run {i} has no {key!r} (a run needs {', '.join(_KEYS)})")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"run {i}: {key} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"run {i}: {key} must be finite and positive, got {value}")
    return float(value)


def group_by_budget(runs: Iterable[RunLike], rtol: float = 0.1) -> dict[float, list[Run]]:
    """The runs by compute budget $C$, smallest first: runs with a ``budget`` by its value, the
    others by ``flops``, sorted and cut wherever one exceeds the first of its group by more than
    ``rtol`` (relative); such a group's $C$ is the geometric mean of its FLOPs.

    >>> groups = group_by_budget([dict(params=1, tokens=1, flops=f, loss=1) for f in (1, 1.05, 3)])
    >>> [(round(c, 3), len(g)) for c, g in groups.items()]
    [(1.025, 2), (3.0, 1)]
    """
    if not rtol >= 0:
        raise ConfigError(f"rtol must be >= 0, got {rtol}")
    checked = as_runs(runs)
    groups: dict[float, list[Run]] = {}
    for run in checked:
        if run.budget is not None:
            groups.setdefault(run.budget, []).append(run)
    cluster: list[Run] = []
    for run in sorted((r for r in checked if r.budget is None), key=lambda r: r.flops):
        if cluster and run.flops > cluster[0].flops * (1 + rtol):
            groups.setdefault(_geometric_mean([r.flops for r in cluster]), []).extend(cluster)
            cluster = []
        cluster.append(run)
    if cluster:
        groups.setdefault(_geometric_mean([r.flops for r in cluster]), []).extend(cluster)
    return dict(sorted(groups.items()))


def _geometric_mean(values: Sequence[float]) -> float:
    if min(values) == max(values):
        return values[0]  # exactly, not through exp(log(.))
    return math.exp(sum(math.log(v) for v in values) / len(values))


class IsoFlopWarning(UserWarning):
    """A budget of :func:`isoflop_minima` was skipped (too few sizes, no minimum), or its minimum
    lies outside the sizes trained."""


@dataclass(frozen=True)
class IsoFlopMinimum:
    """The compute-optimal model of one budget, from the parabola through its IsoFLOP profile."""

    budget: float
    """$C$: the compute budget."""
    params: float
    """$N_{opt} = e^{-c_1 / 2 c_2}$."""
    tokens: float
    """$D_{opt} = C / (6 N_{opt})$."""
    loss: float
    """The parabola's minimum."""
    coeffs: tuple[float, float, float]
    r"""$(c_2, c_1, c_0)$ of $L \approx c_2 (\ln N)^2 + c_1 \ln N + c_0$."""
    sizes: tuple[float, float]
    """The smallest and largest $N$ trained at this budget."""
    n_sizes: int
    """Distinct model sizes the parabola was fitted to."""

    @property
    def interior(self) -> bool:
        """Whether $N_{opt}$ lies within the sizes trained (else it is extrapolated)."""
        return self.sizes[0] <= self.params <= self.sizes[1]


# --8<-- [start:isoflop]
def isoflop_minima(
    runs: Iterable[RunLike], *, rtol: float = 0.1, min_sizes: int = 3, window: int | None = None
) -> list[IsoFlopMinimum]:
    r"""Fit a parabola in $\ln N$ to the losses of each budget and return its minima.

    A valley is a parabola only near its bottom: far from the optimum the loss of a too-large
    model rises much faster than a quadratic in $\ln N$, and such points drag the vertex.
    With ``window`` only that many runs of a budget are fitted, those nearest in $\ln N$ to its
    best run.

    A budget with fewer than ``min_sizes`` distinct model sizes, or whose losses curve
    downwards ($c_2 \le 0$, no minimum), is skipped with a :class:`IsoFlopWarning`
    saying why; one whose minimum lies outside the sizes trained is kept, with a warning.

    Args:
        runs: The runs of a sweep (see the module docstring).
        rtol: Runs without a ``budget`` whose FLOPs agree this closely share a budget.
        min_sizes: Model sizes a budget needs (a parabola has three coefficients).
        window: Fit only this many runs per budget, nearest the best one (None: all).

    Raises:
        ConfigError: A malformed run, a negative ``rtol``, or ``min_sizes`` below 3.
    """
    if min_sizes < 3:
        raise ConfigError(f"a parabola needs min_sizes >= 3, got {min_sizes}")
    if window is not None and window < min_sizes:
        raise ConfigError(f"window ({window}) must be at least min_sizes ({min_sizes})")
    minima = []
    for C, group in group_by_budget(runs, rtol).items():
        if window is not None and len(group) > window:
            best = math.log(min(group, key=lambda r: r.loss).params)
            group = sorted(group, key=lambda r: abs(math.log(r.params) - best))[:window]
        log_N = np.log([r.params for r in group])
        loss = np.array([r.loss for r in group])
        n_sizes = len(np.unique(log_N))
        if n_sizes < min_sizes:
            warnings.warn(
                f"budget {C:.3g} FLOPs skipped: only {n_sizes} model size(s), "
                f"a parabola needs {min_sizes}",
                IsoFlopWarning,
                stacklevel=2,
            )
            continue
        c2, c1, c0 = np.polyfit(log_N, loss, 2)  # L ~ c2 (ln N)^2 + c1 ln N + c0
        if c2 <= 0:
            warnings.warn(
                f"budget {C:.3g} FLOPs skipped: the losses curve downwards against log N "
                "(no minimum); train sizes on both sides of the best one",
                IsoFlopWarning,
                stacklevel=2,
            )
            continue
        x_opt = -c1 / (2 * c2)  # the vertex: ln N_opt
        N_opt = math.exp(x_opt)
        minimum = IsoFlopMinimum(
            budget=C,
            params=N_opt,
            tokens=C / (6 * N_opt),
            loss=float(c0 - c1 * c1 / (4 * c2)),  # the parabola at its vertex
            coeffs=(float(c2), float(c1), float(c0)),
            sizes=(min(r.params for r in group), max(r.params for r in group)),
            n_sizes=n_sizes,
        )
        if not minimum.interior:
            warnings.warn(
                f"budget {C:.3g} FLOPs: the minimum N = {N_opt:.3g} lies outside the sizes "
                f"trained ({minimum.sizes[0]:.3g} to {minimum.sizes[1]:.3g}), extrapolated",
                IsoFlopWarning,
                stacklevel=2,
            )
        minima.append(minimum)
    return minima


def fit_allocation(minima: Sequence[IsoFlopMinimum]) -> tuple[float, float]:
    r"""$(a, b)$ with $N_{opt} \propto C^a$ and $D_{opt} \propto C^b$: least-squares slopes of
    $\log N_{opt}$ and $\log D_{opt}$ against $\log C$. Since $D_{opt} = C / (6 N_{opt})$,
    $a + b = 1$.

    Raises:
        ConfigError: Fewer than two distinct budgets.
    """
    C = np.array([m.budget for m in minima])
    if len(np.unique(C)) < 2:
        raise ConfigError(f"the allocation needs minima at two budgets or more, got {len(C)}")
    a = np.polyfit(np.log(C), np.log([m.params for m in minima]), 1)[0]
    b = np.polyfit(np.log(C), np.log([m.tokens for m in minima]), 1)[0]
    return float(a), float(b)


# --8<-- [end:isoflop]


def frontier(runs: Iterable[RunLike], *, rtol: float = 0.1) -> list[Run]:
    """The compute frontier: the best run of each budget (:func:`group_by_budget`), by increasing
    budget, when it beats the best of every smaller budget: the lower envelope of loss against
    compute, along which Kaplan et al. measure $L(C)$."""
    best, out = math.inf, []
    for group in group_by_budget(runs, rtol).values():
        run = min(group, key=lambda r: r.loss)
        if run.loss < best:
            best = run.loss
            out.append(run)
    return out


def _save(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _budget_colours(budgets: Sequence[float]) -> tuple[Any, Any]:
    """A function from a budget to its colour (viridis, on a log scale), and the colour map as
    a ``ScalarMappable`` for a colour bar."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    low, high = min(budgets), max(budgets)
    norm, cmap = LogNorm(low, high if high > low else low * 10), colormaps["viridis"]
    return (lambda c: cmap(norm(c))), ScalarMappable(norm, cmap)


def _plain_ticks(axis: Any) -> None:
    """Tick labels as plain numbers (``5``, ``6``) on a log axis spanning less than a decade."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda y, _: f"{y:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def plot_isoflops(
    runs: Iterable[RunLike], minima: Sequence[IsoFlopMinimum], out: Path, *, rtol: float = 0.1
) -> Path:
    """Loss against parameters, one colour per budget, with each budget's fitted parabola and its
    minimum (a star). Written atomically as a PNG; returns ``out``."""
    plt = _pyplot()
    groups = group_by_budget(runs, rtol)
    colour, _ = _budget_colours(list(groups) or [1.0])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for C, group in groups.items():
        N, loss = [r.params for r in group], [r.loss for r in group]
        ax.plot(N, loss, "o", color=colour(C), label=f"C = {C:.2g}")
    for m in minima:
        low, high = min(m.sizes[0], m.params), max(m.sizes[1], m.params)
        log_N = np.linspace(math.log(low) - 0.1, math.log(high) + 0.1, 100)
        ax.plot(np.exp(log_N), np.polyval(m.coeffs, log_N), "-", color=colour(m.budget), lw=1)
        ax.plot(m.params, m.loss, "*", color=colour(m.budget), ms=13, mec="black", mew=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title("IsoFLOP profiles: one parabola in log N per budget")
    ax.grid(alpha=0.3, which="both")
    if groups:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def plot_frontier(runs: Iterable[RunLike], out: Path, law: PowerLaw | None = None) -> Path:
    """Loss against compute: every run a grey point, the compute frontier (:func:`frontier`) in
    colour, and the power law $L(C)$ (``law``, default: fitted to the frontier, when it has two
    points or more) as a line. Written atomically as a PNG; returns ``out``."""
    plt = _pyplot()
    checked = as_runs(runs)
    edge = frontier(checked)
    if law is None and len(edge) >= 2:
        with contextlib.suppress(ConfigError):  # no line if the frontier is flat
            law = fit_power_law([r.flops for r in edge], [r.loss for r in edge])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    C, loss = [r.flops for r in checked], [r.loss for r in checked]
    ax.plot(C, loss, "o", color="0.65", ms=5, label="runs")
    ax.plot([r.flops for r in edge], [r.loss for r in edge], "o-", color="C3", label="frontier")
    if law is not None and checked:
        flops = np.logspace(math.log10(min(C)), math.log10(max(C)), 100)
        label = f"L(C) = ({law.x_c:.3g} / C)^{law.alpha:.3f}"
        ax.plot(flops, law(flops), "--", color="black", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax.yaxis)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title("Loss against compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def plot_fit(runs: Iterable[RunLike], law: ChinchillaLaw, out: Path) -> Path:
    """The loss ``law`` predicts for each run, $L(N, D)$, against the loss observed, coloured by
    budget, with the line $y = x$. Written atomically as a PNG; returns ``out``."""
    plt = _pyplot()
    checked = as_runs(runs)
    observed = np.array([r.loss for r in checked])
    predicted = law(np.array([r.params for r in checked]), np.array([r.tokens for r in checked]))
    budgets = [r.budget or r.flops for r in checked]
    colour, mappable = _budget_colours(budgets or [1.0])
    fig, ax = plt.subplots(figsize=(5.8, 5.0))
    ax.scatter(observed, predicted, c=[colour(c) for c in budgets], s=22)
    fig.colorbar(mappable, ax=ax, label="compute budget C (FLOPs)")
    if checked:
        low = min(observed.min(), predicted.min())
        high = max(observed.max(), predicted.max())
        ax.plot([low, high], [low, high], "--", color="black", lw=1, label="y = x")
        ax.legend(fontsize=8)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss L(N, D)")
    ax.set_title(
        f"E={law.E:.3g}, A={law.A:.3g}, B={law.B:.3g}, α={law.alpha:.3f}, β={law.beta:.3f}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)
