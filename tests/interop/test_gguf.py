"""Tests of the GGUF reader, dequantization, Llama mapping and tokenizer rebuild.

Small files are written in the test (with ``gguf.GGUFWriter``, or byte by byte for corrupt ones);
parity tests compare with the ``gguf`` package and ``transformers`` on SmolLM2-135M-Instruct
(Q4_1 GGUF, fetched through ``groundwork.corpus``).
"""

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from groundwork import corpus
from groundwork.errors import CheckpointError, ConfigError, TokenizerError, UnknownNameError
from groundwork.interop.gguf import (
    GGML_TYPES,
    GGUFFile,
    dequantize,
    hf_llama_name,
    llama_config_from_gguf,
    llama_from_gguf,
    load_llama_gguf,
    load_state_dict,
    read_gguf,
    unpermute_rotary,
)
from groundwork.interop.gguf_tokenizer import (
    chat_template_from_gguf,
    special_tokens_from_gguf,
    tokenizer_from_gguf,
)

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

PROMPTS = [
    "Hello world!",
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2? Answer in 1 word.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n",
    "naïve café — 日本語の文章 😀 Ünïcödé, Ответь кратко.",
    "  multiple   spaces\n\n\ttabs 12345 3.14159 x² (½)",
    "<|endoftext|>def f(x):\n    return x**2  # it's fine, isn't it?\n",
]


# ---------------------------------------------------------------------------------------------
# Small files written in the test
# ---------------------------------------------------------------------------------------------


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _gguf_bytes(
    kvs: list[tuple[str, int, bytes]] | None = None,
    tensors: list[tuple[str, tuple[int, ...], int, int]] | None = None,
    data: bytes = b"",
    version: int = 3,
    magic: bytes = b"GGUF",
) -> bytes:
    """A GGUF file by hand: header, (key, value type, value bytes), (name, dims, type, offset)."""
    kvs, tensors = kvs or [], tensors or []
    out = magic + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, value_type, value in kvs:
        out += _string(key) + struct.pack("<I", value_type) + value
    for name, dims, type_id, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims))
        out += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", type_id, offset)
    out += b"\0" * (-len(out) % 32)  # pad to the default alignment
    return out + data


TINY_METADATA: dict[str, Any] = {
    "general.architecture": "llama",
    "test.u8": 250,
    "test.i8": -7,
    "test.u16": 65000,
    "test.i16": -30000,
    "test.u32": 4_000_000_000,
    "test.i32": -2_000_000_000,
    "test.f32": 0.5,
    "test.u64": 2**63 + 5,
    "test.i64": -(2**62),
    "test.f64": 1e-300,
    "test.bool": True,
    "test.string": "héllo, wörld ✓",
    "test.ints": [1, 2, 3, -4],
    "test.floats": [0.25, -1.5],
    "test.bools": [True, False, True],
    "test.strings": ["<|im_start|>", "Ġthe", ""],
    "test.nested": [["a", "b"], ["c"]],
}


def _write_tiny(path: Path, alignment: int | None = None) -> dict[str, np.ndarray]:
    """Write a small GGUF with every scalar type, arrays and F32/F16/Q8_0/Q4_0/Q4_1/BF16 tensors.

    Returns the tensors as written (float ones) or the quantized bytes (the rest).
    """
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "llama")
    V = gguf.GGUFValueType
    writer.add_uint8("test.u8", 250)
    writer.add_int8("test.i8", -7)
    writer.add_uint16("test.u16", 65000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4_000_000_000)
    writer.add_int32("test.i32", -2_000_000_000)
    writer.add_float32("test.f32", 0.5)
    writer.add_uint64("test.u64", 2**63 + 5)
    writer.add_int64("test.i64", -(2**62))
    writer.add_float64("test.f64", 1e-300)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo, wörld ✓")
    writer.add_key_value("test.ints", [1, 2, 3, -4], V.ARRAY, sub_type=V.INT32)
    writer.add_key_value("test.floats", [0.25, -1.5], V.ARRAY, sub_type=V.FLOAT32)
    writer.add_array("test.bools", [True, False, True])
    writer.add_array("test.strings", ["<|im_start|>", "Ġthe", ""])
    writer.add_array("test.nested", [["a", "b"], ["c"]])
    if alignment is not None:
        writer.add_custom_alignment(alignment)

    written: dict[str, np.ndarray] = {
        "f32": rng.standard_normal((3, 64)).astype(np.float32),
        "f16": rng.standard_normal((2, 32)).astype(np.float16),
        "vector": rng.standard_normal(5).astype(np.float32),
    }
    for name, array in written.items():
        writer.add_tensor(name, array)
    weights = rng.standard_normal((4, 64)).astype(np.float32)
    for name, qtype in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1), ("bf16", Q.BF16)]:
        written[name] = gguf.quants.quantize(weights, qtype)
        writer.add_tensor(name, written[name], raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, _write_tiny(path)


def test_tiny_header_and_metadata(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = tiny
    f = GGUFFile(path)
    assert f.version == 3
    assert f.alignment == 32
    assert f.data_offset % 32 == 0
    assert f.metadata == TINY_METADATA
    assert type(f.metadata["test.bool"]) is bool
    assert f.value_types["test.u64"] == gguf.GGUFValueType.UINT64
    assert f.value_types["test.nested"] == gguf.GGUFValueType.ARRAY


def test_tiny_tensor_infos(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = tiny
    f = read_gguf(path)
    assert list(f.tensors) == ["f32", "f16", "vector", "q8_0", "q4_0", "q4_1", "bf16"]
    # dims innermost-first in the file, row-major shape for PyTorch
    assert f.tensors["f32"].dims == (64, 3)
    assert f.tensors["f32"].shape == (3, 64)
    assert f.tensors["vector"].shape == (5,)
    assert [f.tensors[n].type_name for n in f.tensors] == [
        "F32",
        "F16",
        "F32",
        "Q8_0",
        "Q4_0",
        "Q4_1",
        "BF16",
    ]
    assert f.tensors["q4_1"].shape == (4, 64)
    assert f.tensors["q4_1"].n_bytes == 4 * 2 * 20  # 2 blocks of 32 per row, 20 bytes each
    assert all(info.offset % 32 == 0 for info in f.tensors.values())


def test_tiny_tensor_data(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, written = tiny
    f = GGUFFile(path)
    for name in ["f32", "f16", "vector"]:
        expected = written[name].astype(np.float32)
        assert np.array_equal(f.dequantize(name), expected), name
    for name, qtype in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1), ("bf16", Q.BF16)]:
        assert np.array_equal(f.raw(name), written[name].ravel()), name
        expected = gguf.quants.dequantize(written[name], qtype)
        assert np.array_equal(f.dequantize(name), expected), name
        assert f.dequantize(name).dtype == np.float32


def test_raw_is_a_read_only_view(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    f = GGUFFile(tiny[0])
    raw = f.raw("q8_0")
    assert raw.dtype == np.uint8 and not raw.flags.writeable and not raw.flags.owndata


def test_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    written = _write_tiny(path, alignment=64)
    f = GGUFFile(path)
    assert f.alignment == 64 and f.metadata["general.alignment"] == 64
    assert f.data_offset % 64 == 0
    assert all(info.offset % 64 == 0 for info in f.tensors.values())
    assert np.array_equal(f.dequantize("f32"), written["f32"])


def test_type_table_matches_gguf() -> None:
    for type_id, t in GGML_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[Q(type_id)] == (t.block_size, t.type_size), t.name
        assert Q(type_id).name == t.name


# ---------------------------------------------------------------------------------------------
# Dequantization, one block by hand
# ---------------------------------------------------------------------------------------------


def _f16(x: float) -> bytes:
    return np.float16(x).tobytes()


def test_q8_0_block_by_hand() -> None:
    # d = 0.5, q = -16..15 -> x = 0.5 * q
    q = np.arange(-16, 16, dtype=np.int8)
    block = np.frombuffer(_f16(0.5) + q.tobytes(), dtype=np.uint8)
    assert np.array_equal(dequantize(block, Q.Q8_0), 0.5 * q.astype(np.float32))


def test_q4_0_block_by_hand() -> None:
    # Byte j holds element j (low nibble) and element j + 16 (high nibble).
    # Low nibbles 0..15, high nibbles 15..0 -> q = [0, 1, ..., 15, 15, 14, ..., 0]
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    block = np.frombuffer(_f16(2.0) + qs, dtype=np.uint8)
    q = np.array([*range(16), *range(15, -1, -1)], dtype=np.float32)
    assert np.array_equal(dequantize(block, Q.Q4_0), 2.0 * (q - 8))  # -16, -14, ..., 14, 14, ...


def test_q4_1_block_by_hand() -> None:
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    block = np.frombuffer(_f16(0.25) + _f16(-1.0) + qs, dtype=np.uint8)
    q = np.array([*range(16), *range(15, -1, -1)], dtype=np.float32)
    assert np.array_equal(dequantize(block, Q.Q4_1), 0.25 * q - 1.0)  # -1.0 ... 2.75


def test_bf16_by_hand() -> None:
    x = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)  # exactly representable in bf16
    top = (x.view(np.uint32) >> 16).astype("<u2")
    assert np.array_equal(dequantize(top.view(np.uint8), Q.BF16), x)


# ---------------------------------------------------------------------------------------------
# Llama names and the rotary permutation
# ---------------------------------------------------------------------------------------------


def test_hf_llama_names() -> None:
    assert hf_llama_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_llama_name("output_norm.weight") == "model.norm.weight"
    assert hf_llama_name("output.weight") == "lm_head.weight"
    assert hf_llama_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert hf_llama_name("blk.0.attn_output.weight") == "model.layers.0.self_attn.o_proj.weight"
    assert (
        hf_llama_name("blk.3.ffn_norm.weight") == "model.layers.3.post_attention_layernorm.weight"
    )
    assert hf_llama_name("blk.3.ffn_down.weight") == "model.layers.3.mlp.down_proj.weight"
    with pytest.raises(UnknownNameError, match="rope_freqs"):
        hf_llama_name("rope_freqs.weight")


def test_unpermute_one_head_by_hand() -> None:
    # One head, d_head 4: llama.cpp stores rows [a0, b0, a1, b1]; HF wants [a0, a1, b0, b1].
    gguf_rows = np.array([[0.0], [10.0], [1.0], [11.0]])  # a_i = i, b_i = 10 + i
    assert unpermute_rotary(gguf_rows, n_heads=1).ravel().tolist() == [0.0, 1.0, 10.0, 11.0]


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter direction: HF half-split rows -> interleaved pairs."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def test_unpermute_inverts_llama_cpp_permute() -> None:
    w = np.random.default_rng(0).standard_normal((3 * 8, 5))  # 3 heads of 8
    assert np.array_equal(unpermute_rotary(_llama_cpp_permute(w, 3), 3), w)


@pytest.mark.parity
def test_unpermute_matches_transformers() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(1).standard_normal((9 * 64, 16)).astype(np.float32)
    reference = LlamaTensorProcessor()._reverse_permute_weights
    assert np.array_equal(unpermute_rotary(w, 9), reference(w, 9, 9))
    k = w[: 3 * 64]
    assert np.array_equal(unpermute_rotary(k, 3), reference(k, 9, 3))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such GGUF file"):
        GGUFFile(tmp_path / "absent.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        GGUFFile(tmp_path / "empty.gguf")


@pytest.mark.parametrize("content", [b"PK\x03\x04" + b"\0" * 60, b"GG", b"{}\n"])
def test_bad_magic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a GGUF file"):
        GGUFFile(path)


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    path.write_bytes(_gguf_bytes(version=1))
    with pytest.raises(
        CheckpointError, match="unsupported GGUF version 1; supported versions: 2, 3"
    ):
        GGUFFile(path)
    path.write_bytes(_gguf_bytes(version=3 << 24))  # what a big-endian v3 file reads as
    with pytest.raises(CheckpointError, match="big-endian"):
        GGUFFile(path)


def test_version_2_is_read(tmp_path: Path) -> None:
    path = tmp_path / "v2.gguf"
    kv = [("general.name", 8, _string("two"))]
    path.write_bytes(_gguf_bytes(kv, [("x", (2,), 0, 0)], np.ones(2, "<f4").tobytes(), version=2))
    f = GGUFFile(path)
    assert f.version == 2 and f.metadata == {"general.name": "two"}
    assert f.dequantize("x").tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "where, part",
    [
        ("header", "header"),
        ("metadata", "metadata"),
        ("tensor infos", "tensor infos"),
        ("tensor data", "tensor data"),
    ],
)
def test_truncated(
    tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, where: str, part: str
) -> None:
    content = tiny[0].read_bytes()
    cut = {
        "header": 12,  # inside the tensor count
        "metadata": content.index(b"test.string") + 20,  # inside that value
        "tensor infos": content.index(b"q4_1", content.index(b"test.nested")) + 2,
        "tensor data": len(content) - 1,
    }[where]
    path = tmp_path / "cut.gguf"
    path.write_bytes(content[:cut])
    with pytest.raises(CheckpointError, match=f"cut.gguf: GGUF file is truncated in the {part}"):
        GGUFFile(path)


def test_unsupported_quant_type(tmp_path: Path) -> None:
    path = tmp_path / "q6k.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((2, 210), np.uint8), raw_dtype=Q.Q6_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    f = GGUFFile(path)
    info = f.tensors["blk.0.ffn_down.weight"]
    assert info.type_name == "Q6_K" and info.shape == (2, 256)
    assert f.raw("blk.0.ffn_down.weight").size == 2 * 210  # readable raw
    with pytest.raises(ConfigError, match=r"'blk.0.ffn_down.weight'.*Q6_K.*supported types:.*Q4_1"):
        f.dequantize("blk.0.ffn_down.weight")


def test_unknown_type_id(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(_gguf_bytes(tensors=[("w", (32,), 99, 0)], data=b"\0" * 64))
    f = GGUFFile(path)
    assert f.tensors["w"].type_name == "type 99"
    with pytest.raises(ConfigError, match="'w' has ggml type id 99"):
        f.dequantize("w")


def test_unknown_value_type(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(_gguf_bytes([("general.name", 42, b"")]))
    with pytest.raises(CheckpointError, match="unknown metadata value type 42"):
        GGUFFile(path)


def test_unaligned_offset(tmp_path: Path) -> None:
    path = tmp_path / "unaligned.gguf"
    path.write_bytes(_gguf_bytes(tensors=[("w", (2,), 0, 4)], data=b"\0" * 64))
    with pytest.raises(CheckpointError, match="not a multiple of the alignment 32"):
        GGUFFile(path)


def test_unknown_tensor_name(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'q4_1'"):
        GGUFFile(tiny[0]).dequantize("q4_l")


def test_config_needs_llama() -> None:
    with pytest.raises(ConfigError, match="'gpt2'"):
        llama_config_from_gguf({"general.architecture": "gpt2"})
    with pytest.raises(ConfigError, match=r"llama\.block_count"):
        llama_config_from_gguf(
            {
                "general.architecture": "llama",
                "llama.attention.head_count": 2,
                "llama.embedding_length": 8,
                "llama.feed_forward_length": 8,
            }
        )


def test_tokenizer_errors() -> None:
    with pytest.raises(TokenizerError, match="only byte-level BPE"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama"})
    with pytest.raises(TokenizerError, match="'mystery' is not supported"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "mystery"})
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.merges"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]})


def test_tokenizer_from_tiny_vocab() -> None:
    # "ab ab" -> pre-tokens "ab", "Ġab"; merges a+b -> ab, Ġ+ab -> Ġab
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": ["<s>", "a", "b", "Ġ", "ab", "Ġab"],
        "tokenizer.ggml.token_type": [3, 1, 1, 1, 1, 1],
        "tokenizer.ggml.merges": ["a b", "Ġ ab"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
    }
    tok = tokenizer_from_gguf(metadata)
    assert tok.encode("ab ab").ids == [0, 4, 5]
    assert tok.encode("ba").ids == [0, 2, 1]
    assert tok.decode([0, 4, 5]) == "ab ab"


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (Q4_1): parity with gguf and transformers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file, fetched into the Groundwork cache."""
    (path,) = sorted(corpus.fetch("smollm2-135m-instruct").glob("*.gguf"))
    return path


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> GGUFFile:
    return GGUFFile(smollm2_gguf)


@pytest.fixture(scope="module")
def reference_reader(smollm2_gguf: Path) -> Any:
    return gguf.GGUFReader(smollm2_gguf)


def test_smollm2_summary(smollm2: GGUFFile) -> None:
    assert smollm2.version == 3
    assert len(smollm2.tensors) == 272  # embedding + 30 blocks x 9 + final norm; tied head
    assert smollm2.tensors["token_embd.weight"].type_name == "Q8_0"
    assert smollm2.tensors["token_embd.weight"].shape == (49152, 576)
    assert smollm2.tensors["blk.0.attn_k.weight"].type_name == "Q4_1"
    assert smollm2.tensors["blk.0.attn_k.weight"].shape == (192, 576)  # 3 KV heads x 64
    assert "output.weight" not in smollm2.tensors


@pytest.mark.parity
def test_smollm2_metadata_matches_gguf(smollm2: GGUFFile, reference_reader: Any) -> None:
    fields = {k: f for k, f in reference_reader.fields.items() if not k.startswith("GGUF.")}
    assert list(smollm2.metadata) == list(fields)
    for key, field in fields.items():
        assert smollm2.metadata[key] == field.contents(), key
        assert smollm2.value_types[key] == field.types[0], key
    assert smollm2.version == reference_reader.fields["GGUF.version"].contents()
    assert smollm2.data_offset == reference_reader.data_offset


@pytest.mark.parity
def test_smollm2_tensor_infos_match_gguf(smollm2: GGUFFile, reference_reader: Any) -> None:
    assert list(smollm2.tensors) == [t.name for t in reference_reader.tensors]
    for t in reference_reader.tensors:
        info = smollm2.tensors[t.name]
        assert info.dims == tuple(int(d) for d in t.shape), t.name
        assert info.type_id == int(t.tensor_type), t.name
        assert smollm2.data_offset + info.offset == t.data_offset, t.name
        assert info.n_bytes == t.n_bytes and info.n_elements == t.n_elements, t.name


@pytest.mark.parity
def test_smollm2_dequantize_every_tensor_bit_exact(
    smollm2: GGUFFile, reference_reader: Any
) -> None:
    for t in reference_reader.tensors:
        expected = gguf.quants.dequantize(t.data, t.tensor_type)
        ours = smollm2.dequantize(t.name)
        assert ours.dtype == np.float32 and ours.shape == expected.shape, t.name
        assert np.array_equal(ours, expected), t.name


@pytest.fixture(scope="module")
def reference_tokenizer(smollm2_gguf: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name
    )


@pytest.mark.parity
def test_smollm2_tokenizer_matches_transformers(
    smollm2: GGUFFile, reference_tokenizer: Any
) -> None:
    tok = tokenizer_from_gguf(smollm2.metadata)
    assert tok.get_vocab_size() == 49152
    chat = reference_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What's 2+2? Ответь кратко 🙂"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    for text in [*PROMPTS, chat]:
        ids = tok.encode(text).ids
        assert ids == reference_tokenizer(text).input_ids, text
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>user\nHi 42<|im_end|>").ids == [
        1,
        4093,
        198,
        26843,
        216,
        36,
        34,
        2,
    ]


def test_smollm2_tokenizer_splits_every_numeral(smollm2: GGUFFile) -> None:
    """``tokenizer.ggml.pre == "smollm"``: llama.cpp isolates each ``\\p{N}`` character first.

    So " ½" is "Ġ" + "½" (as in SmolLM2's own tokenizer.json, a ``Digits`` pre-tokenizer), not the
    vocabulary's "Ġ½" (3351) that GPT-2's regex alone would give. (transformers' GGUF loader does
    not know "smollm" and gives [3351]; llama.cpp and the original tokenizer agree with us.)
    """
    tok = tokenizer_from_gguf(smollm2.metadata)
    vocab = tok.get_vocab()
    assert tok.encode(" ½").ids == [vocab["Ġ"], vocab["Â½"]]  # "½" is bytes C2 BD -> "Â½"
    assert tok.encode(" 2024").ids == [216, 34, 32, 34, 36]  # "Ġ", "2", "0", "2", "4"


def test_smollm2_chat_template_and_special_tokens(smollm2: GGUFFile) -> None:
    template = chat_template_from_gguf(smollm2.metadata)
    assert template is not None and "<|im_start|>" in template
    assert special_tokens_from_gguf(smollm2.metadata) == {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
    }


@pytest.fixture(scope="module")
def hf_gguf_model(smollm2_gguf: Path) -> Any:
    """The reference: ``transformers`` loading the GGUF itself (its own reader and dequantizer)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )


@pytest.mark.parity
def test_smollm2_config_matches_transformers(smollm2: GGUFFile, hf_gguf_model: Any) -> None:
    reference = hf_gguf_model.config
    config = llama_config_from_gguf(smollm2.metadata, smollm2.tensors)
    assert config.pop("rope_theta") == reference.rope_parameters["rope_theta"] == 100000.0
    for field, value in config.items():
        assert getattr(reference, field) == value, field


@pytest.fixture(scope="module")
def smollm2_state_dict(smollm2: GGUFFile) -> dict[str, torch.Tensor]:
    return load_state_dict(smollm2)


@pytest.mark.parity
def test_smollm2_state_dict_matches_transformers(
    hf_gguf_model: Any, smollm2_state_dict: dict[str, torch.Tensor]
) -> None:
    reference = hf_gguf_model.state_dict()
    assert set(reference) == {*smollm2_state_dict, "lm_head.weight"}  # head tied to embedding
    for key, tensor in reference.items():
        ours = smollm2_state_dict.get(key, smollm2_state_dict["model.embed_tokens.weight"])
        assert ours.dtype == torch.float32 and torch.equal(ours, tensor), key


CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def hf_llama(smollm2: GGUFFile, smollm2_state_dict: dict[str, torch.Tensor]) -> Any:
    """``transformers.LlamaForCausalLM`` built from our config, holding our weights."""
    transformers = pytest.importorskip("transformers")
    from transformers.initialization import no_init_weights

    config = llama_config_from_gguf(smollm2.metadata, smollm2.tensors)
    with no_init_weights():  # skip the random init of 135M parameters
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    missing, unexpected = model.load_state_dict(smollm2_state_dict, strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


@pytest.mark.parity
def test_smollm2_weights_run_in_hf_llama(smollm2: GGUFFile, hf_llama: Any) -> None:
    """Config + weights + tokenizer from our reader alone drive a Llama to the right answer."""
    tok = tokenizer_from_gguf(smollm2.metadata)
    ids = torch.tensor([tok.encode(CHAT_PROMPT).ids])
    output = hf_llama.generate(ids, max_new_tokens=8, do_sample=False)  # greedy, with KV cache
    answer = tok.decode(output[0, ids.shape[1] :].tolist())
    assert answer.startswith("The capital of France is Paris"), answer


@pytest.mark.parity
def test_llama_from_gguf_matches_hf(smollm2_gguf: Path, smollm2: GGUFFile, hf_llama: Any) -> None:
    """One call loads SmolLM2 into our own Llama; its logits match transformers' Llama."""
    model = llama_from_gguf(smollm2_gguf).eval()
    tok = tokenizer_from_gguf(smollm2.metadata)
    prompt = torch.tensor([tok.encode(CHAT_PROMPT).ids])
    ids = hf_llama.generate(prompt, max_new_tokens=8, do_sample=False)  # (1, T)
    with torch.no_grad():
        logits = model(ids)  # (1, T, vocab_size)
        torch.testing.assert_close(logits, hf_llama(ids).logits, rtol=1e-5, atol=1e-4)
    # Teacher-forced greedy: at every answer position our argmax is the token HF chose.
    T0 = prompt.shape[1]
    assert torch.equal(logits[0, T0 - 1 : -1].argmax(-1), ids[0, T0:])
    assert tok.decode(ids[0, T0:].tolist()).startswith("The capital of France is Paris")


def test_load_llama_gguf_ties_head(smollm2_gguf: Path) -> None:
    config, state = load_llama_gguf(smollm2_gguf)
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in state
    assert state["model.layers.29.self_attn.k_proj.weight"].shape == (192, 576)
    assert state["model.norm.weight"].shape == (576,)
    metadata = GGUFFile(smollm2_gguf).metadata
    assert not llama_config_from_gguf(metadata, ["output.weight"])["tie_word_embeddings"]
