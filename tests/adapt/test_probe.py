"""Linear probes and control tasks: the fitted probe is at the optimum of scikit-learn's objective
(and equals scikit-learn's fit on real data sets), control labels are a seeded function of the word
type that follows the task's label distribution, and a probe finds the layer that holds the
signal."""

import functools
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from groundwork.adapt.probe import (
    LayerResult,
    control_labels,
    fit_probe,
    plot_probe,
    probe_layers,
    selectivity,
)
from groundwork.errors import ConfigError, DataError


def objective(X: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, C: float):
    """scikit-learn's objective divided by N, written independently in numpy: mean cross-entropy
    plus ||W||^2 / (2 C N); two classes use one row, i.e. logits (0, z)."""
    z = X @ coef.T + intercept  # (N, K) or (N, 1)
    if coef.shape[0] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=1)  # (N, 2)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = -log_p[np.arange(len(y)), y].mean()
    return ce + (coef**2).sum() / (2 * C * len(y))


def blobs(n: int, k: int, d: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Gaussian points in ``d`` dims around ``k`` random centres (unit-variance noise)."""
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(k, d, generator=g, dtype=torch.float64)  # (k, d)
    y = torch.randint(0, k, (n,), generator=g)
    X = centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64)  # (n, d)
    return X, y


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The matrices here are tiny: one thread is faster, and on a loaded machine far faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# The probe


def test_gradient_vanishes_at_the_fit() -> None:
    """At the returned weights every entry of the (mean-scaled) objective's gradient is <= tol,
    and the intercepts sum to zero (the multinomial's free direction is never moved)."""
    X, y = blobs(300, 4, 8, spread=1.0, seed=0)
    tol = 1e-7
    probe = fit_probe(X, y, C=0.5, max_iter=500, tol=tol)
    assert probe.converged and probe.coef.shape == (4, 8) and probe.intercept.shape == (4,)
    W = probe.coef.clone().requires_grad_(True)
    b = probe.intercept.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(X @ W.T + b, y) + W.square().sum() / (2 * 0.5 * 300)
    loss.backward()
    assert W.grad is not None and b.grad is not None
    assert W.grad.abs().max() <= tol and b.grad.abs().max() <= tol
    assert probe.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    assert abs(float(probe.intercept.sum())) < 1e-9


def test_binary_has_one_row_and_sigmoid_probabilities() -> None:
    X, y = blobs(200, 2, 5, spread=1.0, seed=1)
    probe = fit_probe(X, y + 3, max_iter=300, tol=1e-8)  # labels 3 and 4
    assert probe.classes == [3, 4] and probe.coef.shape == (1, 5)
    p = probe.predict_proba(X)  # (N, 2)
    z = X @ probe.coef[0] + probe.intercept[0]
    torch.testing.assert_close(p[:, 1], torch.sigmoid(z), rtol=1e-12, atol=1e-12)
    assert set(probe.predict(X).tolist()) <= {3, 4}
    assert probe.accuracy(X, y + 3) > 0.8


def test_labels_need_not_be_contiguous() -> None:
    X, y = blobs(240, 3, 6, spread=3.0, seed=2)
    labels = torch.tensor([10, 20, 30])[y]
    probe = fit_probe(X, labels, max_iter=300)
    assert probe.classes == [10, 20, 30]
    assert probe.accuracy(X, labels) > 0.9


def test_standardize_is_a_fit_on_standardised_features() -> None:
    X, y = blobs(200, 3, 6, spread=2.0, seed=3)
    X = X * torch.tensor([1.0, 10.0, 100.0, 0.1, 1.0, 1.0]) + 50.0
    X[:, 5] = 7.0  # a constant feature keeps scale 1
    probe = fit_probe(X, y, standardize=True, max_iter=500, tol=1e-9)
    std = X.std(dim=0, unbiased=False)
    std[5] = 1.0
    manual = fit_probe((X - X.mean(dim=0)) / std, y, max_iter=500, tol=1e-9)
    torch.testing.assert_close(probe.coef, manual.coef, rtol=1e-6, atol=1e-8)
    assert torch.equal(probe.predict(X), manual.predict((X - X.mean(dim=0)) / std))


def test_running_out_of_iterations_warns() -> None:
    X, y = blobs(100, 3, 4, spread=1.0, seed=4)
    with pytest.warns(RuntimeWarning, match="max_iter=1"):
        probe = fit_probe(X, y, max_iter=1, tol=1e-12)
    assert not probe.converged and probe.n_iter == 1


# ---------------------------------------------------------------------------------------------
# Parity with scikit-learn


@functools.cache
def _datasets() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    datasets = pytest.importorskip("sklearn.datasets")
    digits_X, digits_y = datasets.load_digits(return_X_y=True)
    digits_X, digits_y = digits_X[:800], digits_y[:800]
    scale = digits_X.std(axis=0)
    digits_X = (digits_X - digits_X.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    iris_X, iris_y = datasets.load_iris(return_X_y=True)
    cancer_X, cancer_y = datasets.load_breast_cancer(return_X_y=True)
    cancer_X = (cancer_X - cancer_X.mean(axis=0)) / cancer_X.std(axis=0)
    blobs_X, blobs_y = datasets.make_blobs(
        n_samples=600, centers=5, n_features=64, cluster_std=8.0, random_state=0
    )
    return {  # name: (X, y, C)
        "digits": (digits_X, digits_y, 0.1),
        "iris": (iris_X, iris_y, 1.0),
        "blobs-5x64": (blobs_X, blobs_y, 1.0),
        "blobs-5x64-C0.01": (blobs_X, blobs_y, 0.01),
        "breast-cancer-binary": (cancer_X, cancer_y, 1.0),
    }


@pytest.mark.parity
@pytest.mark.parametrize(
    "name", ["digits", "iris", "blobs-5x64", "blobs-5x64-C0.01", "breast-cancer-binary"]
)
def test_equal_to_sklearn(name: str) -> None:
    """Both optimisers run to tol=1e-8, so both reach the same optimum. Measured largest
    coefficient difference over the largest coefficient: digits 1.2e-6, iris 3.3e-6, blobs 4.4e-5
    (C=0.01: 9e-6), binary 2.8e-6; intercepts within 5.2e-4; predictions identical; our objective
    never above scikit-learn's by more than 1e-10."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, C = _datasets()[name]
    reference = linear_model.LogisticRegression(C=C, max_iter=1000, tol=1e-8).fit(X, y)
    probe = fit_probe(torch.from_numpy(X), torch.from_numpy(y), C=C, max_iter=1000, tol=1e-8)
    assert probe.converged
    coef, intercept = probe.coef.numpy(), probe.intercept.numpy()
    assert coef.shape == reference.coef_.shape and probe.classes == reference.classes_.tolist()
    largest = np.abs(reference.coef_).max()
    np.testing.assert_allclose(coef, reference.coef_, rtol=0, atol=3e-4 * largest)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=0, atol=5e-3)
    ours = objective(X, y, coef, intercept, C)
    theirs = objective(X, y, reference.coef_, reference.intercept_, C)
    assert ours <= theirs + 1e-10
    assert probe.accuracy(torch.from_numpy(X), y.tolist()) == reference.score(X, y)
    assert torch.equal(probe.predict(torch.from_numpy(X)), torch.from_numpy(reference.predict(X)))


@pytest.mark.parity
@pytest.mark.parametrize("name", ["digits", "blobs-5x64", "breast-cancer-binary"])
def test_default_settings_match_sklearn(name: str) -> None:
    """scikit-learn's defaults (tol=1e-4, max_iter=100): accuracy within half a point and the
    objective within 1e-4 of scikit-learn's."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, C = _datasets()[name]
    reference = linear_model.LogisticRegression(C=C).fit(X, y)
    probe = fit_probe(torch.from_numpy(X), torch.from_numpy(y), C=C)
    accuracy = probe.accuracy(torch.from_numpy(X), y.tolist())
    assert abs(accuracy - reference.score(X, y)) <= 0.005
    ours = objective(X, y, probe.coef.numpy(), probe.intercept.numpy(), C)
    theirs = objective(X, y, reference.coef_, reference.intercept_, C)
    assert abs(ours - theirs) <= 1e-4


# ---------------------------------------------------------------------------------------------
# Control tasks


def test_control_label_is_a_function_of_the_type() -> None:
    types = ["the", "cat", "the", "sat", "on", "the", "mat", "cat"]
    labels = [0, 1, 0, 2, 3, 0, 1, 1]
    control = control_labels(types, labels, seed=0)
    assert len(control) == len(types)
    by_type: dict[str, set[int]] = {}
    for t, c in zip(types, control, strict=True):
        by_type.setdefault(t, set()).add(c)
    assert all(len(cs) == 1 for cs in by_type.values())
    assert set(control) <= set(labels)


def test_control_labels_are_seeded_and_order_free() -> None:
    rng = random.Random(0)
    types = [f"w{rng.randrange(400)}" for _ in range(2000)]
    labels = [rng.randrange(5) for _ in types]
    control = control_labels(types, labels, seed=7)
    assert control_labels(types, labels, seed=7) == control
    assert control_labels(types, torch.tensor(labels), seed=7) == control
    assert control_labels(types, labels, seed=8) != control
    # the draw depends on the type (and seed and label distribution), not on where it occurs
    order = list(range(len(types)))
    rng.shuffle(order)
    shuffled = control_labels([types[i] for i in order], [labels[i] for i in order], seed=7)
    assert shuffled == [control[i] for i in order]


def test_control_labels_follow_the_label_distribution() -> None:
    """Token-level label frequencies 0.5 / 0.3 / 0.15 / 0.05; each of 6000 types draws once, so
    the share of types given label c is within 0.025 of p_c (about 4 standard deviations)."""
    share = {0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05}
    labels = [c for c, p in share.items() for _ in range(int(p * 20_000))]
    types = [i % 6000 for i in range(len(labels))]  # every type occurs, with mixed labels
    control = control_labels(types, labels, seed=3)
    per_type = {t: c for t, c in zip(types, control, strict=True)}
    counts = Counter(per_type.values())
    assert len(per_type) == 6000
    for c, p in share.items():
        assert abs(counts[c] / 6000 - p) < 0.025, (c, counts[c] / 6000, p)


def test_a_label_never_seen_is_never_drawn() -> None:
    control = control_labels(list(range(500)), [4] * 499 + [9], seed=0)
    assert set(control) <= {4, 9} and control.count(4) > 450


def test_selectivity() -> None:
    assert selectivity(0.97, 0.71) == pytest.approx(0.26)
    assert selectivity(0.5, 0.6) == pytest.approx(-0.1)
    with pytest.raises(DataError, match="task_acc"):
        selectivity(97.0, 71.0)


# ---------------------------------------------------------------------------------------------
# Probing layers


def synthetic_layers(seed: int = 0) -> tuple[list[torch.Tensor], list[str], list[int]]:
    """150 word types, each with a real label in 0..2; 900 tokens. Layer 0 is pure noise, layer 1
    a weak signal, layer 2 the label's centre plus noise. No layer encodes the type itself, so the
    control task (random label per type) cannot be learnt from any of them."""
    g = torch.Generator().manual_seed(seed)
    n_types, n, d = 150, 900, 16
    type_label = torch.randint(0, 3, (n_types,), generator=g)
    token_type = torch.randint(0, n_types, (n,), generator=g)
    y = type_label[token_type]  # (N,)
    centres = 3.0 * torch.randn(3, d, generator=g)  # (3, D)
    layers = [
        torch.randn(n, d, generator=g),
        0.3 * centres[y] + torch.randn(n, d, generator=g),
        centres[y] + torch.randn(n, d, generator=g),
    ]
    return layers, [f"w{t}" for t in token_type.tolist()], y.tolist()


def test_probe_layers_finds_the_signal() -> None:
    layers, types, y = synthetic_layers()
    control = control_labels(types, y, seed=0)
    results = probe_layers(layers, y, control, range(600), range(600, 900), C=1.0)
    assert [r.layer for r in results] == [0, 1, 2]
    noise, _, signal = results
    assert signal.task_accuracy > 0.95
    assert noise.task_accuracy < 0.55  # chance is about 1/3 to 0.4
    assert signal.task_accuracy > noise.task_accuracy + 0.4
    assert signal.selectivity > 0.4 and signal.selectivity > noise.selectivity + 0.3
    for r in results:
        assert r.selectivity == pytest.approx(r.task_accuracy - r.control_accuracy)
        assert 0.0 <= r.control_accuracy <= 0.65


def test_macro_f1_is_sklearns_over_the_classes_present() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    from groundwork.adapt.probe import _macro_f1

    rng = random.Random(0)
    for classes in ([0, 1], [3, 7, 11], [5, 2, 9, 4]):
        y_true = [rng.choice(classes) for _ in range(60)]
        y_pred = [rng.choice(classes[:-1]) for _ in range(60)]  # one class never predicted
        expected = metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert _macro_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    # a class only predicted (never true) counts, with F1 0
    assert _macro_f1([0, 0], [0, 1]) == pytest.approx(
        metrics.f1_score([0, 0], [0, 1], average="macro")
    )


def test_probe_layers_reports_macro_f1() -> None:
    layers, types, y = synthetic_layers()
    results = probe_layers(layers, y, control_labels(types, y), range(600), range(600, 900))
    for r in results:
        assert r.task_macro_f1 is not None and r.control_macro_f1 is not None
        assert 0.0 <= r.task_macro_f1 <= 1.0 and 0.0 <= r.control_macro_f1 <= 1.0
    f1 = [r.task_macro_f1 or 0.0 for r in results]
    assert f1[2] > 0.95 and f1[0] < 0.55


def test_plot_is_written(tmp_path) -> None:
    results = [
        LayerResult(0, 0.4, 0.35, 0.05),
        LayerResult(1, 0.8, 0.4, 0.4),
        LayerResult(2, 0.97, 0.5, 0.47),
    ]
    path = plot_probe(results, tmp_path / "plots" / "probe.png", title="synthetic")
    data = path.read_bytes()
    assert path == tmp_path / "plots" / "probe.png"
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_probe_input() -> None:
    X, y = blobs(20, 2, 3, spread=1.0, seed=0)
    with pytest.raises(DataError, match="20 rows but y has 19"):
        fit_probe(X, y[:19])
    with pytest.raises(DataError, match="single class"):
        fit_probe(X, torch.zeros(20, dtype=torch.int64))
    with pytest.raises(ConfigError, match="C must be a positive"):
        fit_probe(X, y, C=0.0)
    with pytest.raises(ConfigError, match="C must be a positive"):
        fit_probe(X, y, C=-1.0)
    with pytest.raises(ConfigError, match="max_iter"):
        fit_probe(X, y, max_iter=0)
    with pytest.raises(ConfigError, match="tol"):
        fit_probe(X, y, tol=0.0)
    with pytest.raises(DataError, match="empty"):
        fit_probe(torch.zeros(0, 3), [])
    with pytest.raises(DataError, match=r"\(N, D\) matrix"):
        fit_probe(torch.zeros(20), y)
    with pytest.raises(DataError, match="NaN or infinite"):
        fit_probe(torch.full((20, 3), float("nan")), y)
    with pytest.raises(DataError, match="integer class ids"):
        fit_probe(X, y.double())
    probe = fit_probe(X, y)
    with pytest.raises(DataError, match="4 features but the probe was fitted on 3"):
        probe.predict(torch.zeros(5, 4))


def test_bad_control_input() -> None:
    with pytest.raises(DataError, match="empty"):
        control_labels([], [])
    with pytest.raises(DataError, match="2 entries but labels has 3"):
        control_labels(["a", "b"], [0, 1, 1])
    with pytest.raises(DataError, match="integer class ids"):
        control_labels(["a", "b"], ["x", "y"])  # type: ignore[list-item]


def test_bad_probe_layers_input(tmp_path) -> None:
    layers, types, y = synthetic_layers()
    control = control_labels(types, y)
    with pytest.raises(DataError, match="features_by_layer is empty"):
        probe_layers([], y, control, range(10), range(10, 20))
    with pytest.raises(DataError, match=r"layer 1 .* expected \(900, D\)"):
        probe_layers([layers[0], layers[1][:-1]], y, control, range(10), range(10, 20))
    with pytest.raises(DataError, match="control has 899"):
        probe_layers(layers, y, control[:-1], range(10), range(10, 20))
    with pytest.raises(DataError, match="overlap"):
        probe_layers(layers, y, control, range(100), range(50, 150))
    with pytest.raises(DataError, match="outside"):
        probe_layers(layers, y, control, range(100), [900])
    with pytest.raises(DataError, match="test_idx is empty"):
        probe_layers(layers, y, control, range(100), [])
    with pytest.raises(DataError, match="single class"):
        probe_layers(layers, [0] * 900, control, range(100), range(100, 200))
    with pytest.raises(DataError, match="no probe results"):
        plot_probe([], tmp_path / "x.png")
