r"""Integer dot-product linear layers for fast CPU decoding: 4- or 8-bit weights times activations
quantised to 8 bits on the fly (W4A8, W8A8), the scheme of llama.cpp's CPU matmuls, with our own
C++ kernel (``int_dot.cpp`` beside this file) and the model transform that swaps them in
(``groundwork generate MODEL --quantize w4a8|w8a8``).

**Why quantise the activations too.** The weight-only layers of
:mod:`groundwork.compress.weight_only` read 4 or 8 bits a weight but widen every weight to float
before multiplying: decoding is then limited by that arithmetic, not by memory (on the 2-core
machine of chapter 18, PyTorch's int4 kernel moves about 7 GB/s of weights where the memory
delivers 26). If the activation row is also a vector of 8-bit integers, a CPU multiplies and adds
bytes directly: one AVX-512 VNNI instruction (``vpdpbusd``) does 64 unsigned-by-signed byte
products and sums them in fours into 32-bit lanes. The float work shrinks to one multiply-add per
group of 32 weights.

**The weight grid.** Every 32 consecutive inputs of a row share a scale :math:`s` and an offset
:math:`m` (both fp16), and the codes are unsigned:

.. math:: W_{nk} \approx q_{nk}\, s_{ng} + m_{ng}, \qquad q \in [0, 2^b - 1], \qquad
   s = \frac{\max - \min}{2^b - 1}, \qquad m = \min

(llama.cpp's Q4_1 grid; :func:`quantize_groups`). With fp16 constants that is
:math:`b + 32/32 = 5` bits a weight at 4 bits, 9 at 8.

**The activation grid.** Each group of 32 inputs of an activation row becomes int8 codes
:math:`a` with :math:`d = \max|x| / 127`, :math:`x \approx a\,d`
(:func:`quantize_activations`, llama.cpp's Q8 blocks). Then one output is

.. math:: y_n = \sum_g s_{ng} d_g \sum_{k \in g} q_{nk} a_k \;+\; \sum_g m_{ng}\, d_g \sum_{k \in g}
   a_k,

an exact integer sum inside each group and two float multiply-adds per group: precisely
:math:`\hat x \cdot \hat W_n`, the product of the dequantised activation and weight
(:func:`int_dot_reference` computes it that way, and the tests hold the kernel to it).

**Layout.** The rows come in tiles of 16, interleaved four inputs at a time: one 64-byte load
holds four consecutive codes of each of the 16 rows, so that with four activation codes broadcast
to every lane, one ``vpdpbusd`` advances 16 outputs at once (the lanes are the rows: no sum across
lanes, and a group's 16 scales are one load). At 4 bits each byte holds two codes, inputs
``i`` and ``16 + i`` of a group (:func:`pack_codes`; llama.cpp repacks Q4_0 for its CPU GEMV in
the same spirit). ``in_features`` is padded to a multiple of 32 and ``out_features`` to one of
16 with zero weights (scale and offset 0), which add nothing.

**The kernel.** ``int_dot.cpp`` is compiled for the machine it runs on, on first use
(:func:`torch.utils.cpp_extension.load`, ``-march=native``; about 30 s; cached under
``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``, per CPU kind). It has an
AVX-512 VNNI path, an AVX2 path (with or without AVX-VNNI) and a plain C++ one for other CPUs
(:func:`kernel_isa` says which was built), and splits the output rows over
``torch.get_num_threads()`` threads. Where no compiler is found the layers compute
:func:`int_dot_reference` instead (same numbers, slowly) and say so once. The kernel is a
``torch.library`` custom operator, so ``torch.compile`` (``groundwork generate --compile``) keeps it
whole inside a compiled decode step.

References:
    - ggml (llama.cpp) ``ggml-quants.c``: the Q4_1/Q8_1 block formats and their dot product.
    - Xiao et al. 2023, "SmoothQuant" (W8A8); Lin et al. 2024, "QServe" (W4A8).
    - Intel, "Intel 64 and IA-32 Architectures Software Developer's Manual": ``VPDPBUSD``.
    - Docs: chapter 18, "Efficient inference and compression" (fast CPU decoding).
"""

import functools
import hashlib
import platform
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.compress.quantize import linear_plan, set_submodule
from groundwork.errors import ConfigError

GROUP = 32
"""Inputs per scale and offset, of weights and of activations alike."""
TILE = 16
"""Output rows packed together (interleaved); ``out_features`` is padded to a multiple of it."""
SOURCES = [Path(__file__).with_name(n) for n in ("int_dot.cpp", "fused_decode.cpp")]
"""The extension's C++ files (and ``int_dot.h``, which both include)."""


# --8<-- [start:grids]
@torch.no_grad()
def quantize_groups(
    weight: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes ``(out, in)`` in ``0..2**bits - 1`` (int32), scales and offsets ``(out, in // 32)``
    (float16) with ``weight ≈ codes * scale + offset`` group by group.

    ``offset`` is the group's minimum and ``scale`` its range over ``2**bits - 1``, both rounded
    to fp16 first; the codes are then rounded against the stored constants, so the error of a
    weight is at most half a scale step (plus the fp16 rounding of the minimum, for a weight at
    the very bottom of its group). A constant group gets scale 0 and is stored exactly up to
    fp16.

    >>> q, s, m = quantize_groups(torch.linspace(0.0, 1.5, 32)[None], bits=4)
    >>> q[0, :4].tolist(), round(s.item(), 4), m.item()
    ([0, 0, 1, 1], 0.1, 0.0)
    """
    out_features, in_features = weight.shape
    if in_features % GROUP:
        raise ConfigError(f"in_features {in_features} is not a multiple of {GROUP}")
    top = 2**bits - 1
    w = weight.float().reshape(out_features, -1, GROUP)  # (out, G, 32)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # (out, G)
    scale = ((hi - lo) / top).half()
    offset = lo.half()
    if not (scale.isfinite().all() and offset.isfinite().all()):
        raise ConfigError(
            f"weights beyond float16's range (max |w| = {weight.abs().max().item():.3g}): "
            "the group constants are stored in fp16"
        )
    s, m = scale.float()[..., None], offset.float()[..., None]
    codes = torch.round((w - m) / torch.where(s > 0, s, 1.0)).clamp(0, top)  # (out, G, 32)
    return codes.to(torch.int32).reshape(weight.shape), scale, offset


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 codes ``(..., K)`` and scales ``(..., K // 32)`` (float32) of ``x``, group by group:
    ``d = max|x| / 127``, ``a = round(x * 127 / max|x|)`` (half to even), the rounding the kernel
    does. A group of zeros gets ``d = 0`` and codes 0.

    >>> a, d = quantize_activations(torch.linspace(-1.0, 1.0, 32))
    >>> a[[0, 16, 31]].tolist(), round(d.item() * 127, 6)
    ([-127, 4, 127], 1.0)
    """
    g = x.float().reshape(*x.shape[:-1], -1, GROUP)  # (..., G, 32)
    amax = g.abs().amax(dim=-1, keepdim=True)  # (..., G, 1)
    inv = torch.where(amax > 0, 127.0 / amax, 0.0)
    codes = torch.round(g * inv).to(torch.int8).reshape(x.shape)
    return codes, (amax / 127.0).squeeze(-1)


# --8<-- [end:grids]


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``(out, K)`` codes (``K`` a multiple of 32) to the kernel's ``(tiles, 16 K bits / 8)``
    bytes, ``tiles = ceil(out / 16)`` (missing rows are zeros). In each tile and group of 32
    inputs: at 8 bits, chunk ``j`` (64 bytes) holds at byte ``4 l + i`` row ``l``'s code of input
    ``4 j + i``; at 4 bits, chunk ``c`` holds there input ``4 c + i`` in the low nibble and
    ``16 + 4 c + i`` in the high one."""
    out_features, in_features = codes.shape
    tiles = -(-out_features // TILE)
    padded = F.pad(codes.to(torch.uint8), (0, 0, 0, tiles * TILE - out_features))
    quads = padded.reshape(tiles, TILE, in_features // GROUP, 8, 4)  # (T, l, G, j, i)
    if bits == 4:
        quads = quads[:, :, :, :4] | (quads[:, :, :, 4:] << 4)  # (T, l, G, c, i): two a byte
    return quads.permute(0, 2, 3, 1, 4).reshape(tiles, -1).contiguous()  # (T, G j l i)


def unpack_codes(packed: torch.Tensor, bits: int, out_features: int) -> torch.Tensor:
    """The inverse of :func:`pack_codes`: ``(out_features, K)`` codes as int32."""
    tiles = packed.shape[0]
    chunks = 8 if bits == 8 else 4
    quads = packed.reshape(tiles, -1, chunks, TILE, 4).permute(0, 3, 1, 2, 4)  # (T, l, G, c, i)
    if bits == 4:
        quads = torch.cat([quads & 0x0F, quads >> 4], dim=3)  # (T, l, G, 8, 4)
    return quads.reshape(tiles * TILE, -1)[:out_features].to(torch.int32)


def pack_scales(scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``(out, G)`` scales and offsets to the kernel's ``(tiles, G, 2, 16)`` float16: per tile
    and group, the 16 rows' scales, then their offsets."""
    out_features = scale.shape[0]
    tiles = -(-out_features // TILE)
    both = torch.stack([scale, offset], dim=-1).half()  # (out, G, 2)
    both = F.pad(both, (0, 0, 0, 0, 0, tiles * TILE - out_features))  # (T*16, G, 2)
    return both.reshape(tiles, TILE, -1, 2).permute(0, 2, 3, 1).contiguous()  # (T, G, 2, 16)


def unpack_scales(scales: torch.Tensor, out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack_scales`: scales and offsets ``(out_features, G)``."""
    rows = scales.permute(0, 3, 1, 2).reshape(-1, scales.shape[1], 2)[:out_features]
    return rows[..., 0], rows[..., 1]


def dequantize(
    packed: torch.Tensor, scales: torch.Tensor, bits: int, out_features: int
) -> torch.Tensor:
    """The float32 ``(out_features, K)`` weight of packed codes and constants: ``q * s + m``."""
    codes = unpack_codes(packed, bits, out_features).float()
    s, m = (t.float() for t in unpack_scales(scales, out_features))  # (out, G) each
    w = codes.reshape(out_features, -1, GROUP) * s[..., None] + m[..., None]  # (out, G, 32)
    return w.reshape(out_features, -1)


# --8<-- [start:reference]
def int_dot_reference(
    x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, bits: int, out_features: int
) -> torch.Tensor:
    """What the kernel computes, in PyTorch operations: ``x̂ @ Ŵ.T`` with ``x̂`` the 8-bit
    group-quantised ``x`` ``(M, K)`` and ``Ŵ`` the dequantised weight; float32
    ``(M, out_features)``."""
    codes, d = quantize_activations(x)
    x_hat = codes.float().reshape(*d.shape, GROUP) * d[..., None]  # (M, G, 32)
    return x_hat.reshape(x.shape) @ dequantize(packed, scales, bits, out_features).T


# --8<-- [end:reference]


def _cpu_description() -> str:
    """This CPU's kind and instruction sets: a build for one kind never runs on another."""
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    return f"{platform.machine()} {platform.processor()} {flags}"


def build_kernel(arch_flags: Sequence[str] = ("-march=native",)) -> Any:
    """Compile ``int_dot.cpp`` and ``fused_decode.cpp`` with ``-O3`` and ``arch_flags`` and
    import them (a Python module with ``int_dot_linear``, ``isa`` and ``FusedLlamaStep``). The
    build is cached per CPU kind and flags; the layers use :func:`_extension`, the native
    build, and the tests also build the other paths.

    Raises:
        Exception: whatever :func:`torch.utils.cpp_extension.load` raises (no compiler, no
            ninja, flags the compiler does not know).
    """
    from torch.utils import cpp_extension

    key = f"{_cpu_description()} {' '.join(arch_flags)}"
    name = f"groundwork_int_dot_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return cpp_extension.load(
        name=name,
        sources=[str(source) for source in SOURCES],
        extra_cflags=["-O3", *arch_flags, f"-DGW_OP_NAMESPACE={name}"],
        extra_include_paths=[str(SOURCES[0].parent)],
        verbose=False,
    )


_native_op: Any = None
"""The native build's dispatcher operator, once built: what compiled graphs call."""


@functools.cache
def _extension() -> Any:
    """The native build of the kernel, made on first use; ``None`` (said once) where it
    cannot be."""
    global _native_op
    try:
        ext = build_kernel()
    except Exception as error:  # no compiler, no ninja, an unknown -march: fall back
        last = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        warnings.warn(
            f"the int_dot CPU kernel could not be built ({type(error).__name__}: {last}); "
            "w4a8/w8a8 layers compute the same numbers with PyTorch operations, slowly. A C++ "
            "compiler and `pip install ninja` make the kernel",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    namespace = ext.op_namespace()
    torch.library.register_fake(f"{namespace}::int_dot_linear")(_output_like)
    _native_op = getattr(torch.ops, namespace).int_dot_linear
    return ext


def kernel_isa() -> str:
    """Which kernel the layers run: ``"avx512-vnni"``, ``"avx2-vnni"``, ``"avx2"``,
    ``"scalar"`` (plain C++), or ``"reference"`` (no compiled kernel: PyTorch operations)."""
    ext = _extension()
    return "reference" if ext is None else str(ext.isa())


@torch.library.custom_op("groundwork::int_dot_linear", mutates_args=())
def int_dot_linear(
    x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, bits: int, out_features: int
) -> torch.Tensor:
    """``x`` ``(M, K)`` float32 times the packed weight: float32 ``(M, out_features)``, by the
    compiled kernel (or :func:`int_dot_reference` where it could not be built)."""
    ext = _extension()
    if ext is None:
        return int_dot_reference(x, packed, scales, bits, out_features)
    return ext.int_dot_linear(x, packed, scales, bits, out_features)


def _output_like(
    x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, bits: int, out_features: int
) -> torch.Tensor:
    """The output's shape and dtype, for tracing (``torch.compile``)."""
    return x.new_empty(x.shape[0], out_features)


int_dot_linear.register_fake(_output_like)


# --8<-- [start:layer]
class IntDotLinear(nn.Module):
    """A linear layer with 4- or 8-bit group-quantised weights whose input is quantised to 8 bits
    at every call, computed by integer dot products (:func:`int_dot_linear`).

    Buffers: ``packed`` ``(tiles, 16 K bits / 8)`` uint8 (:func:`pack_codes`) and ``scales``
    ``(tiles, K // 32, 2, 16)`` float16 (:func:`pack_scales`), with ``K`` ``in_features``
    rounded up to a multiple of 32 and ``tiles = ceil(out_features / 16)``. Build one with
    :meth:`from_linear`.

    Args:
        in_features: Input size.
        out_features: Output size.
        bias: Whether the layer has a (float32) bias.
        bits: Weight bits: 4 or 8.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 4
    ) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ConfigError(f"bits must be 4 or 8, got {bits}")
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"a {out_features}x{in_features} layer has no weights")
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.padded_in = -(-in_features // GROUP) * GROUP
        self.packed: torch.Tensor
        self.scales: torch.Tensor
        tiles, groups = -(-out_features // TILE), self.padded_in // GROUP
        tile_bytes = TILE * self.padded_in * bits // 8
        self.register_buffer("packed", torch.zeros(tiles, tile_bytes, dtype=torch.uint8))
        scales = torch.zeros(tiles, groups, 2, TILE, dtype=torch.float16)
        self.register_buffer("scales", scales)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    @torch.no_grad()
    def from_weight(
        cls, weight: torch.Tensor, bias: torch.Tensor | None = None, *, bits: int = 4
    ) -> "IntDotLinear":
        """Quantise a float ``(out, in)`` weight (:func:`quantize_groups`)."""
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ConfigError(
                f"IntDotLinear quantises a 2-D float weight, got {weight.dtype} "
                f"{tuple(weight.shape)}"
            )
        if weight.device.type != "cpu":
            raise ConfigError(f"IntDotLinear runs on the CPU; the weight is on {weight.device}")
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, bias is not None, bits=bits)
        padded = F.pad(weight.float(), (0, layer.padded_in - in_features))  # zeros: q=0, s=m=0
        codes, scale, offset = quantize_groups(padded, bits)
        layer.packed.copy_(pack_codes(codes, bits))
        layer.scales.copy_(pack_scales(scale, offset))  # (tiles, G, 2, 16)
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int = 4) -> "IntDotLinear":
        """The quantised version of ``linear``."""
        return cls.from_weight(linear.weight, linear.bias, bits=bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., in_features)`` to ``(..., out_features)`` (in ``x``'s dtype)."""
        rows = x.reshape(-1, self.in_features).float()  # (B*T, in)
        if self.padded_in != self.in_features:
            rows = F.pad(rows, (0, self.padded_in - self.in_features))  # (B*T, K)
        if torch.compiler.is_compiling():  # an operator, which the compiled graph keeps whole
            op = int_dot_linear if _native_op is None else _native_op  # C++ one if built
            y = op(rows, self.packed, self.scales, self.bits, self.out_features)  # (B*T, out)
        elif (ext := _extension()) is not None:
            # the kernel directly: a Python operator's dispatch costs ~9 us a call, as much as
            # a small layer's whole product
            y = ext.int_dot_linear(rows, self.packed, self.scales, self.bits, self.out_features)
        else:
            y = int_dot_reference(rows, self.packed, self.scales, self.bits, self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)  # (..., out)

    @torch.no_grad()
    def dequantized_weight(self) -> torch.Tensor:
        """The float32 ``(out, in)`` weight the layer multiplies by (before the activations'
        own rounding)."""
        weight = dequantize(self.packed, self.scales, self.bits, self.out_features)
        return weight[:, : self.in_features]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, bits={self.bits}"
        )


# --8<-- [end:layer]

IntDotScheme = Literal["w4a8", "w8a8"]


@torch.no_grad()
def quantize_int_dot(
    model: nn.Module,
    scheme: IntDotScheme = "w4a8",
    *,
    head: Literal["int8", "int4", "float"] = "int8",
    skip: Iterable[str] = (),
) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers in place by :class:`IntDotLinear` ones (4-bit
    weights for ``"w4a8"``, 8-bit for ``"w8a8"``) and return it: a model transform, for CPU
    inference.

    The output head gets ``head`` (8 bits by default, as llama.cpp's Q4_0 files keep their
    logits matrix at Q8_0; a head tied to the embedding gets its own quantised copy); layers whose
    qualified name ends with one of ``skip`` stay float. Any shape works (inputs are padded).

    Raises:
        ConfigError: an unknown scheme or head; a model not on the CPU.
    """
    bits_of = {"w4a8": 4, "w8a8": 8, "int8": 8, "int4": 4}  # the schemes, then the heads
    if scheme not in ("w4a8", "w8a8"):
        raise ConfigError(f"scheme must be 'w4a8' or 'w8a8', got {scheme!r}")
    if head not in ("int8", "int4", "float"):
        raise ConfigError(f"head must be 'int8', 'int4' or 'float', got {head!r}")
    _extension()  # build the kernel now (once, about 30 s), not in the middle of decoding
    for name, (linear, target) in linear_plan(model, scheme, head, skip).items():
        if target != "float":
            set_submodule(model, name, IntDotLinear.from_linear(linear, bits=bits_of[target]))
    return model
