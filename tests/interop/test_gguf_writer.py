"""Tests of the GGUF writer: Q8_0/Q4_0 quantizers, the container, and Llama export.

References: ``gguf`` (gguf-py from llama.cpp: its reference quantizers, ``GGUFWriter`` and
``GGUFReader``), our own reader (:mod:`groundwork.interop.gguf`) and ``transformers``' GGUF loader.
"""

import dataclasses
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import helpers
from groundwork import tokenize
from groundwork.errors import ConfigError, TokenizerError
from groundwork.interop.gguf import (
    GGUFFile,
    GGUFValueType,
    dequantize,
    dequantize_q4_0,
    dequantize_q8_0,
    hf_llama_name,
    llama_config_from_gguf,
    llama_from_gguf,
    load_state_dict,
    unpermute_rotary,
)
from groundwork.interop.gguf_tokenizer import tokenizer_from_gguf
from groundwork.interop.gguf_writer import (
    GGUFWriter,
    export_llama_gguf,
    gguf_llama_name,
    permute_rotary,
    quantize_q4_0,
    quantize_q8_0,
)
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.tokenize.wrapped import HFTokenizer

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
V = GGUFValueType

TEXTS = ["the quick brown fox jumps over the lazy dog, 12345 times!", "héllo wörld 😀 x² ½"] * 4


# ---------------------------------------------------------------------------------------------
# Quantizers: byte-equal ggml's reference (gguf.quants)
# ---------------------------------------------------------------------------------------------


def _edge_blocks() -> np.ndarray:
    """Blocks that test the corners of the rounding and of the choice of the scale."""
    rows = [
        np.zeros(32),  # all zero: d = 0, every q = 0 (Q4_0: q = 8)
        -np.arange(32.0),  # the largest magnitude is negative
        np.arange(32.0) - 15.5,  # -15.5 is the largest magnitude, and halves everywhere
        np.r_[127.0, np.arange(31) + 0.5],  # Q8_0: d = 1, x/d = k + 0.5, round away from 0
        np.r_[-127.0, -(np.arange(31) + 0.5)],
        np.r_[3.0, -3.0, np.zeros(30)],  # a tie in magnitude: the first one sets the sign
        np.r_[-3.0, 3.0, np.zeros(30)],
        np.r_[1e-3, np.zeros(31)],  # one nonzero value
        np.full(32, 7.0),  # constant
        np.r_[-8.0, np.arange(31) / 2 - 7.5],  # Q4_0: x/d + 8.5 lands on integers
        np.r_[60000.0 * 8, np.ones(31)],  # Q4_0's d near fp16's largest value
        np.r_[1e-6, -1e-7, np.zeros(30)],  # d below fp16's smallest normal (subnormal scale)
    ]
    return np.array(rows, dtype=np.float32)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("ours", "qtype"), [(quantize_q8_0, Q.Q8_0), (quantize_q4_0, Q.Q4_0)], ids=["q8_0", "q4_0"]
)
def test_quantizers_byte_equal_gguf(ours: Any, qtype: Any) -> None:
    rng = np.random.default_rng(0)
    arrays = [_edge_blocks(), _edge_blocks().reshape(3, 128)]
    arrays += [(rng.standard_normal((17, 96)) * s).astype(np.float32) for s in (1e-4, 1, 1e3)]
    arrays += [(rng.integers(-16, 17, (40, 64)) / 2).astype(np.float32)]  # many exact halves
    arrays += [rng.standard_normal((2, 3, 64)).astype(np.float32), np.ones(32, np.float32)]
    for x in arrays:
        expected = gguf.quants.quantize(x, qtype)
        got = ours(x)
        assert got.dtype == np.uint8 and got.shape == expected.shape
        assert np.array_equal(got, expected), x.shape
        # and our reader's dequantizer undoes it as gguf's does
        assert np.array_equal(
            dequantize(got.ravel(), int(qtype)), gguf.quants.dequantize(expected, qtype).ravel()
        )


def test_q8_0_block_by_hand() -> None:
    x = np.r_[-254.0, 1.0, 1.5, -2.5, 0.0, np.zeros(27)].astype(np.float32)  # d = 254/127 = 2
    block = quantize_q8_0(x)
    assert block.shape == (34,)
    assert block[:2].view(np.float16)[0] == 2.0
    assert block[2:7].view(np.int8).tolist() == [-127, 1, 1, -1, 0]  # 0.5, 0.75, -1.25 round
    assert dequantize_q8_0(block)[:4].tolist() == [-254.0, 2.0, 2.0, -2.0]


def test_q4_0_block_by_hand() -> None:
    """The docstring's example: the largest magnitude is -2.0, so d = -2.0 / -8 = 0.25."""
    x = np.zeros(32, dtype=np.float32)
    x[[0, 1, 2, 16]] = [-2.0, 0.3, 1.9, 1.0]
    block = quantize_q4_0(x)
    assert block.shape == (18,)
    assert block[:2].view(np.float16)[0] == 0.25
    qs = block[2:]
    # element j in the low nibble of byte j, element j + 16 in its high nibble
    assert qs[0] == 0 | 12 << 4  # q[0] = trunc(-8 + 8.5) = 0; q[16] = trunc(4 + 8.5) = 12
    assert qs[1] == 9 | 8 << 4  # q[1] = trunc(1.2 + 8.5) = 9; q[17] = 8 (zero)
    assert qs[2] == 15 | 8 << 4  # q[2] = min(15, trunc(7.6 + 8.5)) = 15
    assert dequantize_q4_0(block)[[0, 1, 2, 16]].tolist() == [-2.0, 0.25, 1.75, 1.0]


def test_quantizers_reject_bad_input() -> None:
    for quantize in (quantize_q8_0, quantize_q4_0):
        with pytest.raises(ConfigError, match="multiple of the block size 32"):
            quantize(np.ones((4, 48), dtype=np.float32))
        with pytest.raises(ConfigError, match="multiple of the block size"):
            quantize(np.float32(1.0))
        with pytest.raises(ConfigError, match="NaN or infinite"):
            quantize(np.r_[np.nan, np.zeros(31)])
        with pytest.raises(ConfigError, match="exceeds fp16's 65504"):
            quantize(np.r_[1e10, np.zeros(31)])


# ---------------------------------------------------------------------------------------------
# The container
# ---------------------------------------------------------------------------------------------

METADATA: list[tuple[str, Any, GGUFValueType, GGUFValueType | None]] = [
    ("general.architecture", "llama", V.STRING, None),
    ("test.u8", 250, V.UINT8, None),
    ("test.i8", -7, V.INT8, None),
    ("test.u16", 65000, V.UINT16, None),
    ("test.i16", -30000, V.INT16, None),
    ("test.u32", 4_000_000_000, V.UINT32, None),
    ("test.i32", -2_000_000_000, V.INT32, None),
    ("test.f32", 0.5, V.FLOAT32, None),
    ("test.u64", 2**63 + 5, V.UINT64, None),
    ("test.i64", -(2**62), V.INT64, None),
    ("test.f64", 1e-300, V.FLOAT64, None),
    ("test.bool", True, V.BOOL, None),
    ("test.string", "héllo, wörld ✓", V.STRING, None),
    ("test.ints", [1, 2, 3, -4], V.ARRAY, V.INT32),
    ("test.u32s", [1, 2, 4_000_000_000], V.ARRAY, V.UINT32),
    ("test.floats", [0.25, -1.5], V.ARRAY, V.FLOAT32),
    ("test.bools", [True, False, True], V.ARRAY, V.BOOL),
    ("test.strings", ["<|im_start|>", "Ġthe", ""], V.ARRAY, V.STRING),
    ("test.nested", [["a", "b"], ["c"]], V.ARRAY, V.ARRAY),
]


def _tensors() -> dict[str, tuple[np.ndarray, str]]:
    rng = np.random.default_rng(1)
    return {
        "f32": (rng.standard_normal((3, 64)).astype(np.float32), "F32"),
        "vector": (rng.standard_normal(5).astype(np.float32), "F32"),
        "f16": (rng.standard_normal((2, 7)).astype(np.float32), "F16"),
        "q8_0": (rng.standard_normal((4, 64)).astype(np.float32), "Q8_0"),
        "q4_0": (rng.standard_normal((2, 3, 96)).astype(np.float32), "Q4_0"),
    }


def _ours(path: Path, alignment: int = 32) -> Path:
    writer = GGUFWriter()
    for key, value, value_type, element_type in METADATA:
        writer.add(key, value, value_type, element_type)
        if key == "general.architecture" and alignment != 32:
            writer.add("general.alignment", alignment, V.UINT32)  # where gguf-py puts it
    for name, (array, ggml_type) in _tensors().items():
        writer.add_tensor(name, array, ggml_type)
    return writer.write(path)


def _reference(path: Path, alignment: int = 32) -> Path:
    """The same file written by gguf-py's writer and quantizers."""
    writer = gguf.GGUFWriter(path, "llama")
    if alignment != 32:
        writer.add_custom_alignment(alignment)
    for key, value, value_type, element_type in METADATA[1:]:  # it adds the architecture itself
        writer.add_key_value(key, value, value_type, sub_type=element_type)
    for name, (array, ggml_type) in _tensors().items():
        qtype = Q[ggml_type]
        writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parity
@pytest.mark.parametrize("alignment", [32, 64])
def test_container_byte_equal_gguf_writer(tmp_path: Path, alignment: int) -> None:
    ours = _ours(tmp_path / "ours.gguf", alignment)
    reference = _reference(tmp_path / "reference.gguf", alignment)
    assert ours.read_bytes() == reference.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] != []  # no temporary file left beside it
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parity
def test_container_read_by_gguf_reader(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(_ours(tmp_path / "ours.gguf"))
    for key, value, value_type, element_type in METADATA:
        field = reader.fields[key]
        assert field.types[0] == value_type, key
        if element_type is not None and element_type != V.ARRAY:
            assert field.types[1] == element_type, key
            assert field.contents() == value, key
        elif element_type is None:
            assert field.contents() == value, key
    for t in reader.tensors:
        array, ggml_type = _tensors()[t.name]
        assert t.tensor_type == Q[ggml_type]
        assert tuple(int(d) for d in t.shape) == tuple(reversed(array.shape))
        expected = gguf.quants.quantize(array, Q[ggml_type])
        assert np.array_equal(
            np.asarray(t.data).ravel().view(np.uint8), expected.view(np.uint8).ravel()
        )


def test_container_read_by_our_reader(tmp_path: Path) -> None:
    f = GGUFFile(_ours(tmp_path / "ours.gguf", alignment=64))
    assert f.version == 3 and f.alignment == 64 and f.data_offset % 64 == 0
    expected = {key: value for key, value, _, _ in METADATA} | {"general.alignment": 64}
    assert f.metadata == expected
    assert {k: f.value_types[k] for k, _, _, _ in METADATA} == {k: t for k, _, t, _ in METADATA}
    for name, (array, ggml_type) in _tensors().items():
        assert f.tensors[name].type_name == ggml_type and f.tensors[name].shape == array.shape
        expected_values = gguf.quants.dequantize(
            gguf.quants.quantize(array, Q[ggml_type]), Q[ggml_type]
        )
        assert np.array_equal(f.dequantize(name), expected_values.astype(np.float32)), name


def test_writer_bad_input(tmp_path: Path) -> None:
    writer = GGUFWriter()
    with pytest.raises(ConfigError, match="power of two"):
        writer.add("general.alignment", 12, V.UINT32)
    with pytest.raises(ConfigError, match="power of two"):
        writer.add("general.alignment", 64)  # an INT32
    with pytest.raises(ConfigError, match="does not fit in a GGUF UINT32"):
        writer.add("x", -1, V.UINT32)
    with pytest.raises(ConfigError, match="must be a number"):
        writer.add("x", "ten", V.UINT32)
    with pytest.raises(ConfigError, match="must be a number"):
        writer.add("x", 1.5, V.INT32)
    with pytest.raises(ConfigError, match="must be a str"):
        writer.add("x", 3, V.STRING)
    with pytest.raises(ConfigError, match="empty GGUF array"):
        writer.add("x", [])
    with pytest.raises(ConfigError, match="cannot store a dict"):
        writer.add("x", {"a": 1})
    with pytest.raises(ConfigError, match="does not fit in a GGUF INT8"):
        writer.add("x", [1, 300], V.ARRAY, V.INT8)
    assert writer.metadata == {}  # nothing half-added
    writer.add("x", [], V.ARRAY, V.STRING)  # an empty array with its type is fine
    writer.add_tensor("t", np.ones((2, 32), np.float32), "Q8_0")
    with pytest.raises(ConfigError, match="already added"):
        writer.add_tensor("t", np.ones(3, np.float32))
    with pytest.raises(ConfigError, match="writable: F32, F16, Q8_0, Q4_0"):
        writer.add_tensor("u", np.ones(32, np.float32), "Q4_1")
    with pytest.raises(ConfigError, match="multiple of the block size"):
        writer.add_tensor("u", np.ones((2, 33), np.float32), "Q4_0")
    with pytest.raises(ConfigError, match="is a directory"):
        writer.write(tmp_path)
    assert GGUFFile(writer.write(tmp_path / "sub" / "ok.gguf")).metadata == {"x": []}


# ---------------------------------------------------------------------------------------------
# Llama: names, Q/K permutation
# ---------------------------------------------------------------------------------------------


def test_names_invert_hf_llama_name() -> None:
    model = Llama(LlamaConfig.from_name("tiny", tie_embeddings=False))
    for hf_name in model.state_dict():
        assert hf_llama_name(gguf_llama_name(hf_name)) == hf_name
    assert gguf_llama_name("model.layers.1.self_attn.o_proj.weight") == "blk.1.attn_output.weight"
    assert gguf_llama_name("lm_head.weight") == "output.weight"
    with pytest.raises(ConfigError, match=r"no llama\.cpp name"):
        gguf_llama_name("model.layers.0.mlp.fc.weight")
    with pytest.raises(ConfigError, match=r"no llama\.cpp name"):
        gguf_llama_name("transformer.h.0.attn.c_attn.weight")


def test_permute_one_head_by_hand() -> None:
    hf_rows = np.array([[0.0], [1.0], [10.0], [11.0]])  # halves a = (0, 1), b = (10, 11)
    assert permute_rotary(hf_rows, n_heads=1).ravel().tolist() == [0.0, 10.0, 1.0, 11.0]


def test_permute_is_the_inverse_of_unpermute() -> None:
    w = np.random.default_rng(0).standard_normal((3 * 8, 5))  # 3 heads of 8
    assert np.array_equal(unpermute_rotary(permute_rotary(w, 3), 3), w)
    assert np.array_equal(permute_rotary(unpermute_rotary(w, 3), 3), w)


# ---------------------------------------------------------------------------------------------
# Llama export: round trips
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe() -> tokenize.ByteLevelBPE:
    return tokenize.train_tokenizer("bpe", TEXTS, 300)


def _expected_state(model: Llama, types: dict[str, str]) -> dict[str, torch.Tensor]:
    """The model's weights as the file should give them back: quantized then dequantized."""
    out = {}
    for hf_name, tensor in model.state_dict().items():
        name = gguf_llama_name(hf_name)
        if name not in types:
            continue  # the tied head
        w = tensor.float().numpy()
        stored = {
            "F32": lambda a: a,
            "F16": lambda a: a.astype(np.float16).astype(np.float32),
            "Q8_0": lambda a: dequantize_q8_0(quantize_q8_0(a)).reshape(a.shape),
            "Q4_0": lambda a: dequantize_q4_0(quantize_q4_0(a)).reshape(a.shape),
        }[types[name]](w)
        out[hf_name] = torch.from_numpy(stored)
    return out


def _logits(model: torch.nn.Module, vocab_size: int) -> torch.Tensor:
    idx = torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(idx)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_embeddings": False}, {"d_head": 32, "d_ff": 96}],
    ids=["tied", "untied", "wide-heads"],
)
def test_f32_round_trip_gives_identical_logits(
    tmp_path: Path, bpe: tokenize.ByteLevelBPE, overrides: dict[str, Any]
) -> None:
    model = helpers.tiny_llama(vocab_size=320, **overrides)
    types = export_llama_gguf(model, bpe, tmp_path / "m.gguf", "f32")
    assert set(types.values()) == {"F32"}
    assert ("output.weight" in types) == (not model.config.tie_embeddings)
    back = llama_from_gguf(tmp_path / "m.gguf").eval()
    assert back.config.rms_norm_eps == pytest.approx(model.config.rms_norm_eps)  # a FLOAT32
    assert dataclasses.replace(back.config, rms_norm_eps=model.config.rms_norm_eps) == model.config
    torch.testing.assert_close(_logits(back, 320), _logits(model, 320), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("tied", [True, False])
def test_quantized_round_trip_gives_dequantize_of_quantize(
    tmp_path: Path, bpe: tokenize.ByteLevelBPE, qtype: Any, tied: bool
) -> None:
    model = helpers.tiny_llama(vocab_size=320, tie_embeddings=tied)  # d_ff 172: not blocks
    types = export_llama_gguf(model, bpe, tmp_path / "m.gguf", qtype)
    f = GGUFFile(tmp_path / "m.gguf")
    assert {n: i.type_name for n, i in f.tensors.items()} == types
    assert f.metadata["general.file_type"] == {"f16": 1, "q8_0": 7, "q4_0": 2}[qtype]
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"
    assert types["blk.1.ffn_down.weight"] == "F16"  # rows of 172: falls back, like llama.cpp
    main = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[qtype]
    assert types["blk.1.attn_q.weight"] == types["blk.0.ffn_up.weight"] == main
    logits_matrix = "token_embd.weight" if tied else "output.weight"
    assert types[logits_matrix] == ("Q8_0" if qtype == "q4_0" else main)
    if not tied:
        assert types["token_embd.weight"] == main
    state = load_state_dict(f)
    expected = _expected_state(model, types)
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_metadata_for_llama_cpp(tmp_path: Path, bpe: tokenize.ByteLevelBPE) -> None:
    model = helpers.tiny_llama(vocab_size=320)
    export_llama_gguf(
        model, bpe, tmp_path / "m.gguf", "q8_0", "{{ messages }}", name="tiny", bos_token_id=0
    )
    f = GGUFFile(tmp_path / "m.gguf")
    m, types = f.metadata, f.value_types
    assert m["general.architecture"] == "llama" and m["general.name"] == "tiny"
    c = model.config
    for key, value in {
        "vocab_size": 320,
        "context_length": c.max_seq_len,
        "embedding_length": c.d_model,
        "block_count": c.n_layers,
        "feed_forward_length": c.d_ff,
        "rope.dimension_count": c.d_head,
        "attention.head_count": c.n_heads,
        "attention.head_count_kv": c.n_kv_heads,
    }.items():
        assert m[f"llama.{key}"] == value and types[f"llama.{key}"] == V.UINT32, key
    assert m["llama.rope.freq_base"] == c.rope_theta
    assert m["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(c.rms_norm_eps)
    assert types["llama.attention.layer_norm_rms_epsilon"] == V.FLOAT32
    assert "llama.attention.key_length" not in m  # heads are d_model / n_heads wide
    assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "gpt-2"
    assert m["tokenizer.ggml.eos_token_id"] == m["tokenizer.ggml.bos_token_id"] == bpe.eot_id
    assert types["tokenizer.ggml.eos_token_id"] == V.UINT32
    assert m["tokenizer.ggml.add_bos_token"] is False
    assert m["tokenizer.chat_template"] == "{{ messages }}"
    tokens = m["tokenizer.ggml.tokens"]
    assert len(tokens) == len(m["tokenizer.ggml.token_type"]) == 320
    assert tokens[: bpe.vocab_size] == [bpe.id_to_token(i) for i in range(bpe.vocab_size)]
    assert tokens[bpe.vocab_size :] == [f"[PAD{i}]" for i in range(bpe.vocab_size, 320)]
    token_types = m["tokenizer.ggml.token_type"]
    assert token_types[bpe.eot_id] == 3  # control
    assert set(token_types[bpe.vocab_size :]) == {5}  # unused
    assert m["tokenizer.ggml.merges"] == [f"{a} {b}" for a, b in bpe.merges]
    config = llama_config_from_gguf(m, f.tensors)
    assert config["tie_word_embeddings"] is True and config["bos_token_id"] == bpe.eot_id


def test_tokenizer_round_trip(tmp_path: Path, bpe: tokenize.ByteLevelBPE) -> None:
    """The tokenizer our reader rebuilds from the file encodes like the one exported."""
    export_llama_gguf(helpers.tiny_llama(vocab_size=320), bpe, tmp_path / "m.gguf")
    back = tokenizer_from_gguf(GGUFFile(tmp_path / "m.gguf").metadata)
    for text in [*TEXTS, "<|endoftext|>new doc 42", "  spaces\n\ttabs"]:
        assert back.encode(text).ids == bpe.encode(text), text


def test_smollm_style_tokenizer_is_named_smollm(tmp_path: Path, bpe: tokenize.ByteLevelBPE) -> None:
    """A Digits + ByteLevel pre-tokenizer (SmolLM2's) is llama.cpp's "smollm"."""
    data = bpe.to_json_dict()
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            data["pre_tokenizer"],
        ],
    }
    wrapped = HFTokenizer.from_json_dict(data)
    export_llama_gguf(helpers.tiny_llama(vocab_size=320), wrapped, tmp_path / "m.gguf")
    metadata = GGUFFile(tmp_path / "m.gguf").metadata
    assert metadata["tokenizer.ggml.pre"] == "smollm"
    back = tokenizer_from_gguf(metadata)
    for text in [*TEXTS, "2024 was 12345"]:
        assert back.encode(text).ids == wrapped.encode(text), text


# ---------------------------------------------------------------------------------------------
# transformers loads our files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize(
    ("qtype", "overrides"),
    [("f32", {}), ("q8_0", {}), ("q4_0", {}), ("f32", {"tie_embeddings": False, "d_head": 32})],
    ids=["f32", "q8_0", "q4_0", "f32-untied-wide-heads"],
)
def test_transformers_loads_our_gguf(
    tmp_path: Path, bpe: tokenize.ByteLevelBPE, qtype: Any, overrides: dict[str, Any]
) -> None:
    """``from_pretrained(dir, gguf_file=...)``: its own reader, dequantizer and Q/K unpermute
    give the model ours gives, logits equal to our model holding the dequantized weights."""
    transformers = pytest.importorskip("transformers")
    model = helpers.tiny_llama(vocab_size=320, d_ff=192, **overrides)
    export_llama_gguf(model, bpe, tmp_path / "m.gguf", qtype)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32
    ).eval()
    ours = llama_from_gguf(tmp_path / "m.gguf").eval()
    assert hf.config.tie_word_embeddings is model.config.tie_embeddings
    assert hf.config.head_dim == model.config.d_head
    torch.testing.assert_close(_logits(hf, 320), _logits(ours, 320), rtol=1e-5, atol=1e-5)
    if qtype == "f32":
        torch.testing.assert_close(_logits(hf, 320), _logits(model, 320), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_export_bad_input(tmp_path: Path, bpe: tokenize.ByteLevelBPE) -> None:
    model = helpers.tiny_llama(vocab_size=320)
    path = tmp_path / "m.gguf"
    with pytest.raises(ConfigError, match=r"unknown GGUF qtype 'q4_1'.*f32, f16, q4_0, q8_0"):
        export_llama_gguf(model, bpe, path, "q4_1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Llama-architecture models; got a GPT"):
        export_llama_gguf(helpers.tiny_gpt(vocab_size=320), bpe, path)
    with pytest.raises(ConfigError, match="only 100"):
        export_llama_gguf(helpers.tiny_llama(vocab_size=100), bpe, path)
    scaled = helpers.tiny_llama(vocab_size=320, rope_scaling={"kind": "linear", "factor": 2.0})
    with pytest.raises(ConfigError, match="RoPE scaling"):
        export_llama_gguf(scaled, bpe, path)
    chars = tokenize.train_tokenizer("char", TEXTS, 64)
    with pytest.raises(TokenizerError, match="byte-level BPE"):
        export_llama_gguf(model, chars, path)
    data = bpe.to_json_dict()
    data["pre_tokenizer"] = {"type": "Whitespace"}
    odd = HFTokenizer.from_json_dict(data)
    with pytest.raises(TokenizerError, match="tokenizer_pre="):
        export_llama_gguf(model, odd, path)
    with pytest.raises(ConfigError, match="is a directory"):
        export_llama_gguf(model, bpe, tmp_path)
    assert not path.exists()  # nothing written by any of these
    export_llama_gguf(model, odd, path, tokenizer_pre="gpt-2")  # told which: written
    assert GGUFFile(path).metadata["tokenizer.ggml.pre"] == "gpt-2"


def test_export_keeps_a_failed_write_from_touching_the_old_file(
    tmp_path: Path, bpe: tokenize.ByteLevelBPE, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.gguf"
    model = helpers.tiny_llama(vocab_size=320)
    export_llama_gguf(model, bpe, path, "f32")
    before = path.read_bytes()

    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(GGUFWriter, "_padding", fail)
    with pytest.raises(OSError, match="disk full"):
        export_llama_gguf(model, bpe, path, "q4_0")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    assert struct.unpack("<I", before[4:8]) == (3,)
