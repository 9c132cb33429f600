"""Pretraining a mixture of experts with the causal-LM recipe: the routers' losses are added, the
expert load is logged and drawn, and the run rebuilds, resumes and evaluates."""

from pathlib import Path

import pytest

from groundwork import corpus, tokenize
from groundwork.errors import ConfigError
from groundwork.models.switch_gpt import SwitchGPT
from groundwork.recipes.pretrain import (
    DataConfig,
    ModelArgs,
    evaluate_run,
    load_run,
    pretrain,
    resume_pretraining,
)
from groundwork.train import TrainConfig
from groundwork.train.metrics import expert_load, read_metrics

TINY_MOE = ModelArgs(
    arch="switch-gpt",
    d_model=32,
    n_layers=2,
    n_heads=2,
    max_seq_len=32,
    n_experts=4,
    top_k=1,
    moe_every=1,
    capacity_factor=1.0,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step Switch GPT run on character-level shards of a few Shakespeare plays."""
    data = tmp_path_factory.mktemp("chardata")
    splits = corpus.load_corpus("shakespeare").splits
    small = {"train": splits["train"][:2], "val": splits["val"][:1]}
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
        max_steps=6,
        batch_size=2,
        seq_len=32,
        eval_every=3,
        eval_batches=1,
        log_every=2,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    pretrain(model=TINY_MOE, data=DataConfig(shards=data / "shards"), train_config=train, out=out)
    return out


def test_the_moe_run_logs_its_routing_and_draws_the_load(run_dir: Path) -> None:
    rows = read_metrics(run_dir / "metrics.jsonl")
    logged = [r for r in rows if "aux_loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]
    for r in logged:  # the loss trained on is lm + 0.01 aux + 0.001 z
        expected = r["lm_loss"] + 0.01 * r["aux_loss"] + 0.001 * r["z_loss"]
        assert r["loss"] == pytest.approx(expected, rel=1e-5)
        assert 0 <= r["dropped_fraction"] < 1
    steps, load = expert_load(rows)
    assert steps == [2, 4, 6] and len(load) == 2 and len(load[0]) == 4
    for layer in load:  # each logged step's shares of a layer sum to 1
        for i in range(3):
            assert sum(expert[i] for expert in layer) == pytest.approx(1.0)
    assert (run_dir / "plots" / "expert_load.png").stat().st_size > 0
    assert "arch: switch-gpt" in (run_dir / "config.yaml").read_text()


def test_the_moe_run_rebuilds_resumes_and_evaluates(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    model, _, config = load_run(run_dir, device="cpu")
    assert isinstance(model, SwitchGPT)
    assert config["model"]["n_experts"] == 4 and config["model"]["capacity_factor"] == 1.0
    result = evaluate_run(run_dir, batch_size=64, device="cpu")
    assert 0 < float(result["bits_per_byte"]) < 8
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert resume_pretraining(copy, overrides={"max_steps": 8}).state.step == 8
    assert [r["step"] for r in read_metrics(copy / "metrics.jsonl") if "aux_loss" in r][-1] == 8


def test_moe_options_of_a_dense_model_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_experts is not an option of gpt models"):
        ModelArgs(arch="gpt", n_experts=4).build_config(100)
    with pytest.raises(ConfigError, match="capacity_factor must be a positive number"):
        ModelArgs(arch="switch-gpt", capacity_factor=0.0).build_config(100)
