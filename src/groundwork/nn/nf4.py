r"""4-bit NormalFloat (NF4) weights with double quantisation, the storage format of QLoRA
(Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", §3), and
:class:`NF4Linear`, a frozen linear layer that keeps its weight in it.

**Blockwise absmax quantisation.** A weight is flattened and cut into blocks of ``blocksize``
(64) numbers. Each block :math:`x` keeps one constant, its absolute maximum :math:`c = \max_i
|x_i|`, and every number becomes the index of the level of a 16-value table :math:`L` nearest to
:math:`x_i / c \in [-1, 1]`; dequantising gives back :math:`c \, L[\text{index}]`. An outlier
only coarsens its own block.

**NF4 levels.** Pretrained weights are close to normally distributed, so the levels are the
quantiles of :math:`N(0, 1)`, scaled into :math:`[-1, 1]`: each of the 16 bins then holds about as
many weights. QLoRA wants an exact zero (padding, zeroed weights), which a symmetric set of 16
quantiles lacks; so the table is asymmetric, 8 positive and 7 negative levels around an exact 0:

.. math:: L^+_i = \Phi^{-1}(p_i), \; p_i = \delta + i \tfrac{0.5 - \delta}{8}, \; i = 0..7;
   \qquad L^-_j = -\Phi^{-1}(p'_j), \; p'_j = \delta + j \tfrac{0.5 - \delta}{7}, \; j = 0..6

with :math:`\delta = 0.9677083` (the probability of the outermost level; :math:`\Phi^{-1}(1) =
\infty` cannot be used) and all levels divided by :math:`\Phi^{-1}(\delta)`, so that they span
exactly :math:`[-1, 1]`. This is ``bitsandbytes``' ``create_normal_map``, the code behind the
paper; :func:`nf4_levels` computes it with ``torch.special.ndtri`` (no SciPy) and is tested
bit-for-bit equal to ``bitsandbytes``' table. (:math:`\delta` equals
:math:`1 - \frac12(\frac1{30} + \frac1{32})` to the seven digits given: the mean of the outermost
bin centres of 15 and 16 equal-probability bins.)

**Double quantisation.** A float32 constant per 64 weights costs :math:`32/64 = 0.5` bit per
weight. QLoRA quantises the constants too: their mean is subtracted (they are all positive, and
centred values use the signed 8-bit code well) and the rest is quantised blockwise again, 256
constants to a block, with 8-bit indices into the *dynamic* data type of Dettmers 2015 ("8-Bit
Approximations for Parallelism in Deep Learning", :func:`dynamic_levels`); each such block keeps
a float32 absmax of its own. The constants then cost :math:`8/64 + 32/(64 \cdot 256) \approx
0.127` bit per weight, and a weight :math:`4.127` bits in all (:math:`4.5` without double
quantisation).

**Layout.** As ``bitsandbytes``: blocks run over the flattened (row-major) tensor, the last one
may be short; two indices share a byte, the first in the high nibble; an odd count is padded with
the index of 0.0. Chapter 13 (QLoRA).

This module is long because the format is one piece: the two code books, quantise/dequantise with
the nested constants, and the layer that stores them belong together and are tested together.
"""

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError

__all__ = [
    "NF4_OFFSET",
    "NF4Linear",
    "NF4Quantized",
    "dequantize_nf4",
    "dynamic_levels",
    "nf4_levels",
    "quantize_nf4",
]

NF4_OFFSET = 0.9677083
r""":math:`\delta`: the probability at which the outermost NF4 level sits (``bitsandbytes``)."""

_NF4_ZERO = 7  # index of 0.0 among the 16 NF4 levels: pads an odd count of indices


# --8<-- [start:levels]
def _nf4_levels_cpu() -> torch.Tensor:
    # Quantile positions as bitsandbytes computes them (float32 linspace), Phi^-1 in float64,
    # rounded to float32 and normalised in float32: the same 16 floats, bit for bit.
    positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double())  # (8,)
    negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].double())  # (7,)
    levels = torch.cat([positive.float(), negative.float(), torch.zeros(1)]).sort().values
    return levels / levels.max()  # (16,) from -1 to 1, with an exact 0


def _dynamic_levels_cpu() -> torch.Tensor:
    # Sign, then the exponent in unary (a run of zeros ended by a 1 bit), then a linear
    # fraction in the bits left: decade 10^(e - 6) gets e fraction bits, 2^e values, each the
    # centre of one of 2^e equal bins of [0.1, 1]. 2 * (1 + 2 + ... + 64) = 254, plus 0 and 1.
    values = [torch.zeros(1), torch.ones(1)]
    for e in range(7):
        edges = torch.linspace(0.1, 1.0, 2**e + 1)  # (2^e + 1,)
        centres = (edges[:-1] + edges[1:]) / 2.0  # (2^e,)
        values += [10.0 ** (e - 6) * centres, -(10.0 ** (e - 6)) * centres]
    return torch.cat(values).sort().values  # (256,) from -0.993 to 1


# --8<-- [end:levels]


@functools.cache
def _levels(name: str, device: torch.device) -> torch.Tensor:
    """The table ``name`` on ``device``, computed once (read-only by convention)."""
    return (_nf4_levels_cpu() if name == "nf4" else _dynamic_levels_cpu()).to(device)


def nf4_levels(device: torch.device | str | None = None) -> torch.Tensor:
    """The 16 NF4 levels, ascending, float32: ``-1.0, -0.696, ..., 0.0, 0.0796, ..., 1.0``."""
    return _levels("nf4", torch.device(device or "cpu")).clone()


def dynamic_levels(device: torch.device | str | None = None) -> torch.Tensor:
    """The 256 values, ascending, float32, of the signed 8-bit dynamic data type (Dettmers 2015)
    that quantises the NF4 constants (``bitsandbytes.functional.create_dynamic_map()``)."""
    return _levels("dynamic", torch.device(device or "cpu")).clone()


@dataclass(frozen=True)
class NF4Quantized:
    """A tensor in NF4: packed 4-bit indices and one constant per block (those constants
    themselves 8-bit quantised under double quantisation)."""

    codes: torch.Tensor
    """``(ceil(n / 2),)`` uint8: two indices into :func:`nf4_levels` a byte, first one high."""
    absmax: torch.Tensor
    """``(n_blocks,)``: each block's absmax, float32; with double quantisation uint8 indices
    into :func:`dynamic_levels` of ``absmax - absmax_offset``, blockwise scaled."""
    shape: torch.Size
    """Shape of the original tensor."""
    dtype: torch.dtype
    """Dtype :func:`dequantize_nf4` returns (the original tensor's)."""
    blocksize: int
    """Numbers per block (sharing one absmax)."""
    absmax_scales: torch.Tensor | None = None
    """Double quantisation: ``(ceil(n_blocks / dq_blocksize),)`` float32 absmax of each block of
    centred constants."""
    absmax_offset: torch.Tensor | None = None
    """Double quantisation: ``()`` float32, the mean of the constants, subtracted before."""
    dq_blocksize: int = 256
    """Constants per block of the double quantisation."""

    @property
    def double_quant(self) -> bool:
        """Whether the block constants are themselves quantised."""
        return self.absmax_scales is not None

    @property
    def numel(self) -> int:
        """Number of quantised values."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of storage: the packed indices and the constants."""
        tensors = [self.codes, self.absmax, self.absmax_scales, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    @property
    def bits_per_value(self) -> float:
        """Storage bits per quantised value (4.127 for blocks of 64 with double quantisation)."""
        return 8 * self.nbytes / self.numel

    def block_absmax(self) -> torch.Tensor:
        """The block constants ``(n_blocks,)`` float32 (dequantised under double quantisation)."""
        if self.absmax_scales is None:
            return self.absmax
        assert self.absmax_offset is not None
        centred = _dequantize_blocks(
            self.absmax.long(),
            self.absmax_scales,
            _levels("dynamic", self.absmax.device),
            self.dq_blocksize,
        )  # (n_blocks,)
        return centred + self.absmax_offset  # (n_blocks,)


def _check_blocksize(blocksize: int, name: str = "blocksize", even: bool = True) -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ConfigError(f"{name} must be a positive integer, got {blocksize!r}")
    if even and blocksize % 2:
        raise ConfigError(
            f"{name} must be even (two 4-bit indices share a byte), got {blocksize}; QLoRA uses 64"
        )


# --8<-- [start:quantize]
def _quantize_blocks(
    x: torch.Tensor, levels: torch.Tensor, blocksize: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantisation of a flat float32 ``x`` ``(n,)`` to the nearest of the
    ascending ``levels`` (a value halfway between two goes to the lower one): indices ``(n,)``
    int64 and absmax ``(n_blocks,)`` float32."""
    n = x.numel()
    n_blocks = -(-n // blocksize)
    blocks = F.pad(x, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)  # zeros: no effect
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    inverse = 1.0 / absmax.clamp(min=torch.finfo(torch.float32).tiny)  # (n_blocks,), 0 blocks: 0
    scaled = (blocks * inverse[:, None]).clamp(-1.0, 1.0)  # (n_blocks, blocksize) in [-1, 1]
    midpoints = (levels[:-1] + levels[1:]) / 2  # (len(levels) - 1,) decision boundaries
    indices = torch.bucketize(scaled, midpoints)  # nearest level
    return indices.view(-1)[:n], absmax


def _dequantize_blocks(
    indices: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor, blocksize: int
) -> torch.Tensor:
    """``levels[indices] * absmax`` of each block, flat float32 ``(n,)``."""
    n = indices.numel()
    values = levels[indices]  # (n,)
    n_blocks = absmax.numel()
    blocks = F.pad(values, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)
    return (blocks * absmax.float()[:, None]).view(-1)[:n]  # (n,)


def quantize_nf4(
    w: torch.Tensor, blocksize: int = 64, double_quant: bool = True, dq_blocksize: int = 256
) -> NF4Quantized:
    """Quantise ``w`` (any shape, floating point) to NF4 in blocks of ``blocksize`` numbers of
    the flattened tensor; ``double_quant`` quantises the block constants to 8 bits as well, in
    blocks of ``dq_blocksize`` (QLoRA: 64 and 256).

    Equal to ``bitsandbytes.functional.quantize_4bit(w, blocksize, compress_statistics=
    double_quant, quant_type="nf4")``: the same packed bytes and constants. (Its CPU kernel
    rounds the centred constants through a grid of 65,536 points first: the few within half a
    grid step, 1.5e-5 of their block's scale, of a midpoint between two 8-bit values can get
    the farther one. We round to the nearest, as its CUDA kernel does.)

    Raises:
        ConfigError: a block size that is not a positive (for ``blocksize``, even) integer; a
            tensor that is empty, not floating point, or holds NaN or infinity.
    """
    _check_blocksize(blocksize)
    _check_blocksize(dq_blocksize, "dq_blocksize", even=False)
    if not w.is_floating_point():
        raise ConfigError(f"NF4 quantises floating-point tensors, not {w.dtype}")
    if w.numel() == 0:
        raise ConfigError(f"cannot quantise an empty tensor (shape {tuple(w.shape)})")
    flat = w.detach().reshape(-1).float()  # (n,)
    if not torch.isfinite(flat).all():
        raise ConfigError("the tensor to quantise holds NaN or infinity")
    indices, absmax = _quantize_blocks(flat, _levels("nf4", flat.device), blocksize)
    if indices.numel() % 2:
        indices = F.pad(indices, (0, 1), value=_NF4_ZERO)
    nibbles = indices.to(torch.uint8)
    codes = (nibbles[0::2] << 4) | nibbles[1::2]  # (ceil(n / 2),) first value in the high nibble
    if not double_quant:
        return NF4Quantized(codes, absmax, w.shape, w.dtype, blocksize, dq_blocksize=dq_blocksize)
    offset = absmax.mean()  # () the constants are all >= 0: centre them first
    absmax_indices, scales = _quantize_blocks(
        absmax - offset, _levels("dynamic", flat.device), dq_blocksize
    )
    return NF4Quantized(
        codes,
        absmax_indices.to(torch.uint8),
        w.shape,
        w.dtype,
        blocksize,
        absmax_scales=scales,
        absmax_offset=offset,
        dq_blocksize=dq_blocksize,
    )


def dequantize_nf4(q: NF4Quantized) -> torch.Tensor:
    """The tensor ``q`` stands for, in its original shape and dtype (computed in float32;
    equal to ``bitsandbytes.functional.dequantize_4bit``)."""
    high, low = q.codes >> 4, q.codes & 0x0F  # (ceil(n / 2),) each
    indices = torch.stack([high, low], dim=1).view(-1)[: q.numel].long()  # (n,)
    values = _dequantize_blocks(
        indices, q.block_absmax(), _levels("nf4", q.codes.device), q.blocksize
    )
    return values.view(q.shape).to(q.dtype)


# --8<-- [end:quantize]


# --8<-- [start:nf4_linear]
class NF4Linear(nn.Module):
    """A frozen linear layer whose ``(out_features, in_features)`` weight is stored in NF4:
    ``forward(x) = F.linear(x, dequantize(), bias)``, the weight dequantised on the fly (never
    kept). The packed indices and constants are buffers, the bias a frozen full-precision
    parameter; nothing is trainable (QLoRA trains LoRA adapters on top, :mod:`groundwork.peft`).

    Build one with :meth:`from_linear`; the constructor makes an empty layer of the right shape,
    for ``load_state_dict``. ``.to(dtype)`` changes the compute dtype (bias and dequantised
    weight) but leaves the float32 constants as they are.

    Args:
        in_features: Input size.
        out_features: Output size.
        bias: Whether the layer has a bias.
        blocksize: Weights per block sharing one constant.
        double_quant: Whether the constants are 8-bit quantised too.
        dq_blocksize: Constants per block of the double quantisation.
        dtype: Compute dtype: of the bias and of the dequantised weight.
        device: Where the buffers live.
    """

    _FLOAT_CONSTANTS = ("absmax", "absmax_scales", "absmax_offset")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        blocksize: int = 64,
        double_quant: bool = True,
        dq_blocksize: int = 256,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_blocksize(blocksize)
        _check_blocksize(dq_blocksize, "dq_blocksize", even=False)
        if in_features < 1 or out_features < 1:
            raise ConfigError(
                f"NF4Linear needs positive sizes, got {in_features} -> {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.blocksize = blocksize
        self.double_quant = double_quant
        self.dq_blocksize = dq_blocksize
        n = in_features * out_features
        n_blocks = -(-n // blocksize)
        self.codes: torch.Tensor
        self.absmax: torch.Tensor
        self.absmax_scales: torch.Tensor | None
        self.absmax_offset: torch.Tensor | None
        u8, f32 = torch.uint8, torch.float32
        self.register_buffer("codes", torch.zeros((n + 1) // 2, dtype=u8, device=device))
        if double_quant:
            n_dq = -(-n_blocks // dq_blocksize)
            self.register_buffer("absmax", torch.zeros(n_blocks, dtype=u8, device=device))
            self.register_buffer("absmax_scales", torch.zeros(n_dq, dtype=f32, device=device))
            self.register_buffer("absmax_offset", torch.zeros((), dtype=f32, device=device))
        else:
            self.register_buffer("absmax", torch.zeros(n_blocks, dtype=f32, device=device))
            self.register_buffer("absmax_scales", None)
            self.register_buffer("absmax_offset", None)
        # Carries the compute dtype through .to(...): zero-sized, not saved.
        self._dtype_probe: torch.Tensor
        self.register_buffer(
            "_dtype_probe", torch.empty(0, dtype=dtype, device=device), persistent=False
        )
        self.bias: nn.Parameter | None
        if bias:
            zeros = torch.zeros(out_features, dtype=dtype, device=device)
            self.bias = nn.Parameter(zeros, requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        blocksize: int = 64,
        double_quant: bool = True,
        dq_blocksize: int = 256,
    ) -> "NF4Linear":
        """Quantise a ``(out, in)`` weight (the bias is kept as it is); the compute dtype is the
        weight's.

        Raises:
            ConfigError: the weight is not 2-D, the bias not ``(out,)``, or :func:`quantize_nf4`
                refuses it.
        """
        if weight.dim() != 2:
            raise ConfigError(
                f"NF4Linear quantises a 2-D (out, in) weight, got shape {tuple(weight.shape)}"
            )
        out_features, in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ConfigError(
                f"bias of shape {tuple(bias.shape)} for a weight of {out_features} rows"
            )
        layer = cls(
            in_features,
            out_features,
            bias is not None,
            blocksize=blocksize,
            double_quant=double_quant,
            dq_blocksize=dq_blocksize,
            dtype=weight.dtype,
            device=weight.device,
        )
        q = quantize_nf4(weight, blocksize, double_quant, dq_blocksize)
        with torch.no_grad():
            layer.codes.copy_(q.codes)
            layer.absmax.copy_(q.absmax)
            if q.absmax_scales is not None:
                assert layer.absmax_scales is not None and layer.absmax_offset is not None
                assert q.absmax_offset is not None
                layer.absmax_scales.copy_(q.absmax_scales)
                layer.absmax_offset.copy_(q.absmax_offset)
            if bias is not None:
                assert layer.bias is not None
                layer.bias.copy_(bias.detach())
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        blocksize: int = 64,
        double_quant: bool = True,
        dq_blocksize: int = 256,
    ) -> "NF4Linear":
        """The NF4 version of ``linear`` (see :meth:`from_weight`)."""
        return cls.from_weight(
            linear.weight,
            linear.bias,
            blocksize=blocksize,
            double_quant=double_quant,
            dq_blocksize=dq_blocksize,
        )

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of the dequantised weight and of the bias."""
        return self._dtype_probe.dtype

    @property
    def quantized(self) -> NF4Quantized:
        """The stored weight as an :class:`NF4Quantized` (sharing the buffers)."""
        return NF4Quantized(
            self.codes,
            self.absmax,
            torch.Size((self.out_features, self.in_features)),
            self.compute_dtype,
            self.blocksize,
            absmax_scales=self.absmax_scales,
            absmax_offset=self.absmax_offset,
            dq_blocksize=self.dq_blocksize,
        )

    def dequantize(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight in the compute dtype."""
        return dequantize_nf4(self.quantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., in_features)`` to ``(..., out_features)``; the weight is dequantised
        for the product and again in the backward pass, never kept (as bitsandbytes'
        ``MatMul4Bit``): a saved float copy per layer would cost the memory NF4 saves."""
        y = _DequantizedLinear.apply(x, self)
        return y if self.bias is None else y + self.bias

    def memory_bytes(self) -> int:
        """Bytes the layer stores: packed weight, its constants, and the bias."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.quantized.nbytes + bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, blocksize={self.blocksize}, "
            f"double_quant={self.double_quant}, dtype={self.compute_dtype}"
        )

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> "NF4Linear":
        # .to(device) moves the float32 constants, .to(dtype)/.half() must not round them.
        kept = {
            k: self._buffers[k] for k in self._FLOAT_CONSTANTS if self._buffers.get(k) is not None
        }
        super()._apply(fn, recurse)
        for name, before in kept.items():
            assert before is not None
            after = self._buffers[name]
            if after is not None and after.dtype != before.dtype:
                self._buffers[name] = before.to(after.device)
        return self

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # load_state_dict would cast float32 constants into a uint8 buffer of the same shape.
        saved = state_dict.get(prefix + "absmax")
        if isinstance(saved, torch.Tensor) and saved.dtype != self.absmax.dtype:
            error_msgs.append(
                f"{prefix}absmax is {saved.dtype} in the checkpoint but {self.absmax.dtype} here: "
                f"it was saved with double_quant={not self.double_quant}"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


# --8<-- [end:nf4_linear]


class _DequantizedLinear(torch.autograd.Function):
    """``x W^T`` with ``W`` dequantised on the fly in both passes (the weight is frozen: only
    the input gets a gradient, ``grad W``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: NF4Linear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantize())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        return grad @ ctx.layer.dequantize(), None  # (..., out) @ (out, in) -> (..., in)
