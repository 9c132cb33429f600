r"""Linear probes with control tasks: what a frozen model's layers make linearly decodable.

A *probe* is a small classifier trained on a frozen model's hidden states (one vector per token or
per sequence, from :func:`groundwork.adapt.features.layer_states`) to predict a property such as a
part-of-speech tag. High probe accuracy says the property is linearly decodable from that layer;
it does not say the model *uses* it, and a probe with enough capacity can reach high accuracy by
memorising word types. **Control tasks** (Hewitt and Liang, 2019) measure that second effect:
each word type gets a random label, fixed per type and drawn from the real task's label
distribution, so the control task can be solved only by memorising types. The **selectivity**

$$ \mathrm{selectivity} = \mathrm{acc}_{\text{task}} - \mathrm{acc}_{\text{control}} $$

is high for a probe that reads the property from the representation rather than memorising.

The probe is multinomial logistic regression with an L2 penalty, fitted full batch with L-BFGS in
float64. For $K$ classes, weights $W \in \mathbb{R}^{K \times D}$ and intercepts
$b \in \mathbb{R}^K$ it minimises scikit-learn's objective for
``LogisticRegression(C=C)`` (default ``lbfgs`` solver, ``fit_intercept=True``), divided by $N$
exactly as scikit-learn divides it before handing it to its optimiser:

$$ \mathcal{L}(W, b) = \frac{1}{N} \sum_{i=1}^{N} -\log \operatorname{softmax}(W x_i + b)_{y_i}
   + \frac{1}{2 C N} \lVert W \rVert_F^2 , $$

the intercept not penalised. Dividing by $N$ does not move the minimum; it fixes what ``tol``
means: L-BFGS stops when the largest absolute entry of $\nabla \mathcal{L}$ is at most ``tol``
(scikit-learn's ``gtol``). The code minimises $N \mathcal{L}$ (the sum form) with both
tolerances multiplied by $N$, the same minimum and the same stopping rule, because
``torch.optim.LBFGS`` drops curvature pairs with $s^\top y \le 10^{-10}$: on the mean-scaled
objective that threshold stalls it near the optimum (several times scikit-learn's iterations at
``tol=1e-8``).

With two classes scikit-learn fits a single weight vector $w$ with the binomial loss
$\log(1 + e^{-s_i z_i})$, for $z_i = w \cdot x_i + b$ and $s_i = \pm 1$; the probe does the same
(``coef`` has one row), computed as softmax cross-entropy over the logits $(0, z_i)$, which is the
same loss. Both optimisers start from zero and the intercept gradients of the multinomial loss sum
to zero, so the intercepts keep summing to zero, as scikit-learn's do.

References:
    - Alain and Bengio, "Understanding intermediate layers using linear classifier probes", 2016.
    - Hewitt and Liang, "Designing and Interpreting Probes with Control Tasks", EMNLP 2019.
    - Liu and Nocedal, "On the limited memory BFGS method for large scale optimization", 1989.

Chapter 12 (Adaptation), section "Probing".
"""

import hashlib
import math
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError, DataError
from groundwork.evaluate.classification import accuracy as _accuracy
from groundwork.evaluate.classification import classification_report
from groundwork.fileio import atomic_path

Labels = Sequence[int] | torch.Tensor


def _as_labels(name: str, values: Labels) -> list[int]:
    if isinstance(values, torch.Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise DataError(f"{name} must hold integer class ids, got a {values.dtype} tensor")
        if values.dim() != 1:
            raise DataError(f"{name} must be 1-D, got shape {tuple(values.shape)}")
        return [int(v) for v in values.tolist()]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"{name} must hold integer class ids, got {v!r}")
        out.append(v)
    return out


def _as_features(name: str, X: torch.Tensor) -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.dim() != 2:
        raise DataError(f"{name} must be a (N, D) matrix, got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {tuple(X.shape)})")
    X = X.detach().to(torch.float64)
    if not bool(torch.isfinite(X).all()):
        raise DataError(f"{name} holds NaN or infinite values")
    return X


@dataclass
class Probe:
    """A fitted logistic-regression probe. ``coef`` is ``(K, D)`` for ``K > 2`` classes and
    ``(1, D)`` for two (as scikit-learn's ``coef_``); ``intercept`` is ``(K,)`` or ``(1,)``.

    With ``standardize=True`` the probe was fitted on ``(X - mean) / scale`` and ``coef`` refers
    to the standardised features; :meth:`predict` applies the same transform.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    classes: list[int]
    """The sorted distinct training labels; row ``k`` of ``coef`` (``K > 2``) is ``classes[k]``."""
    mean: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    n_iter: int = 0
    """L-BFGS iterations taken."""
    converged: bool = True
    """Whether L-BFGS stopped before ``max_iter`` (gradient below ``tol`` or no more progress)."""
    loss: float = math.nan
    """The final value of the objective (mean cross-entropy plus penalty)."""

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, K)`` for every class (for two classes: ``(0, w·x + b)``)."""
        X = _as_features("X", X)
        if X.shape[1] != self.coef.shape[1]:
            raise DataError(
                f"X has {X.shape[1]} features but the probe was fitted on {self.coef.shape[1]}"
            )
        X = X.to(self.coef.device)
        if self.mean is not None and self.scale is not None:
            X = (X - self.mean) / self.scale
        return _logits(X, self.coef, self.intercept)

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, K)``, columns in the order of :attr:`classes`."""
        return self.logits(X).softmax(dim=-1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """The most probable class label for each row of ``X``, shape ``(N,)``, int64."""
        index = self.logits(X).argmax(dim=-1).cpu()
        return torch.tensor(self.classes, dtype=torch.int64)[index]

    def accuracy(self, X: torch.Tensor, y: Labels) -> float:
        """The fraction of rows of ``X`` whose predicted label equals ``y``."""
        labels = _as_labels("y", y)
        if len(labels) != X.shape[0]:
            raise DataError(f"X has {X.shape[0]} rows but y has {len(labels)} labels")
        return _accuracy(labels, self.predict(X))


def _logits(X: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
    z = X @ coef.T + intercept  # (N, K) or (N, 1) for two classes
    if coef.shape[0] == 1:
        # binomial: p(class 1) = sigmoid(z) = softmax((0, z))[1]
        z = torch.cat([torch.zeros_like(z), z], dim=1)  # (N, 2)
    return z


def fit_probe(
    X: torch.Tensor,
    y: Labels,
    *,
    C: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-4,
    standardize: bool = False,
) -> Probe:
    """Fit an L2-penalised logistic-regression probe on features ``X`` ``(N, D)`` and labels ``y``.

    The objective and the stopping rule are scikit-learn's ``LogisticRegression(C=C,
    max_iter=max_iter, tol=tol)`` (see the module docstring); the optimiser is
    ``torch.optim.LBFGS`` with a strong-Wolfe line search, in float64 on ``X``'s device.

    Args:
        X: features, one row per example; any float dtype (converted to float64).
        y: integer labels, at least two distinct values.
        C: inverse penalty strength, > 0; smaller is a stronger penalty.
        max_iter: the most L-BFGS iterations; a warning says when they run out.
        tol: stop when every entry of the objective's gradient is at most ``tol`` in size.
        standardize: fit on features scaled to zero mean and unit variance (statistics of ``X``);
            off by default, as in scikit-learn.

    Raises:
        ConfigError: ``C``, ``max_iter`` or ``tol`` is not positive.
        DataError: ``X`` is not a non-empty finite matrix, ``y`` does not match it, or ``y``
            holds a single class.
    """
    if not (isinstance(C, int | float) and math.isfinite(C) and C > 0):
        raise ConfigError(f"C must be a positive number, got {C!r}")
    if max_iter < 1:
        raise ConfigError(f"max_iter must be >= 1, got {max_iter}")
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    X = _as_features("X", X)
    labels = _as_labels("y", y)
    n, d = X.shape
    if len(labels) != n:
        raise DataError(f"X has {n} rows but y has {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"y holds a single class ({classes[0]}); a probe needs at least two")
    index = {c: k for k, c in enumerate(classes)}
    target = torch.tensor([index[v] for v in labels], device=X.device)  # (N,)

    mean = scale = None
    if standardize:
        mean = X.mean(dim=0)  # (D,)
        scale = X.std(dim=0, unbiased=False)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant features stay
        X = (X - mean) / scale

    rows = 1 if len(classes) == 2 else len(classes)
    coef = torch.zeros(rows, d, dtype=torch.float64, device=X.device, requires_grad=True)
    intercept = torch.zeros(rows, dtype=torch.float64, device=X.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [coef, intercept],
        lr=1.0,
        max_iter=max_iter,
        max_eval=15000,  # scipy's default maxfun; also bounds each line search
        tolerance_grad=tol * n,  # on N * L: scikit-learn's gtol on L
        tolerance_change=64 * torch.finfo(torch.float64).eps * n,  # scikit-learn's ftol
        history_size=10,  # scipy's default maxcor
        line_search_fn="strong_wolfe",
    )

    # --8<-- [start:objective]
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # N * L = sum_i CE(W x_i + b, y_i) + 1/(2C) ||W||^2   (intercept not penalised)
        ce = F.cross_entropy(_logits(X, coef, intercept), target, reduction="sum")
        loss = ce + coef.square().sum() / (2 * C)
        loss.backward()
        return loss

    # --8<-- [end:objective]

    optimizer.step(closure)
    n_iter = int(optimizer.state[coef].get("n_iter", 0))
    with torch.enable_grad():
        final = float(closure().detach()) / n
    assert coef.grad is not None and intercept.grad is not None
    gradient = max(float(coef.grad.abs().max()), float(intercept.grad.abs().max())) / n
    converged = gradient <= tol or n_iter < max_iter
    if not converged:
        warnings.warn(
            f"the probe's L-BFGS stopped after max_iter={max_iter} iterations with gradient "
            f"{gradient:.2e} > tol={tol:g}; raise max_iter or pass standardize=True",
            RuntimeWarning,
            stacklevel=2,
        )
    return Probe(
        coef=coef.detach(),
        intercept=intercept.detach(),
        classes=classes,
        mean=mean,
        scale=scale,
        n_iter=n_iter,
        converged=converged,
        loss=final,
    )


def _stable_hash(seed: int, value: Hashable) -> int:
    """A 64-bit hash of ``(seed, repr(value))`` that, unlike ``hash``, is the same in every run."""
    digest = hashlib.blake2b(f"{seed}\x00{value!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def control_labels(types: Sequence[Hashable], labels: Labels, seed: int = 0) -> list[int]:
    """Hewitt and Liang's control task: one random label per word type, drawn from the empirical
    distribution of ``labels``.

    ``types[i]`` is the word type of example ``i`` (its word form, e.g. ``"the"``) and
    ``labels[i]`` its real label. Every type gets label ``c`` with probability
    ``count(c) / N`` (the real task's label frequencies), drawn independently per type, and every
    occurrence of the type gets that label. The draw depends only on the seed and the type's
    ``repr`` (a stable hash, not Python's salted ``hash``), so it does not depend on the order of
    the examples and is the same in every run; types should therefore have a stable ``repr``
    (strings, ints, tuples of them).

    >>> control = control_labels(["the", "cat", "the", "sat"], [0, 1, 0, 2], seed=0)
    >>> control[0] == control[2]
    True

    Raises:
        DataError: the inputs are empty or of different lengths, or ``labels`` are not integers.
    """
    values = _as_labels("labels", labels)
    if len(types) != len(values):
        raise DataError(f"types has {len(types)} entries but labels has {len(values)}")
    if not values:
        raise DataError("no examples to draw control labels for (types and labels are empty)")
    counts = sorted(Counter(values).items())  # [(label, count)] in label order
    n = len(values)
    cumulative = []
    total = 0
    for _, count in counts:
        total += count
        cumulative.append(total)
    control: dict[Hashable, int] = {}
    out = []
    for t in types:
        if t not in control:
            # inverse CDF on integers: r uniform on [0, N) (bias N / 2^64), label c with
            # probability count(c) / N
            r = _stable_hash(seed, t) % n
            k = next(k for k, c in enumerate(cumulative) if r < c)
            control[t] = counts[k][0]
        out.append(control[t])
    return out


def selectivity(task_acc: float, control_acc: float) -> float:
    """Hewitt and Liang's selectivity: task accuracy minus control-task accuracy.

    >>> round(selectivity(0.97, 0.71), 2)
    0.26
    """
    for name, value in (("task_acc", task_acc), ("control_acc", control_acc)):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{name} must be an accuracy in [0, 1], got {value}")
    return task_acc - control_acc


@dataclass(frozen=True)
class LayerResult:
    """Test-set scores of a probe on one layer, on the real task and on the control task."""

    layer: int
    task_accuracy: float
    control_accuracy: float
    selectivity: float
    task_macro_f1: float | None = None
    """Macro-F1 of the task probe over the classes in the test labels or its predictions
    (scikit-learn's ``f1_score(average="macro")``); ``None`` where not measured."""
    control_macro_f1: float | None = None
    """The same for the control probe."""


def _macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or ``y_pred``, as
    scikit-learn's ``f1_score(average="macro")`` (whatever the ids of the classes are)."""
    present = sorted(set(y_true) | set(y_pred))
    index = {c: k for k, c in enumerate(present)}
    return classification_report(
        [index[v] for v in y_true], [index[v] for v in y_pred], num_classes=len(present)
    ).macro_f1


def _indices(name: str, idx: Sequence[int] | torch.Tensor, n: int) -> torch.Tensor:
    values = _as_labels(name, idx)
    if not values:
        raise DataError(f"{name} is empty")
    if min(values) < 0 or max(values) >= n:
        raise DataError(f"{name} holds indices outside [0, {n}) for {n} examples")
    return torch.tensor(values, dtype=torch.int64)


def probe_layers(
    features_by_layer: Sequence[torch.Tensor],
    labels: Labels,
    control: Labels,
    train_idx: Sequence[int] | torch.Tensor,
    test_idx: Sequence[int] | torch.Tensor,
    *,
    C: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-4,
    standardize: bool = False,
) -> list[LayerResult]:
    """Fit one task probe and one control probe per layer; score both on the test examples.

    Args:
        features_by_layer: one ``(N, D)`` matrix per layer (``D`` may differ between layers),
            row ``i`` the representation of example ``i``.
        labels: the real task's label per example, ``(N,)``.
        control: the control task's label per example (from :func:`control_labels`), ``(N,)``.
        train_idx: the examples to fit on; test_idx: the disjoint examples to score.
        C, max_iter, tol, standardize: passed to :func:`fit_probe` (same for every probe).

    Returns:
        One :class:`LayerResult` per layer, in order, with test accuracies and macro-F1s.

    Raises:
        DataError: no layers, lengths that do not agree, empty or overlapping splits, indices out
            of range, or a training split with a single class.
    """
    if len(features_by_layer) == 0:
        raise DataError("features_by_layer is empty; pass one (N, D) matrix per layer")
    task = torch.tensor(_as_labels("labels", labels), dtype=torch.int64)
    ctrl = torch.tensor(_as_labels("control", control), dtype=torch.int64)
    n = len(task)
    if len(ctrl) != n:
        raise DataError(f"labels has {n} entries but control has {len(ctrl)}")
    for layer, features in enumerate(features_by_layer):
        if features.dim() != 2 or features.shape[0] != n:
            raise DataError(
                f"layer {layer} has features of shape {tuple(features.shape)}; expected ({n}, D)"
            )
    train = _indices("train_idx", train_idx, n)
    test = _indices("test_idx", test_idx, n)
    if set(train.tolist()) & set(test.tolist()):
        raise DataError("train_idx and test_idx overlap; probes are scored on held-out examples")
    results = []
    for layer, features in enumerate(features_by_layer):
        X_train, X_test = features[train], features[test]  # (N_train, D), (N_test, D)
        scores, f1s = [], []
        for y in (task, ctrl):
            probe = fit_probe(
                X_train, y[train], C=C, max_iter=max_iter, tol=tol, standardize=standardize
            )
            true, predicted = y[test].tolist(), probe.predict(X_test).tolist()
            scores.append(_accuracy(true, predicted))
            f1s.append(_macro_f1(true, predicted))
        results.append(LayerResult(layer, scores[0], scores[1], selectivity(*scores), *f1s))
    return results


def plot_probe(results: Sequence[LayerResult], path: str | Path, title: str | None = None) -> Path:
    """Plot task accuracy, control accuracy and selectivity against the layer; written
    atomically as a PNG. Returns ``path``."""
    if not results:
        raise DataError("no probe results to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r.layer for r in results]
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    ax.plot(layers, [r.task_accuracy for r in results], "o-", label="probe (task)")
    ax.plot(layers, [r.control_accuracy for r in results], "s-", label="probe (control task)")
    ax.plot(layers, [r.selectivity for r in results], "^--", label="selectivity")
    low = min(0.0, *(r.selectivity for r in results))
    ax.set_ylim(low - 0.05, 1.05)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(layers[:: max(1, -(-len(layers) // 16))])  # at most 16 labels
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Linear probe accuracy by layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
