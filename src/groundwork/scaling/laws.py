r"""Scaling laws: how the loss of a language model falls with its size, its data and its compute,
and how to spend a compute budget between the two. Chapter 9 (Scaling laws).

**Kaplan et al. 2020** ("Scaling Laws for Neural Language Models") found the test loss of a
Transformer to be a power law in each resource when the others do not hold it back:

$$ L(N) = (N_c / N)^{\alpha_N}, \qquad L(D) = (D_c / D)^{\alpha_D}, \qquad
L(C) = (C_c / C)^{\alpha_C}, $$

with $\alpha_N \approx 0.076$, $N_c \approx 8.8 \times 10^{13}$ non-embedding parameters and
$\alpha_D \approx 0.095$, $D_c \approx 5.4 \times 10^{13}$ tokens (:data:`KAPLAN_N`,
:data:`KAPLAN_D`; the constants depend on the tokenizer and data, the exponents are what
transfers). A power law is a straight line in log-log space, $\log L = \alpha \log x_c - \alpha
\log x$, so :func:`fit_power_law` fits one by ordinary least squares on the logarithms: a closed
form, exact on noiseless data, with no starting point to choose. It has *no* irreducible term:
over the range a small sweep covers, $E + (x_c/x)^\alpha$ and a pure power law are hard to tell
apart, and the loss floor $E$ lives in the Chinchilla law below, which fits it jointly.

**Hoffmann et al. 2022** ("Training Compute-Optimal Large Language Models", *Chinchilla*) model
the loss of $N$ parameters trained on $D$ tokens as

$$ L(N, D) = E + \frac{A}{N^\alpha} + \frac{B}{D^\beta}: $$

$E$ is the entropy of text, the loss no model removes; $A/N^\alpha$ what a finite model cannot
represent, $B/D^\beta$ what finite data and training leave undone (:class:`ChinchillaLaw`).
Their approach 3 fits the five numbers (:func:`fit_chinchilla`) and derives from them how to
spend a budget of $C \approx 6ND$ training FLOPs (:mod:`groundwork.train.flops`).

*The compute-optimal allocation.* On the iso-FLOP curve $D = C / (6N)$ we have $dD/dN = -D/N$,
so

$$ \frac{dL}{dN} = -\frac{\alpha A}{N^{\alpha + 1}} + \frac{\beta B}{D^{\beta + 1}} \frac{D}{N}
= \frac{1}{N} \left( \frac{\beta B}{D^\beta} - \frac{\alpha A}{N^\alpha} \right) = 0
\iff \alpha A N^{-\alpha} = \beta B D^{-\beta}: $$

at the optimum the two reducible terms stand in the ratio $\beta : \alpha$. Substituting
$D = (C/6)/N$ gives $N^{\alpha+\beta} = \frac{\alpha A}{\beta B} (C/6)^\beta$, hence

$$ N_{opt} = G \left(\frac{C}{6}\right)^{a}, \quad D_{opt} = G^{-1} \left(\frac{C}{6}\right)^{b},
\quad G = \left(\frac{\alpha A}{\beta B}\right)^{\frac{1}{\alpha + \beta}},
\quad a = \frac{\beta}{\alpha + \beta}, \quad b = \frac{\alpha}{\alpha + \beta}. $$

It is the minimum, not just a stationary point: with $u = \log N$ the loss along the curve is
$E + A e^{-\alpha u} + B (C/6)^{-\beta} e^{\beta u}$, a sum of convex functions of $u$.
Hoffmann et al.'s published fit (eq. 10, :data:`CHINCHILLA`: $E = 1.69$, $A = 406.4$,
$B = 410.7$, $\alpha = 0.34$, $\beta = 0.28$) gives $a = 0.45$: parameters and tokens should
grow about equally with compute, where Kaplan et al. had grown parameters much faster
($N \propto C^{0.73}$). At Gopher's budget, $5.76 \times 10^{23}$ FLOPs, these rounded
coefficients give $N_{opt} = 32.2$B and $D_{opt} = 2.98$T; the unrounded exponents of the
paper's TeX source ($\alpha = 0.3392$, $\beta = 0.2849$, $E = 1.6934$, as Besiroglu et al.
report) give the 40B of their Table 3. The optimum moves a lot with the exponents: $a$ is a
ratio of two small, correlated estimates.

**Besiroglu et al. 2024** ("Chinchilla Scaling: A replication attempt") re-fitted approach 3 to
data read off Hoffmann et al.'s figure 4 and found the published fit inconsistent both with
that data and with Hoffmann et al.'s own approaches 1 and 2 (which gave $a \approx 0.5$, about
20 tokens per parameter, the rule Chinchilla itself was trained by). Two causes: the optimizer
stopped early, because the Huber loss was *averaged* over the runs, shrinking the objective
below the optimizer's tolerances; and the rounding of the reported coefficients. Their confidence
intervals were also implausibly narrow for ~400 runs. The re-fit, :data:`BESIROGLU`
($E = 1.8172$, $A = 482.01$, $B = 2085.43$, $\alpha = 0.3478$, $\beta = 0.3658$), gives
$a = 0.513$: 72B parameters and 1.3T tokens at Gopher's budget, about 18 tokens per parameter.
:func:`fit_chinchilla` therefore *sums* the Huber losses and runs L-BFGS to tight tolerances.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError

__all__ = [
    "BESIROGLU",
    "CHINCHILLA",
    "HOFFMANN_GRID",
    "KAPLAN_D",
    "KAPLAN_N",
    "ChinchillaFit",
    "ChinchillaLaw",
    "PowerLaw",
    "StartGrid",
    "chinchilla_objective",
    "fit_chinchilla",
    "fit_power_law",
]

Values = Sequence[float] | np.ndarray | torch.Tensor
"""A 1-D collection of numbers: a list, a NumPy array or a tensor."""

T = TypeVar("T", float, np.ndarray, torch.Tensor)


def _as_positive(name: str, values: Values) -> torch.Tensor:
    """``values`` as a 1-D float64 tensor, checked finite and positive (logarithms follow).

    Raises:
        ConfigError: Not 1-D, empty, or a value that is not finite and positive.
    """
    try:
        x = torch.as_tensor(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be numbers: {err}") from err
    if x.dim() != 1 or len(x) == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D list of numbers, got shape {x.shape}")
    bad = ~(torch.isfinite(x) & (x > 0))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ConfigError(f"{name} must be finite and positive; {name}[{i}] = {x[i].item()}")
    return x


def _same_length(**columns: torch.Tensor) -> int:
    lengths = {name: len(x) for name, x in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"the inputs must have the same length, got {lengths}")
    return next(iter(lengths.values()))


# --8<-- [start:power_law]
@dataclass(frozen=True)
class PowerLaw:
    r"""$L(x) = (x_c / x)^\alpha$ (Kaplan et al. 2020): the loss as a power of one resource."""

    x_c: float
    alpha: float

    def __call__(self, x: T) -> T:
        return (self.x_c / x) ** self.alpha


def fit_power_law(x: Values, loss: Values) -> PowerLaw:
    r"""Fit $L = (x_c / x)^\alpha$ by least squares on $\log L = \alpha \log x_c - \alpha \log x$.

    >>> law = fit_power_law([1e6, 1e7, 1e8], [(1e10 / n) ** 0.1 for n in (1e6, 1e7, 1e8)])
    >>> round(law.alpha, 6), f"{law.x_c:.4g}"
    (0.1, '1e+10')

    Raises:
        ConfigError: Non-positive values, lengths that differ, fewer than two distinct ``x``,
            or a loss that does not change with ``x`` ($\alpha = 0$).
    """
    log_x, log_loss = _as_positive("x", x).log(), _as_positive("loss", loss).log()
    _same_length(x=log_x, loss=log_loss)
    if len(log_x.unique()) < 2:
        raise ConfigError("a power law needs at least two distinct x values")
    X = torch.stack([torch.ones_like(log_x), log_x], dim=1)  # (n, 2): intercept, slope
    intercept, slope = torch.linalg.lstsq(X, log_loss[:, None]).solution[:, 0].tolist()
    alpha = -slope
    if abs(alpha) < 1e-12:
        raise ConfigError("the loss does not change with x: no power law to fit")
    return PowerLaw(x_c=math.exp(intercept / alpha), alpha=alpha)


# --8<-- [end:power_law]


# --8<-- [start:chinchilla_law]
@dataclass(frozen=True)
class ChinchillaLaw:
    r"""$L(N, D) = E + A / N^\alpha + B / D^\beta$ (Hoffmann et al. 2022, eq. 2): the loss of $N$
    parameters trained on $D$ tokens. Called on numbers, arrays or tensors (elementwise)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __call__(self, N: T, D: T) -> T:
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    @property
    def exponents(self) -> tuple[float, float]:
        r"""$(a, b) = (\beta, \alpha) / (\alpha + \beta)$: $N_{opt} \propto C^a$,
        $D_{opt} \propto C^b$."""
        return self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)

    def optimal(self, flops: float) -> tuple[float, float]:
        r"""$(N_{opt}, D_{opt})$: the split of ``flops`` $= C = 6ND$ with the lowest loss,
        $N_{opt} = G (C/6)^a$, $D_{opt} = G^{-1} (C/6)^b$,
        $G = (\alpha A / (\beta B))^{1/(\alpha + \beta)}$ (derived in the module docstring).

        Raises:
            ConfigError: ``flops`` is not finite and positive.
        """
        if not (math.isfinite(flops) and flops > 0):
            raise ConfigError(f"the compute budget must be finite and positive, got {flops}")
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        a, b = self.exponents
        return G * (flops / 6) ** a, (flops / 6) ** b / G


# --8<-- [end:chinchilla_law]

CHINCHILLA = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
"""Hoffmann et al. 2022's approach-3 fit as published (eq. 10, rounded)."""

BESIROGLU = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
"""Besiroglu et al. 2024's re-fit of approach 3 to the data of Hoffmann et al.'s figure 4."""

KAPLAN_N = PowerLaw(x_c=8.8e13, alpha=0.076)
"""Kaplan et al. 2020's $L(N)$: non-embedding parameters, trained to convergence (eq. 1.1)."""

KAPLAN_D = PowerLaw(x_c=5.4e13, alpha=0.095)
"""Kaplan et al. 2020's $L(D)$: tokens, a large model stopped early (eq. 1.2)."""


@dataclass(frozen=True)
class StartGrid:
    """Starting points of the approach-3 fit: every combination of these values (the default is
    Hoffmann et al.'s grid, 4,500 points)."""

    alpha: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0)
    beta: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0)
    e: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    """$\\log E$."""
    a: Sequence[float] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    """$\\log A$."""
    b: Sequence[float] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    """$\\log B$."""

    def points(self) -> torch.Tensor:
        """The grid as rows $(a, b, e, \\alpha, \\beta)$, float64 ``(n_points, 5)``."""
        rows = itertools.product(self.a, self.b, self.e, self.alpha, self.beta)
        return torch.tensor(list(rows), dtype=torch.float64).reshape(-1, 5)


HOFFMANN_GRID = StartGrid()


@dataclass(frozen=True)
class ChinchillaFit:
    """The result of :func:`fit_chinchilla`."""

    law: ChinchillaLaw
    objective: float
    """The summed Huber loss at the fit."""
    n_points: int
    starts: int
    """How many starting points L-BFGS ran from."""
    start: tuple[float, ...]
    """The grid point $(a, b, e, \\alpha, \\beta)$ the best fit started from."""


# --8<-- [start:chinchilla_fit]
def chinchilla_objective(
    theta: torch.Tensor,
    log_N: torch.Tensor,
    log_D: torch.Tensor,
    log_loss: torch.Tensor,
    delta: float = 1e-3,
) -> torch.Tensor:
    r"""$\sum_i \text{Huber}_\delta(\log \hat L_i - \log L_i)$ with
    $\log \hat L = \text{LSE}(a - \alpha \log N,\ b - \beta \log D,\ e)$: Hoffmann et al.'s
    approach-3 objective, summed over the runs (Besiroglu et al.), for each row
    $\theta = (a, b, e, \alpha, \beta)$ of ``theta`` ``(..., 5)``; returns shape ``(...)``.

    Fitting $\log A$, $\log B$, $\log E$ keeps $A, B, E$ positive; the log-sum-exp is
    $\log(A/N^\alpha + B/D^\beta + E)$ computed without overflow.
    """
    a, b, e, alpha, beta = theta[..., None].unbind(-2)  # each (..., 1)
    # LSE(x, y, z) = log(e^x + e^y + e^z), two pairwise log-add-exps: (..., 1) with (n,) -> (..., n)
    log_pred = torch.logaddexp(torch.logaddexp(a - alpha * log_N, b - beta * log_D), e)
    target = log_loss.expand_as(log_pred)
    return F.huber_loss(log_pred, target, reduction="none", delta=delta).sum(-1)


def fit_chinchilla(
    N: Values,
    D: Values,
    loss: Values,
    *,
    delta: float = 1e-3,
    grid: StartGrid | None = None,
    starts: int | None = 32,
) -> ChinchillaFit:
    r"""Fit $L(N, D) = E + A/N^\alpha + B/D^\beta$ to runs of $N$ parameters trained on $D$
    tokens (Hoffmann et al. 2022, approach 3): minimise :func:`chinchilla_objective` by
    L-BFGS in float64 from the points of ``grid`` and keep the best. Each run of L-BFGS
    (strong Wolfe line search) goes on until the gradient is below 1e-10 or the objective moves
    less than 1e-13, or 500 iterations.

    Args:
        N: Parameters of each run.
        D: Training tokens of each run.
        loss: Final loss of each run (nats per token).
        delta: The Huber loss's threshold: residuals of the log loss beyond it count linearly,
            so a few bad runs cannot drag the fit.
        grid: Starting points (default :data:`HOFFMANN_GRID`).
        starts: Run L-BFGS only from this many grid points, those with the lowest objective
            (one batched evaluation picks them: our shortcut, not the paper's); ``None`` runs
            from every point, as Hoffmann et al. did (4,500 runs of L-BFGS, minutes on a CPU).

    Raises:
        ConfigError: Non-positive values, lengths that differ, fewer runs than the five
            parameters, a bad ``delta`` or ``starts``, or no start converging.
    """
    log_N, log_D = _as_positive("N", N).log(), _as_positive("D", D).log()
    log_loss = _as_positive("loss", loss).log()
    n = _same_length(N=log_N, D=log_D, loss=log_loss)
    if n < 5:
        raise ConfigError(f"fitting L(N, D) needs at least 5 runs (5 parameters), got {n}")
    if not delta > 0 or (starts is not None and starts < 1):
        raise ConfigError(f"need delta > 0 and starts >= 1, got {delta} and {starts}")
    points = (grid or HOFFMANN_GRID).points()
    if starts is not None and starts < len(points):
        with torch.no_grad():
            screen = chinchilla_objective(points, log_N, log_D, log_loss, delta)
        points = points[screen.nan_to_num(math.inf).argsort()[:starts]]
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for start in points:
        theta = start.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [theta],
            lr=1.0,
            max_iter=500,
            history_size=20,
            tolerance_grad=1e-10,
            tolerance_change=1e-13,
            line_search_fn="strong_wolfe",
        )

        def closure(theta: torch.Tensor = theta, optimizer: Any = optimizer) -> torch.Tensor:
            optimizer.zero_grad()
            value = chinchilla_objective(theta, log_N, log_D, log_loss, delta)
            value.backward()
            return value

        optimizer.step(closure)
        with torch.no_grad():
            value = chinchilla_objective(theta, log_N, log_D, log_loss, delta).item()
        finite = math.isfinite(value) and bool(torch.isfinite(theta).all())
        if finite and (best is None or value < best[0]):
            best = (value, theta.detach().clone(), start)
    if best is None:
        raise ConfigError("no starting point of the grid converged; check the runs' numbers")
    value, (a, b, e, alpha, beta), start = best[0], best[1].tolist(), best[2]
    law = ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)
    return ChinchillaFit(law, value, n, len(points), tuple(start.tolist()))


# --8<-- [end:chinchilla_fit]
