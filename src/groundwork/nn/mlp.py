"""Position-wise feed-forward networks: the GELU MLP of GPT-2 and the SwiGLU MLP of Llama.

* GELU: Hendrycks & Gimpel 2016, "Gaussian Error Linear Units"; GPT-2 (Radford et al. 2019) uses
  the tanh approximation (``gelu_new`` in Hugging Face, ``F.gelu(approximate="tanh")`` in PyTorch).
* SwiGLU: Shazeer 2020, "GLU Variants Improve Transformer"; used by Llama (Touvron et al. 2023).

Both MLPs name their layers ``up_proj`` (d_model -> d_ff) and ``down_proj`` (d_ff -> d_model);
SwiGLU adds ``gate_proj``. Chapter 5 of the docs explains them.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


# --8<-- [start:gelu]
def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation used by GPT-2.

    $$\\mathrm{GELU}(x) \\approx \\tfrac12 x \\left(1 + \\tanh\\left(\\sqrt{2/\\pi}\\,
    (x + 0.044715\\,x^3)\\right)\\right)$$
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class GELUMLP(nn.Module):
    """Two linear layers with a GELU between them: ``down_proj(gelu(up_proj(x)))``.

    Args:
        d_model: Input and output size.
        d_ff: Hidden size (GPT-2: ``4 * d_model``).
        bias: Whether the linear layers have biases (GPT-2: yes).
        dropout: Dropout on the output, active only in training mode.
    """

    def __init__(self, d_model: int, d_ff: int, *, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        # F.gelu(approximate="tanh") is gelu_tanh above as one fused kernel (tested equal).
        h = F.gelu(self.up_proj(x), approximate="tanh")  # (B, T, d_ff)
        return self.dropout(self.down_proj(h))


# --8<-- [end:gelu]


# --8<-- [start:swiglu]
class SwiGLU(nn.Module):
    """The gated MLP of Llama: ``down_proj(silu(gate_proj(x)) * up_proj(x))``.

    $$\\mathrm{FFN}_{\\mathrm{SwiGLU}}(x) = W_2\\,(\\mathrm{SiLU}(W_1 x) \\odot W_3 x),
    \\qquad \\mathrm{SiLU}(z) = z\\,\\sigma(z)$$

    Args:
        d_model: Input and output size.
        d_ff: Hidden size (Llama: about ``8/3 * d_model``, rounded).
        bias: Whether the linear layers have biases (Llama: no).
    """

    def __init__(self, d_model: int, d_ff: int, *, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # silu(z) = z σ(z)


# --8<-- [end:swiglu]
