"""The n-gram runner: word splitting, the vocabulary, smoothing on real Shakespeare, the command."""

import pytest

from groundwork import corpus, runs
from groundwork.errors import CheckpointError, ConfigError, UnknownNameError
from groundwork.models.ngram import NGramConfig, NGramLM
from groundwork.recipes.ngram import (
    evaluate_ngrams,
    load_ngram_data,
    ngram,
    results_markdown,
    word_vocabulary,
    words,
)
from groundwork.tokenize import ByteLevelBPE
from groundwork.tokenize.words import UNK, Vocabulary


def test_words_split_letters_apostrophes_numbers_and_punctuation() -> None:
    assert words("O'er the King's 12 men—ho!") == [
        "o'er",
        "the",
        "king's",
        "12",
        "men",
        "—",
        "ho",
        "!",
    ]
    assert words("Thou ART", lowercase=False) == ["Thou", "ART"]
    assert words("  \n ") == []


def test_word_vocabulary_keeps_frequent_words_and_maps_the_rest_to_unk() -> None:
    vocab = word_vocabulary([["a", "b", "a"], ["c", "a", "b"]], min_count=2)
    assert vocab.tokens == [UNK, "a", "b"]
    assert vocab.ids(["b", "c", "zebra"]) == [2, 0, 0]
    assert vocab.decode([1, 0]) == "a <unk>"
    # ties keep the order first seen ("b" before "a"), and text splits with WORD_PATTERN
    vocab = word_vocabulary([["b", "a"], ["a", "b"]], min_count=1, lowercase=False)
    assert vocab.tokens == [UNK, "b", "a"] and vocab.split("O'er A") == ["O'er", "A"]
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_smoothing_order_on_held_out_shakespeare() -> None:
    """Trigram perplexity on held-out Shakespeare: Kneser–Ney < Witten–Bell < add-one.

    A subset keeps it fast: lines of the first 12 training plays (about 370k words) and of 3
    validation plays, words seen fewer than twice become <unk>. (On the full corpus the order is
    the same: ``groundwork ngram`` gives 120 < 152 < 3,227, docs/results/ngram-shakespeare.md.)
    """

    def lines(docs: list[corpus.Document]) -> list[list[str]]:
        return [w for d in docs for line in d.text.split("\n") if (w := words(line))]

    train = lines(corpus.load_documents("shakespeare", split="train")[:12])
    val = lines(corpus.load_documents("shakespeare", split="val")[:3])
    vocab = word_vocabulary(train, min_count=2)
    train_ids, val_ids = [vocab.ids(s) for s in train], [vocab.ids(s) for s in val]
    ppl = {
        smoothing: NGramLM(NGramConfig(order=3, smoothing=smoothing, k=1.0))  # type: ignore[arg-type]
        .fit(train_ids, vocab.vocab_size)
        .perplexity(val_ids)
        for smoothing in ("add-k", "witten-bell", "kneser-ney")
    }
    assert ppl["kneser-ney"] < ppl["witten-bell"] < ppl["add-k"], ppl


def test_ngram_command_writes_table_plot_and_samples(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    md, png = tmp_path / "ngram.md", tmp_path / "img" / "ngram.png"
    ngram(
        orders="1,2",
        smoothing="witten-bell,kneser-ney",
        markdown=md,
        plot=png,
        samples=2,
        sample_order=2,
    )
    out = capsys.readouterr().out
    text = md.read_text()
    assert "| order | Witten–Bell | Kneser–Ney (modified) |" in text and "| 2 | " in text
    assert "Samples from the order-2 Kneser–Ney model" in text and text in out
    assert "Bits per UTF-8 byte" not in text  # words are lossy: no bits per byte
    assert png.stat().st_size > 1000


def test_ngram_command_saves_the_best_model_as_a_run(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    ngram(orders="1,2", smoothing="add-k,kneser-ney", out=out)
    assert "wrote" in capsys.readouterr().out
    model, vocab, config = runs.load_run(out)
    assert config["kind"] == "ngram" and config["data"]["source"] == "shakespeare"
    assert config["model"] == {"order": 2, "smoothing": "kneser-ney", "k": 1.0, "discount": None}
    assert isinstance(model, NGramLM) and model.config == NGramConfig(order=2)
    assert isinstance(vocab, Vocabulary) and vocab.tokens[0] == UNK
    ids = vocab.ids(vocab.split("O Romeo, Romeo! wherefore art thou Romeo?"))
    assert ids[1] == vocab.index["romeo"] and 1 < model.perplexity([ids]) < 10_000
    unfitted, _, _ = runs.load_run(out, weights=False)
    assert unfitted.config == model.config and not unfitted.fitted
    # counts saved with another vocabulary are refused
    (out / "vocab.json").write_text((out / "vocab.json").read_text().replace('"the"', '"zqx"'))
    with pytest.raises(CheckpointError, match="vocabulary mismatch"):
        runs.load_run(out)


def test_subword_run_saves_its_tokenizer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from groundwork.recipes.ngram import save_run

    data = load_ngram_data("shakespeare", tokenizer="gpt2")
    data.train, data.val = data.train[:2], data.val[:1]
    data.val_bytes = None
    (result,) = evaluate_ngrams(data, orders=[2], smoothing=["witten-bell"])
    save_run(result, data, tmp_path)
    model, tokenizer, config = runs.load_run(tmp_path)
    assert isinstance(tokenizer, ByteLevelBPE) and tokenizer.vocab_size == 50257
    assert model.counts(2) == result.model.counts(2) and config["model"]["order"] == 2


def test_subword_data_report_bits_per_byte() -> None:
    data = load_ngram_data("shakespeare", tokenizer="gpt2")
    assert data.vocab_size == 50257 and data.eos_id == 50256 and data.val_bytes
    data.train, data.val = data.train[:4], data.val[:1]
    data.val_bytes = len(corpus.load_documents("shakespeare", split="val")[0].text.encode())
    results = evaluate_ngrams(data, orders=[2], smoothing=["kneser-ney"])
    (r,) = results
    assert r.bits_per_byte is not None and 1.0 < r.bits_per_byte < 8.0
    assert "Bits per UTF-8 byte" in results_markdown(results)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"smoothing": "witten-bel"}, ConfigError, "did you mean 'witten-bell'"),
        ({"orders": "0,2"}, ConfigError, "order must be a positive integer"),
        ({"orders": "two"}, ConfigError, "comma-separated integers"),
        ({"orders": ""}, ConfigError, "at least one order"),
        ({"k": 0.0}, ConfigError, "k must be a positive number"),
        ({"discount": 2.0}, ConfigError, "discount must lie strictly between 0 and 1"),
        ({"orders": "2", "samples": 1, "sample_order": 4}, ConfigError, "sample_order 4"),
        ({"source": "shakespear"}, UnknownNameError, "shakespeare"),
        ({"min_count": 0}, ConfigError, "min_count"),
    ],
)
def test_ngram_command_bad_options(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ngram(**kwargs)


def test_docstring_examples() -> None:
    import doctest

    from groundwork.recipes import ngram as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
