"""The text-classification runner: tokenizer and vocabulary, a held-out split without duplicates,
a tiny training run on sms-spam that beats the majority baseline, saving and loading, the command,
and bad input."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from groundwork.errors import CheckpointError, ConfigError, DataError, EmptyCorpusError
from groundwork.fileio import read_json, write_json
from groundwork.recipes import classify as clf
from groundwork.recipes.classify import (
    ClassifyConfig,
    Splits,
    Vocabulary,
    batches,
    build_classifier,
    classify,
    classify_texts,
    load_classifier,
    load_splits,
    majority_baseline,
    pad_batch,
    save_classifier,
    split_examples,
    tokenize_words,
    train_classifier,
)
from groundwork.runs import load_run


def ex(i: int, text: str, label: str = "ham") -> dict[str, str]:
    return {"id": f"sms/{i:04d}", "text": text, "label": label}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Small models train several times faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sms() -> Splits:
    return load_splits("sms-spam")


@pytest.fixture(scope="module")
def small(sms: Splits) -> Splits:
    """A subset: 600 training, all validation and test messages (seconds to train)."""
    return Splits(train=sms.train[:600], val=sms.val, test=sms.test)


def test_tokenizer_lowercases_and_splits_punctuation() -> None:
    assert tokenize_words("Free entry!! Txt WIN to 87121 (£1.50)") == [
        "free", "entry", "!", "!", "txt", "win", "to", "87121", "(", "£", "1", ".", "50", ")"
    ]  # fmt: skip
    assert tokenize_words("I'm  here") == ["i'm", "here"]
    assert tokenize_words("   ") == []


def test_vocabulary_min_count_order_unknown_and_empty_text() -> None:
    vocab = Vocabulary.build(["b a b", "c b a", "d"], min_count=2)
    assert vocab.tokens == ["<pad>", "<unk>", "b", "a"]  # by count, then alphabetically
    assert vocab.encode("A b zzz") == [3, 2, 1]
    assert vocab.encode("b b b b", max_len=2) == [2, 2]
    assert vocab.encode("") == [vocab.unk_id]  # documented: an empty text is one unknown word
    assert Vocabulary.from_json(vocab.to_json()).tokens == vocab.tokens
    with pytest.raises(ConfigError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(CheckpointError, match="'tokens' list"):
        Vocabulary.from_json({"words": []})
    with pytest.raises(CheckpointError, match="must start with"):
        Vocabulary(["a", "b"])


def test_split_removes_duplicates_across_train_and_test() -> None:
    train = [ex(1, "Hello there"), ex(3, "WIN cash now", "spam"), ex(4, "ok"), ex(5, "see you")]
    test = [ex(2, "win  CASH now!", "spam"), ex(6, "hello there"), ex(7, "new one")]
    s = split_examples(train, test, val_fraction=0.3)
    # "hello there" (id 1, train) and "hello there" (id 6, test) are one message: kept in train;
    # "win cash now!" differs from "win cash now" by "!", so both stay.
    assert s.duplicates_removed == 1
    assert sorted(t for t, _ in s.test) == ["new one", "win  CASH now!"]
    assert len(s.train) + len(s.val) == 4 and s.val
    assert s.counts()["test"] == {"ham": 1, "spam": 1}


def test_sms_spam_splits_are_disjoint_and_imbalanced(sms: Splits) -> None:
    seen = {tuple(tokenize_words(t)) for t, _ in sms.train + sms.val}
    assert not [t for t, _ in sms.test if tuple(tokenize_words(t)) in seen]
    assert not {tuple(tokenize_words(t)) for t, _ in sms.train} & {
        tuple(tokenize_words(t)) for t, _ in sms.val
    }
    n = sms.counts()
    assert sms.duplicates_removed > 0
    assert 0.08 < len(sms.val) / (len(sms.train) + len(sms.val)) < 0.12
    assert 0.05 < n["test"]["spam"] / len(sms.test) < 0.25  # spam is the rare class


@pytest.mark.parametrize(
    ("train", "test", "error", "match"),
    [
        ([], [ex(1, "a")], EmptyCorpusError, "0 train and 1 test"),
        ([ex(1, "a"), ex(2, "b")], [], EmptyCorpusError, "2 train and 0 test"),
        ([ex(1, "a"), ex(2, "b", "eggs")], [ex(3, "c")], DataError, "label 'eggs'"),
        ([ex(1, "a"), ex(2, "a")], [ex(3, "c")], DataError, "1 train and 1 test"),
    ],
)
def test_bad_examples_raise(train: list, test: list, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        split_examples(train, test)


def test_bad_options_raise() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        split_examples([ex(1, "a")], [ex(2, "b")], val_fraction=1.0)
    with pytest.raises(ConfigError, match="unknown model 'svm'"):
        ClassifyConfig(model="svm")
    with pytest.raises(ConfigError, match="unknown model 'svm'"):
        build_classifier("svm", 10)
    with pytest.raises(ConfigError, match="unknown model 'svm'"):
        classify(model="svm")
    with pytest.raises(ConfigError, match="threads"):
        classify(threads=-1)
    with pytest.raises(ConfigError, match="epochs"):
        ClassifyConfig(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        ClassifyConfig(lr=0.0)
    with pytest.raises(ConfigError, match="n_filters"):
        build_classifier("cnn", 10, n_filters=0)
    with pytest.raises(ConfigError, match="has no field\\(s\\) \\['n_filter'\\]"):
        build_classifier("cnn", 10, n_filter=8)


def test_pad_batch_and_batches_cover_every_example_once() -> None:
    ids, lengths = pad_batch([[4, 5], [6], [7, 8, 9]])
    assert ids.tolist() == [[4, 5, 0], [6, 0, 0], [7, 8, 9]] and lengths.tolist() == [2, 1, 3]
    encoded = [[1] * n for n in (5, 1, 3, 2, 4, 6, 1)]
    ordered = list(batches(encoded, 3))
    assert ordered == [[1, 6, 3], [2, 4, 0], [5]]  # by length, ties in input order
    shuffled = list(batches(encoded, 3, generator=torch.Generator().manual_seed(0)))
    assert sorted(i for b in shuffled for i in b) == list(range(7))


def test_tiny_cnn_run_beats_the_majority_baseline(small: Splits, tmp_path: Path) -> None:
    baseline = majority_baseline(small)
    assert baseline.f1[1] == 0.0  # never predicting spam finds no spam
    tiny = {"d_embed": 32, "n_filters": 32, "dropout": 0.0}
    config = ClassifyConfig(model="cnn", epochs=3, lr=1e-2, batch_size=32, model_overrides=tiny)
    result = train_classifier(small, config)
    assert result.test.accuracy > baseline.accuracy
    assert result.test.f1[1] > 0.6  # 0.79 when written
    assert 1 <= result.best_epoch <= 3 and len(result.history) <= 3
    run = save_classifier(result, tmp_path / "cnn")
    metrics = read_json(run / "metrics.json")
    assert metrics["test"]["per_class"]["spam"]["f1"] == result.test.f1[1]
    net, vocab, max_len = load_classifier(run)
    texts = [t for t, _ in small.test[:20]]
    encoded = [vocab.encode(t, max_len) for t in texts]
    torch.testing.assert_close(clf.logits_of(net, encoded), clf.logits_of(result.net, encoded))
    labels = classify_texts(run, ["", "URGENT! You have won a £1000 prize. Call 09061701461 now"])
    assert set(labels) <= {"ham", "spam"} and len(labels) == 2


def test_tiny_bilstm_run_trains_and_reloads(small: Splits, tmp_path: Path) -> None:
    part = Splits(train=small.train[:300], val=small.val[:100], test=small.test[:100])
    config = ClassifyConfig(model="bilstm", epochs=1, model_overrides={"hidden_size": 8})
    result = train_classifier(part, config)
    run = save_classifier(result, tmp_path / "bilstm")
    net, vocab, max_len = load_classifier(run)
    assert isinstance(net, type(result.net)) and net.config == result.net.config
    encoded = [vocab.encode(t, max_len) for t, _ in part.test[:10]]
    torch.testing.assert_close(clf.logits_of(net, encoded), clf.logits_of(result.net, encoded))


def test_loading_a_broken_output_dir_raises(small: Splits, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier(tmp_path / "nothing")
    part = Splits(train=small.train[:50], val=small.val[:20], test=small.test[:20])
    run = save_classifier(
        train_classifier(part, ClassifyConfig(epochs=1, model_overrides={"n_filters": 2})),
        tmp_path / "run",
    )
    vocab = read_json(run / "vocab.json")  # one word fewer (and its count, if recorded)
    fewer = {k: v[:-1] if k in ("tokens", "counts") and v else v for k, v in vocab.items()}
    write_json(run / "vocab.json", fewer)
    with pytest.raises(CheckpointError, match="different runs"):
        load_classifier(run)


def test_command_compares_models_into_a_table(
    small: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    part = Splits(train=small.train[:200], val=small.val[:50], test=small.test[:80])
    monkeypatch.setattr(clf, "load_splits", lambda source: part)
    table = tmp_path / "table.md"
    classify(out=tmp_path / "runs", epochs=1, compare=True, markdown=table)
    out = capsys.readouterr().out
    assert "majority class" in out and "F1" in out
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| model",
        "| majority class (always ham)",
        "| TextCNN (Kim 2014)",
        "| BiLSTM",
    ]
    assert (tmp_path / "runs" / "cnn" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "bilstm" / "vocab.json").exists()


def test_the_output_is_a_classifier_run_that_is_not_replaced_silently(
    small: Splits, tmp_path: Path
) -> None:
    part = Splits(train=small.train[:100], val=small.val[:30], test=small.test[:30])
    config = ClassifyConfig(epochs=2, model_overrides={"n_filters": 4})
    run = tmp_path / "run"
    result = train_classifier(part, config, run)
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["kind"] == "classifier" and written["labels"] == ["ham", "spam"]
    assert written["model"]["arch"] == "cnn" and written["train"]["max_len"] == 100
    for name in ("model.safetensors", "vocab.json", "metrics.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    state = read_json(run / "trainer_state.json")
    assert state["step"] == len(result.history) * 2  # 100 messages in batches of 64: 2 a epoch
    net, vocab, _ = load_run(run, device="cpu")
    assert net.config == result.net.config and vocab.tokens == result.vocab.tokens
    with pytest.raises(ConfigError, match=r"already holds a run; choose .* pass --overwrite"):
        train_classifier(part, config, run)
    with pytest.raises(ConfigError, match="--overwrite"):
        classify(out=run, epochs=1)
    again = train_classifier(part, config, run, overwrite=True)
    assert again.history == result.history  # same seed, same run


def test_docstring_examples() -> None:
    import doctest

    assert doctest.testmod(clf).failed == 0
