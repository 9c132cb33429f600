"""Position information for attention: sinusoidal, learned, rotary (RoPE) and ALiBi.

* Sinusoidal absolute positions: Vaswani et al. 2017, "Attention Is All You Need".
* Learned absolute positions: GPT-2 (Radford et al. 2019), an embedding table indexed by position.
* RoPE: Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding". Queries
  and keys are rotated by an angle proportional to their position, so their dot product depends
  only on the *difference* of positions. Frequency scaling for longer contexts: "linear" (Chen et
  al. 2023, position interpolation) and "llama3" (Meta's Llama 3.1 recipe), as in Hugging Face's
  ``rope_scaling``.
* ALiBi: Press, Smith & Lewis 2022, "Train Short, Test Long: Attention with Linear Biases". No
  position vectors at all: a per-head linear penalty on the distance is added to the scores.

Chapter 5 of the docs derives RoPE's relative property.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


# --8<-- [start:sinusoidal]
def sinusoidal_table(max_seq_len: int, d_model: int) -> torch.Tensor:
    """The fixed sinusoidal position table of the original Transformer, shape ``(max_seq_len, d)``.

    $$PE_{p, 2i} = \\sin(p / 10000^{2i/d}), \\qquad PE_{p, 2i+1} = \\cos(p / 10000^{2i/d})$$

    Args:
        max_seq_len: Number of positions (rows).
        d_model: Size of each position vector; must be even.
    """
    if d_model % 2:
        raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
    position = torch.arange(max_seq_len, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (d/2,)
    angles = position * inv_freq  # (T, d/2)
    table = torch.zeros(max_seq_len, d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


# --8<-- [end:sinusoidal]


class SinusoidalPositionalEmbedding(nn.Module):
    """Looks positions up in :func:`sinusoidal_table` (a buffer, not trained)."""

    table: torch.Tensor

    def __init__(self, max_seq_len: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_seq_len, d_model), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Map integer positions of any shape ``(...)`` to vectors ``(..., d_model)``."""
        return self.table[position_ids]


class LearnedPositionalEmbedding(nn.Embedding):
    """One trained vector per position, as in GPT-2 (``wpe``): ``nn.Embedding`` over positions."""

    def __init__(self, max_seq_len: int, d_model: int) -> None:
        super().__init__(max_seq_len, d_model)


# --8<-- [start:rope]
@dataclass(kw_only=True)
class RopeScaling:
    """How RoPE's frequencies are stretched to reach beyond the training context.

    Mirrors Hugging Face's ``rope_scaling`` dictionary for the ``linear`` and ``llama3`` types.
    """

    kind: Literal["linear", "llama3"]
    """``linear`` divides every frequency by ``factor``; ``llama3`` only the low ones, smoothly."""
    factor: float
    """How many times longer the new context is."""
    low_freq_factor: float = 1.0
    """llama3: wavelengths longer than ``original_max_seq_len / low_freq_factor`` are scaled."""
    high_freq_factor: float = 4.0
    """llama3: wavelengths shorter than ``original_max_seq_len / high_freq_factor`` are kept."""
    original_max_seq_len: int = 8192
    """llama3: the context length the model was trained on."""


def rope_inv_freq(
    d_head: int, theta: float = 10000.0, scaling: RopeScaling | None = None
) -> torch.Tensor:
    """RoPE's angular frequencies $\\omega_i = \\theta^{-2i/d}$, $i = 0..d/2-1$, shape ``(d/2,)``.

    Args:
        d_head: Size of one attention head; must be even.
        theta: The base (10000 in RoFormer, 500000 in Llama 3).
        scaling: Optional frequency scaling for long contexts.
    """
    exponents = torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head  # (d/2,)
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":  # position interpolation: positions p -> p / factor
        return inv_freq / scaling.factor
    # llama3: keep high frequencies, divide low ones by factor, interpolate in between.
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = scaling.original_max_seq_len / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_seq_len / scaling.high_freq_factor
    smooth = (scaling.original_max_seq_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Computes the cosines and sines that :func:`apply_rope` rotates queries and keys by.

    Args:
        d_head: Size of one attention head.
        theta: RoPE base.
        scaling: Optional frequency scaling (see :class:`RopeScaling`).
    """

    inv_freq: torch.Tensor

    def __init__(
        self, d_head: int, *, theta: float = 10000.0, scaling: RopeScaling | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(d_head, theta, scaling), persistent=False)

    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Angles $p\\,\\omega_i$ for positions ``(B, T)``, returned as ``cos, sin`` ``(B, T, d)``.

        Each frequency appears twice (``[ω_0..ω_{d/2-1}, ω_0..ω_{d/2-1}]``) because
        :func:`rotate_half` pairs feature ``i`` with feature ``i + d/2``. Computed in float32.
        """
        angles = position_ids.float().unsqueeze(-1) * self.inv_freq  # (B, T, d/2)
        angles = torch.cat([angles, angles], dim=-1)  # (B, T, d)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension: a 90° turn of each pair ``(x1_i, x2_i)``."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., d/2) each
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of features of ``x`` ``(B, H, T, d)`` by its angle.

    $$R_p\\,x = x \\cos(p\\omega) + \\mathrm{rotate\\_half}(x) \\sin(p\\omega)$$

    Args:
        x: Queries or keys, ``(B, H, T, d)``.
        cos: ``(B, T, d)`` from :class:`RotaryEmbedding`.
        sin: ``(B, T, d)`` from :class:`RotaryEmbedding`.
    """
    cos = cos.unsqueeze(1).to(x.dtype)  # (B, 1, T, d): the same angle for every head
    sin = sin.unsqueeze(1).to(x.dtype)  # (B, 1, T, d)
    return x * cos + rotate_half(x) * sin


# --8<-- [end:rope]


# --8<-- [start:alibi]
def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes, shape ``(n_heads,)``.

    For ``n`` a power of two the slopes are the geometric sequence $2^{-8/n}, 2^{-16/n}, \\ldots,
    2^{-8}$; 8 heads get $2^{-1}, \\ldots, 2^{-8}$. Otherwise, take the slopes for the largest power
    of two $m < n$, then every other slope of the sequence for $2m$ (Press et al.'s recipe).

    >>> alibi_slopes(4).tolist()
    [0.25, 0.0625, 0.015625, 0.00390625]
    """
    if n_heads <= 0:
        raise ValueError(f"n_heads must be positive, got {n_heads}")

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two_slopes(closest)
    if closest < n_heads:
        slopes += power_of_two_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


def alibi_bias(slopes: torch.Tensor, t_q: int, t_k: int) -> torch.Tensor:
    """Additive attention bias ``-slope_h * |i - j|``, shape ``(H, t_q, t_k)``.

    Query ``i`` sits at absolute position ``t_k - t_q + i`` (the last ``t_q`` of ``t_k`` positions,
    as when decoding with a cache). Under a causal mask only ``j <= i`` matters, where the bias is
    Press et al.'s ``slope * (j - i)``.
    """
    q_pos = torch.arange(t_k - t_q, t_k, device=slopes.device).unsqueeze(1)  # (t_q, 1)
    k_pos = torch.arange(t_k, device=slopes.device).unsqueeze(0)  # (1, t_k)
    distance = (q_pos - k_pos).abs().float()  # (t_q, t_k)
    return -slopes.view(-1, 1, 1) * distance  # (H, t_q, t_k)


# --8<-- [end:alibi]
