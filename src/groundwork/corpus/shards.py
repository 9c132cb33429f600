"""Packing token ids into flat binary shards, and reading random or sequential batches from them.

``prepare_shards`` encodes every document of every split, joins them with an end-of-text token,
and writes ``<split>.bin`` (a flat array of ``uint16`` when the vocabulary fits, else ``uint32``)
plus ``meta.json``. ``TokenShards`` memory-maps a shard (``np.memmap``: the operating system pages
in only what a batch touches) and cuts training windows from it: ``x = ids[i : i + T]``,
``y = ids[i + 1 : i + T + 1]``. The same layout as nanoGPT's ``prepare.py``/``train.py``.
``meta.json`` also records the UTF-8 bytes of each split, so that losses can be reported in
bits per byte, which does not depend on the tokenizer. Chapter 7, "Data for large models".
"""

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from groundwork.corpus.document import Document
from groundwork.corpus.fetch import sha256_file
from groundwork.errors import ConfigError, DataError, EmptyCorpusError
from groundwork.fileio import atomic_path

META = "meta.json"


def dtype_for(vocab_size: int) -> np.dtype[Any]:
    """``uint16`` if every id fits (``vocab_size <= 65536``), else ``uint32``."""
    if vocab_size < 1:
        raise ConfigError(f"vocab_size must be >= 1, got {vocab_size}")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


# --8<-- [start:prepare]
def prepare_shards(
    docs_by_split: Mapping[str, Sequence[Document]],
    encode: Callable[[str], list[int]],
    vocab_size: int,
    out_dir: str | Path,
    *,
    eot_id: int | None,
    source: str | None = None,
    tokenizer_path: str | Path | None = None,
    progress: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode documents and write one flat token shard per split, plus ``meta.json``.

    Within a split, documents are concatenated in order with ``eot_id`` between them (and after
    the last one), so a model learns where documents end: ``[d1..., eot, d2..., eot]``. Empty
    splits are skipped (no file).

    Args:
        docs_by_split: ``{"train": [...], "val": [...], "test": [...]}``.
        encode: Text to token ids (every id must be ``< vocab_size``).
        vocab_size: Vocabulary size: picks ``uint16`` or ``uint32``.
        out_dir: Output directory (created).
        eot_id: End-of-text id placed after each document, or ``None`` for plain concatenation.
        source: Name of the data source, recorded in ``meta.json``.
        tokenizer_path: Tokenizer file, recorded with its sha256.
        progress: Show a tqdm progress bar.
        extra_meta: More keys for ``meta.json`` (e.g. ``{"redact_pii": True}``).

    Returns:
        The metadata written to ``meta.json``: ``vocab_size``, ``dtype``, ``eot_id``, ``source``,
        ``tokenizer`` and per split ``tokens``, ``bytes`` (UTF-8 bytes of the text) and
        ``documents``, plus ``extra_meta``.

    Raises:
        EmptyCorpusError: No split holds any document.
        DataError: ``encode`` returned an id outside ``[0, vocab_size)``.
    """
    dtype = dtype_for(vocab_size)
    if eot_id is not None and not 0 <= eot_id < vocab_size:
        raise ConfigError(f"eot_id {eot_id} is outside the vocabulary [0, {vocab_size})")
    if not any(docs_by_split.values()):
        raise EmptyCorpusError("no documents to encode in any split")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, int]] = {}
    total = sum(len(docs) for docs in docs_by_split.values())
    bar = tqdm(total=total, desc="encoding", unit="doc", disable=not progress)
    for split, docs in docs_by_split.items():
        if not docs:
            continue
        n_tokens, n_bytes = 0, 0
        # Streamed: one document in memory at a time.
        with atomic_path(out / f"{split}.bin") as tmp, open(tmp, "wb") as f:
            for doc in docs:
                ids = np.asarray(encode(doc.text), dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                    bad = int(ids.max() if ids.max() >= vocab_size else ids.min())
                    raise DataError(
                        f"encode() returned id {bad} outside [0, {vocab_size}) for document "
                        f"{doc.id!r}; is vocab_size right?"
                    )
                if eot_id is not None:
                    ids = np.append(ids, eot_id)
                ids.astype(dtype).tofile(f)
                n_tokens += ids.size
                n_bytes += len(doc.text.encode("utf-8"))
                bar.update(1)
                bar.set_postfix(split=split, tokens=n_tokens, refresh=False)
        splits[split] = {"tokens": n_tokens, "bytes": n_bytes, "documents": len(docs)}
    bar.close()
    meta: dict[str, Any] = {
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "eot_id": eot_id,
        "source": source,
        "tokenizer": None,
        "splits": splits,
    }
    if tokenizer_path is not None:
        meta["tokenizer"] = {
            "path": str(tokenizer_path),
            "sha256": sha256_file(Path(tokenizer_path)),
        }
    meta.update(extra_meta or {})
    with atomic_path(out / META) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
    return meta


# --8<-- [end:prepare]


def prepare_source(
    source: str,
    encode: Callable[[str], list[int]],
    vocab_size: int,
    out_dir: str | Path,
    *,
    eot_id: int | None,
    tokenizer_path: str | Path | None = None,
    progress: bool = True,
    redact_pii: bool = False,
) -> dict[str, Any]:
    """:func:`prepare_shards` for every non-empty split of a data source (cleaned, deduplicated).

    What ``groundwork data prepare`` and ``groundwork pretrain`` both run. With ``redact_pii``,
    each document's PII is replaced by a placeholder (``[EMAIL]``, ...; see
    :func:`~groundwork.corpus.pii.redact`) before tokenization, after splitting and
    deduplication (so splits stay the same), and ``meta.json`` records ``"redact_pii": true``.
    """
    from groundwork.corpus.documents import load_corpus
    from groundwork.corpus.pii import redact

    splits = {s: docs for s, docs in load_corpus(source).splits.items() if docs}
    if redact_pii:
        splits = {s: [replace(d, text=redact(d.text)) for d in docs] for s, docs in splits.items()}
    return prepare_shards(
        splits,
        encode,
        vocab_size,
        out_dir,
        eot_id=eot_id,
        source=source,
        tokenizer_path=tokenizer_path,
        progress=progress,
        extra_meta={"redact_pii": True} if redact_pii else None,
    )


def read_meta(directory: str | Path) -> dict[str, Any]:
    """Read ``meta.json`` of a shard directory.

    Raises:
        DataError: It is missing or not valid JSON.
    """
    path = Path(directory) / META
    if not path.is_file():
        raise DataError(f"{path} not found; prepare the shards first (`groundwork data prepare`)")
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); prepare the shards again") from None
    return meta


# --8<-- [start:reader]
class TokenShards:
    """One split of a shard directory, memory-mapped (never loaded whole).

    Example:
        >>> shards = TokenShards("runs/demo/data", "train")  # doctest: +SKIP
        >>> x, y = shards.random_batch(8, 256, torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())  # doctest: +SKIP
        (torch.Size([8, 256]), True)
    """

    def __init__(self, directory: str | Path, split: str = "train") -> None:
        self.directory = Path(directory)
        self.split = split
        self.meta = read_meta(self.directory)
        path = self.directory / f"{split}.bin"
        if not path.is_file():
            have = sorted(self.meta.get("splits", {}))
            raise DataError(f"{path} not found; this directory has splits {have}")
        dtype = np.dtype(self.meta["dtype"])
        if path.stat().st_size % dtype.itemsize:
            raise DataError(f"{path} is truncated (size not a multiple of {dtype.itemsize})")
        if path.stat().st_size == 0:
            raise EmptyCorpusError(f"{path} holds no tokens")
        self.tokens = np.memmap(path, dtype=dtype, mode="r")  # (N,)
        expected = self.meta.get("splits", {}).get(split, {}).get("tokens")
        if expected is not None and expected != len(self.tokens):
            raise DataError(
                f"{path} holds {len(self.tokens)} tokens but meta.json says {expected}; "
                "prepare the shards again"
            )

    def __len__(self) -> int:
        """Number of tokens in the split."""
        return len(self.tokens)

    @property
    def bytes(self) -> int | None:
        """UTF-8 bytes of the text behind this split (for bits per byte), if recorded."""
        n = self.meta.get("splits", {}).get(self.split, {}).get("bytes")
        return None if n is None else int(n)

    def _check(self, batch_size: int, seq_len: int) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ConfigError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        if seq_len + 1 > len(self.tokens):
            raise ConfigError(
                f"seq_len {seq_len} needs {seq_len + 1} tokens but the {self.split!r} split has "
                f"only {len(self.tokens)}; use a shorter seq_len or more data"
            )

    def _window(self, starts: Sequence[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([self.tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        chunk = torch.from_numpy(rows)  # (B, T + 1)
        return chunk[:, :-1], chunk[:, 1:]  # x, y: (B, T) each; y is x shifted left by one

    def random_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` windows at uniformly random offsets: ``(x, y)``, int64, (B, T) each."""
        self._check(batch_size, seq_len)
        high = len(self.tokens) - seq_len  # last valid start + 1
        starts = torch.randint(high, (batch_size,), generator=generator).tolist()
        return self._window(starts, seq_len)

    def sequential_batches(
        self, batch_size: int, seq_len: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows covering the split once in order (for evaluation).

        Window ``k`` starts at ``k * seq_len``, so every token except the very first is predicted
        exactly once; the last batch may hold fewer rows, and a final window shorter than
        ``seq_len`` is dropped.
        """
        self._check(1, seq_len)
        n_windows = (len(self.tokens) - 1) // seq_len
        for first in range(0, n_windows, batch_size):
            ks = range(first, min(first + batch_size, n_windows))
            yield self._window([k * seq_len for k in ks], seq_len)


# --8<-- [end:reader]
