"""Pretraining the LSTM language model with the transformer's recipe, loop and run directory."""

from pathlib import Path

import pytest
import torch

from groundwork import corpus, tokenize
from groundwork.errors import ConfigError
from groundwork.models import LSTMLM
from groundwork.recipes.pretrain import (
    DataConfig,
    ModelArgs,
    evaluate_run,
    load_run,
    pretrain,
    resume_pretraining,
    write_run,
)
from groundwork.train import TrainConfig

TINY_LSTM = ModelArgs(arch="lstm", d_model=16, d_hidden=24, n_layers=1, max_seq_len=32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step LSTM run on character-level shards of three Shakespeare plays."""
    data = tmp_path_factory.mktemp("chardata")
    splits = corpus.load_corpus("shakespeare").splits
    small = {"train": splits["train"][:2], "val": splits["val"][:1]}  # a few plays: fast
    tok = tokenize.train_tokenizer("char", [d.text for d in small["train"]], 200)
    tok.save(data / "tokenizer.json")
    corpus.prepare_shards(
        small,
        tok.encode,
        tok.vocab_size,
        data / "shards",
        eot_id=tok.eot_id,
        tokenizer_path=data / "tokenizer.json",
        progress=False,
    )
    out = tmp_path_factory.mktemp("run")
    train = TrainConfig(
        max_steps=4,
        batch_size=2,
        seq_len=32,
        eval_every=2,
        eval_batches=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    pretrain(model=TINY_LSTM, data=DataConfig(shards=data / "shards"), train_config=train, out=out)
    return out


def test_the_lstm_run_rebuilds_and_evaluates(run_dir: Path) -> None:
    model, tokenizer, config = load_run(run_dir, device="cpu")
    assert isinstance(model, LSTMLM)
    assert config["model"]["arch"] == "lstm" and config["model"]["d_hidden"] == 24
    assert model.config.vocab_size == tokenizer.vocab_size
    result = evaluate_run(run_dir, batch_size=256, device="cpu")
    assert result["split"] == "val" and result["tokens"] > 10_000
    assert 0 < float(result["bits_per_byte"]) < 8
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert any('"val_loss"' in line for line in metrics)


def test_resume_and_write_run_round_trip(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert resume_pretraining(copy, overrides={"max_steps": 6}).state.step == 6
    model, _, _ = load_run(copy, device="cpu")
    written = write_run(model, tmp_path / "written", tokenizer=copy / "tokenizer.json")
    again, _, _ = load_run(written, device="cpu")
    idx = torch.randint(0, model.config.vocab_size, (1, 10))  # type: ignore[union-attr]
    torch.testing.assert_close(again(idx), model(idx))


def test_sampling_from_the_run(run_dir: Path) -> None:
    from groundwork.generate import sample

    model, tokenizer, _ = load_run(run_dir, device="cpu")
    ids = sample(
        model,
        tokenizer.encode("ROMEO:"),
        max_new_tokens=5,
        max_seq_len=model.config.max_seq_len,  # type: ignore[union-attr]
        generator=torch.Generator().manual_seed(0),
    )
    assert 1 <= len(ids) <= 5 and all(0 <= i < tokenizer.vocab_size for i in ids)


def test_lstm_model_args_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_heads is not an option of lstm"):
        ModelArgs(arch="lstm", n_heads=4).build_config(100)
    with pytest.raises(ConfigError, match=r"model\.d_hidden is not an option of gpt"):
        ModelArgs(arch="gpt", d_hidden=64).build_config(100)
    config = ModelArgs(arch="lstm", d_hidden=40).build_config(100)
    assert (config.vocab_size, config.d_hidden) == (100, 40)  # type: ignore[union-attr]
