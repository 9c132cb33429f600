"""`groundwork export RUN OUT` of a fine-tuned task head (``kind: task-head``): a sequence head
fine-tuned by `groundwork finetune`, and token and multiple-choice heads written as it writes
them, become directories that ``transformers``' ``AutoModelFor*.from_pretrained`` loads, with
the run's label names and tokenizer, and the same logits as the run's head."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import helpers
from groundwork import cli
from groundwork.errors import ConfigError
from groundwork.recipes import finetune_classify as fc
from groundwork.runs import load_run, write_config
from groundwork.train.checkpoint import save_model
from groundwork.train.data import pad_with_mask

transformers = pytest.importorskip("transformers")

TEXTS = ["a quiet walk by the river", "tea with friends", "deadline panic no sleep", "exam fear"]
TAGS = ["O", "B-PER", "I-PER"]


def _examples(split: str) -> list[tuple[str, str, int]]:
    """The task's split: ``(id, text, label)``, the texts over and over (calm 0, stressed 1)."""
    n = 24 if split == "train" else 8
    return [(f"{split}{i}", TEXTS[i % 4], int(i % 4 >= 2)) for i in range(n)]


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helpers.tiny_bert_run(tmp_path_factory.mktemp("bert"), TEXTS)


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    """The texts as BERT reads them, ``[CLS] text [SEP]``, right-padded: ``(4, T)``."""
    seqs = fc.encode_for(tokenizer, "bert", TEXTS, 16)
    input_ids, attention_mask = pad_with_mask(seqs, 0)
    return dict(input_ids=input_ids, attention_mask=attention_mask)


def _head_run(bert_run: Path, out: Path, kind: str, pooling: str | None = "cls") -> Path:
    """A ``task-head`` run as `groundwork finetune` writes one, without the training."""
    from groundwork.adapt import head_for

    backbone, tokenizer, _ = load_run(bert_run, device="cpu")
    torch.manual_seed(5)
    num_labels = {"sequence": 2, "token": len(TAGS), "choice": 1}[kind]
    head = head_for(backbone, kind, num_labels, pooling if kind != "token" else None)  # type: ignore[arg-type]
    section: dict[str, Any] = {"kind": kind, "num_labels": num_labels}
    if kind != "token":
        section["pooling"] = pooling
    if kind == "token":
        section["labels"] = TAGS
    out.mkdir(parents=True)
    write_config(
        out,
        kind="task-head",
        model=backbone.config,
        model_class=type(backbone).__name__,
        backbone=str(bert_run),
        head=section,
    )
    save_model(head, out / "model.safetensors")
    tokenizer.save(out / "tokenizer.json")
    return out


def _loaded(directory: Path, auto: str) -> Any:
    model, info = getattr(transformers, auto).from_pretrained(
        directory, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.mark.parity
def test_a_fine_tuned_classifier_exports_with_its_labels_and_tokenizer(
    bert_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    task = fc.ClassificationTask("toy", "calm or stressed", ("calm", "stress"), _examples, 1)
    monkeypatch.setitem(fc.CLASSIFICATION_TASKS, "toy", task)
    run = tmp_path / "ft"
    fc.finetune_classifier(
        str(bert_run),
        task="toy",
        train_config=helpers.tiny_train(max_steps=2, eval_every=2, batch_size=4),
        out=run,
    )
    out = tmp_path / "hf"
    assert cli.main(["export", str(run), str(out)]) == 0
    assert f"exported {run} -> {out}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "calm", "1": "stress"}
    assert config["label2id"] == {"calm": 0, "stress": 1}
    assert (out / "model.safetensors").exists()
    assert (out / "tokenizer.json").read_bytes() == (run / "tokenizer.json").read_bytes()
    head, tokenizer, _ = load_run(run, device="cpu")
    hf = _loaded(out, "AutoModelForSequenceClassification")
    assert hf.config.id2label == {0: "calm", 1: "stress"}
    batch = _batch(tokenizer)
    with torch.no_grad():
        want = head(batch["input_ids"], batch["attention_mask"])  # (4, 2)
        torch.testing.assert_close(hf(**batch).logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("kind", "auto"),
    [("token", "AutoModelForTokenClassification"), ("choice", "AutoModelForMultipleChoice")],
)
def test_token_and_choice_heads_export(
    bert_run: Path, tmp_path: Path, kind: str, auto: str
) -> None:
    run = _head_run(bert_run, tmp_path / "run", kind)
    export_dir = tmp_path / "hf"
    from groundwork.recipes.models import export

    export(run, export_dir)
    head, tokenizer, _ = load_run(run, device="cpu")
    hf = _loaded(export_dir, auto)
    batch = _batch(tokenizer)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        if kind == "token":
            assert hf.config.id2label == dict(enumerate(TAGS))
            got, want = hf(**batch).logits[mask], head(**batch)[mask]  # the real tokens
        else:  # two examples of two candidates: (2, 2, T)
            batch = {k: v.view(2, 2, -1) for k, v in batch.items()}
            got, want = hf(**batch).logits, head(**batch)
            assert got.shape == (2, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_mean_pooled_head_is_refused_and_nothing_written(bert_run: Path, tmp_path: Path) -> None:
    from groundwork.recipes.models import export

    run = _head_run(bert_run, tmp_path / "run", "sequence", pooling="mean")
    with pytest.raises(ConfigError, match="transformers has no head class that mean-pools"):
        export(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
