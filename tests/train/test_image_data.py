"""Image batches for the engine: shifts by hand, epochs that cover every image once, exact
resume, and clear errors."""

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.train.vision import ImageData, shift_images


def test_shift_moves_pixels_and_fills_the_border() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 3, 1, 1)  # (2, 3, 4, 4)
    out = shift_images(x, torch.tensor([0, -1]), torch.tensor([1, 0]), fill=-5.0)
    # image 0 moves right by one: column 0 is filled, column j holds old column j - 1
    assert out[0, :, :, 0].eq(-5.0).all()
    torch.testing.assert_close(out[0, :, :, 1:], x[0, :, :, :3])
    # image 1 moves up by one: the last row is filled
    assert out[1, :, 3].eq(-5.0).all()
    torch.testing.assert_close(out[1, :, :3], x[1, :, 1:])


def test_zero_shift_is_the_identity() -> None:
    x = torch.randn(3, 1, 5, 5)
    zero = torch.zeros(3, dtype=torch.long)
    torch.testing.assert_close(shift_images(x, zero, zero, fill=0.0), x)


def _data(**kwargs) -> ImageData:
    images = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone()
    return ImageData(images, torch.arange(10), batch_size=4, **kwargs)


def test_an_epoch_reads_every_image_once() -> None:
    data, g = _data(), torch.Generator().manual_seed(0)
    seen = torch.cat([data.next_batch(g)["labels"] for _ in range(data.steps_per_epoch)])
    assert sorted(seen.tolist()) == list(range(10))
    assert data.steps_per_epoch == 3


def test_resume_reads_the_same_batches() -> None:
    data, g = _data(shift=1), torch.Generator().manual_seed(0)
    for _ in range(4):
        data.next_batch(g)
    state = data.state_dict()
    expected = [data.next_batch(g) for _ in range(3)]
    again, g2 = _data(shift=1), torch.Generator()
    again.load_state_dict(state, g2)
    for want in expected:
        got = again.next_batch(g2)
        torch.testing.assert_close(got["pixel_values"], want["pixel_values"])
        assert got["labels"].tolist() == want["labels"].tolist()


def test_captions_travel_with_their_images() -> None:
    images = torch.zeros(6, 1, 2, 2)
    captions = torch.arange(6).view(6, 1).repeat(1, 3)  # caption i is [i, i, i]
    data = ImageData(images, torch.arange(6), batch_size=4, captions=captions)
    batch = data.next_batch(torch.Generator().manual_seed(1))
    assert batch["input_ids"][:, 0].tolist() == batch["labels"].tolist()
    assert batch["attention_mask"].eq(1).all()


def test_val_batches_are_in_order() -> None:
    data = _data(val_images=torch.zeros(5, 1, 2, 2), val_labels=torch.arange(5), val_batch_size=2)
    assert [b["labels"].tolist() for b in data.val_batches()] == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(images=torch.zeros(3, 2, 2)), "(N, C, H, W)"),
        (dict(labels=torch.arange(2)), "3 images but 2 labels"),
        (dict(captions=torch.zeros(2, 4, dtype=torch.long)), "3 images but 2 captions"),
        (dict(shift=-1), "shift >= 0"),
    ],
)
def test_bad_input_is_named(kwargs: dict, match: str) -> None:
    args = dict(images=torch.zeros(3, 1, 2, 2), labels=torch.arange(3), batch_size=2)
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        ImageData(**{**args, **kwargs})
