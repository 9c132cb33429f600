"""`groundwork finetune MODEL --method M` (chapter 13): every PEFT method trains a head over a
frozen backbone through the same recipe; the run keeps only what trained and loads back."""

import json
from pathlib import Path

import pytest
import torch

import helpers
from groundwork.errors import ConfigError, UnknownNameError
from groundwork.recipes import finetune_classify as fc
from groundwork.runs import load_run, read_config
from groundwork.train.checkpoint import unique_state_dict

CALM, STRESS, _examples = helpers.CALM, helpers.STRESS, helpers.calm_or_stressed


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helpers.tiny_llama_run(tmp_path_factory.mktemp("llama"), CALM + STRESS)


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> str:
    task = fc.ClassificationTask("toy", "calm or stressed", ("calm", "stress"), _examples, 1)
    monkeypatch.setitem(fc.CLASSIFICATION_TASKS, "toy", task)
    return "toy"


def _train() -> object:
    return helpers.tiny_train(
        max_steps=3, eval_every=3, batch_size=8, lr=1e-2, best_metric="val_f1", best_mode="max"
    )


@pytest.mark.parametrize(
    "method", ["full", "lora", "qlora", "adapter", "prefix", "prompt", "ia3", "bitfit"]
)
def test_every_method_trains_saves_its_weights_and_loads_back(
    method: str, llama_run: Path, toy_task: str, tmp_path: Path
) -> None:
    out = tmp_path / method
    peft = {"num_virtual_tokens": 3} if method in ("prefix", "prompt") else None
    if method in ("lora", "qlora"):
        peft = {"r": 2}
    if method == "adapter":
        peft = {"bottleneck": 4}
    result = fc.finetune_classifier(
        str(llama_run),
        task=toy_task,
        train_config=_train(),  # type: ignore[arg-type]
        out=out,
        method=method,
        peft=peft,
    )
    assert result.stopped == "finished"
    metrics = json.loads((out / fc.METRICS_FILE).read_text())
    assert metrics["method"] == method
    trainable, total = metrics["trainable_parameters"], metrics["total_parameters"]
    assert 0 < trainable <= total
    assert (trainable == total) == (method == "full")
    assert metrics["peak_rss_mb"] > 0 and metrics["seconds_per_step"] > 0
    config = read_config(out)
    if method != "full":
        assert config["peft"]["method"] == method
        if method == "prompt":  # the soft prompt starts from the task's description
            assert config["peft"]["options"]["init_text"] == "calm or stressed"
    # the run loads back (a PEFT run: the backbone again, then its saved weights) and predicts
    # as the head that was trained
    head, tokenizer, _ = load_run(out, device="cpu")
    seqs = fc.encode_for(tokenizer, "llama", CALM + STRESS, 16)
    data = fc.LabelledTexts(seqs, [0] * 8, batch_size=8)
    assert fc.predict(head, data, seqs) == [int(p) for p in _predictions(out)]
    if method != "full":  # only what trained was written
        from safetensors.torch import load_file

        saved = load_file(str(out / "model.safetensors"))
        assert sum(v.numel() for v in saved.values()) == trainable
        assert len(saved) < len(unique_state_dict(head))


def _predictions(out: Path) -> list[int]:
    """The trained head's test predictions, recomputed from its own saved weights."""
    head, tokenizer, _ = load_run(out, device="cpu")
    seqs = fc.encode_for(tokenizer, "llama", CALM + STRESS, 16)
    with torch.no_grad():
        data = fc.LabelledTexts(seqs, [0] * 8, batch_size=8)
        return fc.predict(head, data, seqs)


def test_bad_methods_and_options(llama_run: Path, toy_task: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown PEFT method 'lorra'.*lora"):
        fc.finetune_classifier(
            str(llama_run), task=toy_task, train_config=_train(), out=tmp_path / "a", method="lorra"
        )
    with pytest.raises(ConfigError, match="LoRAConfig has no field 'rank'; its fields are r, "):
        fc.finetune_classifier(
            str(llama_run),
            task=toy_task,
            train_config=_train(),
            out=tmp_path / "b",
            method="lora",
            peft={"rank": 4},
        )
