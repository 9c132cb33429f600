"""Document-level train/val/test splits, decided by a hash of each document's id.

A document's split depends only on its id (and a salt), never on the order of the corpus or on
the other documents: adding a document never moves another one between splits, and the same id
lands in the same split on every machine. Splitting whole documents (not lines or windows) keeps
held-out text truly unseen. Chapter 7, "Data for large models".

Small corpora need care: Shakespeare has 42 works, so a 5% validation split would hold about two
of them, and by bad luck none. :func:`split_documents` therefore guarantees at least one document
in every split whose fraction is non-zero (moving the document whose hash lies closest to that
split's interval), and the default fractions are 0.9 / 0.1 / 0.0: about four Shakespeare works
(roughly half a megabyte) of validation text, and no test split unless asked for.
"""

import hashlib
from collections.abc import Sequence
from typing import Literal

from groundwork.corpus.document import Document
from groundwork.errors import ConfigError, DataError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.9, 0.1, 0.0)


# --8<-- [start:hash]
def hash_fraction(doc_id: str, salt: str = "") -> float:
    """Map an id to a number in [0, 1) via sha256: uniform, deterministic, order-free.

    >>> round(hash_fraction("hamlet_gut"), 4)
    0.4958
    """
    digest = hashlib.sha256(f"{salt}{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --8<-- [end:hash]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` fractions: three non-negative numbers summing to 1."""
    if len(fractions) != 3:
        raise ConfigError(f"split fractions must be (train, val, test), got {tuple(fractions)}")
    train, val, test = (float(f) for f in fractions)
    if min(train, val, test) < 0 or abs(train + val + test - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must be >= 0 and sum to 1, got ({train}, {val}, {test})"
        )
    if train <= 0:
        raise ConfigError("the train fraction must be > 0")
    return train, val, test


def split_documents(
    docs: Sequence[Document],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    salt: str = "",
) -> dict[Split, list[Document]]:
    """Split documents into train/val/test by the hash of their ids.

    Document ``d`` goes to train if ``u(d) < f_train``, to val if ``u(d) < f_train + f_val``, else
    to test, where ``u(d) = hash_fraction(d.id, salt)``. Then every split with a non-zero fraction
    that came out empty takes the document (from a split that can spare one) whose ``u`` is
    nearest to its interval, so small corpora still get a usable held-out set.

    Args:
        docs: The documents (ids must be unique).
        fractions: ``(train, val, test)``, non-negative, summing to 1.
        salt: Changes the assignment while keeping it deterministic.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in input order.

    Raises:
        ConfigError: Bad fractions.
        DataError: Duplicate ids, or fewer documents than non-empty splits.
    """
    train, val, _ = check_fractions(fractions)
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"document ids must be unique to split by id; {dup!r} repeats")
    wanted = [s for s, f in zip(SPLITS, check_fractions(fractions), strict=True) if f > 0]
    if len(docs) < len(wanted):
        raise DataError(
            f"{len(docs)} document(s) cannot fill {len(wanted)} non-empty splits {wanted}; "
            "add documents or set the val/test fractions to 0"
        )
    bounds = {"train": (0.0, train), "val": (train, train + val), "test": (train + val, 1.0)}
    u = {d.id: hash_fraction(d.id, salt) for d in docs}
    assign: dict[str, Split] = {}
    for d in docs:
        assign[d.id] = "train" if u[d.id] < train else "val" if u[d.id] < train + val else "test"
    for split in wanted:
        if any(s == split for s in assign.values()):
            continue
        lo, hi = bounds[split]
        counts = {s: sum(1 for a in assign.values() if a == s) for s in SPLITS}
        donors = [i for i in ids if counts[assign[i]] > 1]
        nearest = min(donors, key=lambda i: min(abs(u[i] - lo), abs(u[i] - hi)))
        assign[nearest] = split
    out: dict[Split, list[Document]] = {s: [] for s in SPLITS}
    for d in docs:
        out[assign[d.id]].append(d)
    return out
