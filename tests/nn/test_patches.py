"""Images as tokens: patchify's layout, the convolutional patch embedding equal to patchify and one
matrix, bad image sizes, and the bicubic interpolation of learned positions."""

import pytest
import torch
import torch.nn.functional as F

from groundwork.nn.patches import (
    PatchEmbedding,
    check_image_grid,
    interpolate_positions,
    patchify,
)


def test_patchify_reads_patches_in_raster_order_channel_first() -> None:
    image = torch.arange(2 * 4 * 6.0).view(1, 2, 4, 6)  # (B, C, H, W): 2 channels, 4x6 pixels
    patches = patchify(image, 2)
    assert patches.shape == (1, 6, 8)  # 2 rows x 3 columns of patches, 2 * 2 * 2 numbers each
    # Patch 4 is row 1, column 1: pixels (2..3, 2..3) of channel 0, then of channel 1.
    channel_0 = [14.0, 15.0, 20.0, 21.0]
    channel_1 = [v + 24.0 for v in channel_0]
    assert patches[0, 4].tolist() == channel_0 + channel_1
    # Left to right, then top to bottom: the first row's patches start at columns 0, 2, 4.
    assert patches[0, :3, 0].tolist() == [0.0, 2.0, 4.0]
    assert patches[0, 3, 0].item() == 12.0  # second row of patches, first column
    # Every pixel appears exactly once.
    assert sorted(patches.flatten().tolist()) == image.flatten().tolist()


@pytest.mark.parametrize("bias", [True, False])
def test_the_convolution_is_patchify_and_a_matrix(bias: bool) -> None:
    torch.manual_seed(0)
    embed = PatchEmbedding(3, 4, 10, bias=bias)
    assert (embed.proj.bias is not None) == bias
    images = torch.randn(2, 3, 8, 12)  # non-square: 2 x 3 patches
    out = embed(images)
    assert out.shape == (2, 6, 10)
    torch.testing.assert_close(out, embed.as_linear(images), rtol=1e-5, atol=1e-5)


def test_bad_image_sizes_say_what_to_do() -> None:
    assert check_image_grid(8, 12, 4) == (2, 3)
    with pytest.raises(ValueError, match=r"7x8 pixels .* 4x4 patches: .*multiples of 4"):
        check_image_grid(7, 8, 4)
    with pytest.raises(ValueError, match=r"multiples of 4"):
        PatchEmbedding(3, 4, 10)(torch.randn(1, 3, 8, 10))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got shape \(3, 8, 8\)"):
        patchify(torch.randn(3, 8, 8), 4)


def test_interpolate_positions_keeps_cls_and_resizes_the_grid() -> None:
    torch.manual_seed(0)
    positions = torch.randn(1 + 16, 5)  # [CLS] + a 4x4 grid
    assert interpolate_positions(positions, (4, 4)) is positions  # unchanged grid
    out = interpolate_positions(positions, (5, 6))
    assert out.shape == (1 + 30, 5)
    torch.testing.assert_close(out[0], positions[0])  # [CLS] kept as it is
    # By hand: the grid as a (1, d, 4, 4) image, resized bicubically, read back in raster order.
    grid = positions[1:].T.reshape(1, 5, 4, 4)  # (1, d, rows, cols)
    resized = F.interpolate(grid, size=(5, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[1:], resized.reshape(5, 30).T)
    with pytest.raises(ValueError, match="15 patch positions do not form a square grid"):
        interpolate_positions(torch.randn(16, 5), (4, 4))


def test_gradients_flow_to_the_weights_and_the_positions() -> None:
    torch.manual_seed(0)
    embed = PatchEmbedding(1, 2, 4)
    images = torch.randn(2, 1, 4, 4, requires_grad=True)
    positions = torch.randn(1 + 4, 4, requires_grad=True)
    tokens = embed(images) + interpolate_positions(positions, (3, 3))[1:].sum(0)
    tokens.square().sum().backward()
    for grad in (embed.proj.weight.grad, images.grad, positions.grad):
        assert grad is not None and grad.abs().sum() > 0
    assert positions.grad is not None and positions.grad[0].abs().sum() == 0  # [CLS] unused
