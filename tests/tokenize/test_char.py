"""Character-level tokenizer."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundwork.errors import ConfigError, EmptyCorpusError, TokenIdError
from groundwork.tokenize import CharTokenizer

TEXT = "To be, or not to be: that is the question.\nΩ — 日本 😀"


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer.train([TEXT], vocab_size=1000)


def test_vocabulary_is_specials_unk_then_sorted_characters(tok: CharTokenizer) -> None:
    chars = sorted(set(TEXT))
    assert tok.vocab_size == 2 + len(chars)
    assert tok.id_to_token(0) == "<|endoftext|>" and tok.id_to_token(1) == "<unk>"
    assert [tok.id_to_token(i) for i in range(2, tok.vocab_size)] == chars
    assert tok.eot_id == 0


def test_unknown_characters_and_specials(tok: CharTokenizer) -> None:
    assert tok.encode("tz") == [tok.vocab["t"], 1]
    assert tok.encode("t<|endoftext|>t") == [tok.vocab["t"], 0, tok.vocab["t"]]


@given(st.text(alphabet=sorted(set(TEXT))))
def test_round_trip_over_the_alphabet(tok: CharTokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


def test_vocab_size_keeps_the_most_frequent() -> None:
    tok = CharTokenizer.train(["aaabbc"], vocab_size=4, special_tokens=["<s>"])
    assert list(tok.vocab) == ["<s>", "<unk>", "a", "b"]
    assert tok.encode("abc") == [2, 3, 1]


def test_errors(tok: CharTokenizer) -> None:
    with pytest.raises(EmptyCorpusError):
        CharTokenizer.train([""], vocab_size=10)
    with pytest.raises(ConfigError):
        CharTokenizer.train(["abc"], vocab_size=2)
    with pytest.raises(TokenIdError, match=f"vocab_size is {tok.vocab_size}"):
        tok.decode([tok.vocab_size])
