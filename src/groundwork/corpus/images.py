r"""Real images for chapter 20 ("Multimodal models"): handwritten digits, their splits and captions.

The data is the ``digits`` source (:mod:`groundwork.corpus.sources`): the test set of the UCI
"Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak 1998), as shipped inside the
scikit-learn wheel (``sklearn/datasets/data/digits.csv.gz``). NIST's preprocessing scaled each
handwritten digit to a 32x32 bitmap and counted the "on" pixels in each 4x4 block, so an image is
8x8 grey levels 0..16, with a label 0..9: 1,797 images by 13 writers. Small enough to train a
vision transformer or a CLIP-style model on a laptop CPU in minutes.

What this module holds:

* :func:`load_digits`: the images as tensors, split deterministically by a salted hash of the row
  number (:func:`~groundwork.corpus.splits.hash_fraction`).
* :func:`measure`: simple attributes of each image computed from its pixels (ink, slant, size),
  and :func:`thresholds`, the tertiles of those attributes among the training images.
* :func:`caption`/:func:`captions`: a short English caption per image built from its label and
  the attributes that are unusual for that digit (``"a thick, right-slanted handwritten seven"``),
  over a vocabulary of 18 words (:data:`CAPTION_VOCABULARY`): the paired text a contrastive
  image-text model (CLIP, Radford et al. 2021) learns from.
* :data:`ZERO_SHOT_TEMPLATE` and :func:`class_prompts`: the prompts a CLIP model compares an image
  with to classify it zero-shot.

The writers are not recorded, so one writer's digits can sit on both sides of a split: held-out
accuracy measures generalisation to new images, not to new handwriting.
"""

import gzip
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from groundwork.corpus.fetch import fetch
from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError, DataError

DigitSplit = Literal["train", "val", "test", "all"]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""The class names, by label."""

N_DIGITS = 1797
"""Rows in the file (the UCI optdigits test set)."""
IMAGE_SIZE = 8
"""Images are ``IMAGE_SIZE x IMAGE_SIZE`` pixels."""
MAX_GREY = 16
"""Grey levels run from 0 (no ink) to 16 (all 16 pixels of the 4x4 block were on)."""
DIGITS_FILE = "digits.csv.gz"
"""The file inside the source's directory: one image per line, 64 pixels (row by row) then the
label, comma-separated."""

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
"""``(train, val, test)`` fractions of the rows."""
SPLIT_SALT = "digits:"
"""Salt of the split hash, so this split is independent of other sources' splits."""

ZERO_SHOT_TEMPLATE = "a handwritten {}"
"""The prompt a CLIP model scores against an image, one per class name."""

THICKNESS_WORDS = ("thin", "thick")
WIDTH_WORDS = ("narrow", "wide")
SLANT_WORDS = ("left-slanted", "right-slanted")
CAPTION_VOCABULARY = (
    "a",
    "handwritten",
    *DIGIT_NAMES,
    *THICKNESS_WORDS,
    *WIDTH_WORDS,
    *SLANT_WORDS,
)
"""Every word a caption can use (commas aside): 18 words."""


@dataclass(frozen=True)
class DigitImages:
    """A set of digit images.

    Attributes:
        images: ``(N, 8, 8)`` uint8, grey levels 0..16 (0 = no ink), row 0 at the top.
        labels: ``(N,)`` int64, the digit 0..9.
        ids: ``(N,)`` int64, the row of each image in the file (stable across splits).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def read_digits_file(path: Path) -> np.ndarray:
    """Read and check ``digits.csv.gz``: a ``(1797, 65)`` int64 array (64 pixels, then the label).

    Raises:
        DataError: The file is missing, not gzip, not integer CSV, of the wrong shape, or holds
            grey levels outside 0..16 or labels outside 0..9.
    """
    try:
        stat = path.stat()
    except OSError as err:
        raise DataError(
            f"cannot read {path}: {err}; fetch it with `groundwork data fetch digits`"
        ) from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        hint = f"{path} is corrupt ({{}}); delete {path.parent} and fetch `digits` again"
        try:
            with gzip.open(path, "rt", encoding="ascii") as f:
                rows = [line.split(",") for line in f if line.strip()]
            data = np.array(rows, dtype=np.int64)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
            raise DataError(hint.format(f"not a readable gzip text file: {err}")) from None
        except ValueError as err:  # ragged rows or non-integer fields
            raise DataError(hint.format(f"not a table of integers: {err}")) from None
        pixels = IMAGE_SIZE * IMAGE_SIZE
        if data.shape != (N_DIGITS, pixels + 1):
            raise DataError(hint.format(f"shape {data.shape}, expected ({N_DIGITS}, {pixels + 1})"))
        if data[:, :pixels].min() < 0 or data[:, :pixels].max() > MAX_GREY:
            raise DataError(hint.format(f"grey levels outside 0..{MAX_GREY}"))
        if data[:, pixels].min() < 0 or data[:, pixels].max() > 9:
            raise DataError(hint.format("labels outside 0..9"))
        _CACHE[key] = data
    return _CACHE[key]


def split_of(row: int) -> Literal["train", "val", "test"]:
    """The split of row ``row``: train if ``u < 0.7``, val if ``u < 0.8``, else test, with
    ``u = hash_fraction(str(row), SPLIT_SALT)``.

    >>> split_of(0), split_of(7), split_of(32)
    ('train', 'test', 'val')
    """
    u = hash_fraction(str(row), SPLIT_SALT)
    train, val, _ = SPLIT_FRACTIONS
    return "train" if u < train else "val" if u < train + val else "test"


def load_digits(split: DigitSplit = "all", *, home: Path | None = None) -> DigitImages:
    """The handwritten digits of one split (the source is fetched on first use).

    The split of an image depends only on its row number (:func:`split_of`): 1,290 train, 174 val
    and 333 test images (70% / 10% / 20% by hash, so not exactly those fractions).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every row, in file order).
        home: Cache directory; default :func:`~groundwork.corpus.fetch.home`.

    Returns:
        The images, labels and row ids of the split, in file order.

    Raises:
        ConfigError: Unknown split.
        DataError: The fetched file is corrupt.
        FetchError: The source could not be fetched.

    Example:
        >>> train = load_digits("train")  # doctest: +SKIP
        >>> len(train), train.images.shape[1:], train.labels[:5].tolist()  # doctest: +SKIP
        (1290, torch.Size([8, 8]), [0, 1, 2, 3, 4])
    """
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"unknown split {split!r}; choose one of train, val, test, all")
    data = read_digits_file(fetch("digits", home=home) / DIGITS_FILE)
    rows = [i for i in range(len(data)) if split == "all" or split_of(i) == split]
    chosen = data[rows]
    return DigitImages(
        images=torch.from_numpy(
            chosen[:, :-1].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
        ),
        labels=torch.from_numpy(chosen[:, -1].copy()),
        ids=torch.tensor(rows, dtype=torch.int64),
    )


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Grey levels ``(N, H, W)`` as model input: float32 ``(N, 1, H, W)`` in ``[0, 1]``.

    >>> pixel_values(torch.tensor([[[0, 8], [16, 4]]], dtype=torch.uint8)).tolist()
    [[[[0.0, 0.5], [1.0, 0.25]]]]
    """
    if images.ndim != 3:
        raise DataError(f"images must have shape (N, H, W), got {tuple(images.shape)}")
    return (images.to(torch.float32) / MAX_GREY).unsqueeze(1)


# --- attributes and captions -------------------------------------------------------------------


@dataclass(frozen=True)
class DigitMeasures:
    """Attributes of images measured from their pixels, one float32 value per image.

    Attributes:
        ink: Mean grey level over all pixels (0..16): thick strokes have more ink. (NIST scaled
            every digit to the same box, so ink hardly depends on the digit.)
        slant: Shear of the ink, ``cov(x, y) / var(y)``: positive when the top of the digit lies
            to the right of its bottom (leaning right), ``0`` for an upright stroke.
        height: Rows spanned by the ink (pixels > 0), bottom to top.
        width: Columns spanned by the ink, left to right.
    """

    ink: torch.Tensor
    slant: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor

    def __len__(self) -> int:
        return int(self.ink.shape[0]) if self.ink.ndim else 1

    def __getitem__(self, i: int) -> "DigitMeasures":
        """The measures of image ``i`` (0-d tensors)."""
        return DigitMeasures(self.ink[i], self.slant[i], self.height[i], self.width[i])


def _extent(on: torch.Tensor) -> torch.Tensor:
    """Number of positions from the first to the last ``True`` along the last dimension."""
    n = on.shape[-1]
    idx = torch.arange(n, device=on.device)
    last = torch.where(on, idx, -1).amax(-1)
    first = torch.where(on, idx, n).amin(-1)
    return (last - first + 1).clamp_min(0)


def measure(images: torch.Tensor) -> DigitMeasures:
    r"""Measure ink, slant and size of images ``(N, H, W)`` (or one image ``(H, W)``).

    With grey levels :math:`g_{rc}` (row :math:`r` from the top, column :math:`c`), put
    :math:`x = c` and :math:`y = H - 1 - r` (so :math:`y` grows upwards) and weigh each pixel by
    :math:`w_{rc} = g_{rc} / \sum g`. Then

    .. math::

        \text{ink} = \frac{1}{HW}\sum_{rc} g_{rc}, \qquad
        \text{slant} = \frac{\operatorname{cov}_w(x, y)}{\operatorname{var}_w(y)}
        = \frac{\sum w (x - \bar x)(y - \bar y)}{\sum w (y - \bar y)^2},

    the second moments of the ink (the shear that deskewing undoes: moving row :math:`y` left by
    ``slant * (y - ȳ)`` makes the digit upright). An image without ink, or with all its ink in one
    row, has slant 0. ``height``/``width`` count the rows/columns between the first and the last
    one holding any ink.

    >>> bar = torch.zeros(8, 8)
    >>> bar[1:7, 3] = 16
    >>> m = measure(bar)
    >>> float(m.ink), float(m.slant), int(m.height), int(m.width)
    (1.5, 0.0, 6, 1)
    >>> leaning = torch.zeros(8, 8)
    >>> for r in range(8):
    ...     leaning[r, 7 - r] = 16  # top right to bottom left
    >>> float(measure(leaning).slant)
    1.0
    """
    if images.ndim not in (2, 3):
        raise DataError(f"images must have shape (N, H, W) or (H, W), got {tuple(images.shape)}")
    g = images.to(torch.float64)
    H, W = g.shape[-2:]
    x = torch.arange(W, dtype=torch.float64, device=g.device).view(1, W)
    y = (H - 1 - torch.arange(H, dtype=torch.float64, device=g.device)).view(H, 1)
    total = g.sum((-2, -1))
    w = g / total.clamp_min(1e-12)[..., None, None]
    dx = x - (w * x).sum((-2, -1))[..., None, None]
    dy = y - (w * y).sum((-2, -1))[..., None, None]
    cov = (w * dx * dy).sum((-2, -1))
    var_y = (w * dy * dy).sum((-2, -1))
    slant = torch.where(var_y > 1e-9, cov / var_y.clamp_min(1e-9), torch.zeros_like(cov))
    on = g > 0
    return DigitMeasures(
        ink=g.mean((-2, -1)).float(),
        slant=slant.float(),
        height=_extent(on.any(-1)).float(),
        width=_extent(on.any(-2)).float(),
    )


@dataclass(frozen=True)
class AttributeThresholds:
    """Tertiles of the attributes a caption mentions, for each digit.

    Each field is ``(10, 2)``: row ``d`` holds the lower and upper tertile of that attribute among
    the training images of digit ``d`` (or of all training images, repeated, when the thresholds
    were computed without labels). A value below the lower tertile is unusual one way (thin,
    narrow, left-slanted), above the upper tertile the other way (thick, wide, right-slanted);
    in between it is typical and the caption leaves it out.
    """

    ink: torch.Tensor
    slant: torch.Tensor
    width: torch.Tensor
    per_class: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (for a run's ``config.yaml``); :meth:`from_dict` reads them back."""
        return {
            "ink": self.ink.tolist(),
            "slant": self.slant.tolist(),
            "width": self.width.tolist(),
            "per_class": self.per_class,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AttributeThresholds":
        """The thresholds :meth:`to_dict` wrote."""
        tensors = {k: torch.tensor(d[k], dtype=torch.float32) for k in ("ink", "slant", "width")}
        return cls(**tensors, per_class=bool(d["per_class"]))


def thresholds(measures: DigitMeasures, labels: torch.Tensor | None = None) -> AttributeThresholds:
    """The tertiles of ink, slant and width: per digit if ``labels`` are given (recommended).

    Per digit, because some shapes have a slant of their own: the moments of a typical six lean
    left (its stem sits above the left of its loop) and those of a seven lean right, so "a
    right-slanted six" means a six leaning further right than most sixes do.

    Raises:
        DataError: No measures, labels of the wrong shape, or a digit without any image.
    """
    values = {"ink": measures.ink, "slant": measures.slant, "width": measures.width}
    n = measures.ink.numel()
    if measures.ink.ndim != 1 or n == 0:
        raise DataError("thresholds need the measures of a non-empty batch of images")
    q = torch.tensor([1 / 3, 2 / 3])
    if labels is None:
        out = {
            k: torch.quantile(v.float(), q).expand(len(DIGIT_NAMES), 2).clone()
            for k, v in values.items()
        }
        return AttributeThresholds(**out, per_class=False)
    if labels.shape != (n,):
        raise DataError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    missing = [d for d in range(len(DIGIT_NAMES)) if not bool((labels == d).any())]
    if missing:
        raise DataError(f"no image of digit(s) {missing}: cannot set their thresholds")
    out = {
        k: torch.stack([torch.quantile(v[labels == d].float(), q) for d in range(len(DIGIT_NAMES))])
        for k, v in values.items()
    }
    return AttributeThresholds(**out, per_class=True)


def training_thresholds(*, home: Path | None = None) -> AttributeThresholds:
    """The per-digit thresholds of the training split (what :func:`captions` should use)."""
    train = load_digits("train", home=home)
    return thresholds(measure(train.images), train.labels)


def _word(value: float, bounds: torch.Tensor, words: tuple[str, str]) -> str | None:
    low, high = float(bounds[0]), float(bounds[1])
    return words[0] if value < low else words[1] if value > high else None


def caption(label: int, measures: DigitMeasures, thresholds: AttributeThresholds) -> str:
    """The caption of one image: its digit, and its attributes that are unusual for that digit.

    Thickness (ink), width and slant are named in that order when outside the middle tertile.

    >>> t = AttributeThresholds(
    ...     ink=torch.tensor([[4.5, 5.5]]).repeat(10, 1),
    ...     slant=torch.tensor([[-0.1, 0.1]]).repeat(10, 1),
    ...     width=torch.tensor([[6.0, 6.0]]).repeat(10, 1),
    ...     per_class=False,
    ... )
    >>> def m(ink, slant, width=6.0):
    ...     return DigitMeasures(*map(torch.tensor, (ink, slant, 8.0, width)))
    >>> caption(7, m(6.0, 0.3), t)
    'a thick, right-slanted handwritten seven'
    >>> caption(2, m(4.0, 0.0), t)
    'a thin handwritten two'
    >>> caption(5, m(5.0, 0.0), t), caption(1, m(5.0, -0.2, width=4.0), t)
    ('a handwritten five', 'a narrow, left-slanted handwritten one')

    Raises:
        DataError: ``label`` is not a digit, or ``measures`` hold more than one image.
    """
    if not 0 <= int(label) < len(DIGIT_NAMES):
        raise DataError(f"label must be a digit 0..9, got {label!r}")
    if any(t.numel() != 1 for t in (measures.ink, measures.slant, measures.width)):
        raise DataError("caption() takes the measures of one image: use measures[i]")
    d = int(label)
    words = [
        _word(float(measures.ink), thresholds.ink[d], THICKNESS_WORDS),
        _word(float(measures.width), thresholds.width[d], WIDTH_WORDS),
        _word(float(measures.slant), thresholds.slant[d], SLANT_WORDS),
    ]
    adjectives = ", ".join(w for w in words if w is not None)
    return f"a {adjectives + ' ' if adjectives else ''}handwritten {DIGIT_NAMES[d]}"


def captions(digits: DigitImages, thresholds: AttributeThresholds) -> list[str]:
    """One caption per image of ``digits`` (see :func:`caption`), in order."""
    m = measure(digits.images)
    return [caption(int(label), m[i], thresholds) for i, label in enumerate(digits.labels)]


def class_prompts(template: str = ZERO_SHOT_TEMPLATE) -> list[str]:
    """One prompt per digit, by label, for zero-shot classification.

    >>> class_prompts()[:3]
    ['a handwritten zero', 'a handwritten one', 'a handwritten two']
    """
    return [template.format(name) for name in DIGIT_NAMES]


def render(image: torch.Tensor) -> str:
    """An image ``(H, W)`` as text, two characters per pixel, darker characters for more ink.

    >>> print(render(torch.tensor([[0, 8], [16, 4]])))
      ++
    @@::
    """
    if image.ndim != 2:
        raise DataError(f"render() takes one image (H, W), got {tuple(image.shape)}")
    shades = " .:-=+*#%@"
    levels = (
        image.to(torch.int64).clamp(0, MAX_GREY) * (len(shades) - 1) + MAX_GREY // 2
    ) // MAX_GREY
    return "\n".join("".join(shades[int(v)] * 2 for v in row).rstrip() for row in levels)
