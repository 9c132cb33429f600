"""Read GGUF files: metadata, tensor infos and dequantized weights, written from the specification.

GGUF is the single-file checkpoint format of llama.cpp / ggml. One file carries everything a runtime
needs: the architecture's hyperparameters, the tokenizer (vocabulary, merges, chat template) and the
weights, many of them quantized to 4 or 8 bits in small blocks. This module parses the format from
its specification and turns a Llama-family file into a Hugging Face style state dict and config, so
that a real pretrained model (SmolLM2-135M-Instruct ships as a Q4_1 GGUF) loads into our own Llama.

The file, all little-endian (a *string* is a ``u64`` byte length, then that many UTF-8 bytes)::

    header        magic "GGUF" (4 bytes) | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
    metadata      kv_count x (string key | u32 value_type | value)
    tensor infos  tensor_count x (string name | u32 n_dims | n_dims x u64 dims | u32 ggml_type
                  | u64 offset)
    padding       zeros up to the next multiple of ``general.alignment`` (default 32)
    tensor data   each tensor at ``data_start + offset`` (offsets are multiples of the alignment)

A metadata value is a scalar (u8/i8/u16/i16/u32/i32/u64/i64, f32/f64, bool as one byte, string)
or an array: ``u32 element_type | u64 count | count x value``, where elements may be arrays again.

Dims are listed innermost-first (ggml's ``ne[0]`` is the contiguous axis), so a PyTorch weight of
shape ``(out, in)`` is stored with dims ``[in, out]``; :attr:`TensorInfo.shape` gives the row-major
(PyTorch) shape ``tuple(reversed(dims))``. Quantized types cut each row into blocks of
``block_size`` elements stored as ``type_size`` bytes (layouts in :func:`dequantize`).

llama.cpp's converter also permutes the rows of ``q_proj`` and ``k_proj`` (see
:func:`unpermute_rotary`), which :func:`load_state_dict` undoes.

References:
    - GGUF specification: ggml ``docs/gguf.md`` (github.com/ggml-org/ggml).
    - Block layouts: ggml ``src/ggml-common.h`` (``block_q4_0``, ``block_q4_1``, ``block_q8_0``) and
      the reference kernels ``dequantize_row_*`` in ``src/ggml-quants.c``.
    - Docs: chapter 6, "Pretrained model families: loading real weights", and chapter 18,
      "Compression" (GGUF quant formats).
"""

import dataclasses
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from groundwork.errors import CheckpointError, ConfigError, UnknownNameError, did_you_mean

if TYPE_CHECKING:
    from groundwork.models.llama import Llama

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32


class GGUFValueType(IntEnum):
    """Type tags of metadata values (``gguf_metadata_value_type`` in the spec)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Little-endian numpy dtypes of the fixed-size scalar types (BOOL is one byte, 0 or 1).
_SCALAR_DTYPES: dict[GGUFValueType, np.dtype] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("<u1"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}


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


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor-info table.

    Attributes:
        name: The llama.cpp tensor name, e.g. ``"blk.0.attn_q.weight"``.
        dims: The dims as the file lists them, innermost (contiguous) first.
        type_id: The ggml type id (``GGML_TYPES`` maps it to a name and block layout).
        offset: Byte offset of the data from the start of the data section.
    """

    name: str
    dims: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The row-major (PyTorch) shape: ``dims`` reversed. ``[576, 1536]`` -> ``(1536, 576)``."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        """Number of elements, the product of the dims."""
        return int(np.prod(self.dims, dtype=np.int64))

    @property
    def type_name(self) -> str:
        """The ggml type name (``"Q4_1"``), or ``"type <id>"`` for an unknown id."""
        known = GGML_TYPES.get(self.type_id)
        return known.name if known else f"type {self.type_id}"

    @property
    def n_bytes(self) -> int:
        """Bytes the data occupies: ``n_elements / block_size * type_size``.

        Raises:
            ConfigError: If the type id is unknown.
        """
        ggml_type = _ggml_type(self)
        return self.n_elements // ggml_type.block_size * ggml_type.type_size


def _ggml_type(info: TensorInfo) -> GGMLType:
    if info.type_id not in GGML_TYPES:
        raise ConfigError(
            f"tensor {info.name!r} has ggml type id {info.type_id}, which this reader does not "
            f"know; known types: {', '.join(t.name for t in GGML_TYPES.values())}"
        )
    return GGML_TYPES[info.type_id]


class _Cursor:
    """Reads little-endian values; errors name the file and the part being read."""

    def __init__(self, buffer: memoryview, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.pos = 0
        self.part = "header"

    def truncated(self, needed: int) -> CheckpointError:
        return CheckpointError(
            f"{self.path}: GGUF file is truncated in the {self.part}: needs {needed} bytes at "
            f"offset {self.pos} but the file is {len(self.buffer)} bytes long; the file is "
            f"incomplete, download or convert it again"
        )

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buffer):
            raise self.truncated(n)
        view = self.buffer[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, self.take(size))
        return value

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def string(self) -> str:
        n = self.u64()
        raw = self.take(n)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as err:
            raise CheckpointError(
                f"{self.path}: a string in the {self.part} is not valid UTF-8 ({err})"
            ) from None

    def value_type(self) -> GGUFValueType:
        tag = self.u32()
        try:
            return GGUFValueType(tag)
        except ValueError:
            raise CheckpointError(
                f"{self.path}: unknown metadata value type {tag} in the {self.part} "
                f"(valid: 0-12); the file is corrupt"
            ) from None

    def value(self, value_type: GGUFValueType) -> Any:
        """One metadata value of ``value_type``, as a Python object (arrays become lists)."""
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            element_type = self.value_type()
            count = self.u64()
            if element_type in _SCALAR_DTYPES:  # one vectorised read for numeric arrays
                dtype = _SCALAR_DTYPES[element_type]
                if count > len(self.buffer):  # a corrupt count; avoid a huge multiplication
                    raise self.truncated(count)
                items = np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype)
                if element_type == GGUFValueType.BOOL:
                    return [bool(x) for x in items]
                return items.tolist()
            return [self.value(element_type) for _ in range(count)]
        dtype = _SCALAR_DTYPES[value_type]
        scalar = np.frombuffer(self.take(dtype.itemsize), dtype=dtype)[0]
        return bool(scalar) if value_type == GGUFValueType.BOOL else scalar.item()


class GGUFFile:
    """A parsed GGUF file whose tensor data stays memory-mapped.

    Opening parses the header, metadata and tensor infos; tensor bytes are only read when asked for
    (:meth:`raw` returns a zero-copy view of the mapping, :meth:`dequantize` a new float32 array).

    Attributes:
        path: The file.
        version: The GGUF version (2 or 3).
        metadata: Every key/value pair, values as Python objects (arrays as lists).
        value_types: The :class:`GGUFValueType` of each metadata value.
        tensors: Tensor infos by name, in file order.
        alignment: ``general.alignment``, or 32.
        data_offset: Absolute byte offset of the tensor data section.

    Example:
        >>> f = GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
        >>> info = f.tensors["blk.0.attn_k.weight"]  # doctest: +SKIP
        >>> info.dims, info.shape, info.type_name  # doctest: +SKIP
        ((576, 192), (192, 576), 'Q4_1')
        >>> f.dequantize("blk.0.attn_k.weight").dtype  # doctest: +SKIP
        dtype('float32')
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such GGUF file")
        if self.path.stat().st_size == 0:
            raise CheckpointError(f"{self.path}: file is empty, not a GGUF file")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        cursor = _Cursor(memoryview(self._map.view(np.ndarray)), self.path)  # type: ignore[arg-type]

        magic = bytes(cursor.take(4)) if len(self._map) >= 4 else bytes(self._map)
        if magic != GGUF_MAGIC:
            raise CheckpointError(
                f"{self.path}: not a GGUF file (starts with {magic!r}, "
                f"expected the magic {GGUF_MAGIC!r})"
            )
        self.version = cursor.u32()
        if self.version not in SUPPORTED_VERSIONS:
            hint = ""
            if int.from_bytes(self.version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
                hint = " (this looks like a big-endian GGUF file, which is not supported)"
            raise CheckpointError(
                f"{self.path}: unsupported GGUF version {self.version}{hint}; "
                f"supported versions: {', '.join(map(str, SUPPORTED_VERSIONS))}"
            )
        n_tensors = cursor.u64()
        n_kv = cursor.u64()

        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, GGUFValueType] = {}
        for i in range(n_kv):
            cursor.part = f"metadata (key/value {i} of {n_kv})"
            key = cursor.string()
            cursor.part = f"metadata (value of {key!r})"
            if key in self.metadata:
                raise CheckpointError(f"{self.path}: metadata key {key!r} appears twice")
            value_type = cursor.value_type()
            self.metadata[key] = cursor.value(value_type)
            self.value_types[key] = value_type

        self.tensors: dict[str, TensorInfo] = {}
        for i in range(n_tensors):
            cursor.part = f"tensor infos (tensor {i} of {n_tensors})"
            name = cursor.string()
            cursor.part = f"tensor infos (tensor {name!r})"
            n_dims = cursor.u32()
            dims = tuple(cursor.u64() for _ in range(n_dims))
            info = TensorInfo(name=name, dims=dims, type_id=cursor.u32(), offset=cursor.u64())
            if name in self.tensors:
                raise CheckpointError(f"{self.path}: tensor {name!r} appears twice")
            self.tensors[name] = info

        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if self.alignment <= 0:
            raise CheckpointError(f"{self.path}: general.alignment is {self.alignment}")
        # The data section starts at the next multiple of the alignment after the tensor infos.
        self.data_offset = -(-cursor.pos // self.alignment) * self.alignment
        self._check_tensor_data()

    def _check_tensor_data(self) -> None:
        """Check every tensor of a known type lies, aligned and whole, inside the file."""
        for info in self.tensors.values():
            if info.offset % self.alignment:
                raise CheckpointError(
                    f"{self.path}: tensor {info.name!r} starts at data offset {info.offset}, "
                    f"not a multiple of the alignment {self.alignment}; the file is corrupt"
                )
            ggml_type = GGML_TYPES.get(info.type_id)
            if ggml_type is None:
                continue  # reported when the tensor is read
            if info.dims and info.dims[0] % ggml_type.block_size:
                raise CheckpointError(
                    f"{self.path}: tensor {info.name!r} of type {ggml_type.name} has rows of "
                    f"{info.dims[0]} elements, not a multiple of its block size "
                    f"{ggml_type.block_size}"
                )
            end = self.data_offset + info.offset + info.n_bytes
            if end > len(self._map):
                raise CheckpointError(
                    f"{self.path}: GGUF file is truncated in the tensor data: tensor "
                    f"{info.name!r} ends at byte {end} but the file is {len(self._map)} bytes "
                    f"long; the file is incomplete, download or convert it again"
                )

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, "
            f"{len(self.metadata)} metadata keys, {len(self.tensors)} tensors)"
        )

    def info(self, name: str) -> TensorInfo:
        """The :class:`TensorInfo` of ``name``.

        Raises:
            UnknownNameError: If the file has no tensor of that name.
        """
        if name not in self.tensors:
            raise UnknownNameError(
                f"{self.path} has no tensor {name!r}; {did_you_mean(name, self.tensors)}"
            )
        return self.tensors[name]

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as stored: a read-only ``uint8`` view of the memory map, no copy.

        Args:
            name: The tensor's name in the file.

        Returns:
            A 1-D ``uint8`` array of :attr:`TensorInfo.n_bytes` bytes.
        """
        info = self.info(name)
        start = self.data_offset + info.offset
        return self._map[start : start + info.n_bytes].view(np.ndarray)

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 in its row-major (PyTorch) shape.

        Args:
            name: The tensor's name in the file.

        Raises:
            ConfigError: If its type cannot be dequantized (e.g. ``Q6_K``); names the tensor,
                the type and the supported types.
        """
        info = self.info(name)
        return dequantize(self.raw(name), info.type_id, name=name).reshape(info.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)


def read_gguf(path: str | Path) -> GGUFFile:
    """Open and parse a GGUF file (same as ``GGUFFile(path)``)."""
    return GGUFFile(path)


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


# --8<-- [start:names]
# llama.cpp tensor names -> Hugging Face Llama names ("blk.N." becomes "model.layers.N.").
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# --8<-- [end:names]
# Tensors some converters add that are computed from the config, not learned: Llama 3.1 files store
# their rope-scaling frequency factors as "rope_freqs.weight". Hugging Face recomputes them.
_DERIVED_TENSORS = {"rope_freqs.weight"}


def hf_llama_name(gguf_name: str) -> str:
    """Map a llama.cpp tensor name to its Hugging Face Llama name.

    >>> hf_llama_name("blk.3.ffn_gate.weight")
    'model.layers.3.mlp.gate_proj.weight'
    >>> hf_llama_name("token_embd.weight")
    'model.embed_tokens.weight'

    Raises:
        UnknownNameError: For a name outside the Llama architecture (e.g. ``rope_freqs.weight``).
    """
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
    raise UnknownNameError(
        f"GGUF tensor {gguf_name!r} has no Hugging Face Llama name; known: "
        f"{', '.join(_GLOBAL_NAMES)}, blk.N.{{{', '.join(_BLOCK_NAMES)}}}"
    )


# --8<-- [start:unpermute]
def unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of the rows of a ``q_proj`` / ``k_proj`` weight.

    Hugging Face Llama applies RoPE to the two *halves* of each head (``rotate_half``: dimension
    ``i`` pairs with ``i + d_head/2``); llama.cpp rotates *adjacent* pairs (``2i`` with ``2i+1``).
    So its converter reorders each head's output rows, half-split -> interleaved:

        HF row ``h*d_head + s*(d_head/2) + i``  ->  GGUF row ``h*d_head + 2*i + s``   (s in {0, 1})

    i.e. view the rows as ``(n_heads, 2, d_head/2)`` and swap the last two axes. The inverse views
    the GGUF rows as ``(n_heads, d_head/2, 2)`` and swaps them back. For one head with
    ``d_head = 4``: GGUF rows ``[a0, b0, a1, b1]`` -> HF rows ``[a0, a1, b0, b1]``.

    Args:
        weight: ``(n_heads * d_head, d_model)`` as stored in the GGUF file (row-major).
        n_heads: Heads this projection has: ``head_count`` for Q, ``head_count_kv`` for K.

    Returns:
        The weight in Hugging Face row order, same shape.
    """
    rows = weight.shape[0]
    d_head = rows // n_heads
    w = weight.reshape(n_heads, d_head // 2, 2, *weight.shape[1:])  # (H, d_head/2, 2, D)
    return w.swapaxes(1, 2).reshape(weight.shape)  # (H, 2, d_head/2, D) -> (H*d_head, D)


# --8<-- [end:unpermute]


def llama_config_from_gguf(
    metadata: Mapping[str, Any], tensor_names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The Hugging Face ``LlamaConfig`` fields a Llama-architecture GGUF describes.

    Args:
        metadata: :attr:`GGUFFile.metadata` of a file with ``general.architecture == "llama"``.
        tensor_names: The file's tensor names (:attr:`GGUFFile.tensors`). The metadata does not
            say whether the output head is tied to the embedding; the tensors do: a file without
            ``output.weight`` reuses ``token_embd.weight``. Without names, tied is assumed.

    Returns:
        A ``config.json``-style dict (``transformers.LlamaConfig(**config)`` accepts it):
        ``model_type`` (``"llama"``), ``vocab_size``, ``hidden_size``, ``intermediate_size``,
        ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
        ``rope_theta``, ``rms_norm_eps``, ``max_position_embeddings``, ``tie_word_embeddings``,
        and the ``bos/eos/pad/unk_token_id`` the file names.

    Raises:
        ConfigError: If the architecture is not ``llama`` or a required key is missing.
    """
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ConfigError(
            f"GGUF general.architecture is {arch!r}; only 'llama' files can be loaded as Llama"
        )

    def get(key: str, default: Any = None) -> Any:
        full = f"llama.{key}"
        if full in metadata:
            return metadata[full]
        if default is None:
            raise ConfigError(f"GGUF metadata lacks {full!r}, needed for the Llama config")
        return default

    n_heads = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    vocab_size = metadata.get("llama.vocab_size", len(metadata.get("tokenizer.ggml.tokens", [])))
    config: dict[str, Any] = {
        "model_type": "llama",
        "vocab_size": int(vocab_size),
        "hidden_size": d_model,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(get("attention.head_count_kv", n_heads)),
        "head_dim": int(get("rope.dimension_count", d_model // n_heads)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(get("context_length")),
        "tie_word_embeddings": tensor_names is None or "output.weight" not in set(tensor_names),
    }
    for field, key in [("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")]:
        if f"tokenizer.ggml.{key}_token_id" in metadata:
            config[f"{field}_token_id"] = int(metadata[f"tokenizer.ggml.{key}_token_id"])
    return config


def load_state_dict(
    path: str | Path | GGUFFile, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Load a Llama-architecture GGUF as a Hugging Face Llama state dict, dequantized.

    Renames tensors (:func:`hf_llama_name`), undoes the Q/K row permutation
    (:func:`unpermute_rotary`) and returns tensors in PyTorch shapes; ``rope_freqs.weight``
    (derived from the config, not learned) is skipped. Files without
    ``output.weight`` tie the output head to the embedding: there is then no ``lm_head.weight``
    key (and :func:`llama_config_from_gguf` says ``tie_word_embeddings``).

    Args:
        path: The ``.gguf`` file, or an opened :class:`GGUFFile`.
        dtype: The dtype of the returned tensors.

    Returns:
        ``{"model.embed_tokens.weight": (vocab_size, d_model), ...}``.
    """
    gguf = path if isinstance(path, GGUFFile) else GGUFFile(path)
    config = llama_config_from_gguf(gguf.metadata)
    state: dict[str, torch.Tensor] = {}
    for name in gguf.tensors:
        if name in _DERIVED_TENSORS:
            continue
        weight = gguf.dequantize(name)
        if name.endswith(".attn_q.weight"):
            weight = unpermute_rotary(weight, config["num_attention_heads"])
        elif name.endswith(".attn_k.weight"):
            weight = unpermute_rotary(weight, config["num_key_value_heads"])
        state[hf_llama_name(name)] = torch.from_numpy(np.ascontiguousarray(weight)).to(dtype)
    return state


def load_llama_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict of a Llama GGUF in one call: ``(llama_config, state_dict)``.

    The same as :func:`llama_config_from_gguf` (with the file's tensor names) and
    :func:`load_state_dict`, reading the file once.
    """
    gguf = GGUFFile(path)
    config = llama_config_from_gguf(gguf.metadata, gguf.tensors)
    return config, load_state_dict(gguf, dtype=dtype)


def llama_from_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> "Llama":
    """Our :class:`~groundwork.models.llama.Llama` with the architecture and weights of a GGUF file.

    The GGUF config and state dict (:func:`load_llama_gguf`) are already in Hugging Face form, so
    this goes through the same converters as a ``transformers`` checkpoint
    (:func:`groundwork.interop.hf.config_from_hf_dict`, ``load_hf_state_dict``). The tokenizer
    comes from :func:`groundwork.interop.gguf_tokenizer.tokenizer_from_gguf`.

    Example:
        >>> model = llama_from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf").eval()  # doctest: +SKIP

    Args:
        path: A Llama-architecture ``.gguf`` file.
        dtype: The dtype of the returned model's parameters.

    Returns:
        The model, in training mode like any freshly built module (call ``.eval()``).
    """
    from groundwork.interop.hf import config_from_hf_dict, load_hf_state_dict
    from groundwork.models import build_model

    config, state = load_llama_gguf(path)
    model = build_model(config_from_hf_dict(config))
    load_hf_state_dict(model, state)
    return model.to(dtype)
