"""Pretraining from a recipe: data preparation, run directories, and their bad inputs."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

import helpers
from groundwork import corpus, tokenize
from groundwork.errors import CheckpointError, ConfigError, DataError
from groundwork.impact.tracking import read_emissions
from groundwork.recipes.pretrain import (
    DataConfig,
    ModelArgs,
    evaluate_run,
    load_run,
    pretrain,
    resume_pretraining,
)
from groundwork.train import TrainConfig, read_metrics

TINY_MODEL = ModelArgs(d_model=32, n_layers=1, n_heads=2, max_seq_len=32)


def tiny_train(**kw: object) -> TrainConfig:
    return helpers.tiny_train(**{"batch_size": 2, **kw})


@pytest.fixture(scope="module")
def char_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Shakespeare shards with a character tokenizer (fast to train and to encode)."""
    out = tmp_path_factory.mktemp("chardata")
    splits = corpus.load_corpus("shakespeare").splits
    tok = tokenize.train_tokenizer("char", [d.text for d in splits["train"]], 200)
    tok.save(out / "tokenizer.json")
    corpus.prepare_shards(
        {s: d for s, d in splits.items() if d},
        tok.encode,
        tok.vocab_size,
        out / "shards",
        eot_id=tok.eot_id,
        tokenizer_path=out / "tokenizer.json",
        progress=False,
    )
    return out / "tokenizer.json", out / "shards"


@pytest.fixture(scope="module")
def run_dir(char_shards: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, shards = char_shards
    out = tmp_path_factory.mktemp("run")
    pretrain(model=TINY_MODEL, data=DataConfig(shards=shards), train_config=tiny_train(), out=out)
    return out


def test_the_run_rebuilds_and_evaluates(run_dir: Path) -> None:
    model, tokenizer, config = load_run(run_dir, device="cpu")
    assert config["model"]["arch"] == "gpt" and config["model"]["n_layers"] == 1
    assert model.config.vocab_size == tokenizer.vocab_size  # type: ignore[union-attr]
    result = evaluate_run(run_dir, device="cpu")
    assert result["split"] == "val" and result["tokens"] > 500_000  # ~863k characters
    assert 0 < float(result["bits_per_byte"]) < 8


def test_resume_continues_with_more_steps(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    state = resume_pretraining(copy, overrides={"max_steps": 6}).state
    assert state.step == 6


def test_missing_shards(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepare the shards first"):
        pretrain(data=DataConfig(shards=tmp_path / "none"), train_config=tiny_train(), out=tmp_path)


def test_tokenizer_that_does_not_match_the_shards(
    char_shards: tuple[Path, Path], tmp_path: Path
) -> None:
    _, shards = char_shards
    other = tokenize.train_tokenizer("char", ["abc"], 10)
    other.save(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="prepared for"):
        pretrain(
            data=DataConfig(shards=shards, tokenizer=str(tmp_path / "other.json")),
            train_config=tiny_train(),
            out=tmp_path / "run",
        )


def test_run_directory_from_an_incompatible_config(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["d_model"] = 64
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="has shape"):
        load_run(copy, device="cpu")
    with pytest.raises(CheckpointError, match="not a run directory"):
        load_run(tmp_path, device="cpu")


def test_model_args_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.dropout is not an option of llama"):
        ModelArgs(arch="llama", dropout=0.1).build_config(100)
    assert ModelArgs(arch="llama", n_kv_heads=1).build_config(100).n_kv_heads == 1


def test_sequence_longer_than_the_model(char_shards: tuple[Path, Path], tmp_path: Path) -> None:
    _, shards = char_shards
    with pytest.raises(ConfigError, match=r"train.seq_len \(64\) is longer than the model"):
        pretrain(
            model=TINY_MODEL,
            data=DataConfig(shards=shards),
            train_config=tiny_train(seq_len=64),
            out=tmp_path,
        )


def test_an_existing_run_is_not_replaced_unless_asked(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shards = Path(yaml.safe_load((copy / "config.yaml").read_text())["data"]["shards"])
    kw: dict = dict(model=TINY_MODEL, data=DataConfig(shards=shards), out=copy)
    with pytest.raises(ConfigError, match=r"already holds a run; continue it with --resume .*"):
        pretrain(train_config=tiny_train(max_steps=2), **kw)
    with pytest.raises(ConfigError, match="--overwrite"):
        pretrain(train_config=tiny_train(max_steps=2), **kw)
    result = pretrain(train_config=tiny_train(max_steps=2), overwrite=True, **kw)
    assert result.state.step == 2
    assert [r["step"] for r in read_metrics(copy / "metrics.jsonl") if "val_loss" in r] == [2]


def test_the_command_says_why_it_stopped_and_resume_continues(
    char_shards: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from groundwork.recipes import pretrain as recipe

    _, shards = char_shards
    out = tmp_path / "run"
    monkeypatch.setattr(recipe, "evaluate_run", lambda run, device: FAKE_SUMMARY)  # seconds
    # A time budget too small for even one step: every invocation takes one step and stops.
    cfg = tiny_train(max_time=1e-9, progress=True)
    recipe.pretrain_command(model=TINY_MODEL, data=DataConfig(shards=shards), train=cfg, out=out)
    printed = capsys.readouterr().out
    assert re.search(r"pretraining gpt \([\d,]+ parameters\) on cpu: steps 0 -> 4 ", printed)
    assert "of 64 tokens each (batch 2 x 32 tokens x 1 accumulated)" in printed
    assert "step 1: val loss (first 1 batch of 2x32) " in printed
    assert "stopped at step 1 of 4: train.max_time (1e-09 s) reached" in printed
    assert f"Resume with: groundwork pretrain --resume {out}" in printed
    assert "full validation split (12,345 tokens): loss 1.0000 nats/token" in printed
    # the run's energy and emissions, measured by codecarbon (chapter 23), if it is installed
    if importlib.util.find_spec("codecarbon") is not None:
        assert re.search(r"energy [\d.]+ Wh, [\d.]+ gCO2e \(FRA, ", printed)
        first = read_emissions(out)
        assert first is not None and first["total_energy_kwh"] > 0

    again = dict(model=ModelArgs(), data=DataConfig(), train=cfg, resume=out)
    recipe.pretrain_command(**again)  # type: ignore[arg-type]
    printed = capsys.readouterr().out
    assert "steps 1 -> 4" in printed and "stopped at step 2 of 4: train.max_time" in printed
    if importlib.util.find_spec("codecarbon") is not None:  # a resumed run adds to its record
        resumed = read_emissions(out)
        assert resumed is not None and resumed["total_energy_kwh"] > first["total_energy_kwh"]
    unlimited = {**again, "train": tiny_train(max_time=1e6, progress=False)}
    recipe.pretrain_command(**unlimited)  # type: ignore[arg-type]
    assert "finished at step 4 of 4: train.max_steps (4) reached" in capsys.readouterr().out
    recipe.pretrain_command(**unlimited)  # type: ignore[arg-type]
    assert "nothing to do" in capsys.readouterr().out


FAKE_SUMMARY = {
    "tokens": 12345,
    "loss_nats_per_token": 1.0,
    "perplexity": 2.7,
    "bits_per_byte": 1.4,
}
