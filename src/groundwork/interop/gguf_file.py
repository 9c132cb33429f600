"""Read GGUF files: metadata, tensor infos and dequantized weights, written from the specification.

This module is the container: it parses any GGUF file and hands out its tensors, knowing no
model family. The quantized block layouts are decoded by :mod:`groundwork.interop.gguf_quants`;
:mod:`groundwork.interop.gguf` maps a Llama-architecture file onto Hugging Face names and our
:class:`~groundwork.models.llama.Llama` (and re-exports the public names of both modules).

GGUF is the single-file checkpoint format of llama.cpp / ggml. One file carries everything a runtime
needs: the architecture's hyperparameters, the tokenizer (vocabulary, merges, chat template) and the
weights, many of them quantized to 4 or 8 bits in small blocks. This module parses the format from
its specification; :mod:`groundwork.interop.gguf` then turns a Llama-family file into a Hugging
Face style state dict and config, so that a real pretrained model (SmolLM2-135M-Instruct ships as
a Q4_1 GGUF) loads into our own Llama.

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
``block_size`` elements stored as ``type_size`` bytes (layouts in
:mod:`groundwork.interop.gguf_quants`).

References:
    - GGUF specification: ggml ``docs/gguf.md`` (github.com/ggml-org/ggml).
    - Docs: chapter 6, "Pretrained model families: loading real weights".
"""

import dataclasses
import struct
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from groundwork.errors import CheckpointError, ConfigError, UnknownNameError, did_you_mean
from groundwork.interop.gguf_quants import GGML_TYPES, GGMLType, dequantize

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
