r"""Classification metrics from integer labels: accuracy, per-class precision/recall/F1, macro F1
and the confusion matrix.

For class $c$, with $\mathrm{TP}_c$ the examples of class $c$ predicted as $c$, $\mathrm{FP}_c$
the examples of other classes predicted as $c$ and $\mathrm{FN}_c$ the examples of class $c$
predicted as something else,

$$ P_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FP}_c}, \qquad
   R_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FN}_c}, \qquad
   F_{1,c} = \frac{2 P_c R_c}{P_c + R_c} = \frac{2\,\mathrm{TP}_c}{2\,\mathrm{TP}_c + \mathrm{FP}_c
   + \mathrm{FN}_c}, $$

and macro F1 is the unweighted mean of $F_{1,c}$ over the classes. The values equal
``sklearn.metrics`` (``precision_recall_fscore_support``, ``f1_score(average="macro")``,
``accuracy_score``, ``confusion_matrix``) exactly, zero-division cases included.

**Zero division.** A class that is never predicted has no precision ($0/0$); a class that never
occurs has no recall; a class that is neither predicted nor present has no F1. Each such value is
set to ``zero_division`` (default ``0.0``, scikit-learn's default value, without its warning).
F1 is computed as $2\mathrm{TP}/(2\mathrm{TP}+\mathrm{FP}+\mathrm{FN})$, so a class that occurs but
is never predicted gets $F_1 = 0$ whatever ``zero_division`` is (as in scikit-learn >= 1.3).

Chapter 4 ("Recurrent and convolutional models") uses these to score the spam classifiers;
chapter 11 (Evaluation) comes back to them.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from groundwork.errors import DataError

Labels = Sequence[int] | torch.Tensor


def _as_ints(name: str, values: Labels | Iterable[int]) -> list[int]:
    if isinstance(values, torch.Tensor):
        if values.is_floating_point():
            raise DataError(f"{name} must hold integer class ids, got a {values.dtype} tensor")
        return [int(v) for v in values.reshape(-1).tolist()]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"{name} must hold integer class ids, got {v!r}")
        out.append(v)
    return out


def _check(
    y_true: Labels, y_pred: Labels, num_classes: int | None
) -> tuple[list[int], list[int], int]:
    """Validate and convert labels; infer ``num_classes`` as ``max label + 1`` when not given."""
    true, pred = _as_ints("y_true", y_true), _as_ints("y_pred", y_pred)
    if len(true) != len(pred):
        raise DataError(f"y_true has {len(true)} labels but y_pred has {len(pred)}")
    if not true:
        raise DataError("no labels to score (y_true and y_pred are empty)")
    low = min(min(true), min(pred))
    if low < 0:
        raise DataError(f"class ids must be >= 0, got {low}")
    high = max(max(true), max(pred))
    if num_classes is None:
        num_classes = high + 1
    elif num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    elif high >= num_classes:
        raise DataError(f"class id {high} is out of range for num_classes={num_classes}")
    return true, pred, num_classes


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    """The fraction of predictions equal to the true label.

    >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
    0.75
    """
    true, pred, _ = _check(y_true, y_pred, None)
    return sum(t == p for t, p in zip(true, pred, strict=True)) / len(true)


# --8<-- [start:confusion]
def confusion_matrix(
    y_true: Labels, y_pred: Labels, *, num_classes: int | None = None
) -> list[list[int]]:
    """Counts ``m[i][j]`` of examples of true class ``i`` predicted as class ``j``.

    Rows are true classes, columns predicted classes (scikit-learn's convention); classes are
    ``0 .. num_classes - 1`` (default: up to the largest label seen).

    >>> confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    [[1, 1], [1, 2]]
    """
    true, pred, k = _check(y_true, y_pred, num_classes)
    m = [[0] * k for _ in range(k)]
    for t, p in zip(true, pred, strict=True):
        m[t][p] += 1
    return m


# --8<-- [end:confusion]


@dataclass
class ClassificationReport:
    """Metrics of one set of predictions; lists are indexed by class id."""

    accuracy: float
    """Fraction of correct predictions."""
    precision: list[float]
    """Per-class precision ``TP / (TP + FP)``."""
    recall: list[float]
    """Per-class recall ``TP / (TP + FN)``."""
    f1: list[float]
    """Per-class F1 ``2 TP / (2 TP + FP + FN)``."""
    support: list[int]
    """Number of true examples of each class."""
    confusion: list[list[int]]
    """Confusion matrix, rows true, columns predicted."""

    @property
    def macro_f1(self) -> float:
        """Unweighted mean of the per-class F1 scores."""
        return sum(self.f1) / len(self.f1)

    def as_dict(self, names: Sequence[str] | None = None) -> dict[str, object]:
        """A JSON-ready dict; ``names`` (one per class) keys the per-class values."""
        keys = list(names) if names is not None else [str(c) for c in range(len(self.f1))]
        if len(keys) != len(self.f1):
            raise DataError(f"{len(keys)} class names for {len(self.f1)} classes")
        per_class = {
            k: {
                "precision": self.precision[c],
                "recall": self.recall[c],
                "f1": self.f1[c],
                "support": self.support[c],
            }
            for c, k in enumerate(keys)
        }
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": per_class,
            "confusion": self.confusion,
        }


# --8<-- [start:report]
def classification_report(
    y_true: Labels,
    y_pred: Labels,
    *,
    num_classes: int | None = None,
    zero_division: float = 0.0,
) -> ClassificationReport:
    """Accuracy, per-class precision, recall and F1, support and confusion matrix.

    Args:
        y_true: True class ids (a sequence of ints or an integer tensor).
        y_pred: Predicted class ids, same length.
        num_classes: Number of classes (default: largest label seen + 1).
        zero_division: Value of a precision, recall or F1 whose denominator is 0.

    Raises:
        DataError: Empty or unequal-length inputs, negative or out-of-range class ids.

    >>> r = classification_report([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    >>> r.precision, r.recall, round(r.f1[1], 4)
    ([0.5, 0.6666666666666666], [0.5, 0.6666666666666666], 0.6667)
    """
    m = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    k = len(m)
    precision, recall, f1, support = [], [], [], []
    for c in range(k):
        tp = m[c][c]
        fp = sum(m[r][c] for r in range(k)) - tp  # predicted c, truly something else
        fn = sum(m[c]) - tp  # truly c, predicted something else
        precision.append(tp / (tp + fp) if tp + fp else zero_division)
        recall.append(tp / (tp + fn) if tp + fn else zero_division)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else zero_division)
        support.append(tp + fn)
    correct = sum(m[c][c] for c in range(k))
    return ClassificationReport(
        accuracy=correct / sum(support),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=m,
    )


# --8<-- [end:report]


def f1_score(
    y_true: Labels,
    y_pred: Labels,
    *,
    positive: int = 1,
    num_classes: int | None = None,
    zero_division: float = 0.0,
) -> float:
    """F1 of one class (``positive``), e.g. the spam class of a spam filter.

    >>> f1_score([0, 0, 1, 1], [0, 1, 1, 1])
    0.8
    """
    report = classification_report(
        y_true, y_pred, num_classes=num_classes, zero_division=zero_division
    )
    if not 0 <= positive < len(report.f1):
        raise DataError(f"positive class {positive} is out of range for {len(report.f1)} classes")
    return report.f1[positive]


def macro_f1(
    y_true: Labels, y_pred: Labels, *, num_classes: int | None = None, zero_division: float = 0.0
) -> float:
    """Unweighted mean of the per-class F1 scores.

    >>> macro_f1([0, 0, 1, 1], [0, 1, 1, 1])
    0.7333333333333334
    """
    return classification_report(
        y_true, y_pred, num_classes=num_classes, zero_division=zero_division
    ).macro_f1
