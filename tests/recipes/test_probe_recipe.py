"""`groundwork probe`: linear probes on every layer of a model over the CoNLL sample's words,
beside a control task; the word -> first sub-token alignment."""

import json
from pathlib import Path

import pytest

from groundwork import cli
from groundwork.corpus.conll import conll_sample
from groundwork.recipes.finetune_label import word_pieces as _word_pieces
from groundwork.recipes.probe import word_features
from groundwork.runs import load_run


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
