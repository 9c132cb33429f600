"""Loading a source as clean, deduplicated, split documents (or labelled examples).

``load_documents("shakespeare", split="val")`` fetches the source if needed, parses it into
:class:`~groundwork.corpus.document.Document` objects (already normalised), drops empty documents,
removes exact and then near duplicates over the *whole* corpus (so no copy can sit on both sides
of a split) and returns the requested split. Chapter 7, "Data for large models".
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groundwork.corpus.clean import read_text_file
from groundwork.corpus.dedup import Duplicate, exact_dedup, minhash_dedup
from groundwork.corpus.document import Document
from groundwork.corpus.fetch import fetch, read_manifest
from groundwork.corpus.sources import get_source
from groundwork.corpus.splits import DEFAULT_FRACTIONS, SPLITS, split_documents
from groundwork.errors import ConfigError, DataError, EmptyCorpusError

SplitName = Literal["train", "val", "test", "all"]


@dataclass
class Corpus:
    """A cleaned corpus: its documents by split and what cleaning removed.

    Attributes:
        name: Source name.
        splits: ``{"train": [...], "val": [...], "test": [...]}``.
        exact_duplicates: Documents removed as exact copies.
        near_duplicates: Documents removed as near copies (MinHash).
        empty: Number of documents dropped because they were empty after cleaning.
    """

    name: str
    splits: dict[str, list[Document]]
    exact_duplicates: list[Duplicate] = field(default_factory=list)
    near_duplicates: list[Duplicate] = field(default_factory=list)
    empty: int = 0

    def documents(self, split: SplitName = "all") -> list[Document]:
        """The documents of one split, or of all splits in train, val, test order."""
        if split == "all":
            return [d for s in SPLITS for d in self.splits[s]]
        if split not in self.splits:
            raise ConfigError(f"unknown split {split!r}; choose one of train, val, test, all")
        return list(self.splits[split])


_CACHE: dict[tuple[Any, ...], Corpus] = {}


def clean_corpus(
    name: str,
    docs: Sequence[Document],
    *,
    dedup: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    threshold: float = 0.8,
) -> Corpus:
    """Drop empty documents, deduplicate (exact, then MinHash) and split.

    Raises:
        EmptyCorpusError: No document has any text.
    """
    nonempty = [d for d in docs if d.text.strip()]
    if not nonempty:
        raise EmptyCorpusError(f"corpus {name!r} has no text (0 non-empty documents)")
    exact: list[Duplicate] = []
    near: list[Duplicate] = []
    if dedup:
        nonempty, exact = exact_dedup(nonempty)
        nonempty, near = minhash_dedup(nonempty, threshold=threshold)
    return Corpus(
        name=name,
        splits={s: list(d) for s, d in split_documents(nonempty, fractions).items()},
        exact_duplicates=exact,
        near_duplicates=near,
        empty=len(docs) - len([d for d in docs if d.text.strip()]),
    )


def _a_kind(kind: str) -> str:
    """``"a text"``, ``"an images"``: the kind with its article."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _files_hint(name: str, kind: str) -> str:
    """Where to go instead for a source that holds neither documents nor examples."""
    if kind == "images":
        return f"use groundwork.corpus.images.load_{name}() (chapter 20)"
    return "use fetch() for its files"


def load_corpus(
    name: str,
    *,
    dedup: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    home: Path | None = None,
) -> Corpus:
    """Fetch (if needed), parse, clean and split a text source; cached within the process."""
    source = get_source(name)
    if source.documents is None:
        raise DataError(
            f"source {name!r} is {_a_kind(source.kind)} source, not text; "
            + ("use load_examples()" if source.examples else _files_hint(name, source.kind))
        )
    directory = fetch(name, home=home)
    manifest = read_manifest(name, home=home) or {}
    key = (str(directory), manifest.get("fetched_at"), dedup, tuple(fractions))
    if key not in _CACHE:
        _CACHE[key] = clean_corpus(
            name, source.documents(directory), dedup=dedup, fractions=fractions
        )
    return _CACHE[key]


def load_documents(
    name: str,
    *,
    split: SplitName = "all",
    dedup: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    home: Path | None = None,
) -> list[Document]:
    """The clean documents of a text source (fetched on first use).

    Args:
        name: A ``text`` source: ``shakespeare``, ``shakespeare-folio``, ``milton``,
            ``wiki-sample``, ``austen``, ``kjv``, ``fortunes``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        dedup: Remove exact and near duplicates (over the whole corpus, before splitting).
        fractions: ``(train, val, test)`` fractions; see :mod:`groundwork.corpus.splits`.
        home: Cache directory; default :func:`~groundwork.corpus.fetch.home`.

    Returns:
        Documents in a stable order (input order within each split).

    Raises:
        UnknownNameError: No such source.
        DataError: The source is not a text source.
        EmptyCorpusError: The source holds no text.

    Example:
        >>> val = load_documents("shakespeare", split="val")  # doctest: +SKIP
        >>> [d.id for d in val]  # doctest: +SKIP
    """
    return load_corpus(name, dedup=dedup, fractions=fractions, home=home).documents(split)


def load_examples(
    name: str, *, split: Literal["train", "test", "all"] = "all", home: Path | None = None
) -> list[dict[str, Any]]:
    """The labelled examples of a ``labelled`` source (``sms-spam``, ``dreaddit``).

    Each example is a dict with at least ``id``, ``text`` and ``label``. Sources that ship their own
    train/test split (dreaddit) keep it; the others are split by the hash of the id (90% train).

    Raises:
        UnknownNameError: No such source.
        DataError: The source is not a labelled source.
        EmptyCorpusError: The source holds no examples.
    """
    source = get_source(name)
    if source.examples is None:
        raise DataError(
            f"source {name!r} is {_a_kind(source.kind)} source, not labelled examples; "
            + _files_hint(name, source.kind)
        )
    examples = source.examples(fetch(name, home=home))
    if not examples:
        raise EmptyCorpusError(f"source {name!r} holds no examples")
    if split == "all":
        return examples
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r} for examples; choose train, test or all")
    if "split" not in examples[0]:
        docs = [Document(e["id"], e["text"], name) for e in examples]
        parts = split_documents(docs, (0.9, 0.0, 0.1))
        chosen = {d.id for d in parts[split]}
        return [e for e in examples if e["id"] in chosen]
    return [e for e in examples if e["split"] == split]


def documents_from_files(
    paths: Iterable[str | Path], *, source: str = "user", encoding: str = "utf-8"
) -> list[Document]:
    """One document per user file (id = the file name), read strictly and normalised.

    Raises:
        DataError: A file is missing.
        InputEncodingError: A file is not valid UTF-8 (message names the byte offset).
        EmptyCorpusError: No paths, or every file is empty.
    """
    docs = [
        Document(id=str(p), text=read_text_file(p, encoding=encoding), source=source) for p in paths
    ]
    if not any(d.text for d in docs):
        raise EmptyCorpusError("no text in the given files (none given, or all empty)")
    return docs
