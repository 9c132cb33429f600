"""Word-level tokenization and vocabularies, for the models that work on words rather than
subword tokens: text classifiers (chapter 4), word2vec (chapter 3) and n-gram models (chapter 1).

:func:`tokenize_words` lowercases and splits with the regex :data:`TOKEN_PATTERN`: runs of
letters and digits (with an optional apostrophe suffix, ``don't``, ``i'm``) and single
punctuation or symbol characters (``!``, ``£``, ``&``). A :class:`Vocabulary` maps words to ids:
``<pad>`` = 0, ``<unk>`` = 1, then words seen at least ``min_count`` times in training; a text with
no tokens at all is encoded as a single ``<unk>``, so every sequence has length >= 1.
"""

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from groundwork.errors import CheckpointError, ConfigError

PAD, UNK = "<pad>", "<unk>"

# --8<-- [start:tokenize]
TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\w\s]")
"""Words (letters/digits, optional apostrophe suffix) or single punctuation/symbol characters."""


def tokenize_words(text: str) -> list[str]:
    """Lowercase and split into words and punctuation.

    >>> tokenize_words("WINNER!! Call 09061701461 to claim £900. Don't miss")
    ['winner', '!', '!', 'call', '09061701461', 'to', 'claim', '£', '900', '.', "don't", 'miss']
    """
    return TOKEN_PATTERN.findall(text.lower())


# --8<-- [end:tokenize]


@dataclass
class Vocabulary:
    """A word vocabulary: ``<pad>`` = 0, ``<unk>`` = 1, then words by falling training count."""

    tokens: list[str]
    """Token strings by id."""
    min_count: int = 1
    """The count threshold the vocabulary was built with."""
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != [PAD, UNK]:
            raise CheckpointError(f"a vocabulary must start with {PAD!r}, {UNK!r}")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Sequence[str], *, min_count: int = 2) -> "Vocabulary":
        """Words occurring at least ``min_count`` times in ``texts`` (ties broken alphabetically).

        >>> Vocabulary.build(["a b a", "b a c"], min_count=2).tokens
        ['<pad>', '<unk>', 'a', 'b']
        """
        if min_count < 1:
            raise ConfigError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for t in texts for w in tokenize_words(t))
        words = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls([PAD, UNK, *words], min_count=min_count)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Word ids of ``text``, cut to ``max_len``; a text without tokens is ``[unk_id]``."""
        ids = [self.index.get(w, self.unk_id) for w in tokenize_words(text)][:max_len]
        return ids or [self.unk_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "min_count": self.min_count,
            "pattern": TOKEN_PATTERN.pattern,
            "lowercase": True,
        }

    @classmethod
    def from_json(cls, data: Any) -> "Vocabulary":
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise CheckpointError("vocab.json must hold an object with a 'tokens' list")
        return cls(list(data["tokens"]), min_count=int(data.get("min_count", 1)))
