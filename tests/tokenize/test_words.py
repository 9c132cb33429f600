"""Word splitting and the one word vocabulary behind the classifiers, n-grams and word2vec."""

import re

import pytest
import regex

from groundwork.errors import CheckpointError, ConfigError, TokenIdError
from groundwork.tokenize.words import (
    PAD,
    TOKEN_PATTERN,
    UNK,
    Vocabulary,
    count_words,
    split_words,
    tokenize_words,
)

LETTERS = regex.compile(r"\p{L}+")


def test_split_words_with_any_pattern() -> None:
    assert split_words("Où ES-tu?", LETTERS) == ["où", "es", "tu"]
    assert split_words("Où ES-tu?", LETTERS, lowercase=False) == ["Où", "ES", "tu"]
    assert split_words("I'm here!", TOKEN_PATTERN) == tokenize_words("I'm here!")
    assert split_words("", TOKEN_PATTERN) == []


def test_ties_alphabetical_or_first_seen() -> None:
    counts = count_words([["b", "c", "a"], ["c", "a", "b"]])
    assert list(counts) == ["b", "c", "a"]  # first seen
    alpha = Vocabulary.from_counts(counts, specials=())
    seen = Vocabulary.from_counts(counts, specials=(), ties="first-seen")
    assert alpha.tokens == ["a", "b", "c"] and seen.tokens == ["b", "c", "a"]
    assert seen.counts == [2, 2, 2]
    with pytest.raises(ConfigError, match="ties"):
        Vocabulary.from_counts(counts, ties="random")  # type: ignore[arg-type]


def test_specials_min_count_and_max_words() -> None:
    sequences = [["x", "y", "y", "z", "z", "z", UNK]]
    vocab = Vocabulary.from_words(sequences, min_count=2, specials=(UNK,))
    assert vocab.tokens == [UNK, "z", "y"] and vocab.counts == [0, 3, 2]  # a literal <unk> too
    assert Vocabulary.from_words(sequences, max_words=1, specials=()).tokens == ["z"]
    with pytest.raises(ConfigError, match="min_count must be a positive integer"):
        Vocabulary.from_words(sequences, min_count=0)
    with pytest.raises(ConfigError, match="max_words"):
        Vocabulary.from_words(sequences, max_words=0)


def test_unknown_words_map_to_unk_or_are_dropped() -> None:
    with_unk = Vocabulary.from_words([["a", "b"]], specials=(PAD, UNK))
    without = Vocabulary.from_words([["a", "b"]], specials=())
    assert with_unk.ids(["a", "zzz", "b"]) == [2, 1, 3] and with_unk.encode("") == [1]
    assert without.ids(["a", "zzz", "b"]) == [0, 1] and without.encode("") == []
    assert (with_unk.pad_id, with_unk.unk_id) == (0, 1)
    with pytest.raises(ConfigError, match="no <unk>"):
        _ = without.unk_id
    assert with_unk.decode([2, 3]) == "a b" and len(with_unk) == with_unk.vocab_size == 4
    with pytest.raises(TokenIdError, match="word id 9"):
        with_unk.decode([9])
    assert "a" in without and "zzz" not in without


def test_json_round_trip_keeps_the_regex_and_its_module() -> None:
    for pattern in (TOKEN_PATTERN, LETTERS):
        vocab = Vocabulary.build(["Où es-tu? Où?"], min_count=1, pattern=pattern, specials=(UNK,))
        again = Vocabulary.from_json(vocab.to_json())
        assert again == vocab and type(again.pattern) is type(pattern)
        assert again.split("ÉTÉ!") == vocab.split("ÉTÉ!")
    split_elsewhere = Vocabulary(["a"], specials=(), pattern=None)
    assert Vocabulary.from_json(split_elsewhere.to_json()).pattern is None
    with pytest.raises(ConfigError, match="cannot split text"):
        split_elsewhere.split("a")


def test_vocab_json_of_the_classifier_before_specials_were_stored() -> None:
    old = {"tokens": [PAD, UNK, "a"], "min_count": 2, "pattern": TOKEN_PATTERN.pattern}
    vocab = Vocabulary.from_json({**old, "lowercase": True})
    assert vocab.specials == (PAD, UNK) and vocab.encode("A b") == [2, 1]
    assert vocab.pattern is not None and vocab.pattern.pattern == TOKEN_PATTERN.pattern


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"tokens": ["a", "a"], "specials": []}, "twice"),
        ({"tokens": ["a"], "specials": [], "counts": [1, 2]}, "1 tokens but 2 counts"),
        ({"tokens": ["a"]}, "must start with '<pad>', '<unk>'"),
        ({"tokens": [], "specials": [], "pattern": "(", "regex_module": "re"}, "bad word pattern"),
        ([], "'tokens' list"),
    ],
)
def test_bad_vocab_json(data: object, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        Vocabulary.from_json(data)


def test_the_standard_re_module_is_the_default_engine() -> None:
    vocab = Vocabulary.from_json({"tokens": [PAD, UNK], "pattern": r"\w+"})
    assert isinstance(vocab.pattern, re.Pattern)
