"""Scaling laws (chapter 9): how the loss falls with parameters, data and compute.

* :mod:`groundwork.scaling.laws`: Kaplan et al. 2020's power laws (:func:`fit_power_law`) and
  Chinchilla's $L(N, D) = E + A/N^\\alpha + B/D^\\beta$ (Hoffmann et al. 2022), its
  compute-optimal allocation and its fit (approach 3, :func:`fit_chinchilla`), with the published
  coefficients and Besiroglu et al. 2024's re-fit;
* :mod:`groundwork.scaling.isoflop`: the IsoFLOP profiles of approach 2 (a parabola in
  $\\log N$ per compute budget), the compute frontier, and the plots of a sweep;
* :mod:`groundwork.scaling.sweep`: the sweep that trains the runs these laws are fitted to.
"""

from groundwork.scaling.isoflop import (
    IsoFlopMinimum,
    IsoFlopWarning,
    Run,
    as_runs,
    fit_allocation,
    frontier,
    group_by_budget,
    isoflop_minima,
    plot_fit,
    plot_frontier,
    plot_isoflops,
)
from groundwork.scaling.laws import (
    BESIROGLU,
    CHINCHILLA,
    HOFFMANN_GRID,
    KAPLAN_D,
    KAPLAN_N,
    ChinchillaFit,
    ChinchillaLaw,
    PowerLaw,
    StartGrid,
    chinchilla_objective,
    fit_chinchilla,
    fit_power_law,
)

__all__ = [
    "BESIROGLU",
    "CHINCHILLA",
    "HOFFMANN_GRID",
    "KAPLAN_D",
    "KAPLAN_N",
    "ChinchillaFit",
    "ChinchillaLaw",
    "IsoFlopMinimum",
    "IsoFlopWarning",
    "PowerLaw",
    "Run",
    "StartGrid",
    "as_runs",
    "chinchilla_objective",
    "fit_allocation",
    "fit_chinchilla",
    "fit_power_law",
    "frontier",
    "group_by_budget",
    "isoflop_minima",
    "plot_fit",
    "plot_frontier",
    "plot_isoflops",
]
