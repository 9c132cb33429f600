r"""Round-to-nearest (RTN) quantisation: absmax and zero-point integers per tensor, per output
channel or per group of input columns, and NF4; the grid every other quantiser here rounds to.

**The grid.** A :math:`b`-bit quantiser maps a real :math:`w` to an integer code :math:`q` and
back with a scale :math:`s` and a zero point :math:`z`:

.. math:: q = \operatorname{clamp}\big(\lfloor w / s \rceil + z,\; q_{\min},\; q_{\max}\big),
   \qquad \hat w = s\,(q - z).

*Absmax* (symmetric) codes are signed, :math:`q \in [-(2^{b-1}-1),\; 2^{b-1}-1]` (int8:
:math:`\pm 127`), with :math:`z = 0` and :math:`s = \max|w| / (2^{b-1}-1)`: zero is exact and the
grid is symmetric, but a skewed range wastes half of it. *Zero-point* (asymmetric) codes are
unsigned, :math:`q \in [0, 2^b - 1]`, :math:`s = (\max w - \min w) / (2^b - 1)` and
:math:`z = \lfloor -\min w / s \rceil`, the code of 0 (the range is first widened to include 0,
so zero stays exact). Rounding to nearest gives :math:`|w - \hat w| \le s/2` for every
:math:`w` in the range.

**Granularity.** One :math:`(s, z)` for the whole tensor is cheapest and most fragile: a single
outlier sets the step for everyone. One per output channel (row of an ``nn.Linear`` weight)
is the int8 default; group-wise quantisation gives every run of ``group_size`` input columns of
a row its own pair (int4 with :math:`g = 32, 64, 128`, as GPTQ, AWQ and llama.cpp's Q4 formats),
at a cost of :math:`2 \cdot 16 / g` bits per weight for fp16 scales and zeros.

**NF4** (QLoRA's 4-bit NormalFloat) lives in :mod:`groundwork.nn.nf4`; :func:`fake_quantize`
reaches it as ``scheme="nf4"``.

References:
    - Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference" (the affine scheme :math:`w = s(q - z)`).
    - Dettmers et al. 2022, "LLM.int8()" (absmax vector-wise int8); Frantar et al. 2022, "GPTQ"
      (group-wise 4-bit grids, RTN as the baseline).
    - Docs: chapter 18, "Efficient inference and compression".
"""

import dataclasses
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from groundwork.errors import ConfigError

Granularity = Literal["tensor", "channel", "group"]
Scheme = Literal["int8", "int4", "nf4"]


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The codes a ``bits``-bit quantiser uses: ``(-(2^(b-1)-1), 2^(b-1)-1)`` for absmax,
    ``(0, 2^b - 1)`` for zero-point. ``int_range(8, True) == (-127, 127)``."""
    if not 2 <= bits <= 8:
        raise ConfigError(f"bits must be between 2 and 8, got {bits}")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


# --8<-- [start:grid]
def fit_grid(
    w: torch.Tensor, bits: int, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for each row of ``w`` (reduced over the last dimension, kept as size
    1): absmax when ``symmetric``, else min/max with a zero point. A row of zeros gets scale 1."""
    qmin, qmax = int_range(bits, symmetric)
    w = w.float()
    if symmetric:
        scale = w.abs().amax(dim=-1, keepdim=True) / qmax
        zero = torch.zeros_like(scale)
    else:
        lo = w.amin(dim=-1, keepdim=True).clamp(max=0.0)  # widen the range to hold 0 exactly
        hi = w.amax(dim=-1, keepdim=True).clamp(min=0.0)
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.round(-lo / torch.where(scale > 0, scale, 1.0)).clamp(qmin, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def quantize_codes(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool = True
) -> torch.Tensor:
    """Integer codes ``clamp(round(w / scale) + zero, qmin, qmax)`` (as int32)."""
    qmin, qmax = int_range(bits, symmetric)
    return (torch.round(w.float() / scale) + zero).clamp(qmin, qmax).to(torch.int32)


def dequantize_codes(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Reals ``scale * (q - zero)`` (float32)."""
    return scale * (q.float() - zero)


# --8<-- [end:grid]


@dataclasses.dataclass
class Quantized:
    """A quantised tensor: integer ``codes`` shaped like the tensor, and one ``scale``/``zero``
    per tensor, row or group (shaped ``(1, 1)``, ``(rows, 1)`` or ``(rows, n_groups, 1)``)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    symmetric: bool
    granularity: Granularity
    group_size: int | None = None

    def dequantize(self) -> torch.Tensor:
        """The float32 tensor the codes stand for."""
        if self.granularity != "group":
            return dequantize_codes(self.codes, self.scale, self.zero)
        rows, cols = self.codes.shape
        g = int(self.group_size or cols)
        grouped = self.codes.view(rows, cols // g, g)  # (R, G, g)
        return dequantize_codes(grouped, self.scale, self.zero).view(rows, cols)

    def bits_per_weight(self, constant_bits: int = 16) -> float:
        """Storage per element: the code plus its share of the constants (stored in
        ``constant_bits`` each; the zero point only when asymmetric)."""
        constants = self.scale.numel() * (1 if self.symmetric else 2)
        return self.bits + constants * constant_bits / self.codes.numel()


def _as_matrix(w: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    if granularity == "tensor":
        return w.reshape(1, -1)
    if w.dim() != 2:
        raise ConfigError(
            f"{granularity}-wise quantisation needs a 2-D weight (out_features, in_features), "
            f"got shape {tuple(w.shape)}"
        )
    return w


def quantize_tensor(
    w: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = True,
    granularity: Granularity = "channel",
    group_size: int = 128,
) -> Quantized:
    """Round-to-nearest quantisation of ``w`` with one grid per tensor, per row (output
    channel) or per ``group_size`` consecutive columns of a row.

    Raises:
        ConfigError: an unknown granularity, a group size that does not divide the columns.
    """
    if granularity not in ("tensor", "channel", "group"):
        raise ConfigError(
            f"granularity must be 'tensor', 'channel' or 'group', got {granularity!r}"
        )
    m = _as_matrix(w, granularity)
    if granularity == "group":
        if group_size < 1 or m.shape[1] % group_size:
            raise ConfigError(
                f"group_size {group_size} does not divide the {m.shape[1]} input columns: "
                "choose a divisor (e.g. 32, 64 or 128)"
            )
        grouped = m.reshape(m.shape[0], -1, group_size)  # (R, G, g)
        scale, zero = fit_grid(grouped, bits, symmetric)
        codes = quantize_codes(grouped, scale, zero, bits, symmetric).reshape(m.shape)
        return Quantized(codes, scale, zero, bits, symmetric, "group", group_size)
    scale, zero = fit_grid(m, bits, symmetric)
    codes = quantize_codes(m, scale, zero, bits, symmetric).reshape(w.shape)
    return Quantized(codes, scale, zero, bits, symmetric, granularity)


def fake_quantize(
    w: torch.Tensor,
    scheme: Scheme = "int8",
    *,
    symmetric: bool | None = None,
    granularity: Granularity | None = None,
    group_size: int | None = None,
) -> torch.Tensor:
    """``w`` quantised and dequantised (same shape and dtype): what a model computes with when
    its weights are stored in ``scheme``. Defaults: int8 absmax per channel; int4 zero-point per
    group of ``group_size`` (128); NF4 in blocks of ``group_size`` (64, as QLoRA) with double
    quantisation."""
    if scheme == "nf4":
        from groundwork.nn.nf4 import dequantize_nf4, quantize_nf4

        nf4 = quantize_nf4(w.detach(), blocksize=group_size or 64)
        return dequantize_nf4(nf4).to(w.dtype)
    if scheme not in ("int8", "int4"):
        raise ConfigError(f"scheme must be 'int8', 'int4' or 'nf4', got {scheme!r}")
    bits = 8 if scheme == "int8" else 4
    if symmetric is None:
        symmetric = scheme == "int8"
    if granularity is None:
        granularity = "channel" if scheme == "int8" else "group"
    q = quantize_tensor(
        w.detach(),
        bits,
        symmetric=symmetric,
        granularity=granularity,
        group_size=group_size or 128,
    )
    return q.dequantize().reshape(w.shape).to(w.dtype)


def quantizable_linears(
    model: nn.Module, skip: Iterable[str] = ("lm_head",)
) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers a weight quantiser acts on, by qualified name: every one except
    those whose name ends with an entry of ``skip`` (the output head, by default, as GPTQ and
    AWQ keep it in float). A tied head shares the embedding's weight and is never included."""
    skip = tuple(skip)
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not name.endswith(skip)
        and id(module.weight) not in embedding_weights
    }


def is_output_head(name: str) -> bool:
    """Whether the qualified module name is a decoder's output head (``lm_head``)."""
    return name == "lm_head" or name.endswith(".lm_head")


def linear_plan(
    model: nn.Module, body: str, head: str, skip: Iterable[str] = ()
) -> dict[str, tuple[nn.Linear, str]]:
    """Each ``nn.Linear`` of ``model`` by qualified name, with what a model transform makes of
    it: ``head`` for the output head, ``body`` for the others; layers whose name ends with an
    entry of ``skip`` are left out (the transforms of :mod:`~groundwork.compress.weight_only`
    and :mod:`~groundwork.compress.int_dot`)."""
    skip = tuple(skip)
    return {
        name: (module, head if is_output_head(name) else body)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not (skip and name.endswith(skip))
    }


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` (``model.layers.0.mlp.up_proj``)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@torch.no_grad()
def quantize_model_rtn(
    model: nn.Module,
    scheme: Scheme = "int8",
    *,
    symmetric: bool | None = None,
    granularity: Granularity | None = None,
    group_size: int | None = None,
    skip: Iterable[str] = ("lm_head",),
) -> nn.Module:
    """Round every quantisable linear weight of ``model`` to ``scheme`` in place (simulated
    quantisation: the weights stay float, holding only representable values) and return it. The
    baseline GPTQ and AWQ are measured against."""
    for module in quantizable_linears(model, skip).values():
        module.weight.copy_(
            fake_quantize(
                module.weight,
                scheme,
                symmetric=symmetric,
                granularity=granularity,
                group_size=group_size,
            )
        )
    return model
