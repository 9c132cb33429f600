"""`groundwork pretrain --model.arch bert|t5`: encoders and encoder-decoders through the engine,
their run directories, resume, and the refusal to generate from them."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

import helpers
from groundwork import corpus, tokenize
from groundwork.errors import ConfigError
from groundwork.models.bert import BertForPreTraining
from groundwork.models.t5 import T5
from groundwork.recipes.pretrain import (
    DataConfig,
    ModelArgs,
    pretrain,
    pretrain_command,
    resume_pretraining,
)
from groundwork.recipes.pretrain_encoders import NUM_SENTINELS, check_objective_fields
from groundwork.runs import load_run
from groundwork.train import TrainConfig, read_metrics

TINY_BERT = ModelArgs(arch="bert", d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
TINY_T5 = ModelArgs(arch="t5", d_model=32, d_kv=16, d_ff=64, n_layers=1, n_heads=2)


def tiny_train(**kw: object) -> TrainConfig:
    return helpers.tiny_train(**{"seq_len": 64, "eval_batches": 2, **kw})


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small WordPiece tokenizer trained on a few Shakespeare plays (BERT's special tokens)."""
    out = tmp_path_factory.mktemp("wordpiece") / "tokenizer.json"
    texts = [d.text for d in corpus.load_documents("shakespeare", split="train")[:3]]
    tokenize.train_tokenizer("wordpiece", texts, 1000).save(out)
    return out


@pytest.fixture(scope="module")
def char_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    return out / "shards"


@pytest.fixture(scope="module")
def bert_run(wordpiece: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bert") / "run"
    data = DataConfig(tokenizer=str(wordpiece), whole_word_masking=True)
    pretrain(model=TINY_BERT, data=data, train_config=tiny_train(), out=out)
    return out


@pytest.fixture(scope="module")
def t5_run(char_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("t5") / "run"
    pretrain(model=TINY_T5, data=DataConfig(shards=char_shards), train_config=tiny_train(), out=out)
    return out


def test_bert_run_rebuilds_the_pretraining_model(bert_run: Path) -> None:
    model, tokenizer, config = load_run(bert_run, device="cpu")
    assert isinstance(model, BertForPreTraining)
    assert config["kind"] == "mlm" and config["model"]["arch"] == "bert"
    assert config["model_class"] == "BertForPreTraining" and config["task"] == "mlm+nsp"
    assert model.config.vocab_size == tokenizer.vocab_size
    assert model.config.pad_id == tokenizer.special_tokens["[PAD]"]
    evals = [m for m in read_metrics(bert_run / "metrics.jsonl") if "val_loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    for name in ("val_mlm_accuracy", "val_nsp_accuracy", "val_mlm_loss", "val_nsp_loss"):
        assert 0 <= evals[-1][name] < 10, name
    train_rows = [m for m in read_metrics(bert_run / "metrics.jsonl") if "loss" in m]
    assert train_rows and "nsp_accuracy" in train_rows[-1]


def test_t5_run_rebuilds_t5_with_reserved_sentinels(t5_run: Path) -> None:
    model, tokenizer, config = load_run(t5_run, device="cpu")
    assert isinstance(model, T5)
    assert config["kind"] == "seq2seq" and config["model_class"] == "T5"
    assert model.config.vocab_size == tokenizer.vocab_size + NUM_SENTINELS
    assert config["objective"]["sentinel_start"] == model.config.vocab_size - 1
    assert model.config.eos_id == tokenizer.eot_id == model.config.decoder_start_id
    evals = [m for m in read_metrics(t5_run / "metrics.jsonl") if "val_loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    assert 0 <= evals[-1]["val_token_accuracy"] <= 1 and evals[-1]["val_loss"] > 0


@pytest.mark.parametrize("which", ["bert", "t5"])
def test_resume_continues(which: str, bert_run: Path, t5_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bert_run if which == "bert" else t5_run, copy)
    state = resume_pretraining(copy, overrides={"max_steps": 6}).state
    assert state.step == 6
    assert json.loads((copy / "trainer_state.json").read_text())["step"] == 6
    assert [m["step"] for m in read_metrics(copy / "metrics.jsonl") if "val_loss" in m] == [2, 4, 6]


def test_command_prints_the_encoder_summaries(
    wordpiece: Path,
    char_shards: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the whole validation split takes ~30 s per model on CPU: score its first batches here
    from groundwork.recipes import pretrain_encoders

    whole = pretrain_encoders.evaluate_encoder_run
    monkeypatch.setattr(
        pretrain_encoders,
        "evaluate_encoder_run",
        lambda run, device: whole(run, device=device, max_batches=3),
    )
    pretrain_command(
        model=TINY_BERT,
        data=DataConfig(tokenizer=str(wordpiece)),
        train=tiny_train(max_steps=2),
        out=tmp_path / "bert",
    )
    out = capsys.readouterr().out
    assert "full validation split: mlm accuracy " in out and "nsp accuracy" in out, out
    pretrain_command(
        model=TINY_T5,
        data=DataConfig(shards=char_shards),
        train=tiny_train(max_steps=2),
        out=tmp_path / "t5",
    )
    out = capsys.readouterr().out
    assert "full validation split: token accuracy " in out, out
    metrics = whole(tmp_path / "t5", device="cpu", max_batches=2)
    assert metrics["val_windows"] == 128 and 0 <= metrics["val_token_accuracy"] <= 1


def test_generate_refuses_an_encoder_in_one_line_and_fills_sentinels_with_t5(
    bert_run: Path, t5_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from groundwork.cli import main

    code = main(["generate", str(bert_run), "--prompt", "to be"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "not a causal language model" in err, err
    assert "a bert model" in err
    # an encoder-decoder writes its output for the prompt: here, what the sentinels hide
    prompt = "to be, or not <extra_id_0> be"
    argv = ["generate", str(t5_run), "--prompt", prompt, "--strategy", "greedy"]
    assert main([*argv, "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and prompt not in printed


def test_bad_encoder_options(wordpiece: Path, char_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.arch 'bret'"):
        ModelArgs(arch="bret").build_config(100)
    with pytest.raises(ConfigError, match="not token shards"):
        pretrain(model=TINY_BERT, data=DataConfig(shards=char_shards), out=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"lacks \[CLS\] \[SEP\] \[MASK\] \[PAD\]"):
        pretrain(
            model=TINY_BERT,
            data=DataConfig(tokenizer=str(char_shards.parent / "tokenizer.json")),
            train_config=tiny_train(),
            out=tmp_path / "b",
        )
    with pytest.raises(ConfigError, match="bert only"):
        pretrain(
            model=TINY_T5,
            data=DataConfig(shards=char_shards, whole_word_masking=True),
            train_config=tiny_train(),
            out=tmp_path / "c",
        )


def test_objective_rates_are_options_written_to_the_run(char_shards: Path, tmp_path: Path) -> None:
    from groundwork.train.span_corruption import compute_input_and_target_lengths

    out = tmp_path / "t5"
    data = DataConfig(shards=char_shards, noise_density=0.3, mean_noise_span_length=2.0)
    pretrain(model=TINY_T5, data=data, train_config=tiny_train(max_steps=1), out=out)
    objective = yaml.safe_load((out / "config.yaml").read_text())["objective"]
    assert objective["noise_density"] == 0.3 and objective["mean_noise_span_length"] == 2.0
    _, _, config = load_run(out, device="cpu")
    from groundwork.recipes.pretrain_encoders import t5_data

    batch = next(iter(t5_data(config, tiny_train(), eval_batches=1).val_batches()))
    targets = compute_input_and_target_lengths(64, 0.3, 2.0)[1]
    assert batch["labels"].shape[1] == targets != compute_input_and_target_lengths(64)[1]
    with pytest.raises(ConfigError, match="mlm_probability is for bert only"):
        pretrain(model=TINY_T5, data=DataConfig(shards=char_shards, mlm_probability=0.2))
    with pytest.raises(ConfigError, match="noise_density is for t5 only"):
        check_objective_fields(DataConfig(noise_density=0.2), "bert")
    with pytest.raises(ConfigError, match=r"noise_density must be in \(0, 1\)"):
        DataConfig(noise_density=1.5)
    with pytest.raises(ConfigError, match="mean_noise_span_length must be >= 1"):
        DataConfig(mean_noise_span_length=0.5)


def test_configs_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    for name, arch in (("shakespeare-bert.yaml", "bert"), ("shakespeare-t5.yaml", "t5")):
        recipe = yaml.safe_load((root / name).read_text())
        model = ModelArgs(**recipe["model"])
        assert model.arch == arch
        DataConfig(**recipe["data"])
        cfg = TrainConfig(**recipe["train"])
        assert cfg.max_time is not None and cfg.max_time < 300  # the 5-minute promise
        assert cfg.seq_len <= model.build_config(4096).max_seq_len


def test_a_model_class_foreign_to_the_family_is_refused(t5_run: Path, tmp_path: Path) -> None:
    import shutil

    import yaml

    from groundwork.errors import CheckpointError

    copy = tmp_path / "copy"
    shutil.copytree(t5_run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**config, "model_class": "BertForMaskedLM"}))
    with pytest.raises(CheckpointError, match="'BertForMaskedLM' is not a class of t5 models"):
        load_run(copy, device="cpu")
    config["model_class"] = "T5Encoder"  # another class of the family loads (weights permitting)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError):  # the encoder-decoder's weights do not fit an encoder
        load_run(copy, device="cpu")
