"""`groundwork probe`: linear probes on every layer of a model over the CoNLL sample's words,
beside a control task; the word -> first sub-token alignment. Sentence tasks: pooled features
that do not depend on the batch, the permuted-label control, the command and its errors."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import helpers
from groundwork import cli
from groundwork.corpus.conll import conll_sample
from groundwork.errors import ConfigError, DataError, UnknownNameError
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.recipes.finetune_label import word_pieces as _word_pieces
from groundwork.recipes.probe import permuted_labels, probe, sentence_features, word_features
from groundwork.runs import load_run, write_run


def test_each_word_is_read_at_its_first_sub_token(conll_bert_run: Path) -> None:
    _, tokenizer, _ = load_run(conll_bert_run, device="cpu")
    words = ["Unbelievably", "EU", "rejects"]
    ids, first = _word_pieces(tokenizer, words, "bert")
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")
    pieces = [tokenizer.encode(w) for w in words]
    assert first == [1, 1 + len(pieces[0]), 1 + len(pieces[0]) + len(pieces[1])]
    assert [ids[i] for i in first] == [p[0] for p in pieces]


def test_features_have_a_row_per_word_for_every_layer(conll_bert_run: Path) -> None:
    net, tokenizer, _ = load_run(conll_bert_run, device="cpu")
    sentences = [s.words for s in conll_sample()[:5]]
    features = word_features(net, tokenizer, sentences, "bert")
    assert len(features) == net.config.n_layers + 1
    assert all(f.shape == (sum(map(len, sentences)), 32) for f in features)


def test_the_command_prints_layers_and_writes_the_plot(
    conll_bert_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "probe.png"
    argv = ["probe", str(conll_bert_run), "--task", "conll-ner", "--plot", str(plot), "--json"]
    assert cli.main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["task"] == "conll-ner" and [r["layer"] for r in found["layers"]] == [0, 1]
    for r in found["layers"]:
        assert 0 <= r["control_accuracy"] <= 1 and 0 <= r["task_accuracy"] <= 1
        assert r["selectivity"] == pytest.approx(r["task_accuracy"] - r["control_accuracy"])
    assert plot.stat().st_size > 1000
    assert cli.main(["probe", str(conll_bert_run), "--task", "conll-chunk"]) == 2


# ---------------------------------------------------------------------------------------------
# sentence tasks: one label per text, pooled features, permuted-label control


def _texts() -> list[str]:
    from groundwork.recipes.finetune_classify import CLASSIFICATION_TASKS, task_splits

    spam = task_splits(CLASSIFICATION_TASKS["sms-spam"])["train"][:300]
    stress = task_splits(CLASSIFICATION_TASKS["dreaddit"])["train"][:60]
    return [t for t, _ in spam + stress]


@pytest.fixture(scope="module")
def text_bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT whose WordPiece tokenizer was trained on SMS and Reddit texts."""
    return helpers.tiny_bert_run(tmp_path_factory.mktemp("bert"), _texts(), vocab_size=300)


@pytest.fixture(scope="module")
def text_gpt_run(text_bert_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny GPT (2 blocks, d 32) with the same tokenizer."""
    _, tokenizer, _ = load_run(text_bert_run, device="cpu")
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=2, max_seq_len=256
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gpt") / "run"
    return write_run(GPT(config), out, tokenizer=text_bert_run / "tokenizer.json")


def _tiny_llama(vocab_size: int) -> Llama:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_seq_len=256,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=64,
    )
    return Llama(config).eval()


TEXTS = [
    "ok",
    "Free entry in a weekly competition to win cup final tickets, text now",
    "I am so stressed about the rent and my exams next week",
    "see you soon",
    "Nah I don't think he goes to usf, he lives around here though",
]


@pytest.mark.parametrize(
    ("family", "pooling"),
    [
        ("bert", "mean"),
        ("bert", "cls"),
        ("bert", "last"),
        ("gpt", "last"),
        ("llama", "last"),
        ("llama", "mean"),
    ],
)
def test_a_texts_features_do_not_depend_on_its_batch(
    text_bert_run: Path, text_gpt_run: Path, family: str, pooling: Any
) -> None:
    net, tokenizer, _ = load_run(text_gpt_run if family == "gpt" else text_bert_run, device="cpu")
    if family == "llama":
        net = _tiny_llama(tokenizer.vocab_size)
    together = sentence_features(net, tokenizer, TEXTS, family, pooling=pooling, batch_size=8)
    alone = [
        sentence_features(net, tokenizer, [t], family, pooling=pooling, batch_size=1) for t in TEXTS
    ]
    shuffled = sentence_features(net, tokenizer, TEXTS[::-1], family, pooling=pooling)
    assert len(together) == net.config.n_layers + 1
    for layer, rows in enumerate(together):
        assert rows.shape == (len(TEXTS), 32)
        if layer > 0 or pooling != "cls":  # [CLS]'s embedding is the same in every text
            assert not torch.equal(rows[0], rows[1])  # the rows differ: not padding read back
        for i in range(len(TEXTS)):
            torch.testing.assert_close(rows[i], alone[i][layer][0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(rows[i], shuffled[layer][-1 - i], rtol=1e-5, atol=1e-5)


def test_pooled_features_are_the_real_tokens_states(text_bert_run: Path) -> None:
    from groundwork.adapt.features import layer_states
    from groundwork.recipes.finetune_classify import encode_for

    net, tokenizer, _ = load_run(text_bert_run, device="cpu")
    text = TEXTS[2]
    ids = encode_for(tokenizer, "bert", [text], 8)[0]  # cut to 8 tokens, [CLS] and [SEP] in
    assert len(ids) == 8
    states = layer_states(net.eval(), torch.tensor([ids]))
    cases: list[tuple[Any, list[torch.Tensor]]] = [
        ("mean", [h[0].mean(0) for h in states]),
        ("cls", [h[0, 0] for h in states]),
        ("last", [h[0, -1] for h in states]),
    ]
    for pooling, expected in cases:
        found = sentence_features(
            net, tokenizer, [text, "ok"], "bert", pooling=pooling, max_tokens=8
        )
        for f, e in zip(found, expected, strict=True):
            torch.testing.assert_close(f[0], e.detach(), rtol=1e-5, atol=1e-5)


def test_the_control_labels_are_a_permutation_of_each_splits_labels() -> None:
    from collections import Counter

    from groundwork.recipes.probe import _sentence_data

    labels = [0] * 30 + [1] * 10 + [2] * 5
    control = permuted_labels(labels, seed=0)
    assert sorted(control) == sorted(labels) and control != labels
    assert permuted_labels(labels, seed=0) == control != permuted_labels(labels, seed=1)

    texts, y, ctrl, train, test, names = _sentence_data("sms-spam", 60, seed=0)
    assert names == ("ham", "spam") and len(texts) == len(y) == len(ctrl) == 120
    assert train == list(range(60)) and test == list(range(60, 120))
    for side in (train, test):
        assert Counter(ctrl[i] for i in side) == Counter(y[i] for i in side)
    assert ctrl != y
    # the sample is fixed: the same texts in every run
    assert _sentence_data("sms-spam", 60, seed=1)[0] == texts


def test_the_command_probes_a_sentence_task(
    text_bert_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "probe.png"
    argv = ["probe", str(text_bert_run), "--task", "sms-spam", "--limit", "40"]
    assert cli.main([*argv, "--max-tokens", "32", "--plot", str(plot), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["task"] == "sms-spam" and found["pooling"] == "mean"
    assert found["labels"] == ["ham", "spam"] and found["max_tokens"] == 32
    assert found["train_examples"] == found["test_examples"] == 40
    assert 0.5 < found["majority_accuracy"] < 1
    assert [r["layer"] for r in found["layers"]] == [0, 1]
    for r in found["layers"]:
        for key in ("task_accuracy", "control_accuracy", "task_macro_f1", "control_macro_f1"):
            assert 0 <= r[key] <= 1
        assert r["selectivity"] == pytest.approx(r["task_accuracy"] - r["control_accuracy"])
    assert plot.stat().st_size > 1000
    # the table, with [CLS] pooling, on dreaddit
    argv = ["probe", str(text_bert_run), "--task", "dreaddit", "--limit", "30"]
    assert cli.main([*argv, "--pooling", "cls", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "on dreaddit (cls pooling): 30 training and 30 test texts, 2 labels" in out
    assert "| layer | task accuracy | control accuracy | selectivity | task macro-F1 |" in out


def test_a_decoder_is_probed_at_its_last_token(
    text_gpt_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["probe", str(text_gpt_run), "--task", "sms-spam", "--limit", "20", "--json"]
    assert cli.main([*argv, "--plot", str(tmp_path / "p.png")]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["pooling"] == "last" and [r["layer"] for r in found["layers"]] == [0, 1, 2]
    # --layers probes only those, numbered as the model's layers, with the same results
    assert cli.main([*argv, "--layers", "2", "--plot", str(tmp_path / "q.png")]) == 0
    only = json.loads(capsys.readouterr().out)["layers"]
    assert only == [found["layers"][2]]


def test_bad_sentence_probes(
    text_bert_run: Path,
    text_gpt_run: Path,
    conll_bert_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plot = ["--plot", str(tmp_path / "p.png")]
    assert cli.main(["probe", str(text_bert_run), "--task", "dreadit", *plot]) == 2
    assert "unknown probe task 'dreadit'" in capsys.readouterr().err
    with pytest.raises(UnknownNameError, match="did you mean 'sms-spam'"):
        probe(str(text_bert_run), task="sms-spma")
    # [CLS] is BERT's: a decoder has none
    argv = ["probe", str(text_gpt_run), "--task", "sms-spam", "--pooling", "cls", *plot]
    assert cli.main(argv) == 2
    assert "pooling 'cls' reads BERT's [CLS] token, and a GPT has none" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        probe(str(text_bert_run), task="sms-spam", pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="are for the sentence tasks"):
        probe(str(conll_bert_run), task="conll-pos", pooling="mean")
    with pytest.raises(ConfigError, match=r"max_tokens must be in \[2, 256\]"):
        probe(str(text_bert_run), task="sms-spam", limit=20, max_tokens=1000)
    with pytest.raises(ConfigError, match="limit must be >= 2"):
        probe(str(text_bert_run), task="sms-spam", limit=1)
    # a layer the backbone does not have (a 2-block GPT: states 0..2)
    argv = ["probe", str(text_gpt_run), "--task", "sms-spam", "--layers", "1,5", *plot]
    assert cli.main(argv) == 2
    assert "has hidden states 0..2 (0: the embeddings" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="comma-separated integers"):
        probe(str(text_gpt_run), task="sms-spam", layers="top")


def test_a_training_sample_of_one_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from groundwork.recipes import finetune_classify as fc
    from groundwork.recipes.probe import _sentence_data

    def examples(split: str) -> list[tuple[str, str, int]]:
        label = 0 if split == "train" else 1
        return [(f"{split}{i}", f"text {i}", label) for i in range(10)]

    task = fc.ClassificationTask("one-class", "", ("a", "b"), examples)
    monkeypatch.setitem(fc.CLASSIFICATION_TASKS, "one-class", task)
    with pytest.raises(DataError, match="hold a single class: raise --limit"):
        _sentence_data("one-class", None, seed=0)
