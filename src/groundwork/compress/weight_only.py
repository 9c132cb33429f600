r"""Weight-only quantised linear layers for fast CPU decoding: int8 per output channel and int4
per group, run by PyTorch's own mixed-precision CPU kernels, and the model transform that swaps
them in (``groundwork generate MODEL --quantize int8|int4``).

**Why the weights alone.** Decoding one sequence multiplies a single activation row by every
weight matrix of the model: a matrix-vector product does 2 flops per weight it reads, far below
what a CPU can do per byte of memory traffic, so each step takes as long as streaming the
weights from memory. Storing them in 8 or 4 bits instead of 32 reads 4 or 8 times fewer bytes;
the activations stay in floating point and the integers are widened inside the kernel, next to
the multiply (:func:`torch.ops.aten._weight_int8pack_mm`, and ``_weight_int4pack_mm_for_cpu``,
the CPU twin of torchao's "tinygemm" int4 kernel).

**int8** (:class:`Int8WeightOnlyLinear`): one absmax scale per output row, the symmetric grid of
:mod:`groundwork.compress.quantize`,

.. math:: s_n = \max_k |W_{nk}| / 127, \qquad q_{nk} = \operatorname{clamp}(\lfloor W_{nk}/s_n
   \rceil, -127, 127), \qquad y = (x\,q^\top) \odot s,

8 bits per weight (plus one scale per row). The kernel takes any shape, except that in torch
2.13 its bfloat16 path crashes (a segmentation fault) when ``in_features`` is not a multiple of
8; such a layer computes in float32 instead.

**int4** (:class:`Int4WeightOnlyLinear`): every ``group_size`` consecutive inputs of a row share
a scale and a *float* zero, in the convention the kernel expects (torchao's
``groupwise_affine_quantize_tensor``): unsigned codes :math:`q \in [0, 15]` and

.. math:: \hat W = (q - 8)\, s + z, \qquad s = \frac{\max - \min}{15}, \qquad z = \min + 8 s,

so code 0 is the group's minimum and code 15 its maximum. Unlike the zero-point grid of
:mod:`~groundwork.compress.quantize` (an integer zero, the range widened to hold 0 exactly), the
zero is a real number and the range is not widened. Two 4-bit codes share a byte, in a blocked
layout :func:`torch.ops.aten._convert_weight_to_int4pack_for_cpu` chooses for the CPU's vector
width (AVX-512, AVX2 or scalar), so the packed tensor only runs on the kind of CPU that packed
it; :meth:`Int4WeightOnlyLinear.dequantized_weight` reads the weight back through the kernel
itself rather than unpacking that layout by hand. Constraints: ``out_features`` a multiple of
16, ``in_features`` a multiple of ``group_size``, ``group_size`` in 32, 64, 128, 256. With bf16
scales and zeros, :math:`g = 32` costs :math:`4 + 32/32 = 5` bits per weight (fp32: 6), the
size of llama.cpp's Q4_1.

**Dtypes.** Both kernels take float32, float16 or bfloat16 activations with scales of the same
dtype, and return that dtype; the layers compute in the dtype of their scales and cast any other
input to it and the output back. :func:`quantize_weights` stores the scales in bfloat16 by
default: on CPU the kernels' float32 paths are 5-25x slower than their bfloat16 ones, as
measured in torch 2.13 (SmolLM2's 49152x576 head at batch 1, one AMD EPYC core: fp32
``F.linear`` 10.9 ms, int8 kernel 4.7 ms in bf16 but 24 ms in fp32, int4 kernel 1.8 ms in bf16
but 50 ms in fp32). A bf16 model (``model.to(torch.bfloat16)`` before quantising) spares the
casts. ``.to(dtype)`` converts the scales and leaves the integers alone. These layers are for
inference: the kernels have no backward.

References:
    - Dettmers et al. 2022, "LLM.int8()"; Frantar et al. 2022, "GPTQ" (group-wise int4 weights).
    - PyTorch ``test/test_linalg.py`` (``test__int4_mm``, ``test__int8_mm``) and torchao
      ``quantization/utils.py`` (``groupwise_affine_quantize_tensor``, the tinygemm layout);
      gpt-fast ``quantize.py`` (weight-only int8/int4 for decoding).
    - Docs: chapter 18, "Efficient inference and compression" (fast CPU decoding).
"""

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.compress.quantize import fit_grid, linear_plan, quantize_codes, set_submodule
from groundwork.errors import ConfigError

WeightOnlyScheme = Literal["int8", "int4"]
INT4_GROUP_SIZES = (32, 64, 128, 256)
"""Group sizes the int4 CPU kernel accepts."""


def _check_2d(weight: torch.Tensor, bias: torch.Tensor | None, what: str) -> tuple[int, int]:
    if weight.dim() != 2:
        raise ConfigError(f"{what} quantises a 2-D (out, in) weight, got {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ConfigError(f"{what} quantises a float weight, got {weight.dtype}")
    if weight.device.type != "cpu":
        raise ConfigError(f"{what} runs PyTorch's CPU kernels; the weight is on {weight.device}")
    out_features, in_features = weight.shape
    if bias is not None and tuple(bias.shape) != (out_features,):
        raise ConfigError(f"bias of shape {tuple(bias.shape)} for a weight of {out_features} rows")
    return out_features, in_features


def _frozen_bias(bias: torch.Tensor | None, dtype: torch.dtype) -> nn.Parameter | None:
    if bias is None:
        return None
    return nn.Parameter(bias.detach().to(dtype).clone(), requires_grad=False)


# --8<-- [start:int8]
@torch.no_grad()
def quantize_int8_per_channel(
    weight: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 codes ``(out, in)`` and one scale per row ``(out,)``, stored in ``dtype``.

    The scale is rounded to ``dtype`` first and the codes rounded against the stored scale, so
    ``codes * scales[:, None]`` is the nearest point of the grid the layer really uses
    (``|w - codes * s| <= s / 2``). A row of zeros gets scale 1.

    >>> codes, s = quantize_int8_per_channel(torch.tensor([[0.5, -1.27, 0.0]]))
    >>> codes.tolist(), s.tolist()
    ([[50, -127, 0]], [0.009999999776482582])
    """
    scale, zero = fit_grid(weight, bits=8, symmetric=True)  # (out, 1): max|w| / 127
    scale = scale.to(dtype).float()  # the scale the kernel will multiply by
    codes = quantize_codes(weight, scale, zero, bits=8, symmetric=True)  # in [-127, 127]
    return codes.to(torch.int8), scale.squeeze(1).to(dtype)


class Int8WeightOnlyLinear(nn.Module):
    """A linear layer with an int8 weight and one scale per output channel:
    ``y = (x @ q.T) * scales + bias``, by ``torch.ops.aten._weight_int8pack_mm`` (activations
    stay float; the int8 weight is widened inside the kernel).

    Build one with :meth:`from_linear`; the constructor makes an empty layer of the right shape.

    Args:
        in_features: Input size.
        out_features: Output size.
        bias: Whether the layer has a bias.
        dtype: Compute dtype: of the scales, the bias and the kernel's arithmetic.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight: torch.Tensor
        self.scales: torch.Tensor
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype))
        self.bias = _frozen_bias(torch.zeros(out_features) if bias else None, dtype)

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> "Int8WeightOnlyLinear":
        """Quantise a float ``(out, in)`` weight; ``dtype`` is the compute dtype (default: the
        weight's)."""
        out_features, in_features = _check_2d(weight, bias, "Int8WeightOnlyLinear")
        dtype = dtype or weight.dtype
        layer = cls(in_features, out_features, bias is not None, dtype=dtype)
        codes, scales = quantize_int8_per_channel(weight, dtype)
        layer.weight.copy_(codes)
        layer.scales.copy_(scales)
        layer.bias = _frozen_bias(bias, dtype)
        return layer

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, dtype: torch.dtype | None = None
    ) -> "Int8WeightOnlyLinear":
        """The int8 version of ``linear`` (see :meth:`from_weight`)."""
        return cls.from_weight(linear.weight, linear.bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., in_features)`` (any batch/sequence shape) to ``(..., out_features)``."""
        scales = self.scales
        rows = x.reshape(-1, self.in_features)  # (B*T, in)
        converted = scales.dtype == torch.bfloat16 and self.in_features % 8 != 0
        if converted:  # torch 2.13's bf16 kernel crashes unless in % 8 == 0: use float32
            scales = scales.float()
        if converted and torch.compiler.is_compiling():
            # inductor cannot hand the kernel scales computed in the graph: multiply by the
            # dequantised weight instead
            y = F.linear(rows.float(), self.dequantized_weight())  # (B*T, out)
        else:
            rows = rows.to(scales.dtype).contiguous()  # the kernel wants x and scales alike
            y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, scales)  # (B*T, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)  # (..., out)

    def dequantized_weight(self) -> torch.Tensor:
        """The ``(out, in)`` float32 weight the layer computes with: ``q * s``."""
        return self.weight.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dtype={self.scales.dtype}"
        )


# --8<-- [end:int8]


def int4_shape_problem(out_features: int, in_features: int, group_size: int) -> str | None:
    """Why the int4 CPU kernel cannot take an ``(out, in)`` weight, or ``None`` if it can."""
    if group_size not in INT4_GROUP_SIZES:
        return f"group_size must be one of {INT4_GROUP_SIZES}, got {group_size}"
    if out_features % 16:
        return f"out_features {out_features} is not a multiple of 16"
    if in_features % group_size:
        return f"in_features {in_features} is not a multiple of group_size {group_size}"
    return None


# --8<-- [start:int4]
@torch.no_grad()
def quantize_int4_groupwise(
    weight: torch.Tensor, group_size: int = 32, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes ``(out, in)`` in 0..15 (int32), scales and zeros ``(out, in // group_size)`` in
    ``dtype``, such that ``(codes - 8) * scale + zero`` approximates each group of ``weight``.

    ``scale = (max - min) / 15`` and ``zero = min + 8 * scale`` per group; both are rounded to
    ``dtype`` before the codes are rounded against them. A constant group gets a tiny scale
    (``1e-6 / 15``, as torchao), so it is reproduced to within ``1e-6``.

    >>> codes, s, z = quantize_int4_groupwise(torch.linspace(-1.5, 1.5, 32)[None])
    >>> codes[0, :4].tolist(), round(s.item(), 4), round(z.item(), 4)
    ([0, 0, 1, 1], 0.2, 0.1)
    """
    out_features, in_features = weight.shape
    if group_size < 1 or in_features % group_size:
        raise ConfigError(
            f"group_size {group_size} does not divide the {in_features} input columns"
        )
    w = weight.float().reshape(out_features, -1, group_size)  # (out, G, g)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # (out, G)
    scale = ((hi - lo).clamp(min=1e-6) / 15).to(dtype).float()
    zero = (lo + 8 * scale).to(dtype).float()
    # q = round((w - z) / s) + 8, the inverse of w = (q - 8) s + z
    codes = (torch.round((w - zero[..., None]) / scale[..., None]) + 8).clamp(0, 15)
    return codes.to(torch.int32).reshape(weight.shape), scale.to(dtype), zero.to(dtype)


class Int4WeightOnlyLinear(nn.Module):
    """A linear layer with a group-wise int4 weight, run by PyTorch's CPU int4 kernel:
    ``y = x @ ((q - 8) * s + z).T + bias`` by ``torch.ops.aten._weight_int4pack_mm_for_cpu``.

    Buffers: ``packed`` ``(out, in // 2)`` uint8 (two codes a byte, in the kernel's blocked
    layout for this CPU) and ``scales_and_zeros`` ``(in // group_size, out, 2)`` (scale, zero),
    as the kernel reads them. Build one with :meth:`from_linear`.

    Args:
        in_features: Input size (a multiple of ``group_size``).
        out_features: Output size (a multiple of 16).
        bias: Whether the layer has a bias.
        group_size: Inputs sharing a scale and zero: 32, 64, 128 or 256.
        dtype: Compute dtype: of the scales and zeros, the bias and the kernel's arithmetic.

    Raises:
        ConfigError: shapes the kernel cannot take (:func:`int4_shape_problem`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        group_size: int = 32,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        problem = int4_shape_problem(out_features, in_features, group_size)
        if problem is not None:
            raise ConfigError(f"the int4 CPU kernel cannot take this layer: {problem}")
        self.in_features, self.out_features = in_features, out_features
        self.group_size = group_size
        self.packed: torch.Tensor
        self.scales_and_zeros: torch.Tensor
        self.register_buffer(
            "packed", torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        )
        n_groups = in_features // group_size
        self.register_buffer(
            "scales_and_zeros", torch.zeros(n_groups, out_features, 2, dtype=dtype)
        )
        self.bias = _frozen_bias(torch.zeros(out_features) if bias else None, dtype)

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        group_size: int = 32,
        dtype: torch.dtype | None = None,
    ) -> "Int4WeightOnlyLinear":
        """Quantise a float ``(out, in)`` weight; ``dtype`` is the compute dtype (default: the
        weight's)."""
        out_features, in_features = _check_2d(weight, bias, "Int4WeightOnlyLinear")
        dtype = dtype or weight.dtype
        layer = cls(in_features, out_features, bias is not None, group_size=group_size, dtype=dtype)
        codes, scale, zero = quantize_int4_groupwise(weight, group_size, dtype)
        layer.packed.copy_(torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        # (out, G) scales and zeros -> (G, out, 2): one group's pair side by side
        layer.scales_and_zeros.copy_(torch.stack([scale, zero], dim=-1).transpose(0, 1))
        layer.bias = _frozen_bias(bias, dtype)
        return layer

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, group_size: int = 32, dtype: torch.dtype | None = None
    ) -> "Int4WeightOnlyLinear":
        """The int4 version of ``linear`` (see :meth:`from_weight`)."""
        return cls.from_weight(linear.weight, linear.bias, group_size=group_size, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., in_features)`` (any batch/sequence shape) to ``(..., out_features)``."""
        rows = x.reshape(-1, self.in_features)  # (B*T, in)
        rows = rows.to(self.scales_and_zeros.dtype).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed, self.group_size, self.scales_and_zeros
        )  # (B*T, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)  # (..., out)

    @torch.no_grad()
    def dequantized_weight(self) -> torch.Tensor:
        """The ``(out, in)`` float32 weight the kernel computes with, read back through the
        kernel: ``I @ W^T = W^T`` (each output is one weight times 1, exact in float32)."""
        eye = torch.eye(self.in_features)  # (in, in)
        sz = self.scales_and_zeros.float()
        cols = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group_size, sz)
        return cols.T.contiguous()  # (in, out) -> (out, in)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, group_size={self.group_size}, "
            f"dtype={self.scales_and_zeros.dtype}"
        )


# --8<-- [end:int4]

WeightOnlyLinear = Int8WeightOnlyLinear | Int4WeightOnlyLinear
"""Either weight-only layer."""


# --8<-- [start:quantize_weights]
@torch.no_grad()
def quantize_weights(
    model: nn.Module,
    scheme: WeightOnlyScheme,
    *,
    group_size: int = 32,
    head: Literal["int8", "int4", "float"] = "int8",
    skip: Iterable[str] = (),
    fallback: Literal["error", "int8", "float"] = "error",
    dtype: torch.dtype | None = torch.bfloat16,
) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers in place by weight-only quantised ones and
    return it (a model transform, for inference).

    The output head (``lm_head``) gets ``head``, int8 by default for both schemes: it is the
    largest matrix of a small model (SmolLM2-135M: 28M of its 135M weights), and llama.cpp's
    Q4_0 files keep the logits matrix at 8 bits too. On SmolLM2 (1,000 tokens of Wikipedia,
    perplexity 27.97 in fp32) an int4 body with an int8 head gives 28.01, an int4 head 29.50.
    A head tied to the token embedding gets its own quantised copy; the embedding stays float
    (a lookup reads one row per token, so its size costs memory, not speed).

    Args:
        model: A GPT or Llama (any module with ``nn.Linear`` layers), on the CPU.
        scheme: ``"int8"`` (per output channel) or ``"int4"`` (per group of ``group_size``).
        group_size: int4 group size: 32, 64, 128 or 256 (must divide each ``in_features``).
        head: What the output head becomes.
        skip: Layers to leave in float: any whose qualified name ends with one of these.
        fallback: For a layer whose shape the int4 kernel cannot take: ``"error"`` raises (the
            message lists every such layer), ``"int8"`` or ``"float"`` keep it at that.
        dtype: The quantised layers' compute dtype (``None``: each weight's own). bfloat16 by
            default: on CPU both kernels' float32 paths are 5-25x slower than their bfloat16
            ones; a float32 model's activations are cast to bfloat16 at each quantised layer
            and back.

    Raises:
        ConfigError: an unknown scheme, head or fallback; an invalid group size; layers the
            int4 kernel cannot take (with ``fallback="error"``); a model not on the CPU.
    """
    if scheme not in ("int8", "int4"):
        raise ConfigError(f"scheme must be 'int8' or 'int4', got {scheme!r}")
    if head not in ("int8", "int4", "float"):
        raise ConfigError(f"head must be 'int8', 'int4' or 'float', got {head!r}")
    if fallback not in ("error", "int8", "float"):
        raise ConfigError(f"fallback must be 'error', 'int8' or 'float', got {fallback!r}")
    if "int4" in (scheme, head) and group_size not in INT4_GROUP_SIZES:
        raise ConfigError(f"group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    plan = linear_plan(model, scheme, head, skip)
    problems: list[str] = []
    for name, (module, target) in plan.items():
        problem = int4_shape_problem(module.out_features, module.in_features, group_size)
        if target == "int4" and problem is not None:
            problems.append(f"{name} ({module.out_features}x{module.in_features}: {problem})")
            plan[name] = (module, fallback)
    if problems and fallback == "error":
        raise ConfigError(
            f"the int4 CPU kernel cannot take {len(problems)} layer(s): {'; '.join(problems)}. "
            "Use int8, pass fallback='int8', or skip them"
        )
    for name, (linear, target) in plan.items():
        if target == "int8":
            set_submodule(model, name, Int8WeightOnlyLinear.from_linear(linear, dtype=dtype))
        elif target == "int4":
            layer = Int4WeightOnlyLinear.from_linear(linear, group_size=group_size, dtype=dtype)
            set_submodule(model, name, layer)
    return model


# --8<-- [end:quantize_weights]


@torch.no_grad()
def dequantize_weights(model: nn.Module) -> nn.Module:
    """Replace every weight-only quantised layer of ``model`` in place by an ``nn.Linear``
    holding its :meth:`dequantized_weight` (in the layer's compute dtype) and return it: the
    float model that computes what the quantised one does, up to rounding."""
    for name, module in list(model.named_modules()):
        if not isinstance(module, WeightOnlyLinear):
            continue
        dtype = _compute_dtype(module)
        linear = nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
        linear.weight = nn.Parameter(module.dequantized_weight().to(dtype), requires_grad=False)
        linear.register_parameter("bias", module.bias)  # the same frozen float bias
        set_submodule(model, name, linear)
    return model


def _compute_dtype(module: Int8WeightOnlyLinear | Int4WeightOnlyLinear) -> torch.dtype:
    if isinstance(module, Int8WeightOnlyLinear):
        return module.scales.dtype
    return module.scales_and_zeros.dtype
