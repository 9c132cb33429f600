"""Images as tokens: cutting an image into patches, embedding them, and stretching learned
position vectors to another grid.

A Vision Transformer reads an image the way a language model reads a sentence: as a sequence of
vectors. The image ``(C, H, W)`` is cut into non-overlapping ``p x p`` patches, each flattened to
``C p^2`` numbers (:func:`patchify`), and a linear map turns every patch into a ``d``-dimensional
token. That linear map over non-overlapping patches *is* a convolution with kernel ``p`` and
stride ``p``: :class:`PatchEmbedding` computes it with :class:`torch.nn.Conv2d` (one fused
kernel, and the weight layout of ``transformers``' ViT and CLIP), and
:meth:`PatchEmbedding.as_linear` with :func:`patchify` and a matrix product; the two are tested
equal. The patches are read row by row (raster order), as the convolution's output is flattened.

A model trained at one resolution has one learned position vector per grid cell. At another
resolution the grid changes, and :func:`interpolate_positions` resizes the grid of vectors with
bicubic interpolation (the ``[CLS]`` position kept as it is), as DeiT, DINO and ``transformers``'
``interpolate_pos_encoding`` do.

References: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale" (ViT, §3.1 and §3.2 on resolution); Touvron et al. 2021 (DeiT). Chapter 20.
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbedding", "check_image_grid", "interpolate_positions", "patchify"]


def check_image_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """The patch grid ``(rows, columns)`` of an image, or a ``ValueError`` if the patches do not
    tile it."""
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"an image of {height}x{width} pixels is not cut evenly into {patch_size}x{patch_size}"
            f" patches: give images whose sides are multiples of {patch_size}"
        )
    return height // patch_size, width // patch_size


# --8<-- [start:patchify]
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images ``(B, C, H, W)`` into flattened patches ``(B, N, C * p * p)``.

    ``N = (H / p) (W / p)`` patches in raster order (left to right, then top to bottom); each
    patch is flattened channel first, then row, then column, the layout of a convolution
    weight ``(d, C, p, p)`` flattened to ``(d, C p^2)``.

    >>> patchify(torch.arange(16.0).view(1, 1, 4, 4), 2)[0, 1]
    tensor([2., 3., 6., 7.])
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    B, C, H, W = images.shape
    rows, cols = check_image_grid(H, W, patch_size)
    p = patch_size
    x = images.reshape(B, C, rows, p, cols, p)  # (B, C, rows, p, cols, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
    return x.reshape(B, rows * cols, C * p * p)  # (B, N, C p p)


class PatchEmbedding(nn.Module):
    """A linear map of every ``p x p`` patch to ``d_model`` numbers, as a strided convolution.

    Args:
        n_channels: Channels of the input images (1 for grey levels, 3 for RGB).
        patch_size: Side of a square patch, in pixels.
        d_model: Size of a patch token.
        bias: Whether the map has a bias (ViT: yes; CLIP: no).
    """

    def __init__(self, n_channels: int, patch_size: int, d_model: int, *, bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(
            n_channels, d_model, kernel_size=patch_size, stride=patch_size, bias=bias
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to patch tokens ``(B, N, d_model)``."""
        check_image_grid(images.shape[-2], images.shape[-1], self.patch_size)
        x = self.proj(images)  # (B, d_model, H / p, W / p)
        return x.flatten(2).transpose(1, 2)  # (B, N, d_model)

    def as_linear(self, images: torch.Tensor) -> torch.Tensor:
        """The same map written as :func:`patchify` and one matrix product (for reading; the
        convolution is the fast path)."""
        weight = self.proj.weight.flatten(1)  # (d_model, C p p)
        return F.linear(patchify(images, self.patch_size), weight, self.proj.bias)  # (B, N, d)


# --8<-- [end:patchify]


# --8<-- [start:interpolate]
def interpolate_positions(positions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize learned positions ``(1 + N, d)`` (the ``[CLS]`` vector, then a square grid of
    ``N`` patch vectors in raster order) to a ``grid = (rows, columns)`` of patches, bicubically.

    Returns ``(1 + rows * columns, d)``; the input itself when the grid is unchanged.
    """
    cls_pos, patch_pos = positions[:1], positions[1:]  # (1, d), (N, d)
    n, d = patch_pos.shape
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"{n} patch positions do not form a square grid")
    if grid == (side, side):
        return positions
    x = patch_pos.reshape(1, side, side, d).permute(0, 3, 1, 2)  # (1, d, side, side)
    x = F.interpolate(x, size=grid, mode="bicubic", align_corners=False)  # (1, d, rows, cols)
    x = x.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], d)  # (rows cols, d)
    return torch.cat([cls_pos, x], dim=0)


# --8<-- [end:interpolate]
