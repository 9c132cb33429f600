r"""LLM.int8(): vector-wise int8 matrix multiplication with a float path for outlier features.

**Emergent outliers.** From about 6.7B parameters on (earlier in some models), a handful of
hidden dimensions carry activations of magnitude 20-100 while the rest stay within a few units;
the same dimensions do it in most layers and for most tokens (Dettmers et al. 2022, section 4).
An absmax int8 grid for a token row is set by its largest entry, so one outlier of 60 gives a
step of :math:`60/127 \approx 0.5`: every ordinary entry of that token rounds to 0 or
:math:`\pm 1` step, and the product loses almost everything that was not the outlier.

**Vector-wise quantisation.** For :math:`Y = X W^\top` with :math:`X` (tokens × in) and
:math:`W` (out × in), give every *row* of :math:`X` and every row of :math:`W` (one output
feature) its own absmax scale,

.. math:: s^X_i = \frac{\max_k |X_{ik}|}{127}, \quad s^W_j = \frac{\max_k |W_{jk}|}{127},
   \quad X^{(8)}_{ik} = \Big\lfloor \frac{X_{ik}}{s^X_i} \Big\rceil,
   \quad W^{(8)}_{jk} = \Big\lfloor \frac{W_{jk}}{s^W_j} \Big\rceil .

The inner dimension :math:`k` is shared by both factors' scales, so they come out of the sum:
the int8 × int8 products are accumulated *exactly* in int32 and the result is dequantised once
by the outer product of the scales,

.. math:: Y_{ij} \approx s^X_i\, s^W_j \sum_k X^{(8)}_{ik} W^{(8)}_{jk}.

**Mixed-precision decomposition.** Let :math:`O = \{k : \max_i |X_{ik}| \ge \tau\}` be the input
features with any entry at or above the threshold :math:`\tau` (6.0). Those columns are
multiplied in float, the rest in int8:

.. math:: Y = X_{:,O}\, W_{:,O}^\top
   \;+\; \operatorname{diag}(s^X)\, \big(X^{(8)}_{:,\bar O}\, W^{(8)\top}_{:,\bar O}\big)\,
   \operatorname{diag}(s^W),

with :math:`s^X` now taken over the non-outlier columns only, so the outliers no longer set the
grid of their token. :math:`|O|` is a few dimensions out of thousands, so more than 99.9% of the
multiply-adds stay int8.

**Which weight for the outlier columns.** The outliers are in the activations; the weight
columns they meet are ordinary. :func:`mixed_int8_matmul` is the paper's equation with a float
:math:`W` (both factors of :math:`X_{:,O} W_{:,O}^\top` in float). :class:`Int8OutlierLinear`,
the inference module, stores only :math:`W^{(8)}` and :math:`s^W` (half the bytes of fp16) and
multiplies the float outlier columns of :math:`X` by the *dequantised* columns
:math:`s^W_j W^{(8)}_{jk}`, as bitsandbytes' ``Linear8bitLt`` does when it holds int8 weights
(``has_fp16_weights=False``); the tests check it against that layer.

References:
    - Dettmers, Lewis, Belkada & Zettlemoyer 2022, "LLM.int8(): 8-bit Matrix Multiplication for
      Transformers at Scale" (sections 3.1-3.2, 4).
    - bitsandbytes ``MatMul8bitLt`` / ``int8_mixed_scaled_mm`` (the reference implementation).
    - Docs: chapter 18, "Efficient inference and compression".
"""

import dataclasses
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from groundwork.compress.quantize import (
    fit_grid,
    quantizable_linears,
    quantize_codes,
    set_submodule,
)
from groundwork.errors import ConfigError, DataError

DEFAULT_THRESHOLD = 6.0
"""The paper's outlier magnitude: features with any ``|x| >= 6`` go down the float path."""


# --8<-- [start:int8_matmul]
def vectorwise_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 codes for every row of ``x`` ``(rows, k)`` and the row scales ``(rows, 1)``,
    ``s_i = max_k |x_ik| / 127`` (a row of zeros gets scale 1)."""
    scale, zero = fit_grid(x, 8, symmetric=True)  # (rows, 1)
    return quantize_codes(x, scale, zero, 8).to(torch.int8), scale


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for int8 ``a`` ``(m, k)`` and ``b`` ``(n, k)``, accumulated exactly in int32.

    Each product is at most ``127^2 = 16129``, so the int32 sum cannot overflow for
    ``k < 2^31 / 16129 ≈ 133,000``. ``torch._int_mm`` is the integer GEMM (CPU and CUDA); where it
    refuses the shapes, an int64 matmul gives the same integers.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise ConfigError(f"int8_matmul needs int8 tensors, got {a.dtype} and {b.dtype}")
    try:
        return torch._int_mm(a, b.t().contiguous())  # (m, n) int32
    except RuntimeError:  # e.g. CUDA's shape rules (m > 16, multiples of 8)
        return (a.long() @ b.long().t()).to(torch.int32)  # (m, n)


def int8_linear(x: torch.Tensor, w_codes: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Vector-wise int8 ``x @ W.T``: ``x`` ``(m, k)`` float, ``W`` given as int8 codes ``(n, k)``
    with row scales ``(n, 1)``. Returns float32 ``(m, n)``."""
    x_codes, x_scale = vectorwise_quantize(x)  # (m, k) int8, (m, 1)
    acc = int8_matmul(x_codes, w_codes)  # (m, n) int32, exact
    return acc.float() * (x_scale * w_scale.t())  # Y_ij = s^X_i s^W_j C_ij


# --8<-- [end:int8_matmul]


# --8<-- [start:outliers]
def outlier_features(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean mask ``(k,)`` of the input features (columns of ``x`` ``(m, k)``) with any
    ``|x| >= threshold``."""
    return (x.abs() >= threshold).any(dim=0)  # (k,)


def decomposed_matmul(
    x: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    threshold: float,
    w_outlier: torch.Tensor | None = None,
) -> torch.Tensor:
    """LLM.int8()'s ``x @ W.T``: outlier feature columns in float, the rest vector-wise int8.

    Args:
        x: Activations ``(m, k)``.
        w_codes: ``W``'s int8 codes ``(n, k)``.
        w_scale: ``W``'s row scales ``(n, 1)``.
        threshold: Features with any ``|x| >= threshold`` take the float path (``0``: all of
            them; ``math.inf``: none, pure vector-wise int8).
        w_outlier: The float ``W`` ``(n, k)`` to multiply the outlier columns by; ``None``: the
            dequantised codes ``s^W_j W^(8)_jk`` (bitsandbytes' inference path).

    Returns:
        ``(m, n)`` in ``x``'s dtype.
    """
    outliers = outlier_features(x, threshold)  # (k,)
    x_regular = x.masked_fill(outliers, 0.0)  # (m, k): outlier columns neither add nor set s^X
    y = int8_linear(x_regular, w_codes, w_scale)  # (m, n)
    if bool(outliers.any()):
        if w_outlier is not None:
            w_o = w_outlier[:, outliers]  # (n, |O|) float
        else:
            w_o = w_codes[:, outliers].float() * w_scale  # (n, |O|) dequantised
        y = y + x[:, outliers].float() @ w_o.float().t()  # X_{:,O} W_{:,O}^T in float
    return y.to(x.dtype)


# --8<-- [end:outliers]


def mixed_int8_matmul(
    x: torch.Tensor, weight: torch.Tensor, threshold: float = DEFAULT_THRESHOLD
) -> torch.Tensor:
    """The paper's equation for float ``x`` ``(m, k)`` and ``weight`` ``(n, k)``: quantise
    ``weight`` per row, multiply outlier columns with the float ``weight``, the rest in int8.
    ``threshold = 0`` is the float product, ``math.inf`` pure vector-wise int8."""
    if threshold < 0 or math.isnan(threshold):
        raise ConfigError(f"threshold must be >= 0, got {threshold}")
    w_codes, w_scale = vectorwise_quantize(weight)
    return decomposed_matmul(x, w_codes, w_scale, threshold, w_outlier=weight)


class Int8OutlierLinear(nn.Module):
    """An ``nn.Linear`` stored as int8 codes with one scale per output row, computed with
    LLM.int8()'s decomposition (:func:`decomposed_matmul`; outlier columns of the input times the
    dequantised weight columns, in float).

    Args:
        linear: The layer to quantise (its weight is read, not kept).
        threshold: The outlier magnitude (> 0); ``math.inf`` gives pure vector-wise int8.

    Raises:
        ConfigError: ``threshold <= 0`` (every feature would be float: nothing is int8).
    """

    def __init__(self, linear: nn.Linear, threshold: float = DEFAULT_THRESHOLD) -> None:
        super().__init__()
        check_threshold(threshold)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.threshold = threshold
        codes, scale = vectorwise_quantize(linear.weight.detach())
        self.weight_codes: torch.Tensor
        self.weight_scale: torch.Tensor
        self.bias: torch.Tensor | None
        self.register_buffer("weight_codes", codes)  # (out, in) int8
        self.register_buffer("weight_scale", scale)  # (out, 1) float32
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight ``(out, in)`` the codes stand for."""
        return self.weight_codes.float() * self.weight_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., in_features)`` to ``(..., out_features)``."""
        x2 = x.reshape(-1, self.in_features)  # (m, in)
        y = decomposed_matmul(x2, self.weight_codes, self.weight_scale, self.threshold)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)  # (..., out)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, threshold={self.threshold}"


def check_threshold(threshold: float) -> None:
    """Raise :class:`ConfigError` unless ``threshold > 0``."""
    if not threshold > 0:  # also catches NaN
        raise ConfigError(
            f"threshold must be > 0, got {threshold}: at 0 every feature is an outlier and "
            "nothing is int8 (use math.inf for pure vector-wise int8)"
        )


@torch.no_grad()
def apply_llm_int8(
    model: nn.Module,
    threshold: float = DEFAULT_THRESHOLD,
    skip: Iterable[str] = ("lm_head",),
) -> nn.Module:
    """Replace every quantisable ``nn.Linear`` of ``model`` (all but the names ending in
    ``skip``) with an :class:`Int8OutlierLinear`, in place; returns ``model``."""
    check_threshold(threshold)
    for name, linear in quantizable_linears(model, skip).items():
        set_submodule(model, name, Int8OutlierLinear(linear, threshold))
    return model


# ---- the emergent-outlier analysis -----------------------------------------------------------


@dataclasses.dataclass
class OutlierStats:
    """What one linear layer's inputs looked like over a set of batches."""

    in_features: int
    tokens: int
    """Rows (tokens) seen."""
    max_abs: float
    """Largest ``|x|`` seen."""
    channel_max: torch.Tensor
    """``(in_features,)`` largest ``|x|`` per input feature."""
    channel_hits: torch.Tensor
    """``(in_features,)`` how many tokens had ``|x| >= threshold`` in that feature."""

    def outlier_dims(self) -> list[int]:
        """The features with any ``|x| >= threshold``: the ones LLM.int8() computes in float."""
        return torch.nonzero(self.channel_hits > 0).flatten().tolist()

    def systematic_dims(self, min_token_fraction: float = 0.06) -> list[int]:
        """Features over the threshold in at least ``min_token_fraction`` of the tokens (the
        paper's criterion for an outlier *feature*: 6% of the sequence dimensions)."""
        hits = self.channel_hits.float() / max(self.tokens, 1)
        return torch.nonzero(hits >= min_token_fraction).flatten().tolist()


@torch.no_grad()
def outlier_statistics(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    threshold: float = DEFAULT_THRESHOLD,
    skip: Iterable[str] = ("lm_head",),
) -> dict[str, OutlierStats]:
    """Run ``batches`` of token ids ``(B, T)`` through ``model`` and record, for the input of each
    quantisable linear layer, the per-feature maximum ``|x|`` and how many tokens reach the
    threshold. Works on a float model or one already transformed (hooks read the inputs).

    Raises:
        ConfigError: ``threshold <= 0``.
        DataError: no batches.
    """
    check_threshold(threshold)
    layers = quantizable_linears(model, skip)
    stats: dict[str, OutlierStats] = {}

    def hook(name: str, in_features: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1, in_features).float().abs()  # (tokens, in)
            s = stats.get(name)
            if s is None:
                zeros = torch.zeros(in_features)
                s = stats[name] = OutlierStats(in_features, 0, 0.0, zeros, zeros.long())
            s.tokens += x.shape[0]
            s.channel_max = torch.maximum(s.channel_max, x.amax(dim=0).cpu())
            s.channel_hits += (x >= threshold).sum(dim=0).cpu()
            s.max_abs = float(s.channel_max.max())

        return record

    handles = [m.register_forward_pre_hook(hook(name, m.in_features)) for name, m in layers.items()]
    try:
        n = 0
        for batch in batches:
            model(batch)
            n += 1
        if n == 0:
            raise DataError("outlier_statistics needs at least one batch of token ids")
    finally:
        for h in handles:
            h.remove()
    return stats


def shared_outlier_dims(
    stats: dict[str, OutlierStats], width: int, min_layer_fraction: float = 0.25
) -> dict[int, float]:
    """Features of width-``width`` inputs (the residual stream's ``d_model``: q/k/v, gate/up, and
    ``o_proj`` too when ``n_heads * d_head == d_model``) that are outliers in at least
    ``min_layer_fraction`` of those layers (the paper's 25%), mapped to the fraction of layers
    where they are."""
    layers = [s for s in stats.values() if s.in_features == width]
    if not layers:
        return {}
    counts = torch.zeros(width)
    for s in layers:
        counts += (s.channel_hits > 0).float()
    fraction = counts / len(layers)
    return {
        int(d): float(fraction[d])
        for d in torch.nonzero(fraction >= min_layer_fraction).flatten().tolist()
    }
