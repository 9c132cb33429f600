"""The transformer block: attention and MLP sublayers, each with a residual connection and a norm.

Two placements of the norm:

* post-LN (Vaswani et al. 2017): ``x = norm(x + sublayer(x))``. The residual stream is normalised
  after every sublayer; deep stacks need learning-rate warm-up because gradients near the output
  are large (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture").
* pre-LN (GPT-2, Llama): ``x = x + sublayer(norm(x))``. The residual path is an identity, so
  gradients flow unchanged to every layer and training is stable without warm-up; the price is
  that late layers add ever smaller updates to a growing stream (representation collapse), and a
  final norm is needed before the output head.

Chapter 5 of the docs discusses the trade-off.
"""

from typing import Any, Literal

import torch
from torch import nn

NormPosition = Literal["pre", "post"]


# --8<-- [start:block]
class TransformerBlock(nn.Module):
    """``attn`` then ``mlp``, each wrapped in a residual connection with a pre- or post-norm.

    Args:
        attn: Self-attention module, called as ``attn(x, **attn_kwargs)``.
        mlp: Feed-forward module.
        ln_1: Norm around the attention sublayer.
        ln_2: Norm around the MLP sublayer.
        norm_position: ``"pre"`` (GPT-2, Llama) or ``"post"`` (the original Transformer).
    """

    def __init__(
        self,
        attn: nn.Module,
        mlp: nn.Module,
        ln_1: nn.Module,
        ln_2: nn.Module,
        *,
        norm_position: NormPosition = "pre",
    ) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = ln_1, attn, ln_2, mlp
        self.norm_position = norm_position

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        if self.norm_position == "pre":
            x = x + self.attn(self.ln_1(x), **attn_kwargs)
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + self.attn(x, **attn_kwargs))
            x = self.ln_2(x + self.mlp(x))
        return x


# --8<-- [end:block]
