"""Write GGUF files: Q8_0 and Q4_0 quantizers, the container, and our Llama exported for llama.cpp.

The reverse of :mod:`groundwork.interop.gguf`: a :class:`~groundwork.models.llama.Llama` and its
byte-level BPE tokenizer become one ``.gguf`` file that llama.cpp runs, ``transformers`` loads
(``from_pretrained(dir, gguf_file=name)``) and our own reader reads back.

Three layers, bottom up:

* :func:`quantize_q8_0` and :func:`quantize_q4_0`: each row cut into blocks of 32 values, one
  fp16 scale ``d`` per block and 8- or 4-bit codes, byte for byte what ggml's reference
  ``quantize_row_q8_0_ref`` / ``quantize_row_q4_0_ref`` write (the layouts are in
  :mod:`groundwork.interop.gguf_quants`, whose dequantizers undo them);
* :class:`GGUFWriter`: the container of GGUF version 3 (header, typed metadata, tensor infos,
  tensor data aligned to ``general.alignment``), written atomically;
* :func:`export_llama_gguf`: Hugging Face names -> llama.cpp names (the inverse of
  :func:`~groundwork.interop.gguf.hf_llama_name`), Q/K rows permuted for llama.cpp's RoPE
  (:func:`permute_rotary`, the inverse of :func:`~groundwork.interop.gguf.unpermute_rotary`),
  the ``llama.*`` hyperparameters and the ``tokenizer.ggml.*`` vocabulary.

As llama.cpp's converter does, 1-D tensors (the RMSNorm weights) stay F32, and a matrix whose rows
are not a multiple of the block size (32) falls back to F16. For ``q4_0``, the matrix that makes
the logits (``output.weight``, or ``token_embd.weight`` when the head is tied to it) is kept at
Q8_0: ``llama-quantize`` keeps it at more bits too (Q6_K, which we do not write), and
SmolLM2's own Q4_1 file keeps its tied embedding at Q8_0.

This module is long because the three layers are read together (the chapter quotes each) and
each is small; the re-exports in :mod:`groundwork.interop.gguf` stop at the reader, since this
module builds on it.

References:
    - GGUF specification: ggml ``docs/gguf.md``; block layouts and reference quantizers: ggml
      ``src/ggml-common.h``, ``src/ggml-quants.c``.
    - llama.cpp ``convert_hf_to_gguf.py`` (``LlamaModel``, the tensor name map, ``permute``) and
      ``src/llama-quant.cpp`` (which tensors keep more bits).
    - Docs: chapter 18, "Compression" (GGUF export); the reader is in chapter 6.
"""

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from groundwork.errors import ConfigError, TokenizerError
from groundwork.fileio import atomic_write
from groundwork.interop.gguf import _BLOCK_NAMES, _GLOBAL_NAMES
from groundwork.interop.gguf_file import (
    _SCALAR_DTYPES,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUFValueType,
)
from groundwork.interop.gguf_quants import GGML_TYPES, Q4_0_BLOCK, Q8_0_BLOCK
from groundwork.interop.gguf_tokenizer import _LLAMA3_SPLIT, TOKEN_TYPE_CONTROL
from groundwork.models.config import check_not_pruned

if TYPE_CHECKING:
    from groundwork.tokenize.base import Tokenizer

__all__ = [
    "FILE_TYPES",
    "GGUFWriter",
    "QType",
    "export_llama_gguf",
    "gguf_llama_name",
    "permute_rotary",
    "quantize_q4_0",
    "quantize_q8_0",
]

QK = 32  # elements per block of Q8_0 and Q4_0
QType = Literal["f32", "f16", "q8_0", "q4_0"]
# general.file_type: llama.cpp's LLAMA_FTYPE_* for each choice.
FILE_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}
_TYPE_IDS = {t.name: t.id for t in GGML_TYPES.values()}
_WRITABLE = ("F32", "F16", "Q8_0", "Q4_0")
TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_UNUSED = 1, 4, 5


def _blocks(x: np.ndarray, type_name: str) -> np.ndarray:
    """``x`` as float32 blocks of 32 along its last axis: ``(n_blocks, 32)``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % QK:
        raise ConfigError(
            f"cannot quantize an array of shape {x.shape} to {type_name}: its rows (last axis) "
            f"must be a multiple of the block size {QK}"
        )
    if not np.isfinite(x).all():
        raise ConfigError(f"cannot quantize to {type_name}: the array has NaN or infinite values")
    return x.reshape(-1, QK)


def _fp16(d: np.ndarray, type_name: str) -> np.ndarray:
    """The block scales as fp16 (round to nearest even), refusing any too large for fp16."""
    with np.errstate(over="ignore"):
        half = d[:, 0].astype(np.float16)
    if not np.isfinite(half).all():
        raise ConfigError(
            f"cannot quantize to {type_name}: a block scale exceeds fp16's 65504 "
            f"(values of magnitude {float(np.abs(d).max()):.3g} times the code range)"
        )
    return half


# --8<-- [start:q8_0]
def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Quantize to Q8_0: per block of 32, ``d = max|x| / 127`` and ``q = round(x / d)`` in int8.

    The largest value maps to +-127 exactly; ``round`` sends halves away from zero (C's
    ``roundf``). An all-zero block gets ``d = 0`` and ``q = 0``.

    Args:
        x: Float values whose last axis is a multiple of 32 (a weight ``(out, in)``).

    Returns:
        ``uint8`` bytes of shape ``(*x.shape[:-1], x.shape[-1] // 32 * 34)``: per block the fp16
        ``d`` then 32 int8 ``q`` (``gguf.quants.quantize`` gives the same bytes).
    """
    blocks = _blocks(x, "Q8_0")  # (n_blocks, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)  # (n_blocks, 1)
    inv_d = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    v = np.abs(blocks * inv_d)  # |x / d| in [0, 127], a float32 product as in C
    whole = np.floor(v)
    q = np.copysign(whole + (v - whole >= 0.5), blocks)  # roundf: halves away from zero
    out = np.empty(len(blocks), dtype=Q8_0_BLOCK)
    out["d"] = _fp16(d, "Q8_0")  # the scale is stored as fp16
    out["qs"] = q
    return out.view(np.uint8).reshape(*np.shape(x)[:-1], -1)


# --8<-- [end:q8_0]


# --8<-- [start:q4_0]
def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """Quantize to Q4_0: per block of 32, ``d = m / -8`` where ``m`` is the value of largest
    magnitude (with its sign), and ``q = min(15, trunc(x / d + 8.5))`` in 0..15.

    Dequantized, ``x = d * (q - 8)`` spans ``[-8d, 7d]``: the sign of ``d`` puts ``m`` at the
    end with 8 steps, ``q = 0``, so the extreme value is exact and the other end gets 7 steps.
    Byte ``j`` holds ``q[j]`` in its low nibble and ``q[j + 16]`` in its high nibble.

    Example: a block whose largest magnitude is ``m = -2.0`` has ``d = 0.25``; then ``x = -2.0``
    gives ``trunc(-8 + 8.5) = 0``, ``x = 0.3`` gives ``trunc(1.2 + 8.5) = 9`` (``0.25``), and
    ``x = 1.9`` gives ``min(15, trunc(16.1)) = 15`` (``1.75``, the top of the range).

    Args:
        x: Float values whose last axis is a multiple of 32.

    Returns:
        ``uint8`` bytes of shape ``(*x.shape[:-1], x.shape[-1] // 32 * 18)``: per block the fp16
        ``d`` then 16 bytes of packed nibbles.
    """
    blocks = _blocks(x, "Q4_0")  # (n_blocks, 32)
    first_largest = np.abs(blocks).argmax(axis=1)[:, None]  # (n_blocks, 1), the first on ties
    m = np.take_along_axis(blocks, first_largest, axis=1)  # (n_blocks, 1), signed
    d = m / np.float32(-8)
    inv_d = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc(blocks * inv_d + np.float32(8.5))).astype(np.uint8)  # (n, 32)
    out = np.empty(len(blocks), dtype=Q4_0_BLOCK)
    out["d"] = _fp16(d, "Q4_0")
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)  # elements j and j + 16 share byte j
    return out.view(np.uint8).reshape(*np.shape(x)[:-1], -1)


# --8<-- [end:q4_0]


def _infer_type(value: Any) -> GGUFValueType:
    """The value type ``gguf-py`` would pick: bool, int (INT32), float (FLOAT32), str, list."""
    kinds: list[tuple[type | tuple[type, ...], GGUFValueType]] = [
        (bool, GGUFValueType.BOOL),  # before int: a bool is an int
        (int, GGUFValueType.INT32),
        (float, GGUFValueType.FLOAT32),
        (str, GGUFValueType.STRING),
        ((list, tuple), GGUFValueType.ARRAY),
    ]
    for kind, value_type in kinds:
        if isinstance(value, kind):
            return value_type
    raise ConfigError(f"cannot store a {type(value).__name__} as GGUF metadata: {value!r}")


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _number_array(value: Sequence[Any], element_type: GGUFValueType) -> bytes | None:
    """The bytes of a list of plain numbers that all fit ``element_type``; ``None`` for anything
    else (strings, bools, nested lists, a value out of range), which is encoded one by one."""
    dtype = _SCALAR_DTYPES.get(element_type)
    if dtype is None or element_type == GGUFValueType.BOOL or not value:
        return None
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in ("iu" if dtype.kind in "iu" else "iuf"):
        return None
    if dtype.kind in "iu" and not (
        np.iinfo(dtype).min <= array.min() <= array.max() <= np.iinfo(dtype).max
    ):
        return None
    return array.astype(dtype).tobytes()


def _encode(value: Any, value_type: GGUFValueType, element_type: GGUFValueType | None) -> bytes:
    """The bytes of one metadata value (without its type tag) as the spec lays them out."""
    if value_type == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise ConfigError(f"GGUF STRING value must be a str, got {value!r}")
        return _string(value)
    if value_type == GGUFValueType.ARRAY:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"GGUF ARRAY value must be a list, got {value!r}")
        if element_type is None:
            if not value:
                raise ConfigError("an empty GGUF array needs an explicit element type")
            element_type = _infer_type(value[0])
        head = struct.pack("<IQ", element_type, len(value))
        numbers = _number_array(value, element_type)
        if numbers is not None:  # one vectorised write (a vocabulary has ~50k token types)
            return head + numbers
        return head + b"".join(_encode(v, element_type, None) for v in value)
    dtype = _SCALAR_DTYPES[value_type]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if value_type == GGUFValueType.BOOL and not isinstance(value, bool):
        raise ConfigError(f"GGUF BOOL value must be a bool, got {value!r}")
    if value_type != GGUFValueType.BOOL and not (
        is_number and (dtype.kind == "f" or isinstance(value, int))
    ):
        raise ConfigError(f"GGUF {value_type.name} value must be a number, got {value!r}")
    if dtype.kind in "iu" and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
        raise ConfigError(f"{value} does not fit in a GGUF {value_type.name}")
    return np.array(value, dtype=dtype).tobytes()


class GGUFWriter:
    """Collect metadata and tensors, then :meth:`write` one GGUF (version 3) file.

    Metadata keeps insertion order; adding a key again replaces its value. Tensors are written in
    the order added, each at an offset that is a multiple of the alignment.

    Example:
        >>> w = GGUFWriter()
        >>> w.add("general.architecture", "llama")
        >>> w.add("llama.block_count", 2, GGUFValueType.UINT32)
        >>> w.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
        >>> path = w.write("tiny.gguf")  # doctest: +SKIP

    The data alignment is the ``general.alignment`` key, as readers take it: add it (a
    ``UINT32`` power of two, at least 8) for anything but the default 32.
    """

    def __init__(self) -> None:
        self.metadata: dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]] = {}
        self._encoded: dict[str, bytes] = {}  # each value's bytes, encoded once by add()
        self.tensors: dict[str, tuple[tuple[int, ...], int, np.ndarray]] = {}

    @property
    def alignment(self) -> int:
        """``general.alignment``, or the default 32."""
        entry = self.metadata.get("general.alignment")
        return DEFAULT_ALIGNMENT if entry is None else int(entry[1])

    def add(
        self,
        key: str,
        value: Any,
        value_type: GGUFValueType | None = None,
        element_type: GGUFValueType | None = None,
    ) -> None:
        """Add a metadata key/value.

        Args:
            key: Dotted name, e.g. ``"llama.context_length"``.
            value: A bool, int, float, str, or a list of them (lists may nest).
            value_type: Its :class:`GGUFValueType`; default inferred as ``gguf-py`` does (an int
                becomes INT32, a float FLOAT32). llama.cpp checks the types of the keys it
                reads, so pass them (``UINT32`` for lengths and token ids).
            element_type: For an array, the type of its elements (default inferred).

        Raises:
            ConfigError: A value that does not fit its type (checked now, not when writing).
        """
        value_type = _infer_type(value) if value_type is None else GGUFValueType(value_type)
        encoded = _encode(value, value_type, element_type)  # fails here, not in write()
        if key == "general.alignment" and (
            value_type != GGUFValueType.UINT32 or value < 8 or value & (value - 1)
        ):
            raise ConfigError(f"general.alignment must be a UINT32 power of two >= 8, got {value}")
        self.metadata[key] = (value_type, value, element_type)
        self._encoded[key] = encoded

    def add_tensor(self, name: str, array: np.ndarray, ggml_type: str = "F32") -> None:
        """Add a tensor, stored as ``ggml_type`` (``"F32"``, ``"F16"``, ``"Q8_0"``, ``"Q4_0"``).

        Args:
            name: Its name in the file (unique).
            array: The values in row-major (PyTorch) shape; the file lists the dims reversed.
            ggml_type: How to store it; Q8_0 and Q4_0 need rows that are a multiple of 32.

        Raises:
            ConfigError: Unknown type, duplicate name, or rows that do not fit the blocks.
        """
        if ggml_type not in _WRITABLE:
            raise ConfigError(
                f"cannot write tensor {name!r} as {ggml_type!r}; writable: {', '.join(_WRITABLE)}"
            )
        if name in self.tensors:
            raise ConfigError(f"tensor {name!r} was already added")
        array = np.asarray(array)
        encode = {
            "F32": lambda a: np.ascontiguousarray(a, dtype="<f4"),
            "F16": lambda a: np.ascontiguousarray(a, dtype="<f2"),
            "Q8_0": quantize_q8_0,
            "Q4_0": quantize_q4_0,
        }[ggml_type]
        dims = tuple(reversed(array.shape))  # innermost (contiguous) first
        self.tensors[name] = (dims, _TYPE_IDS[ggml_type], encode(array))

    def _padding(self, n: int) -> bytes:
        return b"\0" * (-n % self.alignment)

    def header_bytes(self) -> bytes:
        """Header, metadata and tensor infos, padded to the alignment: all before the data."""
        out = GGUF_MAGIC + struct.pack("<IQQ", 3, len(self.tensors), len(self.metadata))
        for key, (value_type, _, _) in self.metadata.items():
            out += _string(key) + struct.pack("<I", value_type) + self._encoded[key]
        offset = 0
        for name, (dims, type_id, data) in self.tensors.items():
            out += _string(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
            out += struct.pack("<IQ", type_id, offset)
            offset += data.nbytes + len(self._padding(data.nbytes))
        return out + self._padding(len(out))

    def write(self, path: str | Path) -> Path:
        """Write the file atomically (a temporary file beside it, then renamed); return its path.

        Raises:
            ConfigError: ``path`` is an existing directory.
        """
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a directory; give the path of the .gguf file to write")

        def body(f: IO[bytes]) -> None:
            f.write(self.header_bytes())
            for _, _, data in self.tensors.values():
                f.write(data.tobytes())
                f.write(self._padding(data.nbytes))

        atomic_write(path, body)
        return path


# --8<-- [start:permute]
def permute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder a ``q_proj`` / ``k_proj`` weight's rows for llama.cpp's RoPE (as its converter does).

    Hugging Face rotates each head's two halves together (``i`` with ``i + d_head/2``); llama.cpp
    rotates adjacent pairs (``2i`` with ``2i+1``). View the rows as ``(n_heads, 2, d_head/2)`` and
    swap the last two axes: HF rows ``[a0, a1, b0, b1]`` become ``[a0, b0, a1, b1]``.
    :func:`~groundwork.interop.gguf.unpermute_rotary` undoes it.
    """
    d_head = weight.shape[0] // n_heads
    w = weight.reshape(n_heads, 2, d_head // 2, *weight.shape[1:])  # (H, 2, d_head/2, D)
    return w.swapaxes(1, 2).reshape(weight.shape)  # (H, d_head/2, 2, D) -> (H*d_head, D)


# --8<-- [end:permute]

_GGUF_GLOBAL = {hf: name for name, hf in _GLOBAL_NAMES.items()}
_GGUF_BLOCK = {hf: name for name, hf in _BLOCK_NAMES.items()}


def gguf_llama_name(hf_name: str) -> str:
    """Map a Hugging Face Llama name to its llama.cpp name (inverse of ``hf_llama_name``).

    >>> gguf_llama_name("model.layers.3.mlp.gate_proj.weight")
    'blk.3.ffn_gate.weight'

    Raises:
        ConfigError: A name outside the Llama architecture.
    """
    if hf_name in _GGUF_GLOBAL:
        return _GGUF_GLOBAL[hf_name]
    parts = hf_name.split(".", 3)
    in_block = len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit()
    if in_block and parts[3] in _GGUF_BLOCK:
        return f"blk.{parts[2]}.{_GGUF_BLOCK[parts[3]]}"
    raise ConfigError(f"parameter {hf_name!r} has no llama.cpp name (not a Llama weight)")


def _tensor_type(name: str, shape: Sequence[int], qtype: str, logits_matrix: str) -> str:
    """F32 vectors; F16 for rows that do not fill blocks; Q8_0 for the logits matrix in q4_0."""
    if len(shape) == 1 or qtype == "f32":
        return "F32"
    if qtype == "f16" or shape[-1] % QK:
        return "F16"  # llama.cpp's converter falls back to F16 the same way
    return "Q8_0" if qtype == "q8_0" or name == logits_matrix else "Q4_0"


def _pre_tokenizer_name(pre: Mapping[str, Any] | None) -> str:
    """The ``tokenizer.ggml.pre`` (llama.cpp's name) of a ``tokenizer.json`` pre-tokenizer."""
    pre = pre or {}
    steps = list(pre.get("pretokenizers", [])) if pre.get("type") == "Sequence" else [pre]
    steps = [step or {} for step in steps] or [{}]
    kinds = [step.get("type") for step in steps]
    last = steps[-1]
    if last.get("type") == "ByteLevel" and not last.get("add_prefix_space"):
        regex = last.get("use_regex", True)
        if kinds == ["ByteLevel"] and regex:
            return "gpt-2"  # GPT-2's regex alone (our ByteLevelBPE)
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and regex:
            return "smollm"  # each digit alone, then GPT-2's regex
        split = (steps[0].get("pattern") or {}).get("Regex")
        if kinds == ["Split", "ByteLevel"] and not regex and split == _LLAMA3_SPLIT:
            return "llama-bpe"
    raise TokenizerError(
        f"no llama.cpp pre-tokenizer matches this tokenizer's ({kinds}); pass tokenizer_pre= "
        "with the tokenizer.ggml.pre name llama.cpp should use"
    )


def _tokenizer_metadata(
    tokenizer: "Tokenizer", vocab_size: int, pre: str | None
) -> dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]]:
    """``tokenizer.ggml.*`` vocabulary keys of a byte-level BPE ``tokenizer.json``."""
    data = tokenizer.to_json_dict()
    model = data.get("model") or {}
    if model.get("type") != "BPE" or data.get("normalizer"):
        raise TokenizerError(
            f"GGUF export needs a byte-level BPE tokenizer without normalizer; this one is "
            f"{model.get('type')!r} (train one with `tokenize.train_tokenizer('bpe', ...)`)"
        )
    pre = pre or _pre_tokenizer_name(data.get("pre_tokenizer"))
    # Ids the tokenizer lacks (a vocabulary padded for speed) become "[PADi]", as llama.cpp does.
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [TOKEN_TYPE_UNUSED] * vocab_size
    entries = [(t, i, TOKEN_TYPE_NORMAL) for t, i in model["vocab"].items()]
    entries += [
        (a["content"], a["id"], TOKEN_TYPE_CONTROL if a["special"] else TOKEN_TYPE_USER_DEFINED)
        for a in data.get("added_tokens", [])
    ]
    for token, i, kind in entries:
        if not 0 <= i < vocab_size:
            raise ConfigError(
                f"token {token!r} has id {i} but the model's vocab_size is {vocab_size}"
            )
        tokens[i], types[i] = token, kind
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    S, A, I32 = GGUFValueType.STRING, GGUFValueType.ARRAY, GGUFValueType.INT32
    return {
        "tokenizer.ggml.model": ("gpt2", S, None),
        "tokenizer.ggml.pre": (pre, S, None),
        "tokenizer.ggml.tokens": (tokens, A, S),
        "tokenizer.ggml.token_type": (types, A, I32),
        "tokenizer.ggml.merges": (merges, A, S),
    }


def export_llama_gguf(
    model: Any,
    tokenizer: "Tokenizer",
    path: str | Path,
    qtype: QType = "q8_0",
    chat_template: str | None = None,
    *,
    name: str | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    add_bos_token: bool = False,
    tokenizer_pre: str | None = None,
) -> dict[str, str]:
    """Write our Llama and its tokenizer as a GGUF file llama.cpp runs (``llama-cli -m path``).

    Args:
        model: A :class:`~groundwork.models.llama.Llama` (without RoPE scaling).
        tokenizer: Its byte-level BPE tokenizer (ours, or a wrapped ``tokenizers`` one).
        path: The ``.gguf`` file to write (atomically).
        qtype: ``f32``, ``f16``, ``q8_0`` or ``q4_0`` for the matrices (see the module
            docstring for the exceptions); ``general.file_type`` says which.
        chat_template: The Jinja chat template (``tokenizer.chat_template``), if any.
        name: ``general.name``, if given.
        bos_token_id: Beginning-of-text id (default: ``eos_token_id``).
        eos_token_id: End-of-text id (default: the tokenizer's ``eot_id``).
        add_bos_token: Whether llama.cpp should prepend BOS when it encodes a prompt.
        tokenizer_pre: llama.cpp's pre-tokenizer name (``tokenizer.ggml.pre``); default read
            off the tokenizer: ``gpt-2``, ``smollm`` (digits split first) or ``llama-bpe``.

    Returns:
        The ggml type written for each tensor, by llama.cpp name.

    Raises:
        ConfigError: Not a Llama, RoPE scaling, an unknown ``qtype``, or a tokenizer larger than
            the model's vocabulary.
        TokenizerError: A tokenizer that is not byte-level BPE.
    """
    from groundwork.models.llama import Llama

    if not isinstance(model, Llama):
        raise ConfigError(
            f"GGUF export writes Llama-architecture models; got a {type(model).__name__} "
            "(export it with --format hf instead)"
        )
    if qtype not in FILE_TYPES:
        raise ConfigError(f"unknown GGUF qtype {qtype!r}; choose one of {', '.join(FILE_TYPES)}")
    config = model.config
    check_not_pruned(config, "GGUF's llama metadata")
    if config.rope_scaling is not None:
        raise ConfigError("GGUF export does not write RoPE scaling (rope_scaling must be None)")
    if tokenizer.vocab_size > config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{config.vocab_size}: they do not belong together"
        )

    U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    writer = GGUFWriter()
    writer.add("general.architecture", "llama")
    if name is not None:
        writer.add("general.name", name)
    for key, value, value_type in [
        ("vocab_size", config.vocab_size, U32),
        ("context_length", config.max_seq_len, U32),
        ("embedding_length", config.d_model, U32),
        ("block_count", config.n_layers, U32),
        ("feed_forward_length", config.d_ff, U32),
        ("rope.dimension_count", config.d_head, U32),
        ("attention.head_count", config.n_heads, U32),
        ("attention.head_count_kv", config.n_kv_heads, U32),
        ("attention.layer_norm_rms_epsilon", config.rms_norm_eps, F32),
        ("rope.freq_base", config.rope_theta, F32),
    ]:
        writer.add(f"llama.{key}", value, value_type)
    if config.d_head * config.n_heads != config.d_model:  # heads not d_model / n_heads wide
        writer.add("llama.attention.key_length", config.d_head, U32)
        writer.add("llama.attention.value_length", config.d_head, U32)
    writer.add("general.file_type", FILE_TYPES[qtype], U32)
    writer.add("general.quantization_version", 2, U32)  # ggml's GGML_QNT_VERSION
    for key, (value, value_type, element_type) in _tokenizer_metadata(
        tokenizer, config.vocab_size, tokenizer_pre
    ).items():
        writer.add(key, value, value_type, element_type)
    eos = tokenizer.eot_id if eos_token_id is None else eos_token_id
    bos = eos if bos_token_id is None else bos_token_id
    for key, token_id in [("bos", bos), ("eos", eos)]:
        if token_id is not None:
            writer.add(f"tokenizer.ggml.{key}_token_id", token_id, U32)
    writer.add("tokenizer.ggml.add_bos_token", add_bos_token)
    writer.add("tokenizer.ggml.add_eos_token", False)
    if chat_template is not None:
        writer.add("tokenizer.chat_template", chat_template)

    # A tied head has no output.weight: llama.cpp (and our reader) then reuse token_embd.
    logits_matrix = "token_embd.weight" if config.tie_embeddings else "output.weight"
    types = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_embeddings:
            continue
        gguf_name = gguf_llama_name(hf_name)
        weight = tensor.detach().float().cpu().numpy()
        if gguf_name.endswith(".attn_q.weight"):
            weight = permute_rotary(weight, config.n_heads)
        elif gguf_name.endswith(".attn_k.weight"):
            weight = permute_rotary(weight, config.n_kv_heads)
        types[gguf_name] = _tensor_type(gguf_name, weight.shape, qtype, logits_matrix)
        writer.add_tensor(gguf_name, weight, types[gguf_name])
    writer.write(path)
    return types
