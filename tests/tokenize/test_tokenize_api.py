"""load_tokenizer / train_tokenizer, bad files, and the doctests of the tokenize modules."""

import doctest
import json
from pathlib import Path

import pytest

from groundwork.errors import ConfigError, EmptyCorpusError, TokenizerError
from groundwork.tokenize import (
    ByteLevelBPE,
    CharTokenizer,
    Tokenizer,
    WordPiece,
    api,
    base,
    bpe,
    char,
    load_tokenizer,
    merges,
    train_tokenizer,
    wordpiece,
    words,
)

TEXTS = ["It is a truth universally acknowledged.", "That a single man in possession..."] * 5


@pytest.mark.parametrize("module", [api, base, bpe, char, merges, wordpiece, words])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize(
    ("kind", "cls", "vocab_size"),
    [("bpe", ByteLevelBPE, 300), ("wordpiece", WordPiece, 80), ("char", CharTokenizer, 50)],
)
def test_train_save_load_round_trip(tmp_path: Path, kind, cls, vocab_size) -> None:
    tok = train_tokenizer(kind, TEXTS, vocab_size)
    assert isinstance(tok, cls) and isinstance(tok, Tokenizer)
    assert tok.vocab_size <= vocab_size
    path = tok.save(tmp_path / "run" / "tokenizer.json")
    loaded = load_tokenizer(path.parent)  # a run directory works too
    assert type(loaded) is cls and loaded.vocab_size == tok.vocab_size
    assert loaded.special_tokens == tok.special_tokens and loaded.eot_id == tok.eot_id
    assert loaded.encode(TEXTS[1]) == tok.encode(TEXTS[1])
    ids = tok.encode(TEXTS[0])
    assert [tok.token_to_id(tok.id_to_token(i)) for i in ids] == ids
    assert "".join(tok.pieces(ids)).replace(" ", "") == tok.decode(ids).replace(" ", "")
    assert cls.load(path).encode(TEXTS[0]) == ids
    assert type(Tokenizer.load(path)) is cls


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")


def test_truncated_file(tmp_path: Path) -> None:
    path = train_tokenizer("char", TEXTS, 100).save(tmp_path / "tokenizer.json")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(TokenizerError, match=r"not valid JSON.*truncated"):
        load_tokenizer(path)
    path.write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="no 'model'"):
        load_tokenizer(path)


def test_unsupported_model_type(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}))
    with pytest.raises(TokenizerError, match=r"tokenizer.json.*'Unigram'.*not support"):
        load_tokenizer(path)
    with pytest.raises(TokenizerError, match="where a BPE model was expected"):
        ByteLevelBPE.load(path)


def test_training_errors() -> None:
    for kind in ("bpe", "wordpiece", "char"):
        with pytest.raises(EmptyCorpusError):
            train_tokenizer(kind, [], 1000)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="vocab_size=100"):
        train_tokenizer("bpe", TEXTS, 100)
    with pytest.raises(ConfigError, match="unknown tokenizer kind"):
        train_tokenizer("unigram", TEXTS, 100)  # type: ignore[arg-type]
