"""Normalisation layers: LayerNorm and RMSNorm.

LayerNorm (Ba, Kiros & Hinton 2016, "Layer Normalization") recentres and rescales each token's
feature vector; RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization") only
rescales, by the root mean square, which is cheaper and works as well in practice (Llama uses it).
Both are written out from their formulas (:func:`layer_norm`, :class:`RMSNorm`) and tested
against ``torch.nn.LayerNorm`` and ``torch.nn.RMSNorm``; the :class:`LayerNorm` module runs
PyTorch's fused kernel for the same formula. Where the norm sits in the block (pre-LN or post-LN,
Xiong et al. 2020) is decided by :class:`groundwork.nn.block.TransformerBlock`. Chapter 5 of the
docs explains both.
"""

import torch
import torch.nn.functional as F
from torch import nn


# --8<-- [start:layernorm]
def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """Layer normalisation over the last dimension, written out.

    $$\\mathrm{LN}(x) = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\odot \\gamma + \\beta$$

    with $\\mu$ and $\\sigma^2$ the mean and (biased) variance of the $d$ features of one token.
    """
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
    y = (x - mean) * torch.rsqrt(var + eps) * weight
    return y + bias if bias is not None else y


class LayerNorm(nn.Module):
    """Layer normalisation with learned scale $\\gamma$ (``weight``) and shift $\\beta$ (``bias``).

    The forward pass calls PyTorch's fused kernel, which computes exactly :func:`layer_norm`
    (``tests/nn/test_norms_mlp.py`` checks both against ``torch.nn.LayerNorm``) in one pass over
    memory instead of five.

    Args:
        d_model: Size of the normalised (last) dimension.
        eps: Added to the variance before the square root.
        bias: Whether to learn the shift $\\beta$ (GPT-2 does).
    """

    def __init__(self, d_model: int, *, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(..., d_model)``; the output has the same shape."""
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


# --8<-- [end:layernorm]


# --8<-- [start:rmsnorm]
class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension (no recentring, no bias).

    $$\\mathrm{RMSNorm}(x) = \\frac{x}{\\sqrt{\\frac{1}{d}\\sum_i x_i^2 + \\epsilon}}
    \\odot \\gamma$$

    The statistic is computed in float32 whatever the input dtype, as Llama's reference code does.

    Args:
        d_model: Size of the normalised (last) dimension.
        eps: Added to the mean square before the square root.
    """

    def __init__(self, d_model: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(..., d_model)``; the output has the same shape and dtype."""
        x32 = x.float()
        mean_square = x32.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        return self.weight * (x32 * torch.rsqrt(mean_square + self.eps)).to(x.dtype)


# --8<-- [end:rmsnorm]
