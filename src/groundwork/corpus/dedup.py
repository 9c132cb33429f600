"""Exact and near-duplicate removal: content hashing, MinHash and locality-sensitive hashing.

Exact duplicates are found by hashing the normalised text. Near duplicates (a copy with a few
words changed, a page with a different footer) are found with MinHash (Broder 1997, "On the
resemblance and containment of documents") and LSH banding (Indyk & Motwani 1998; Leskovec,
Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3), the method Lee et al. 2022
("Deduplicating training data makes language models better") used to clean C4. Chapter 7, "Data for
large models", derives the math.

The idea in four lines:

1. A document is a set of shingles (its overlapping k-word windows).
2. Similarity is the Jaccard index ``J(A, B) = |A ∩ B| / |A ∪ B|``.
3. For a random permutation ``π`` of the shingle universe, ``P[min π(A) = min π(B)] = J(A, B)``;
   ``num_perm`` such minima form a signature, and the fraction of equal entries estimates ``J``.
4. Cut the signature into ``b`` bands of ``r`` rows; two documents become candidates if some band
   is identical, which happens with probability ``1 - (1 - s^r)^b`` (an S-curve in ``s = J``).
"""

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np

from groundwork.corpus.document import Document
from groundwork.errors import ConfigError


class Duplicate(NamedTuple):
    """A removed document: its id, the id of the kept document it duplicates, their similarity."""

    id: str
    of: str
    similarity: float


# --- exact ---------------------------------------------------------------------------------------


def content_hash(text: str) -> str:
    """The sha256 of a (normalised) text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def exact_dedup(docs: Sequence[Document]) -> tuple[list[Document], list[Duplicate]]:
    """Remove documents whose text is identical to an earlier one (first occurrence wins).

    Texts are compared as given, so normalise them first (:func:`~groundwork.corpus.clean.
    normalize_text`): then ``"a\\r\\n"`` and ``"a\\n"`` count as the same text.

    Returns:
        ``(kept, removed)``: kept documents in input order, and one :class:`Duplicate` per removed
        document (similarity 1.0).
    """
    first: dict[str, str] = {}
    kept, removed = [], []
    for doc in docs:
        h = content_hash(doc.text)
        if h in first:
            removed.append(Duplicate(doc.id, first[h], 1.0))
        else:
            first[h] = doc.id
            kept.append(doc)
    return kept, removed


# --- MinHash ------------------------------------------------------------------------------------

# --8<-- [start:shingles]
MERSENNE_PRIME = (1 << 31) - 1  # p: hash values live in [0, p); a·x + b < 2^62 fits in uint64
_WORD = re.compile(r"\w+")


def shingles(text: str, k: int = 5, unit: Literal["word", "char"] = "word") -> set[str]:
    """The set of k-shingles of a text: overlapping windows of ``k`` words (lower-cased) or chars.

    >>> sorted(shingles("a rose is a rose", k=2))
    ['a rose', 'is a', 'rose is']
    """
    if unit == "word":
        tokens = _WORD.findall(text.lower())
        if len(tokens) < k:
            return {" ".join(tokens)} if tokens else set()
        return {" ".join(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}
    if len(text) < k:
        return {text} if text else set()
    return {text[i : i + k] for i in range(len(text) - k + 1)}


# --8<-- [end:shingles]


# --8<-- [start:minhash]
class MinHasher:
    """MinHash signatures from ``num_perm`` universal hashes ``h_i(x) = (a_i x + b_i) mod p``.

    Each ``h_i`` stands in for a random permutation of the shingle universe; ``a_i, b_i`` are
    drawn once from a fixed ``seed``, so signatures are reproducible across runs and machines.
    """

    def __init__(self, num_perm: int = 128, seed: int = 0) -> None:
        if num_perm < 1:
            raise ConfigError(f"num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, MERSENNE_PRIME, size=num_perm, dtype=np.uint64)  # (P,)
        self.b = rng.integers(0, MERSENNE_PRIME, size=num_perm, dtype=np.uint64)  # (P,)

    def signature(self, items: Iterable[str]) -> np.ndarray:
        """The signature of a set: ``sig[i] = min over x in the set of h_i(x)``, shape (P,)."""
        # Shingle -> 32-bit integer x (crc32 is deterministic, unlike Python's salted hash()).
        x = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in items), dtype=np.uint64)
        sig = np.full(self.num_perm, MERSENNE_PRIME, dtype=np.uint64)  # empty set: all p
        for start in range(0, len(x), 8192):  # chunks keep the (N, P) matrix small
            chunk = x[start : start + 8192] % MERSENNE_PRIME  # (N,)
            h = (chunk[:, None] * self.a[None, :] + self.b[None, :]) % MERSENNE_PRIME  # (N, P)
            sig = np.minimum(sig, h.min(axis=0))
        return sig


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The fraction of equal signature entries: an unbiased estimate of the Jaccard index."""
    return float(np.mean(sig_a == sig_b))


def jaccard(a: set[str], b: set[str]) -> float:
    """The exact Jaccard index ``|A ∩ B| / |A ∪ B|`` (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# --8<-- [end:minhash]


# --- LSH banding --------------------------------------------------------------------------------


# --8<-- [start:lsh]
def candidate_probability(s: float, bands: int, rows: int) -> float:
    """P[two documents with Jaccard ``s`` share at least one band] ``= 1 - (1 - s^r)^b``.

    One band (``r`` rows) matches with probability ``s^r``; it fails with ``1 - s^r``; all ``b``
    independent bands fail with ``(1 - s^r)^b``.
    """
    return 1.0 - (1.0 - s**rows) ** bands


def lsh_params(
    threshold: float, num_perm: int, *, false_negative_weight: float = 0.9
) -> tuple[int, int]:
    """Choose ``(bands, rows)`` with ``bands * rows <= num_perm`` for a similarity ``threshold``.

    A pair with similarity ``s`` becomes a candidate with probability ``P(s) = 1 - (1 - s^r)^b``.
    Pairs below the threshold that become candidates are false positives (wasted verification);
    pairs above it that do not are false negatives (missed duplicates, never recovered). We pick
    the ``(b, r)`` minimising the weighted error area
    ``(1 - w) ∫_0^t P(s) ds + w ∫_t^1 (1 - P(s)) ds``. Verification of candidates is cheap and a
    missed duplicate is lost for good, so false negatives weigh more by default (``w = 0.9``).

    >>> lsh_params(0.8, 128)  # P(0.8) = 1 - (1 - 0.8^9)^14 ≈ 0.87, P(0.9) ≈ 0.999
    (14, 9)
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if num_perm < 1:
        raise ConfigError(f"num_perm must be >= 1, got {num_perm}")
    s = np.linspace(0.0, 1.0, 1001)
    below, above = s <= threshold, s >= threshold
    best_err, best = float("inf"), (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        p = 1.0 - (1.0 - s**rows) ** bands
        false_pos = np.trapezoid(p[below], s[below])
        false_neg = np.trapezoid(1.0 - p[above], s[above])
        err = (1.0 - false_negative_weight) * false_pos + false_negative_weight * false_neg
        if err < best_err - 1e-12:
            best_err, best = float(err), (bands, rows)
    return best


def lsh_candidates(signatures: Sequence[np.ndarray], bands: int, rows: int) -> set[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose signatures agree on every row of some band."""
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, sig in enumerate(signatures):
            buckets[sig[band * rows : (band + 1) * rows].tobytes()].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


# --8<-- [end:lsh]


def minhash_dedup(
    docs: Sequence[Document],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    k: int = 5,
    unit: Literal["word", "char"] = "word",
    seed: int = 0,
) -> tuple[list[Document], list[Duplicate]]:
    """Remove near-duplicate documents with MinHash + LSH (the earliest document of a group wins).

    Candidates found by LSH are verified: a pair counts as duplicate only if its estimated Jaccard
    similarity is at least ``threshold``. Duplicate pairs are merged transitively (union-find),
    and from each group only the first document in input order is kept Each removed document is
    reported with the kept document of its group and its estimated similarity to it (which can
    fall below ``threshold`` in a chain ``a ~ b ~ c``).

    Args:
        docs: Documents, normally already exact-deduplicated.
        threshold: Jaccard similarity at or above which two documents are near duplicates.
        num_perm: Signature length P (more: better estimates, slower). Error ≈ sqrt(J(1-J)/P).
        k: Shingle size (words or characters).
        unit: ``"word"`` or ``"char"`` shingles.
        seed: Seed of the hash functions.

    Returns:
        ``(kept, removed)``: kept documents in input order; a :class:`Duplicate` per removed one.

    Example:
        >>> a = Document("a", " ".join(f"word{i}" for i in range(200)), "toy")
        >>> b = Document("b", a.text.replace("word100", "changed"), "toy")  # J = 191/201
        >>> kept, removed = minhash_dedup([a, b], threshold=0.7)
        >>> [d.id for d in kept], [r.id for r in removed]
        (['a'], ['b'])
    """
    bands, rows = lsh_params(threshold, num_perm)
    hasher = MinHasher(num_perm, seed)
    sigs = [hasher.signature(shingles(d.text, k, unit)) for d in docs]
    parent = list(range(len(docs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(lsh_candidates(sigs, bands, rows)):
        if estimate_jaccard(sigs[i], sigs[j]) >= threshold:  # verify the candidate pair
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the earlier document becomes the root
    kept, removed = [], []
    for i, doc in enumerate(docs):
        root = find(i)
        if root == i:
            kept.append(doc)
        else:  # report the kept document of the group and the similarity to it
            sim = round(estimate_jaccard(sigs[i], sigs[root]), 4)
            removed.append(Duplicate(doc.id, docs[root].id, sim))
    return kept, removed
