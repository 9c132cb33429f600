"""Classification metrics: a hand-worked example, exact parity with scikit-learn (zero-division
cases included), and bad input."""

import random

import pytest
import torch

from groundwork.errors import DataError
from groundwork.evaluate.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    f1_score,
    macro_f1,
)


def test_hand_worked_example() -> None:
    """y_true = 0 0 0 1 1 2, y_pred = 0 1 0 1 2 2.

    Class 0: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 4/5. Class 1: TP 1, FP 1, FN 1 -> P = R = F1 = 1/2.
    Class 2: TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3. Accuracy 4/6.
    """
    r = classification_report([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 2, 2])
    assert r.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r.precision == [1.0, 0.5, 0.5]
    assert r.recall == [2 / 3, 0.5, 1.0]
    assert r.f1 == [4 / 5, 0.5, 2 / 3]
    assert r.support == [3, 2, 1]
    assert r.accuracy == 4 / 6
    assert r.macro_f1 == pytest.approx((4 / 5 + 0.5 + 2 / 3) / 3, rel=1e-15)


def test_tensors_and_lists_agree() -> None:
    y, p = [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]
    assert classification_report(torch.tensor(y), torch.tensor(p)) == classification_report(y, p)
    assert accuracy(torch.tensor(y), p) == 0.8


def test_zero_division_is_documented_value() -> None:
    """Class 1 never predicted (no precision), class 2 neither present nor predicted (nothing)."""
    r = classification_report([0, 0, 1], [0, 0, 0], num_classes=3)
    assert r.precision == [2 / 3, 0.0, 0.0]
    assert r.recall == [1.0, 0.0, 0.0]
    assert r.f1 == [0.8, 0.0, 0.0]
    r1 = classification_report([0, 0, 1], [0, 0, 0], num_classes=3, zero_division=1.0)
    # class 1 occurs, so its F1 is 2TP / (2TP + FP + FN) = 0 whatever zero_division says
    assert r1.precision == [2 / 3, 1.0, 1.0]
    assert r1.recall == [1.0, 0.0, 1.0]
    assert r1.f1 == [0.8, 0.0, 1.0]


@pytest.mark.parity
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_equal_to_sklearn(seed: int, zero_division: float) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    k = 4  # class 3 is rare or absent, class 2 sometimes never predicted: zero-division paths
    n = rng.randint(1, 40)
    y_true = [rng.choice([0, 0, 1, 1, 2, 3] if seed % 2 else [0, 1, 1, 2]) for _ in range(n)]
    y_pred = [rng.choice([0, 1, 1, 2] if seed % 3 else [0, 1]) for _ in range(n)]
    labels = list(range(k))
    r = classification_report(y_true, y_pred, num_classes=k, zero_division=zero_division)
    p, rec, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=zero_division
    )
    assert r.precision == p.tolist()
    assert r.recall == rec.tolist()
    assert r.f1 == f.tolist()
    assert r.support == s.tolist()
    assert r.accuracy == metrics.accuracy_score(y_true, y_pred)
    assert r.confusion == metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    expected_macro = metrics.f1_score(
        y_true, y_pred, labels=labels, average="macro", zero_division=zero_division
    )
    assert macro_f1(y_true, y_pred, num_classes=k, zero_division=zero_division) == expected_macro
    assert f1_score(y_true, y_pred, positive=1, num_classes=k) == metrics.f1_score(
        y_true, y_pred, labels=[1], average="macro", zero_division=0.0
    )


@pytest.mark.parametrize(
    ("y_true", "y_pred", "kwargs", "match"),
    [
        ([], [], {}, "empty"),
        ([0, 1], [0], {}, "2 labels but y_pred has 1"),
        ([0, -1], [0, 1], {}, ">= 0"),
        ([0, 2], [0, 1], {"num_classes": 2}, "out of range"),
        ([0, 1], [0, 1], {"num_classes": 0}, "num_classes"),
        ([0.0, 1.0], [0, 1], {}, "integer class ids"),
        ([True, False], [0, 1], {}, "integer class ids"),
    ],
)
def test_bad_input_raises(y_true: list, y_pred: list, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        classification_report(y_true, y_pred, **kwargs)


def test_float_tensor_and_bad_positive_class_raise() -> None:
    with pytest.raises(DataError, match="integer class ids"):
        confusion_matrix(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="positive class 2"):
        f1_score([0, 1], [0, 1], positive=2)
    with pytest.raises(DataError, match="class names"):
        classification_report([0, 1], [0, 1]).as_dict(["only-one"])


def test_docstring_examples() -> None:
    import doctest

    from groundwork.evaluate import classification

    assert doctest.testmod(classification).failed == 0
