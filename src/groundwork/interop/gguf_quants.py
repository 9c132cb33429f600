"""ggml's tensor types and their dequantization: the block layouts of the quantized formats
GGUF files store (Q4_0, Q4_1, Q8_0, ...), decoded to float32 with numpy.

A quantized type cuts each row into blocks of ``block_size`` elements stored as ``type_size``
bytes: one or two fp16 constants per block (a scale ``d``, sometimes a minimum ``m``) and the
elements' small integer codes. :data:`GGML_TYPES` lists every type a file may hold;
:func:`dequantize` decodes those in :data:`SUPPORTED_TYPES`. The file container is read by
:mod:`groundwork.interop.gguf_file`.

References:
    - Block layouts: ggml ``src/ggml-common.h`` (``block_q4_0``, ``block_q4_1``, ``block_q8_0``) and
      the reference kernels ``dequantize_row_*`` in ``src/ggml-quants.c``.
    - Docs: chapter 6, "Pretrained model families: loading real weights", and chapter 18,
      "Compression" (GGUF quant formats).
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from groundwork.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class GGMLType:
    """A tensor element type: ``block_size`` elements are stored in ``type_size`` bytes."""

    id: int
    name: str
    block_size: int
    type_size: int


# Every type id of ggml's ``enum ggml_type`` that a file may hold (ids 4, 5, 31-33, 36-38 are
# retired). Sizes from ``ggml-common.h``; only some of these can be dequantized (see
# ``_DEQUANTIZERS``), the rest can still be read raw.
GGML_TYPES: dict[int, GGMLType] = {
    t.id: t
    for t in [
        GGMLType(0, "F32", 1, 4),
        GGMLType(1, "F16", 1, 2),
        GGMLType(2, "Q4_0", 32, 18),
        GGMLType(3, "Q4_1", 32, 20),
        GGMLType(6, "Q5_0", 32, 22),
        GGMLType(7, "Q5_1", 32, 24),
        GGMLType(8, "Q8_0", 32, 34),
        GGMLType(9, "Q8_1", 32, 40),
        GGMLType(10, "Q2_K", 256, 84),
        GGMLType(11, "Q3_K", 256, 110),
        GGMLType(12, "Q4_K", 256, 144),
        GGMLType(13, "Q5_K", 256, 176),
        GGMLType(14, "Q6_K", 256, 210),
        GGMLType(15, "Q8_K", 256, 292),
        GGMLType(16, "IQ2_XXS", 256, 66),
        GGMLType(17, "IQ2_XS", 256, 74),
        GGMLType(18, "IQ3_XXS", 256, 98),
        GGMLType(19, "IQ1_S", 256, 50),
        GGMLType(20, "IQ4_NL", 32, 18),
        GGMLType(21, "IQ3_S", 256, 110),
        GGMLType(22, "IQ2_S", 256, 82),
        GGMLType(23, "IQ4_XS", 256, 136),
        GGMLType(24, "I8", 1, 1),
        GGMLType(25, "I16", 1, 2),
        GGMLType(26, "I32", 1, 4),
        GGMLType(27, "I64", 1, 8),
        GGMLType(28, "F64", 1, 8),
        GGMLType(29, "IQ1_M", 256, 56),
        GGMLType(30, "BF16", 1, 2),
        GGMLType(34, "TQ1_0", 256, 54),
        GGMLType(35, "TQ2_0", 256, 66),
        GGMLType(39, "MXFP4", 32, 17),
    ]
}


# --8<-- [start:dequantize]
# Block layouts, from ggml-common.h (all little-endian, QK = 32 elements per block):
#   block_q8_0 { f16 d; i8  qs[32]; }   34 bytes   x[i] = d * qs[i]
#   block_q4_0 { f16 d; u8  qs[16]; }   18 bytes   x[i] = d * (q[i] - 8)
#   block_q4_1 { f16 d; f16 m; u8 qs[16]; } 20 bytes   x[i] = d * q[i] + m
# where the 4-bit q of element i is the low nibble of qs[i] for i < 16, the high nibble of
# qs[i - 16] for i >= 16 (so each byte holds elements j and j + 16).
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "<i1", (32,))])
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "<u1", (16,))])
Q4_1_BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "<u1", (16,))])


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """``(n_blocks, 16)`` bytes -> ``(n_blocks, 32)`` 4-bit values: low nibbles, then high nibbles.

    >>> _unpack_nibbles(np.array([[0x21] * 16], dtype=np.uint8))[0, [0, 15, 16, 31]]
    array([1, 1, 2, 2], dtype=uint8)
    """
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # (n_blocks, 32)


def dequantize_q8_0(data: np.ndarray) -> np.ndarray:
    """Q8_0 bytes -> float32: ``x = d * q`` with one fp16 scale ``d`` per 32 int8 values."""
    blocks = np.frombuffer(data, dtype=Q8_0_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]  # (n_blocks, 1)
    return (d * blocks["qs"].astype(np.float32)).ravel()  # (n_blocks, 32) -> (n,)


def dequantize_q4_0(data: np.ndarray) -> np.ndarray:
    """Q4_0 bytes -> float32: ``x = d * (q - 8)``, 4-bit ``q`` in 0..15, ``x`` in ``[-8d, 7d]``."""
    blocks = np.frombuffer(data, dtype=Q4_0_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]  # (n_blocks, 1)
    q = _unpack_nibbles(blocks["qs"]).astype(np.float32)  # (n_blocks, 32)
    return (d * (q - np.float32(8))).ravel()


def dequantize_q4_1(data: np.ndarray) -> np.ndarray:
    """Q4_1 bytes -> float32: ``x = d * q + m``, 16 levels spread over ``[m, m + 15d]``."""
    blocks = np.frombuffer(data, dtype=Q4_1_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]  # (n_blocks, 1)
    m = blocks["m"].astype(np.float32)[:, None]  # (n_blocks, 1)
    q = _unpack_nibbles(blocks["qs"]).astype(np.float32)  # (n_blocks, 32)
    return (d * q + m).ravel()


def dequantize_bf16(data: np.ndarray) -> np.ndarray:
    """BF16 bytes -> float32: a bfloat16 is the top 16 bits of a float32, so shift them back."""
    top = np.frombuffer(data, dtype="<u2").astype(np.uint32)
    return (top << 16).view(np.float32)


def _plain(dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda data: np.frombuffer(data, dtype=dtype).astype(np.float32)


_DEQUANTIZERS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    0: _plain("<f4"),  # F32
    1: _plain("<f2"),  # F16
    2: dequantize_q4_0,
    3: dequantize_q4_1,
    8: dequantize_q8_0,
    24: _plain("<i1"),  # I8
    25: _plain("<i2"),  # I16
    26: _plain("<i4"),  # I32
    27: _plain("<i8"),  # I64
    28: _plain("<f8"),  # F64
    30: dequantize_bf16,
}
# --8<-- [end:dequantize]

SUPPORTED_TYPES = tuple(GGML_TYPES[i].name for i in _DEQUANTIZERS)


def dequantize(data: np.ndarray, type_id: int, name: str = "<tensor>") -> np.ndarray:
    """Decode the stored bytes of one tensor to a flat float32 array.

    Args:
        data: The tensor's bytes (``uint8``), e.g. from :meth:`GGUFFile.raw`.
        type_id: Its ggml type id (``GGML_TYPES``).
        name: The tensor's name, for error messages.

    Raises:
        ConfigError: If the type is not one of :data:`SUPPORTED_TYPES`.
    """
    if type_id not in _DEQUANTIZERS:
        type_name = GGML_TYPES[type_id].name if type_id in GGML_TYPES else f"id {type_id}"
        raise ConfigError(
            f"cannot dequantize tensor {name!r}: ggml type {type_name} is not supported; "
            f"supported types: {', '.join(SUPPORTED_TYPES)}"
        )
    return _DEQUANTIZERS[type_id](data)
