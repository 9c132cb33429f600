r"""Next-sentence prediction: sentence pairs for BERT's second pretraining task (Devlin et al.
2019, §3.1).

BERT reads two segments ``A`` and ``B`` packed as one sequence::

    [CLS] A [SEP] B [SEP]        token_type_ids  0 ... 0 0  1 ... 1 1

and the ``[CLS]`` output predicts whether ``B`` is the segment that follows ``A`` in its document
(label 0, *IsNext*) or a segment of another document (label 1, *NotNext*), each half the time.
The loss is the cross-entropy of that binary choice, added to the masked-LM loss. (Liu et al.
2019, RoBERTa, later found the task unhelpful; it is here to reproduce BERT.)

Choices, following Google's ``create_pretraining_data.py`` where it applies:

* ``A`` is a segment that has a successor in its document (the last segment of a document is
  never ``A``; otherwise it could only ever be NotNext, which the model would learn to spot);
* a random ``B`` comes from a uniformly chosen *other* document (the reference retries ten
  times to avoid the same one; here it is excluded outright), at a uniformly chosen segment;
* a pair longer than ``max_len - 3`` tokens is cut *longest first*: one token at a time from
  the longer segment (``B`` on a tie), from its front or its back at random as the reference's
  ``truncate_seq_pair``, or always from the back (``transformers``' ``longest_first``) without
  a generator.

The labels are ``transformers``' ``next_sentence_label`` convention (0 = IsNext). Segments are
whatever the caller splits documents into (lines, sentences); :func:`chunk_segments` joins short
consecutive lines into segments of about a target length, as the reference packs sentences.

Chapter 6 (Model families: the encoder).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from groundwork.checks import positive_int
from groundwork.errors import ConfigError, DataError

__all__ = [
    "IS_NEXT",
    "NOT_NEXT",
    "SentencePair",
    "SentencePairs",
    "chunk_segments",
    "pack_pair",
    "truncate_pair",
]

IS_NEXT = 0
"""NSP label: ``B`` follows ``A`` in its document."""
NOT_NEXT = 1
"""NSP label: ``B`` is a random segment of another document."""

Document = Sequence[Sequence[int]]
"""A document as a sequence of segments, each a sequence of token ids."""


def chunk_segments(lines: Sequence[Sequence[int]], max_tokens: int) -> list[list[int]]:
    """Join consecutive lines into segments of at most ``max_tokens`` tokens (a longer line is a
    segment of its own, cut later by :func:`truncate_pair`); empty lines are dropped.

    >>> chunk_segments([[1, 2], [3], [4, 5, 6], [], [7]], 3)
    [[1, 2, 3], [4, 5, 6], [7]]
    """
    positive_int("max_tokens", max_tokens)
    out: list[list[int]] = []
    current: list[int] = []
    for line in lines:
        if not line:
            continue
        if current and len(current) + len(line) > max_tokens:
            out.append(current)
            current = []
        current = current + list(line)
    if current:
        out.append(current)
    return out


# --8<-- [start:truncate]
def truncate_pair(
    a: Sequence[int],
    b: Sequence[int],
    max_tokens: int,
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[int]]:
    """Cut ``a`` and ``b`` to at most ``max_tokens`` tokens together, longest first.

    Args:
        a, b: The two segments.
        max_tokens: Their total length at most (``max_len - 3`` for ``[CLS] A [SEP] B [SEP]``).
        generator: With one, each token is removed from the front or the back of its segment at
            random (BERT's ``truncate_seq_pair``); without, from the back.

    Example:
        >>> truncate_pair([1, 2, 3, 4, 5], [6, 7], 5)
        ([1, 2, 3], [6, 7])
        >>> truncate_pair([1, 2], [6, 7, 8], 3)  # b is longer, then a tie: b again
        ([1, 2], [6])
    """
    drop_a = drop_b = 0
    la, lb = len(a), len(b)
    while la + lb > max_tokens:  # the longer one loses a token (b on a tie)
        if la > lb:
            la, drop_a = la - 1, drop_a + 1
        else:
            lb, drop_b = lb - 1, drop_b + 1
    return _cut(a, drop_a, generator), _cut(b, drop_b, generator)


def _cut(seq: Sequence[int], n: int, generator: torch.Generator | None) -> list[int]:
    """Drop ``n`` tokens, each from the front or the back (a fair coin each) or the back."""
    front = (
        0 if generator is None or n == 0 else int(torch.randint(2, (n,), generator=generator).sum())
    )
    return list(seq[front : len(seq) - (n - front)])


# --8<-- [end:truncate]


def pack_pair(
    a: Sequence[int],
    b: Sequence[int],
    *,
    cls_id: int,
    sep_id: int,
    max_len: int,
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[int]]:
    """``[CLS] A [SEP] B [SEP]`` cut to ``max_len`` tokens, and its token types (0 for
    ``[CLS] A [SEP]``, 1 for ``B [SEP]``).

    >>> pack_pair([5, 6], [7], cls_id=2, sep_id=3, max_len=16)
    ([2, 5, 6, 3, 7, 3], [0, 0, 0, 0, 1, 1])
    """
    if max_len < 5:
        raise ConfigError(f"max_len must be >= 5 ([CLS] A [SEP] B [SEP]), got {max_len}")
    a, b = truncate_pair(a, b, max_len - 3, generator)
    ids = [cls_id, *a, sep_id, *b, sep_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return ids, types


@dataclass(frozen=True)
class SentencePair:
    """One NSP example: segments ``a`` and ``b``, and whether ``b`` follows ``a``."""

    a: Sequence[int]
    b: Sequence[int]
    label: int
    """:data:`IS_NEXT` (0) or :data:`NOT_NEXT` (1)."""
    doc: int
    """The document of ``a``."""
    b_doc: int
    """The document of ``b`` (``doc`` when IsNext, another one when NotNext)."""


class SentencePairs:
    """Draws NSP pairs from documents split into segments.

    Args:
        documents: Each a sequence of segments (token id sequences); empty segments are
            ignored. At least two documents must have a segment, and one at least two.

    Example:
        >>> docs = [[[10, 11], [12], [13, 14]], [[20], [21, 22]], [[30]]]
        >>> pairs = SentencePairs(docs)
        >>> len(pairs)  # segments with a successor: 2 in the first document, 1 in the second
        3
        >>> p = pairs.sample(torch.Generator().manual_seed(0))
        >>> (p.label == IS_NEXT) == (p.b_doc == p.doc)
        True
    """

    def __init__(self, documents: Sequence[Document]) -> None:
        docs = [[list(s) for s in d if len(s)] for d in documents]
        self.documents = [d for d in docs if d]
        # (document, segment) of every segment that has a successor: the possible A's
        self.firsts = [(d, i) for d, doc in enumerate(self.documents) for i in range(len(doc) - 1)]
        if len(self.documents) < 2:
            raise DataError(
                f"next-sentence prediction needs at least two documents with text, got "
                f"{len(self.documents)} (a random B must come from another document)"
            )
        if not self.firsts:
            raise DataError("no document has two segments: there is no true next segment")

    def __len__(self) -> int:
        """Segments that can be ``A`` (one with a successor in its document)."""
        return len(self.firsts)

    def pair_at(self, k: int, generator: torch.Generator) -> SentencePair:
        """The pair whose ``A`` is the ``k``-th possible one; the label and a random ``B`` are
        drawn with ``generator``."""
        d, i = self.firsts[k]
        a = self.documents[d][i]
        if int(torch.randint(2, (1,), generator=generator)) == IS_NEXT:
            return SentencePair(a, self.documents[d][i + 1], IS_NEXT, d, d)
        other = int(torch.randint(len(self.documents) - 1, (1,), generator=generator))
        other += other >= d  # uniform over the documents other than d
        segments = self.documents[other]
        j = int(torch.randint(len(segments), (1,), generator=generator))
        return SentencePair(a, segments[j], NOT_NEXT, d, other)

    def sample(self, generator: torch.Generator) -> SentencePair:
        """A pair with a uniformly random ``A``; half IsNext, half NotNext."""
        k = int(torch.randint(len(self.firsts), (1,), generator=generator))
        return self.pair_at(k, generator)
