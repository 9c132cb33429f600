"""`groundwork predict RUN TEXT...`: a task-head run's labels (sequence head) or tags (token head),
equal to the head's own argmax computed one text at a time; --file, --json; errors."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import helpers
from groundwork import cli
from groundwork.errors import CheckpointError, ConfigError, DataError
from groundwork.recipes import finetune_classify as fc
from groundwork.recipes import finetune_label as fl
from groundwork.recipes import predict as pr
from groundwork.runs import MODEL_FILE, TOKENIZER_FILE, load_run, write_config
from groundwork.train.checkpoint import save_model

TEXTS = [
    "a quiet walk by the river",
    "deadline panic no sleep at all tonight",
    "tea",
    "rent due and no money again this month",
    "EU rejects German call to boycott British lamb",
]
LABELS = ["calm", "stress", "unsure"]
TAGS = ["B-LOC", "B-MISC", "B-ORG", "O"]


def _task_head_run(root: Path, bert: Path, kind: str, labels: list[str]) -> Path:
    """An untrained task-head run over the tiny BERT, as `groundwork finetune` writes one; the
    classifier's weights are scaled up so that the classes' logits are far apart (an argmax
    that does not hinge on rounding)."""
    from groundwork.adapt import head_for

    backbone, _, _ = load_run(bert, device="cpu")
    torch.manual_seed(1)
    pooling = "mean" if kind == "sequence" else None  # texts differ more in their mean state
    head = head_for(backbone, kind, len(labels), pooling)
    torch.nn.init.normal_(head.classifier.weight, std=1.0)
    out = root / f"{kind}-head"
    out.mkdir()
    head_section: dict[str, object] = {"kind": kind, "num_labels": len(labels), "labels": labels}
    if kind == "sequence":
        head_section["pooling"] = pooling
    write_config(
        out,
        kind="task-head",
        model=backbone.config,
        model_class=type(backbone).__name__,
        backbone=str(bert),
        head=head_section,
        task="toy",
        max_tokens=24,
    )
    save_model(head, out / MODEL_FILE)
    shutil.copyfile(bert / TOKENIZER_FILE, out / TOKENIZER_FILE)
    return out


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helpers.tiny_bert_run(tmp_path_factory.mktemp("bert"), TEXTS * 3)


@pytest.fixture(scope="module")
def sequence_run(bert_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _task_head_run(tmp_path_factory.mktemp("seq"), bert_run, "sequence", LABELS)


@pytest.fixture(scope="module")
def token_run(bert_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _task_head_run(tmp_path_factory.mktemp("tok"), bert_run, "token", TAGS)


def test_labels_are_the_heads_argmax_and_probabilities_its_softmax(sequence_run: Path) -> None:
    head, tokenizer, _ = load_run(sequence_run, device="cpu")
    expected_labels, expected_probs = [], []
    with torch.no_grad():
        for text in TEXTS:  # one at a time, no padding
            ids = fc.encode_for(tokenizer, "bert", [text], 24)[0]
            logits = head(torch.tensor([ids]))[0]  # (C,)
            expected_labels.append(LABELS[int(logits.argmax())])
            expected_probs.append(torch.softmax(logits, -1).tolist())
    got = pr.predict_texts(sequence_run, TEXTS, batch_size=2, device="cpu")  # padded batches
    assert all(isinstance(p, pr.LabelPrediction) for p in got)
    assert [p.label for p in got] == expected_labels
    assert len(set(expected_labels)) > 1, "the test texts should not all get one label"
    for p, probs in zip(got, expected_probs, strict=True):
        assert isinstance(p, pr.LabelPrediction) and p.text in TEXTS
        assert list(p.probabilities) == LABELS
        assert list(p.probabilities.values()) == pytest.approx(probs, abs=1e-5)
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_tags_are_read_at_each_words_first_piece(token_run: Path) -> None:
    head, tokenizer, _ = load_run(token_run, device="cpu")
    words = [t.split() for t in TEXTS]
    encoded = [fl.word_pieces(tokenizer, w, "bert") for w in words]
    expected = fl.predict_tags(  # the training recipe's own, one sentence at a time
        head, [ids for ids, _ in encoded], [first for _, first in encoded], TAGS
    )
    got = pr.predict_texts(token_run, TEXTS, batch_size=3, device="cpu")
    assert [list(p.tags) for p in got] == expected
    assert [list(p.words) for p in got] == words
    assert len({t for tags in expected for t in tags}) > 1


def test_the_command_prints_a_table_or_json_lines(
    sequence_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = pr.predict_texts(sequence_run, TEXTS[:2], device="cpu")
    assert cli.main(["predict", str(sequence_run), *TEXTS[:2], "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| text | label | p(calm) | p(stress) | p(unsure) |"
    assert [row.split(" | ")[1] for row in table[2:]] == [p.label for p in expected]

    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS[2:]) + "\n", encoding="utf-8")
    argv = ["predict", str(sequence_run), TEXTS[0], "--file", str(lines), "--json"]
    assert cli.main(argv) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["text"] for p in printed] == [TEXTS[0], *TEXTS[2:]]
    assert set(printed[0]) == {"text", "label", "probabilities"}
    assert printed[0]["label"] == expected[0].label

    assert cli.main(["predict", str(sequence_run), "--file", str(lines), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(TEXTS) - 2  # the file alone


def test_the_command_prints_word_tag_pairs(
    token_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = pr.predict_texts(token_run, ["EU rejects lamb"], device="cpu")[0]
    assert isinstance(expected, pr.TagPrediction)
    assert cli.main(["predict", str(token_run), "EU rejects lamb"]) == 0
    assert capsys.readouterr().out.strip() == expected.pairs()
    assert expected.pairs().startswith("EU/") and len(expected.pairs().split()) == 3
    assert cli.main(["predict", str(token_run), "EU  rejects", "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["words"] == ["EU", "rejects"] and len(line["tags"]) == 2


def test_a_run_of_another_kind_is_refused(
    bert_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CheckpointError, match=r"'mlm' run, not a task-head run.*finetune"):
        pr.predict_texts(bert_run, ["hello"])
    with pytest.raises(CheckpointError, match=r"not a run directory.*finetune"):
        pr.predict_texts(tmp_path, ["hello"])
    assert cli.main(["predict", str(bert_run), "hello"]) == 2
    assert "not a task-head run" in capsys.readouterr().err


def test_no_texts_and_empty_texts_are_refused(sequence_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no texts"):
        pr.predict_texts(sequence_run, [])
    with pytest.raises(DataError, match=r"text 2 is empty"):
        pr.predict_texts(sequence_run, ["fine", "  "])
    blank = tmp_path / "blank.txt"
    blank.write_text("one\n\nthree\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank.txt line 2 is empty"):
        pr.predict(str(sequence_run), texts=[], file=blank)
    with pytest.raises(DataError, match=r"nope.txt does not exist"):
        pr.predict(str(sequence_run), texts=[], file=tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match=r"needs a RUN"):
        pr.predict(None, texts=[])
    with pytest.raises(ConfigError, match=r"batch_size"):
        pr.predict_texts(sequence_run, ["fine"], batch_size=0)


def test_a_text_too_long_for_the_token_head_is_refused(token_run: Path) -> None:
    with pytest.raises(ConfigError, match=r"text 1 is .* more than the 24"):
        pr.predict_texts(token_run, [" ".join(["lamb"] * 30)])
