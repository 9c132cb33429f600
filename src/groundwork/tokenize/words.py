"""Word-level tokenization and vocabularies, for the models that work on words rather than
subword tokens: n-gram models (chapter 1), word2vec (chapter 3) and text classifiers (chapter 4).

:func:`split_words` lowercases a text and returns the matches of a regex. Each use has its own
regex, and results depend on it, so each is a named constant where its use is documented:
:data:`TOKEN_PATTERN` here (the classifiers: words, digits and single punctuation marks),
``groundwork.recipes.ngram.WORD_PATTERN`` and ``groundwork.recipes.word2vec.WORD_PATTERN``.

A :class:`Vocabulary` maps words to ids: its special tokens first, then the words seen at least
``min_count`` times in training, by falling count. The three uses differ only in options:

=============  ====================  ====================  ==================================
use            specials              ties (equal counts)   an unknown word
=============  ====================  ====================  ==================================
classifiers    ``<pad>``, ``<unk>``  alphabetical          ``<unk>``; an empty text: [``<unk>``]
n-grams        ``<unk>``             first seen            ``<unk>``
word2vec       none                  first seen (gensim)   dropped
=============  ====================  ====================  ==================================

It keeps the training counts and the regex it splits text with, and round-trips through JSON
(the ``vocab.json`` of a run directory).
"""

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import regex

from groundwork.checks import positive_int
from groundwork.errors import CheckpointError, ConfigError, TokenIdError

PAD, UNK = "<pad>", "<unk>"

Ties = Literal["alphabetical", "first-seen"]
"""How words of equal count are ordered: alphabetically, or in the order first seen."""

WordPattern = re.Pattern[str] | regex.Pattern[str]
"""A compiled regex of the standard ``re`` module or of ``regex`` (which knows ``\\p{L}``)."""


# --8<-- [start:tokenize]
def split_words(text: str, pattern: WordPattern, *, lowercase: bool = True) -> list[str]:
    """The words of ``text``: every match of ``pattern``, after lowercasing (unless told not to).

    >>> split_words("Thou ART", re.compile(r"\\w+"), lowercase=False)
    ['Thou', 'ART']
    """
    return list(pattern.findall(text.lower() if lowercase else text))


TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\w\s]")
"""Words (letters/digits, optional apostrophe suffix) or single punctuation/symbol characters."""


def tokenize_words(text: str) -> list[str]:
    """Lowercase and split into words and punctuation.

    >>> tokenize_words("WINNER!! Call 09061701461 to claim £900. Don't miss")
    ['winner', '!', '!', 'call', '09061701461', 'to', 'claim', '£', '900', '.', "don't", 'miss']
    """
    return split_words(text, TOKEN_PATTERN)


# --8<-- [end:tokenize]


def count_words(sequences: Iterable[Iterable[str]]) -> Counter[str]:
    """How often each word occurs; the counter keeps the words in the order first seen.

    >>> count_words([["b", "a"], ["a"]])
    Counter({'a': 2, 'b': 1})
    """
    counts: Counter[str] = Counter()
    for words in sequences:
        counts.update(words)
    return counts


@dataclass
class Vocabulary:
    """Words and their ids: the special tokens, then words by falling training count.

    >>> vocab = Vocabulary.build(["b a b", "c b a", "d"], min_count=2)
    >>> vocab.tokens, vocab.encode("A b zzz"), vocab.decode([3, 1])
    (['<pad>', '<unk>', 'b', 'a'], [3, 2, 1], 'a <unk>')
    """

    tokens: list[str]
    """Token strings by id."""
    min_count: int = 1
    """The count threshold the vocabulary was built with."""
    specials: tuple[str, ...] = (PAD, UNK)
    """The special tokens, which take the first ids; with ``<unk>`` among them an unknown word
    maps to it, without it unknown words are dropped."""
    counts: list[int] | None = None
    """The training count of each token (0 for the specials), if known."""
    pattern: WordPattern | None = TOKEN_PATTERN
    """The regex :meth:`split` finds words with; ``None`` when the words come split already."""
    lowercase: bool = True
    """Whether :meth:`split` lowercases the text first."""
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    """Token string -> id."""

    def __post_init__(self) -> None:
        self.specials = tuple(self.specials)
        if self.tokens[: len(self.specials)] != list(self.specials):
            raise CheckpointError(
                "a vocabulary must start with " + ", ".join(repr(s) for s in self.specials)
            )
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise CheckpointError("a vocabulary lists some token twice")
        if self.counts is not None and len(self.counts) != len(self.tokens):
            raise CheckpointError(
                f"a vocabulary has {len(self.tokens)} tokens but {len(self.counts)} counts"
            )
        self._unk = self.index[UNK] if UNK in self.specials else None

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        min_count: int = 1,
        max_words: int | None = None,
        specials: Sequence[str] = (PAD, UNK),
        ties: Ties = "alphabetical",
        pattern: WordPattern | None = TOKEN_PATTERN,
        lowercase: bool = True,
    ) -> "Vocabulary":
        """Keep the words counted at least ``min_count`` times (at most ``max_words`` of the
        most frequent), most frequent first; ``ties="first-seen"`` keeps the order of
        ``counts`` (a :class:`~collections.Counter` remembers the order words were first seen).

        Raises:
            ConfigError: ``min_count`` or ``max_words`` is not a positive integer, or unknown
                ``ties``.
        """
        positive_int("min_count", min_count)
        if max_words is not None:
            positive_int("max_words", max_words)
        reserved = set(specials)
        kept = [w for w, n in counts.items() if n >= min_count and w not in reserved]
        if ties == "alphabetical":
            kept.sort(key=lambda w: (-counts[w], w))
        elif ties == "first-seen":
            kept.sort(key=lambda w: -counts[w])  # a stable sort: equal counts keep their order
        else:
            raise ConfigError(f"ties must be 'alphabetical' or 'first-seen', got {ties!r}")
        kept = kept[:max_words]
        return cls(
            [*specials, *kept],
            min_count=min_count,
            specials=tuple(specials),
            counts=[0] * len(specials) + [counts[w] for w in kept],
            pattern=pattern,
            lowercase=lowercase,
        )

    @classmethod
    def from_words(
        cls, sequences: Iterable[Iterable[str]], *, min_count: int = 1, **options: Any
    ) -> "Vocabulary":
        """The vocabulary of word sequences (sentences, lines) that are already split; the
        ``options`` are those of :meth:`from_counts`.

        >>> Vocabulary.from_words([["b", "a"], ["a", "b"]], specials=(), ties="first-seen").tokens
        ['b', 'a']
        """
        return cls.from_counts(count_words(sequences), min_count=min_count, **options)

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        min_count: int = 2,
        pattern: WordPattern = TOKEN_PATTERN,
        lowercase: bool = True,
        **options: Any,
    ) -> "Vocabulary":
        """Words occurring at least ``min_count`` times in ``texts``, split with ``pattern``
        (by default the classifiers' vocabulary: ``<pad>``, ``<unk>``, ties alphabetical).

        >>> Vocabulary.build(["a b a", "b a c"], min_count=2).tokens
        ['<pad>', '<unk>', 'a', 'b']
        """
        words = (split_words(t, pattern, lowercase=lowercase) for t in texts)
        return cls.from_words(
            words, min_count=min_count, pattern=pattern, lowercase=lowercase, **options
        )

    # --- using ------------------------------------------------------------------------------

    @property
    def pad_id(self) -> int:
        """The id of ``<pad>`` (``ConfigError`` if the vocabulary has none)."""
        return self._special_id(PAD)

    @property
    def unk_id(self) -> int:
        """The id of ``<unk>`` (``ConfigError`` if the vocabulary has none)."""
        return self._special_id(UNK)

    def _special_id(self, token: str) -> int:
        if token not in self.specials:
            raise ConfigError(f"this vocabulary has no {token} token (specials {self.specials})")
        return self.index[token]

    @property
    def vocab_size(self) -> int:
        """The number of ids, specials included."""
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def split(self, text: str) -> list[str]:
        """The words of ``text``, found as when the vocabulary was built."""
        if self.pattern is None:
            raise ConfigError(
                "this vocabulary was built from words split elsewhere and cannot split text; "
                "pass words to ids()"
            )
        return split_words(text, self.pattern, lowercase=self.lowercase)

    def ids(self, words: Iterable[str]) -> list[int]:
        """Ids of ``words``; an unknown word becomes ``<unk>``, or is left out when the
        vocabulary has no ``<unk>`` (word2vec)."""
        index, unk = self.index, self._unk
        if unk is None:
            return [index[w] for w in words if w in index]
        return [index.get(w, unk) for w in words]

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Word ids of ``text``, cut to ``max_len``; with ``<unk>`` in the vocabulary a text
        without words is ``[unk_id]``, so every sequence has length >= 1."""
        ids = self.ids(self.split(text))[:max_len]
        return ids or ([] if self._unk is None else [self._unk])

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by spaces."""
        out = []
        for i in ids:
            if not 0 <= i < len(self.tokens):
                raise TokenIdError(f"word id {i} is outside the vocabulary (0..{len(self) - 1})")
            out.append(self.tokens[i])
        return " ".join(out)

    # --- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the ``vocab.json`` of a run); ``regex_module`` says which
        module compiles ``pattern`` (``re``, or ``regex`` for patterns with ``\\p{L}``)."""
        module = "re" if isinstance(self.pattern, re.Pattern) else "regex"
        return {
            "tokens": self.tokens,
            "min_count": self.min_count,
            "pattern": None if self.pattern is None else self.pattern.pattern,
            "lowercase": self.lowercase,
            "regex_module": None if self.pattern is None else module,
            "specials": list(self.specials),
            "counts": self.counts,
        }

    @classmethod
    def from_json(cls, data: Any) -> "Vocabulary":
        """Read :meth:`to_json`'s dict (older files without specials: ``<pad>``, ``<unk>``).

        Raises:
            CheckpointError: Not a vocabulary, or one whose parts do not fit together.
        """
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise CheckpointError("vocab.json must hold an object with a 'tokens' list")
        source = data.get("pattern", TOKEN_PATTERN.pattern)
        pattern: WordPattern | None = None
        if source is not None:
            engine = regex if data.get("regex_module") == "regex" else re
            try:
                pattern = engine.compile(source)
            except (re.error, regex.error, TypeError) as err:
                raise CheckpointError(f"vocab.json: bad word pattern {source!r}: {err}") from err
        counts = data.get("counts")
        return cls(
            list(data["tokens"]),
            min_count=int(data.get("min_count", 1)),
            specials=tuple(data.get("specials", (PAD, UNK))),
            counts=None if counts is None else [int(c) for c in counts],
            pattern=pattern,
            lowercase=bool(data.get("lowercase", True)),
        )


__all__ = [
    "PAD",
    "TOKEN_PATTERN",
    "UNK",
    "Ties",
    "Vocabulary",
    "WordPattern",
    "count_words",
    "split_words",
    "tokenize_words",
]
