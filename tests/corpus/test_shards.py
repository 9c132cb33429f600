"""Tests for groundwork.corpus.shards: writing token shards and reading batches from them.

The "tokenizer" here is UTF-8 bytes (ids 0-255, end of text 256): no tokenizer package needed.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from groundwork.corpus import Document, TokenShards, prepare_shards
from groundwork.errors import ConfigError, DataError, EmptyCorpusError

EOT = 256


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def make(tmp_path: Path, **kwargs) -> tuple[Path, dict]:
    splits = {
        "train": [Document("a", "hello", "t"), Document("b", "wörld", "t")],
        "val": [Document("c", "val text", "t")],
        "test": [],
    }
    out = tmp_path / "shards"
    meta = prepare_shards(
        splits, encode, 257, out, eot_id=EOT, source="toy", progress=False, **kwargs
    )
    return out, meta


def test_prepare_writes_flat_uint16_with_eot_and_meta(tmp_path: Path) -> None:
    out, meta = make(tmp_path)
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    expected = [*b"hello", EOT, *"wörld".encode(), EOT]
    assert train.tolist() == expected
    assert not (out / "test.bin").exists()
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 257 and meta["eot_id"] == EOT
    assert meta["splits"]["train"] == {"tokens": 13, "bytes": 11, "documents": 2}
    assert meta["splits"]["val"] == {"tokens": 9, "bytes": 8, "documents": 1}
    assert meta["source"] == "toy"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_uint32_for_large_vocabularies_and_no_eot(tmp_path: Path) -> None:
    def big(text: str) -> list[int]:
        return [70000 + b for b in text.encode()]

    meta = prepare_shards(
        {"train": [Document("a", "hi", "t")]}, big, 100000, tmp_path, eot_id=None, progress=False
    )
    assert meta["dtype"] == "uint32"
    assert np.fromfile(tmp_path / "train.bin", dtype=np.uint32).tolist() == [70104, 70105]


def test_tokenizer_path_recorded_with_sha256(tmp_path: Path) -> None:
    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    _, meta = make(tmp_path, tokenizer_path=tok)
    assert meta["tokenizer"]["path"] == str(tok)
    assert len(meta["tokenizer"]["sha256"]) == 64


def test_prepare_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(EmptyCorpusError):
        prepare_shards({"train": []}, encode, 257, tmp_path, eot_id=EOT, progress=False)
    with pytest.raises(DataError, match="outside"):
        prepare_shards(
            {"train": [Document("a", "ÿ", "t")]}, encode, 100, tmp_path, eot_id=None, progress=False
        )
    with pytest.raises(ConfigError):
        prepare_shards(
            {"train": [Document("a", "x", "t")]}, encode, 257, tmp_path, eot_id=999, progress=False
        )
    assert list(tmp_path.iterdir()) == []  # a failed write leaves no file, not even a temp one


def test_random_batch_shapes_shift_and_determinism(tmp_path: Path) -> None:
    out, _ = make(tmp_path)
    shards = TokenShards(out, "train")
    assert len(shards) == 13
    assert isinstance(shards.tokens, np.memmap)
    x, y = shards.random_batch(4, 5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 5) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    data = torch.from_numpy(np.fromfile(out / "train.bin", dtype=np.uint16).astype(np.int64))
    for row_x, row_y in zip(x, y, strict=True):
        starts = [i for i in range(len(data) - 5) if torch.equal(data[i : i + 5], row_x)]
        assert starts and torch.equal(data[starts[0] + 1 : starts[0] + 6], row_y)
    x2, _ = shards.random_batch(4, 5, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_sequential_batches_cover_split_once(tmp_path: Path) -> None:
    out, _ = make(tmp_path)
    shards = TokenShards(out, "train")  # 13 tokens
    batches = list(shards.sequential_batches(batch_size=2, seq_len=3))
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3), (2, 3)]  # 4 windows of 3
    ys = torch.cat([y.reshape(-1) for _, y in batches])
    data = np.fromfile(out / "train.bin", dtype=np.uint16).astype(np.int64)
    assert ys.tolist() == data[1:13].tolist()  # every target once, in order


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"meta\.json"):
        TokenShards(tmp_path, "train")
    out, _ = make(tmp_path)
    with pytest.raises(DataError, match=r"test\.bin"):
        TokenShards(out, "test")
    shards = TokenShards(out, "val")  # 9 tokens
    with pytest.raises(ConfigError, match="seq_len"):
        shards.random_batch(1, 9)
    with pytest.raises(ConfigError, match="seq_len"):
        next(shards.sequential_batches(1, 50))
    (out / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        TokenShards(out, "train")


def test_reader_detects_truncated_shard(tmp_path: Path) -> None:
    out, _ = make(tmp_path)
    data = (out / "train.bin").read_bytes()
    (out / "train.bin").write_bytes(data[:-1])
    with pytest.raises(DataError, match="truncated"):
        TokenShards(out, "train")
    (out / "train.bin").write_bytes(data[:-2])
    with pytest.raises(DataError, match=r"meta\.json says"):
        TokenShards(out, "train")


def test_bytes_recorded_for_bits_per_byte(tmp_path: Path) -> None:
    out, _ = make(tmp_path)
    assert TokenShards(out, "val").bytes == len(b"val text")


def test_shakespeare_val_as_bytes(shakespeare_docs: list[Document], tmp_path: Path) -> None:
    """With a byte-level "tokenizer", tokens = bytes + one end-of-text per document."""
    from groundwork.corpus import load_documents

    val = load_documents("shakespeare", split="val")
    meta = prepare_shards({"val": val}, encode, 257, tmp_path, eot_id=EOT, progress=False)
    split = meta["splits"]["val"]
    assert split["tokens"] == split["bytes"] + split["documents"]
    shards = TokenShards(tmp_path, "val")
    x, y = shards.random_batch(2, 64, torch.Generator().manual_seed(0))
    assert int(x.max()) <= EOT and int(y.max()) <= EOT
