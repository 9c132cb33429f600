"""`groundwork pretrain --model.arch vit|image-cnn|clip` on the digits: the run directory, its
test scores, resume, `groundwork classify-image`, and the errors of bad recipes."""

import json
from pathlib import Path

import pytest
import yaml

import helpers
from groundwork import cli
from groundwork.corpus import images as digits
from groundwork.errors import ConfigError
from groundwork.models.clip import CLIP
from groundwork.models.image_cnn import ImageCNN
from groundwork.models.vit import ViTForImageClassification
from groundwork.recipes.classify_image import classify_image
from groundwork.recipes.pretrain import DataConfig, ModelArgs, pretrain, resume_pretraining
from groundwork.recipes.pretrain_vision import encode_captions, evaluate_vision_run
from groundwork.runs import load_run
from groundwork.tokenize import train_tokenizer

TINY = {
    "vit": ModelArgs(arch="vit", preset="digits", d_model=16, n_layers=1, n_heads=2, d_ff=32),
    "image-cnn": ModelArgs(arch="image-cnn", preset="digits"),
    "clip": ModelArgs(arch="clip", preset="digits", d_model=16, n_layers=1, n_heads=2, d_ff=32),
}
CLASSES = {"vit": ViTForImageClassification, "image-cnn": ImageCNN, "clip": CLIP}
DIGITS = DataConfig(source="digits", shift=1, vocab_size=320)


def _train(arch: str, out: Path, **kw: object) -> None:
    pretrain(model=TINY[arch], data=DIGITS, train_config=helpers.tiny_train(**kw), out=out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision")
    for arch in TINY:
        _train(arch, root / arch)
    return {arch: root / arch for arch in TINY}


@pytest.mark.parametrize("arch", list(TINY))
def test_the_run_loads_as_its_class_with_test_scores(runs: dict[str, Path], arch: str) -> None:
    net, tokenizer, config = load_run(runs[arch], device="cpu")
    assert type(net) is CLASSES[arch]
    assert config["kind"] == ("clip" if arch == "clip" else "image-classifier")
    assert config["labels"] == list(digits.DIGIT_NAMES) and config["images"]["shift"] == 1
    assert (tokenizer is not None) == (arch == "clip")
    scores = json.loads((runs[arch] / "metrics.json").read_text())
    assert scores["images"] == 333 and 0.0 <= scores["accuracy"] <= 1.0
    assert scores["parameters"] == sum(p.numel() for p in net.parameters())
    assert scores["train_seconds"] > 0
    if arch == "clip":
        assert {"image_to_text_r@1", "text_to_image_r@10"} <= set(scores)
    # the engine logged accuracy on the validation split at each evaluation
    evals = [json.loads(line) for line in (runs[arch] / "metrics.jsonl").read_text().splitlines()]
    assert any("val_accuracy" in e for e in evals)


def test_clip_overrides_set_both_towers(runs: dict[str, Path]) -> None:
    model = yaml.safe_load((runs["clip"] / "config.yaml").read_text())["model"]
    assert model["vision_d_model"] == model["text_d_model"] == 16
    assert model["vision_n_layers"] == model["text_n_layers"] == 1
    assert model["image_size"] == 8 and model["n_channels"] == 1


def test_evaluation_is_reproducible(runs: dict[str, Path]) -> None:
    scores = json.loads((runs["clip"] / "metrics.json").read_text())
    again = evaluate_vision_run(runs["clip"], device="cpu")
    assert again["accuracy"] == scores["accuracy"]
    assert again["image_to_text_r@5"] == scores["image_to_text_r@5"]


def test_resume_continues_the_run(tmp_path: Path) -> None:
    _train("vit", tmp_path / "run", max_steps=2)
    resume_pretraining(tmp_path / "run", overrides={"max_steps": 4})
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["step"] == 4


def test_classify_image_prints_predictions(runs: dict[str, Path], capsys) -> None:
    classify_image(runs["vit"], split="val", show=1, device="cpu")
    out = capsys.readouterr().out
    assert "image 0: a " in out and "accuracy on the val split" in out and "of 174 images" in out
    classify_image(runs["clip"], template="the digit {}", show=0, device="cpu")
    out = capsys.readouterr().out
    assert "'the digit zero' ... 'the digit nine'" in out


@pytest.mark.parametrize(
    ("run", "kwargs", "match"),
    [
        ("vit", dict(template="a {}"), "--template is for CLIP runs"),
        ("clip", dict(template="a digit"), "must hold {} once"),
    ],
)
def test_classify_image_refuses_bad_templates(
    runs: dict[str, Path], run: str, kwargs: dict, match: str
) -> None:
    with pytest.raises(ConfigError, match=match.replace("{", r"\{").replace("}", r"\}")):
        classify_image(runs[run], device="cpu", **kwargs)


def test_encode_captions_appends_and_pads_with_end_of_text() -> None:
    tok = train_tokenizer("bpe", ["a handwritten seven", "a thin handwritten one"], 270)
    ids, mask = encode_captions(tok, ["a seven", "a thin one"], max_len=64)
    eot = tok.eot_id
    lengths = mask.sum(1).tolist()
    assert lengths[0] < lengths[1] and ids.shape[1] == lengths[1]
    for row, n in zip(ids.tolist(), lengths, strict=True):
        assert row[n - 1] == eot and all(t == eot for t in row[n:])
    with pytest.raises(ConfigError, match="longer than the text encoder's max_seq_len"):
        encode_captions(tok, ["a thin handwritten seven"], max_len=3)


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        (TINY["vit"], DataConfig(source="shakespeare"), "not an image source"),
        (ModelArgs(arch="vit", preset="digits", n_kv_heads=2), DIGITS, "n_kv_heads"),
        (ModelArgs(arch="image-cnn", preset="digits", d_model=8), DIGITS, "d_model"),
        (TINY["vit"], DataConfig(source="digits", whole_word_masking=True), "whole_word"),
        (ModelArgs(arch="gpt"), DataConfig(shift=1), "data.shift is for image models"),
    ],
)
def test_bad_recipes_are_refused(
    tmp_path: Path, model: ModelArgs, data: DataConfig, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        pretrain(model=model, data=data, train_config=helpers.tiny_train(), out=tmp_path / "r")


def test_the_commands_run_from_the_command_line(runs: dict[str, Path], capsys) -> None:
    assert cli.main(["classify-image", str(runs["clip"]), "--show", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot by the prompts 'a handwritten zero'" in out and "accuracy on the test" in out
    assert cli.main(["classify-image", str(runs["vit"]), "--template", "a {}"]) == 2
    assert "--template is for CLIP runs" in capsys.readouterr().err
