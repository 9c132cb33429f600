"""WordPiece: normaliser, pre-tokenizer, greedy longest match, [UNK], training, errors."""

import pytest

from groundwork.errors import ConfigError, EmptyCorpusError, TokenIdError
from groundwork.tokenize import WordPiece, bert_normalize, bert_pre_tokenize

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "##a", "!"]


@pytest.fixture
def wp() -> WordPiece:
    return WordPiece({t: i for i, t in enumerate(VOCAB)})


def test_normaliser_cleans_spaces_cjk_accents_and_case() -> None:
    assert bert_normalize("Crème\u00a0BRÛLÉE\x00\u200b\t!") == "creme brulee !"
    assert bert_normalize("Crème", lowercase=False) == "Crème"
    assert bert_normalize("日本") == " 日  本 "


def test_pre_tokenizer_isolates_punctuation() -> None:
    assert bert_pre_tokenize("hello, world... $5^2") == [
        "hello", ",", "world", ".", ".", ".", "$", "5", "^", "2"
    ]  # fmt: skip


def test_greedy_longest_match_first(wp: WordPiece) -> None:
    """ "unaffable": the longest prefix in the vocabulary is "un" (no "una", "unaf", ...); the
    longest continuation of "affable" is "##aff", then "##able". "aaa" is a ##a ##a."""
    assert wp.encode("Unaffable!") == [5, 6, 7, 10]
    assert wp.encode("aaa") == [8, 9, 9]
    assert wp.pieces(wp.encode("unaffable")) == ["un", "aff", "able"]


def test_unknown_words_become_a_single_unk(wp: WordPiece) -> None:
    """ "unx": "un" matches, but no piece starts with "x", so the whole word is [UNK]."""
    assert wp.encode("unx a") == [1, 8]
    assert wp.encode("a" * 100) == [8] + [9] * 99
    assert wp.encode("a" * 101) == [1]  # longer than max_input_chars_per_word


def test_special_tokens_and_cls_sep(wp: WordPiece) -> None:
    assert wp.encode("a[MASK]a") == [8, 4, 8]
    assert wp.encode("a", add_special_tokens=True) == [2, 8, 3]
    assert wp.eot_id == 3
    assert wp.decode([5, 6, 7, 8, 9]) == "unaffable aa"


def test_decode_rejects_ids_out_of_range(wp: WordPiece) -> None:
    with pytest.raises(TokenIdError, match="vocab_size is 11"):
        wp.decode([11])
    with pytest.raises(TokenIdError):
        wp.decode([-1])


def test_train_learns_frequent_words() -> None:
    wp = WordPiece.train(["the cat sat on the mat with the hat."] * 10, vocab_size=40)
    assert wp.token_to_id("the") is not None and wp.token_to_id("##at") is not None
    assert wp.encode("the cat") == [wp.vocab["the"], *wp.encode("cat")]
    assert wp.decode(wp.encode("The cat sat.")) == "the cat sat ."


def test_train_errors() -> None:
    with pytest.raises(EmptyCorpusError):
        WordPiece.train(["  \n"], vocab_size=100)
    with pytest.raises(ConfigError, match="smaller than the alphabet"):
        WordPiece.train(["abcdefgh"], vocab_size=6)


def test_from_vocab_missing_file(tmp_path) -> None:
    from groundwork.errors import TokenizerError

    with pytest.raises(TokenizerError, match="does not exist"):
        WordPiece.from_vocab(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("a\n##b\n")
    with pytest.raises(TokenizerError, match="no unknown token"):
        WordPiece.from_vocab(tmp_path / "vocab.txt")
