"""Tests for groundwork.corpus.images: the digits source, its splits, measured attributes and
captions. Measures and captions are checked on hand-made images; the split counts on the real
``digits`` source (fetched into the cache once, like the other real sources)."""

import doctest
import gzip
import json
from pathlib import Path

import pytest
import torch

from groundwork import corpus
from groundwork.corpus import images
from groundwork.corpus.images import (
    CAPTION_VOCABULARY,
    DIGIT_NAMES,
    AttributeThresholds,
    DigitMeasures,
    caption,
    captions,
    class_prompts,
    load_digits,
    measure,
    thresholds,
)
from groundwork.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def every_split() -> dict[str, images.DigitImages]:
    return {s: load_digits(s) for s in ("train", "val", "test", "all")}


def fake_digits(home: Path, content: bytes, *, compress: bool = True) -> None:
    """Lay out ``home/data/digits`` as if fetched, with ``content`` as the csv."""
    directory = home / "data" / "digits"
    directory.mkdir(parents=True)
    (directory / "digits.csv.gz").write_bytes(gzip.compress(content) if compress else content)
    manifest = {"source": "digits", "sha256": corpus.get_source("digits").sha256, "files": {}}
    (directory / "MANIFEST.json").write_text(json.dumps(manifest))


def table(rows: int = images.N_DIGITS, cols: int = 65, value: str = "3") -> bytes:
    return ("\n".join(",".join([value] * cols) for _ in range(rows)) + "\n").encode()


# --- the real data -----------------------------------------------------------------------------


def test_split_counts_are_fixed_and_disjoint(every_split) -> None:
    counts = {s: len(d) for s, d in every_split.items()}
    assert counts == {"train": 1290, "val": 174, "test": 333, "all": 1797}
    ids = {s: set(d.ids.tolist()) for s, d in every_split.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    assert ids["train"] | ids["val"] | ids["test"] == set(range(1797)) == ids["all"]
    everything = every_split["all"]
    for split in ("train", "val", "test"):
        d = every_split[split]
        assert set(d.labels.tolist()) == set(range(10))  # every digit in every split
        assert torch.equal(d.images, everything.images[d.ids])
        assert torch.equal(d.labels, everything.labels[d.ids])
        assert all(images.split_of(i) == split for i in d.ids.tolist())


def test_loaded_tensors_have_the_documented_types(every_split) -> None:
    d = every_split["all"]
    assert d.images.shape == (1797, 8, 8) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.ids.dtype == torch.int64
    assert int(d.images.max()) == 16 and int(d.images.min()) == 0
    assert d.labels[:10].tolist() == list(range(10))  # the file starts 0, 1, ..., 9
    manifest = corpus.read_manifest("digits")
    assert manifest is not None and "CC BY 4.0" in manifest["licence"]


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        load_digits("dev")  # type: ignore[arg-type]


def test_captions_of_real_images_use_the_small_vocabulary(every_split) -> None:
    t = images.training_thresholds()
    assert t.per_class and t.ink.shape == t.slant.shape == t.width.shape == (10, 2)
    assert bool((t.ink[:, 0] <= t.ink[:, 1]).all() and (t.slant[:, 0] <= t.slant[:, 1]).all())
    test = every_split["test"]
    caps = captions(test, t)
    assert caps == captions(test, images.training_thresholds())  # deterministic
    assert len(CAPTION_VOCABULARY) == len(set(CAPTION_VOCABULARY)) == 18
    words = {w for c in caps for w in c.replace(",", " ").split()}
    assert words == set(CAPTION_VOCABULARY)  # every word is used, and no other
    for c, label in zip(caps, test.labels.tolist(), strict=True):
        assert c.startswith("a ") and c.endswith(f"handwritten {DIGIT_NAMES[label]}")
    assert 0 < sum(c.startswith("a handwritten") for c in caps) < len(caps) // 4


# --- measures ----------------------------------------------------------------------------------


def bar(cols: list[int], grey: int = 16) -> torch.Tensor:
    """An 8x8 image with one inked pixel per row, in column ``cols[row]``."""
    img = torch.zeros(8, 8, dtype=torch.uint8)
    for r, c in enumerate(cols):
        img[r, c] = grey
    return img


def test_slant_is_zero_upright_positive_leaning_right_negative_leaning_left() -> None:
    upright = bar([3] * 8)
    right = bar([7, 7, 6, 5, 4, 3, 2, 2])  # the top is to the right of the bottom
    left = bar([1, 1, 2, 3, 4, 5, 6, 6])
    m = measure(torch.stack([upright, right, left]))
    assert m.slant[0] == 0.0
    assert m.slant[1] > 0.5 and m.slant[2] < -0.5
    assert torch.allclose(m.slant[1], -m.slant[2])
    assert m.height.tolist() == [8, 8, 8] and m.width.tolist() == [1, 6, 6]


def test_slant_is_the_shear_cov_over_var() -> None:
    img = torch.zeros(8, 8)
    img[0, 4], img[4, 2] = 16.0, 16.0  # y = 7 and y = 3: x goes up 2 over 4 rows
    assert float(measure(img).slant) == pytest.approx(0.5)


def test_more_ink_means_larger_ink_and_empty_images_measure_zero() -> None:
    thin, thick = bar([3] * 8, grey=4), bar([3] * 8, grey=16)
    thick[:, 4] = 16
    m = measure(torch.stack([thin, thick, torch.zeros(8, 8, dtype=torch.uint8)]))
    assert m.ink[0] == 0.5 and m.ink[1] == 4.0 and m.ink[2] == 0.0
    assert m.slant[2] == 0.0 and m.height[2] == 0.0 and m.width[2] == 0.0
    assert len(m) == 3 and float(m[1].width) == 2.0
    with pytest.raises(DataError, match="shape"):
        measure(torch.zeros(8))


# --- thresholds and captions -------------------------------------------------------------------


def flat_thresholds() -> AttributeThresholds:
    rows = torch.tensor([[4.0, 6.0]]).repeat(10, 1)
    return AttributeThresholds(
        ink=rows,
        slant=torch.tensor([[-0.1, 0.1]]).repeat(10, 1),
        width=torch.tensor([[6.0, 6.0]]).repeat(10, 1),
        per_class=False,
    )


def one(ink: float, slant: float = 0.0, width: float = 6.0) -> DigitMeasures:
    return DigitMeasures(*map(torch.tensor, (ink, slant, 8.0, width)))


@pytest.mark.parametrize(
    ("label", "m", "expected"),
    [
        (7, one(7.0, 0.3), "a thick, right-slanted handwritten seven"),
        (2, one(3.0), "a thin handwritten two"),
        (5, one(5.0), "a handwritten five"),
        (0, one(5.0, -0.5, width=7.0), "a wide, left-slanted handwritten zero"),
        (1, one(3.0, 0.2, width=4.0), "a thin, narrow, right-slanted handwritten one"),
    ],
)
def test_caption_names_only_unusual_attributes(label, m, expected) -> None:
    assert caption(label, m, flat_thresholds()) == expected


def test_caption_refuses_bad_labels_and_batches() -> None:
    with pytest.raises(DataError, match=r"digit 0\.\.9"):
        caption(10, one(5.0), flat_thresholds())
    batch = measure(torch.stack([bar([3] * 8), bar([3] * 8)]))
    with pytest.raises(DataError, match="one image"):
        caption(3, batch, flat_thresholds())
    assert caption(3, batch[0], flat_thresholds()) == "a thin, narrow handwritten three"


def test_thresholds_are_tertiles_per_digit_or_overall() -> None:
    ink = torch.arange(30, dtype=torch.float32)
    m = DigitMeasures(ink=ink, slant=-ink, height=torch.full((30,), 8.0), width=ink)
    labels = torch.arange(30) % 10  # digit d has ink d, d + 10, d + 20
    per_digit = thresholds(m, labels)
    assert per_digit.per_class
    assert per_digit.ink[3].tolist() == pytest.approx([3 + 20 / 3, 3 + 40 / 3])
    assert per_digit.slant[3].tolist() == pytest.approx([-3 - 40 / 3, -3 - 20 / 3])
    overall = thresholds(m)
    assert not overall.per_class and overall.ink.shape == (10, 2)
    assert torch.equal(overall.ink[0], overall.ink[9])
    assert overall.ink[0].tolist() == pytest.approx([29 / 3, 58 / 3])
    with pytest.raises(DataError, match=r"digit\(s\) \[9\]"):
        thresholds(m, labels.clamp(max=8))
    with pytest.raises(DataError, match="labels must have shape"):
        thresholds(m, labels[:5])


def test_class_prompts_and_template() -> None:
    prompts = class_prompts()
    assert len(prompts) == 10 and prompts[7] == "a handwritten seven"
    assert images.ZERO_SHOT_TEMPLATE.format("seven") == prompts[7]
    assert class_prompts("a photo of the number {}.")[0] == "a photo of the number zero."


def test_pixel_values_and_render() -> None:
    img = bar([3] * 8)
    px = images.pixel_values(img[None])
    assert px.shape == (1, 1, 8, 8) and px.dtype == torch.float32 and float(px.max()) == 1.0
    assert images.render(img).splitlines()[0] == "      @@"


# --- a corrupt file, and the text loaders ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "compress", "message"),
    [
        (b"not gzip at all", False, "not a readable gzip"),
        (table(rows=10), True, r"shape \(10, 65\)"),
        (table(cols=64), True, r"shape \(1797, 64\)"),
        (table(value="x"), True, "not a table of integers"),
        (table(value="17"), True, "grey levels outside"),
        (b"1,2\n1\n", True, "not a table of integers"),
    ],
)
def test_a_corrupt_file_raises_data_error(tmp_path, content, compress, message) -> None:
    fake_digits(tmp_path, content, compress=compress)
    with pytest.raises(DataError, match=message):
        load_digits(home=tmp_path)


def test_labels_outside_0_9_are_corrupt(tmp_path) -> None:
    fake_digits(tmp_path, table(value="12"))
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        load_digits(home=tmp_path)


def test_text_loaders_refuse_the_images_source(tmp_path) -> None:
    with pytest.raises(DataError, match=r"'digits' is an images source, not text.*load_digits"):
        corpus.load_documents("digits", home=tmp_path)
    with pytest.raises(DataError, match="an images source, not labelled examples"):
        corpus.load_examples("digits", home=tmp_path)
    with pytest.raises(DataError, match="not text"):
        corpus.corpus_stats("digits", home=tmp_path)
    assert not (tmp_path / "data").exists()  # refused before fetching anything


def test_data_list_shows_the_images_source(tmp_path, capsys, monkeypatch) -> None:
    from groundwork.recipes.data import data_list

    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path))
    row = next(r for r in corpus.list_sources(home=tmp_path) if r["name"] == "digits")
    assert row["kind"] == "images" and row["package"] == "scikit-learn==1.9.1"
    assert not row["fetched"]
    data_list()
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("digits"))
    assert "images" in line and "CC BY 4.0" in line


def test_docstring_examples() -> None:
    assert doctest.testmod(images, optionflags=doctest.ELLIPSIS).failed == 0
