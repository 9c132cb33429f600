"""Byte-level BPE: worked examples derived by hand, the byte map, the regex, invariants, errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundwork.errors import ConfigError, EmptyCorpusError, TokenIdError
from groundwork.tokenize import GPT2_PATTERN, ByteLevelBPE, bytes_to_unicode, learn_merges
from groundwork.tokenize.bpe import byte_alphabet

SPECIAL = "<|endoftext|>"


def test_bytes_to_unicode_is_a_bijection_onto_printable_characters() -> None:
    m = bytes_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in m.values())
    assert m[ord("A")] == "A" and m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ" and m[0] == "Ā"


def test_gpt2_regex_splits_words_contractions_numbers_and_whitespace() -> None:
    import regex

    words = regex.findall(GPT2_PATTERN, "I'll pay   42 dollars!!\n\nOK")
    # " 42" keeps its space: of the three spaces two stay a run and the last joins "42". The same
    # rule splits "\n\n" before a word: the first newline alone, the second by the last branch.
    assert words == ["I", "'ll", " pay", "  ", " 42", " dollars", "!!", "\n", "\n", "OK"]


def test_worked_example_aaabdaaabac() -> None:
    """Training on the classic word "aaabdaaabac" (one pre-token), by hand.

    Ids: 0 is <|endoftext|>, then the 256 byte characters sorted by code point, so "a" = 65,
    "b" = 66, "c" = 67, "d" = 68; merged tokens get 257, 258, ...

    Pair counts in a a a b d a a a b a c: (a,a)=4, (a,b)=2, (b,d)=1, (d,a)=1, (b,a)=1, (a,c)=1.

    1. (a, a) -> "aa" (257). Left to right: aa a b d aa a b a c.
       Now (aa,a)=2 and (a,b)=2 tie: the smaller pair of ids wins, (65, 66) < (257, 65).
    2. (a, b) -> "ab" (258): aa ab d aa ab a c. (aa,ab)=2, the rest 1.
    3. (aa, ab) -> "aaab" (259): aaab d aaab a c. Four pairs, all with count 1:
       (259,68), (68,259), (259,65), (65,67) — the smallest is (65, 67).
    4. (a, c) -> "ac" (260): aaab d aaab ac.
    """
    bpe = ByteLevelBPE.train(["aaabdaaabac"], vocab_size=256 + 1 + 4)
    assert bpe.merges == [("a", "a"), ("a", "b"), ("aa", "ab"), ("a", "c")]
    assert [bpe.token_to_id(t) for t in ("a", "b", "c", "d", "aa", "ab", "aaab", "ac")] == [
        65,
        66,
        67,
        68,
        257,
        258,
        259,
        260,
    ]
    ids = bpe.encode("aaabdaaabac")
    assert ids == [259, 68, 259, 260]
    assert bpe.pieces(ids) == ["aaab", "d", "aaab", "ac"]
    assert bpe.decode(ids) == "aaabdaaabac"


def test_learn_merges_counts_words_by_frequency() -> None:
    """Words [a b c] x1 and [a b] x2: (a,b) occurs 3 times, (b,c) once.

    Merge 1: (a,b) -> "ab" (id 3), words become [ab c] and [ab]; then (ab, c) occurs once.
    """
    vocab = ["a", "b", "c"]
    words = [[0, 1, 2], [0, 1]]
    assert learn_merges(words, [1, 2], vocab, vocab_size=5) == [(0, 1), (3, 2)]
    assert vocab == ["a", "b", "c", "ab", "abc"] and words == [[4], [3]]


def test_min_frequency_stops_training() -> None:
    """In "ab ab ab cd", (a,b) occurs 3 times (twice with a space before it): min 3 keeps one."""
    bpe = ByteLevelBPE.train(["ab ab ab cd"], vocab_size=1000, min_frequency=3)
    assert bpe.merges == [("a", "b")]


def test_merges_never_cross_words_or_special_tokens() -> None:
    bpe = ByteLevelBPE.train(["ab<|endoftext|>ab ab"] * 5, vocab_size=300)
    assert all(SPECIAL not in a + b for a, b in bpe.merges)
    assert all(
        not (a + b).strip("Ġ").count("Ġ") for a, b in bpe.merges
    )  # a space only ever starts a token
    ids = bpe.encode("ab<|endoftext|>ab")
    assert ids[1] == bpe.special_tokens[SPECIAL] == bpe.eot_id == 0


def test_encoding_applies_merges_in_rank_order() -> None:
    """With merges [(b,c), (a,b)] the word "abc" becomes a bc: (b,c) has the lower rank."""
    alphabet = byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({"bc": 256, "ab": 257})
    bpe = ByteLevelBPE(vocab, [("b", "c"), ("a", "b")])
    assert bpe.pieces(bpe.encode("abc")) == ["a", "bc"]


def test_pieces_show_partial_utf8_as_replacement_characters() -> None:
    bpe = ByteLevelBPE.train(["x"], vocab_size=257)  # no merges: one id per byte
    ids = bpe.encode("é")  # two UTF-8 bytes
    assert len(ids) == 2 and bpe.pieces(ids) == ["\ufffd", "\ufffd"]
    assert bpe.decode(ids) == "é"


@pytest.fixture(scope="module")
def trained() -> ByteLevelBPE:
    text = "The quick brown fox jumps over the lazy dog. Ünïcödé: 日本語, emoji 😀!\n" * 20
    return ByteLevelBPE.train([text], vocab_size=400)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_trained_bpe_round_trips_any_text(trained: ByteLevelBPE, text: str) -> None:
    assert trained.decode(trained.encode(text)) == text


def test_decode_rejects_ids_out_of_range(trained: ByteLevelBPE) -> None:
    n = trained.vocab_size
    with pytest.raises(TokenIdError, match=rf"-1.*vocab_size is {n}"):
        trained.decode([5, -1])
    with pytest.raises(TokenIdError, match=rf"{n}.*vocab_size is {n}"):
        trained.decode([n])
    with pytest.raises(TokenIdError):
        trained.pieces([10_000])


def test_training_errors() -> None:
    with pytest.raises(EmptyCorpusError):
        ByteLevelBPE.train([], vocab_size=300)
    with pytest.raises(EmptyCorpusError):
        ByteLevelBPE.train(["", SPECIAL], vocab_size=300)
    with pytest.raises(ConfigError, match="at least 256 \\+ 1"):
        ByteLevelBPE.train(["hello"], vocab_size=256)


@pytest.fixture(scope="module")
def gpt2(gpt2_bpe_dir) -> ByteLevelBPE:
    return ByteLevelBPE.from_gpt2_files(gpt2_bpe_dir / "encoder.json", gpt2_bpe_dir / "vocab.bpe")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_gpt2_round_trips_any_text(gpt2: ByteLevelBPE, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(["a", " the", "\n", "日本", "😀", SPECIAL, "'s", "  "]), max_size=30)
)
def test_round_trip_with_special_tokens(gpt2: ByteLevelBPE, parts: list[str]) -> None:
    text = "".join(parts)
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_files_missing_or_broken(tmp_path, gpt2_bpe_dir) -> None:
    from groundwork.errors import TokenizerError

    with pytest.raises(TokenizerError, match=r"does not exist.*gpt2-bpe"):
        ByteLevelBPE.from_gpt2_files(tmp_path / "encoder.json", gpt2_bpe_dir / "vocab.bpe")
    broken = tmp_path / "encoder.json"
    broken.write_text('{"a": 1')
    with pytest.raises(TokenizerError, match="not valid JSON"):
        ByteLevelBPE.from_gpt2_files(broken, gpt2_bpe_dir / "vocab.bpe")


def test_bpe_file_with_another_pre_tokenizer_is_rejected(tmp_path) -> None:
    import json

    from groundwork.errors import TokenizerError
    from groundwork.tokenize import load_tokenizer

    data = ByteLevelBPE.train(["abc"], vocab_size=258).to_json_dict()
    data["pre_tokenizer"] = {"type": "Whitespace"}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match=r"'Whitespace'.*does not support"):
        load_tokenizer(path)
