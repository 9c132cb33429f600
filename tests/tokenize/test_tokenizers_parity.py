"""Exact parity with the Hugging Face ``tokenizers`` library, on real files and the whole corpus."""

import json
from pathlib import Path

import pytest

from groundwork.tokenize import ByteLevelBPE, CharTokenizer, WordPiece, load_tokenizer

tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.parity

SPECIAL = "<|endoftext|>"

# Everything that tends to break a byte-level tokenizer.
STRESS = (
    "Hello world! It's, we'll, they've, I'd, she'S 'll\n"
    "Emoji: 😀 👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 ❤️\n"
    "CJK: 日本語のテキスト、中文文本。한국어 텍스트\n"
    "Combining: e\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353\n"
    "RTL: مرحبا بالعالم שלום עולם\n"
    "Whitespace:\t\ttabs  and   runs \u00a0nbsp\u2003em\u3000ideographic \r\n\n\n  \n"
    "Digits: 3.14159 1,000,000 ٣٤٥ ⅷ 2½\n"
    f"Special{SPECIAL}in the middle {SPECIAL}\n{SPECIAL}"
    'Symbols: ~!@#$%^&*()_+{}|:"<>? ©®™ ∑∫√ \x00\x01\x7f\ufeff end '
)


@pytest.fixture(scope="module")
def gpt2(gpt2_bpe_dir: Path) -> ByteLevelBPE:
    return ByteLevelBPE.from_gpt2_files(gpt2_bpe_dir / "encoder.json", gpt2_bpe_dir / "vocab.bpe")


@pytest.fixture(scope="module")
def gpt2_ref(gpt2_bpe_dir: Path) -> "tokenizers.Tokenizer":
    """GPT-2 in ``tokenizers``, built as ``ByteLevelBPETokenizer`` builds it, plus the special."""
    from tokenizers import decoders, models, pre_tokenizers

    model = models.BPE.from_file(
        str(gpt2_bpe_dir / "encoder.json"), str(gpt2_bpe_dir / "vocab.bpe")
    )
    ref = tokenizers.Tokenizer(model)
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([SPECIAL])
    return ref


def encode_batch(ref: "tokenizers.Tokenizer", texts: list[str]) -> list[list[int]]:
    """Reference ids without special tokens (``encode_batch_fast`` skips offsets: 3x faster)."""
    encode = getattr(ref, "encode_batch_fast", ref.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def texts(shakespeare_docs: list) -> list[str]:
    return [d.text for d in shakespeare_docs]


def test_gpt2_hello_world(gpt2: ByteLevelBPE, gpt2_bpe_dir: Path) -> None:
    assert gpt2.encode("Hello world!") == [15496, 995, 0]
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256
    wrapper = tokenizers.ByteLevelBPETokenizer(
        str(gpt2_bpe_dir / "encoder.json"), str(gpt2_bpe_dir / "vocab.bpe")
    )
    text = STRESS.replace(SPECIAL, "")
    assert wrapper.encode(text).ids == gpt2.encode(text)


def test_gpt2_matches_tokenizers_on_the_whole_corpus(gpt2, gpt2_ref, texts) -> None:
    ours = [gpt2.encode(t) for t in texts]
    ref = encode_batch(gpt2_ref, texts)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a == b, f"document {i} differs"
    assert [gpt2.decode(ids) for ids in ours] == texts


def test_gpt2_matches_tokenizers_on_unicode_stress_text(gpt2, gpt2_ref) -> None:
    for text in [STRESS, *STRESS.splitlines(keepends=True)]:
        assert gpt2.encode(text) == gpt2_ref.encode(text).ids, repr(text)
    assert gpt2.decode(gpt2.encode(STRESS)) == STRESS
    assert gpt2.encode(STRESS).count(50256) == 3


def hf_bpe_trainer(texts: list[str], vocab_size: int, min_frequency: int) -> dict:
    """Train ``tokenizers``' BPE with the same settings as ``ByteLevelBPE.train``."""
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return json.loads(tok.to_str())["model"]


@pytest.mark.parametrize(
    ("n_docs", "vocab_size", "min_frequency"), [(None, 256 + 1 + 1500, 0), (8, 2000, 100)]
)
def test_trained_merges_equal_tokenizers_bpe_trainer(
    texts, n_docs, vocab_size, min_frequency
) -> None:
    """Same merges, in the same order, and the same ids.

    Both pick the most frequent pair and break ties by the smallest (left id, right id), with
    the same id layout (specials, bytes sorted by code point, merges), so even the ties agree.
    """
    texts = texts[:n_docs]
    ours = ByteLevelBPE.train(texts, vocab_size, min_frequency=min_frequency)
    ref = hf_bpe_trainer(texts, vocab_size, min_frequency)
    ref_merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in ref["merges"]]
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(ours.merges, ref_merges, strict=False)) if a != b), None
    )
    assert first_difference is None
    assert ours.merges == ref_merges
    assert ours.vocab == ref["vocab"]
    if min_frequency:
        assert len(ours.merges) < vocab_size - 257  # stopped by min_frequency


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> WordPiece:
    return WordPiece.load(minilm_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def minilm_ref(minilm_dir: Path) -> "tokenizers.Tokenizer":
    ref = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    ref.no_truncation()
    ref.no_padding()
    return ref


def test_wordpiece_matches_minilm_on_the_whole_corpus(minilm, minilm_ref, texts) -> None:
    ours = [minilm.encode(t) for t in texts]
    ref = encode_batch(minilm_ref, texts)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a == b, f"document {i} differs"


def test_wordpiece_matches_minilm_with_special_tokens(minilm, minilm_ref, texts) -> None:
    lines = [line for t in texts[:3] for line in t.splitlines()[:200]] + STRESS.splitlines()
    for line in lines:
        assert minilm.encode(line, add_special_tokens=True) == minilm_ref.encode(line).ids
        assert minilm.encode(line) == minilm_ref.encode(line, add_special_tokens=False).ids


def test_wordpiece_from_vocab_txt_equals_tokenizer_json(minilm_dir, minilm, texts) -> None:
    from_txt = WordPiece.from_vocab(minilm_dir / "vocab.txt")
    assert from_txt.vocab == minilm.vocab
    assert from_txt.encode(texts[0][:5000]) == minilm.encode(texts[0][:5000])


def _ours_and_theirs(tok, path: Path):
    tok.save(path)
    return load_tokenizer(path), tokenizers.Tokenizer.from_file(str(path))


def test_saved_files_load_in_tokenizers_and_encode_identically(
    tmp_path, gpt2, minilm, texts
) -> None:
    sample = texts[1][:20_000] + STRESS
    trained_bpe = ByteLevelBPE.train(texts[:4], vocab_size=600)
    char = CharTokenizer.train(texts[:4], vocab_size=200)
    for name, tok in [("char", char), ("bpe", trained_bpe), ("gpt2", gpt2), ("wp", minilm)]:
        ours, theirs = _ours_and_theirs(tok, tmp_path / name / "tokenizer.json")
        assert type(ours) is type(tok)
        expected = tok.encode(sample)
        assert ours.encode(sample) == expected, name
        assert theirs.encode(sample, add_special_tokens=False).ids == expected, name
        if name != "wp":  # (WordPiece decoders differ in spacing around punctuation)
            assert theirs.decode(expected, skip_special_tokens=False) == tok.decode(expected)
    # the WordPiece file adds [CLS] ... [SEP] like BERT's post-processor
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "wp" / "tokenizer.json"))
    assert theirs.encode("Hello there").ids == minilm.encode("Hello there", True)


def test_files_written_by_tokenizers_load_into_ours(tmp_path, texts) -> None:
    from tokenizers import Regex, models, pre_tokenizers

    sample = texts[2][:20_000] + STRESS
    # byte-level BPE trained by tokenizers
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        texts[:4],
        tokenizers.trainers.BpeTrainer(
            vocab_size=700,
            special_tokens=[SPECIAL],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bpe.save(str(tmp_path / "bpe.json"))
    ours = load_tokenizer(tmp_path / "bpe.json")
    assert isinstance(ours, ByteLevelBPE)
    assert ours.encode(sample) == bpe.encode(sample).ids
    # a character-level WordLevel model
    chars = sorted(set(texts[2]))
    vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    char = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    char.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    char.save(str(tmp_path / "char.json"))
    ours_char = load_tokenizer(tmp_path / "char.json")
    assert isinstance(ours_char, CharTokenizer)
    assert ours_char.encode(sample) == char.encode(sample).ids
