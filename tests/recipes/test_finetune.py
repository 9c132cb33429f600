"""`groundwork finetune`: a T5 run fine-tuned on source -> target pairs through the engine, scored
against the copy baseline; its run directory decodes with `groundwork generate`; the sentinels
of a span-corruption T5 in and out of text; the errors."""

import json
from pathlib import Path

import pytest
import torch

import helpers
from groundwork import cli, tokenize
from groundwork.errors import CheckpointError, ConfigError, UnknownNameError
from groundwork.evaluate.overlap import corpus_bleu, corpus_chrf
from groundwork.models.t5 import T5, T5Config
from groundwork.recipes import finetune as ft
from groundwork.recipes.pretrain_encoders import (
    NUM_SENTINELS,
    decode_with_sentinels,
    encode_with_sentinels,
)
from groundwork.runs import load_run, write_run
from groundwork.train import TrainConfig, read_metrics

PAIRS = {
    "train": [(f"Vpon the Heath {i}", f"Upon the heath {i}") for i in range(40)],
    "val": [("Haue I heard", "Have I heard"), ("faire is foule", "fair is foul")],
    "test": [("Vpon a Tawny Front", "Upon a tawny front"), ("Ile goe", "I'll go"), ("O", "O")],
}


def tiny_train(**kw: object) -> TrainConfig:
    return helpers.tiny_train(**{"batch_size": 8, "lr": 1e-3, **kw})


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny T5 run as `groundwork pretrain` writes one (character tokenizer, 100
    sentinels above it)."""
    root = tmp_path_factory.mktemp("t5")
    texts = [t for pairs in PAIRS.values() for pair in pairs for t in pair]
    tok = tokenize.train_tokenizer("char", texts, 100)
    tok.save(root / "tokenizer.json")
    eot = tok.eot_id
    assert eot is not None
    config = T5Config(
        vocab_size=tok.vocab_size + NUM_SENTINELS,
        d_model=32,
        d_kv=8,
        d_ff=64,
        n_layers=1,
        n_heads=2,
        max_seq_len=64,
        eos_id=eot,
        pad_id=eot,
        decoder_start_id=eot,
    )
    torch.manual_seed(0)
    objective = {"eos_id": eot, "pad_id": eot, "decoder_start_id": eot}
    return write_run(
        T5(config),
        root / "run",
        tokenizer=root / "tokenizer.json",
        kind="seq2seq",
        model_class="T5",
        task="span-corruption",
        objective=objective,
    )


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> str:
    task = ft.Seq2SeqTask("toy", "a toy spelling task", lambda split: PAIRS[split])
    monkeypatch.setitem(ft.TASKS, "toy", task)
    return "toy"


def test_finetune_writes_a_seq2seq_run_scored_against_the_copy_baseline(
    t5_run: Path, toy_task: str, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    result = ft.finetune_seq2seq(t5_run, task=toy_task, train_config=tiny_train(), out=out)
    assert result.stopped == "finished" and result.test_pairs == 3
    model, _, config = load_run(out, device="cpu")
    assert isinstance(model, T5) and config["kind"] == "seq2seq" and config["task"] == "toy"
    assert config["finetune"] == {"task": "toy", "base": str(t5_run), "max_tokens": 64}
    evals = [m for m in read_metrics(out / "metrics.jsonl") if "val_loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    sources = [s for s, _ in PAIRS["test"]]
    references = [t for _, t in PAIRS["test"]]
    metrics = json.loads((out / ft.METRICS_FILE).read_text())
    assert metrics["copy_baseline"]["chrf"] == pytest.approx(corpus_chrf(sources, references))
    assert metrics["copy_baseline"]["bleu"] == pytest.approx(corpus_bleu(sources, references).score)
    assert metrics["copy_baseline"]["exact_match"] == pytest.approx(100 / 3)  # "O" -> "O"
    assert metrics["model"] == result.model_scores and metrics["test_pairs"] == 3
    # the weights trained: the run's model is not the base model
    base, _, _ = load_run(t5_run, device="cpu")
    assert not torch.equal(base.lm_head.weight, model.lm_head.weight)


def test_the_outputs_scored_are_the_models_greedy_outputs(t5_run: Path) -> None:
    net, tokenizer, _ = load_run(t5_run, device="cpu")
    eos = net.config.eos_id
    sources, _ = ft.encode_texts(tokenizer, ["Vpon", "the Heath of it"], eos, 64)
    batched = ft.decode_all(net, tokenizer, sources, eos_id=eos, max_new_tokens=5, batch_size=2)
    one_by_one = [
        ft.decode_all(net, tokenizer, [s], eos_id=eos, max_new_tokens=5)[0] for s in sources
    ]
    assert batched == one_by_one
    beams = ft.decode_all(net, tokenizer, sources, eos_id=eos, max_new_tokens=5, num_beams=2)
    assert len(beams) == 2 and all(isinstance(b, str) for b in beams)


def test_long_texts_are_cut_keeping_the_eos(t5_run: Path) -> None:
    _, tokenizer, _ = load_run(t5_run, device="cpu")
    ids, cut = ft.encode_texts(tokenizer, ["Vpon the Heath", "Vp"], 99, 5)
    assert cut == 1 and ids[0] == [*tokenizer.encode("Vpon")[:4], 99]
    assert ids[1] == [*tokenizer.encode("Vp"), 99]


def test_resume_continues_the_finetuning_run(t5_run: Path, toy_task: str, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    ft.finetune_seq2seq(t5_run, task=toy_task, train_config=tiny_train(), out=out)
    resumed = ft.finetune_seq2seq(
        Path("ignored"), train_config=tiny_train(max_steps=6), out=out, resume=True
    )
    assert resumed.stopped == "finished"
    evals = [m["step"] for m in read_metrics(out / "metrics.jsonl") if "val_loss" in m]
    assert evals == [2, 4, 6]


def test_the_command_prints_the_table(
    t5_run: Path, toy_task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft"
    cli.main(
        [
            "finetune",
            str(t5_run),
            "--task",
            toy_task,
            "--train.max-steps",
            "2",
            "--train.batch-size",
            "8",
            "--train.progress",
            "false",
            "--train.tensorboard",
            "false",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "| copy the input |" in printed and "| run fine-tuned |" in printed
    assert "test split (3 pairs" in printed


def test_generate_decodes_with_an_encoder_decoder_run(
    t5_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net, tokenizer, _ = load_run(t5_run, device="cpu")
    eos = net.config.eos_id
    expected = ft.decode_all(
        net, tokenizer, [[*tokenizer.encode("Vpon"), eos]], eos_id=eos, max_new_tokens=6
    )[0]
    cli.main(
        [
            "generate",
            str(t5_run),
            "--prompt",
            "Vpon",
            "--strategy",
            "greedy",
            "--max-new-tokens",
            "6",
        ]
    )
    assert capsys.readouterr().out == expected + "\n"
    assert cli.main(["generate", str(t5_run), "--prompt", "Vpon", "--stop", "x"]) == 2
    assert "--stop is for causal" in capsys.readouterr().err


def test_sentinels_in_and_out_of_text(t5_run: Path) -> None:
    _, tokenizer, _ = load_run(t5_run, device="cpu")
    vocab = tokenizer.vocab_size + NUM_SENTINELS
    ids = encode_with_sentinels(tokenizer, "Vpon <extra_id_0> Heath<extra_id_1>", vocab)
    assert ids == [*tokenizer.encode("Vpon "), vocab - 1, *tokenizer.encode(" Heath"), vocab - 2]
    assert decode_with_sentinels(tokenizer, ids, vocab) == "Vpon <extra_id_0> Heath<extra_id_1>"
    with pytest.raises(ConfigError, match="100 sentinels"):
        encode_with_sentinels(tokenizer, "<extra_id_100>", vocab)


def test_bad_input(t5_run: Path, toy_task: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown task 'tyo'.*toy"):
        ft.finetune_seq2seq(t5_run, task="tyo", train_config=tiny_train(), out=tmp_path / "a")
    with pytest.raises(ConfigError, match="max_tokens"):
        ft.finetune_seq2seq(t5_run, train_config=tiny_train(), out=tmp_path / "b", max_tokens=1)
    with pytest.raises(CheckpointError, match="not a finetune run"):
        ft.finetune_seq2seq(t5_run, train_config=tiny_train(), out=t5_run, resume=True)
    lm = tmp_path / "lm"
    from groundwork.models.gpt import GPT, GPTConfig

    write_run(GPT(GPTConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, max_seq_len=16)), lm)
    with pytest.raises(ConfigError, match=r"is a lm run.*T5 run"):
        ft.finetune_seq2seq(lm, task=toy_task, train_config=tiny_train(), out=tmp_path / "c")


def test_evaluate_refuses_an_encoder_decoder_run_with_a_clear_error(
    t5_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["evaluate", str(t5_run), "--tasks", "piqa", "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "is a t5 model, not a causal language model" in err and "Traceback" not in err
