"""`groundwork sample`, `generate`, `chat` and `evaluate` on tiny runs: one behaviour at the
model's context (the window slides), numbers checked before anything runs, the model always
positional, errors in one line with nothing echoed before them."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from groundwork import cli
from groundwork.models import GPT, LSTMLM, GPTConfig, LSTMConfig
from groundwork.runs import write_run
from groundwork.tokenize import train_tokenizer

TEXT = "To be, or not to be, that is the question.\n" * 20
CONTEXT = 16  # the tiny models' max_seq_len


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _tiny_run(out: Path, make_model: Callable[[int], nn.Module]) -> Path:
    """A run directory as `groundwork import` writes one: a model and a tokenizer, no data.
    ``make_model`` builds the model for the tokenizer's vocabulary size."""
    tok = train_tokenizer("char", [TEXT], vocab_size=64, special_tokens=[])  # never stops early
    tok_file = tok.save(out.parent / f"{out.name}-tokenizer.json")
    torch.manual_seed(0)
    model = make_model(tok.vocab_size)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)  # varied text rather than one repeated token
    return write_run(model, out, tokenizer=tok_file)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def make(vocab_size: int) -> nn.Module:
        return GPT(GPTConfig.from_name("tiny", vocab_size=vocab_size, max_seq_len=CONTEXT))

    return _tiny_run(tmp_path_factory.mktemp("runs") / "gpt", make)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def make(vocab_size: int) -> nn.Module:
        return LSTMLM(LSTMConfig.from_name("tiny", vocab_size=vocab_size, max_seq_len=CONTEXT))

    return _tiny_run(tmp_path_factory.mktemp("runs") / "lstm", make)


# ---- the window slides, in sample and in generate ----------------------------------------------


def test_sample_runs_past_the_context(capsys: pytest.CaptureFixture[str], gpt_run: Path) -> None:
    argv = ["sample", str(gpt_run), "--prompt", "To be", "--max-new-tokens", str(3 * CONTEXT)]
    code, out, err = run_cli(capsys, *argv, "--temperature", "0")
    assert code == 0, err
    assert out.startswith("To be") and len(out) > 2 * CONTEXT  # a char tokenizer: 1 char/token


def test_generate_runs_past_the_context(capsys: pytest.CaptureFixture[str], gpt_run: Path) -> None:
    argv = ["generate", str(gpt_run), "--prompt", "To be", "--max-new-tokens", str(3 * CONTEXT)]
    code, out, err = run_cli(capsys, *argv, "--strategy", "greedy")
    assert code == 0, err
    assert out.startswith("To be") and len(out) > 2 * CONTEXT
    code, beam, err = run_cli(capsys, *argv, "--strategy", "beam", "--num-beams", "2")
    assert code == 0, err
    assert beam.startswith("To be") and len(beam) > 2 * CONTEXT


def test_sample_and_generate_greedy_agree(
    capsys: pytest.CaptureFixture[str], gpt_run: Path
) -> None:
    """One behaviour: the uncached sampler and the cached decoder slide the same window."""
    n = ["--prompt", "To be", "--max-new-tokens", str(2 * CONTEXT)]
    _, sampled, _ = run_cli(capsys, "sample", str(gpt_run), *n, "--temperature", "0")
    _, generated, _ = run_cli(capsys, "generate", str(gpt_run), *n, "--strategy", "greedy")
    assert sampled == generated


def test_recurrent_models_have_no_window(
    capsys: pytest.CaptureFixture[str], lstm_run: Path
) -> None:
    from groundwork.generate.decode import context_window
    from groundwork.runs import load_run

    assert context_window(load_run(lstm_run).model) is None
    long_prompt = "To be, or not to be, that is the question."  # longer than max_seq_len
    argv = ["--prompt", long_prompt, "--max-new-tokens", str(2 * CONTEXT)]
    code, sampled, err = run_cli(capsys, "sample", str(lstm_run), *argv, "--temperature", "0")
    assert code == 0, err
    code, generated, err = run_cli(capsys, "generate", str(lstm_run), *argv, "--strategy", "greedy")
    assert code == 0, err
    assert sampled == generated and sampled.startswith(long_prompt)


@pytest.mark.parametrize("command", ["sample", "generate"])
def test_prompt_longer_than_the_context(
    capsys: pytest.CaptureFixture[str], gpt_run: Path, command: str
) -> None:
    """Refused (not cropped) in one line, and the prompt is not echoed first."""
    code, out, err = run_cli(capsys, command, str(gpt_run), "--prompt", "x" * (CONTEXT + 1))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and f"more than the model's context of {CONTEXT}" in err
    code, out, err = run_cli(capsys, command, str(gpt_run), "--prompt", "x" * CONTEXT)
    assert code == 0, err  # exactly the context: fine


# ---- numbers are checked first -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-new-tokens", "-5", "max_new_tokens must be a positive integer"),
        ("--max-new-tokens", "0", "max_new_tokens must be a positive integer"),
        ("--temperature", "-1", "temperature must be >= 0"),
        ("--top-k", "0", "top_k must be >= 1"),
    ],
)
def test_sample_bad_numbers(
    capsys: pytest.CaptureFixture[str], gpt_run: Path, option: str, value: str, message: str
) -> None:
    code, out, err = run_cli(capsys, "sample", str(gpt_run), "--prompt", "To be", option, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-new-tokens", "-5", "max_new_tokens must be a positive integer"),
        ("--top-p", "0", "top_p must be in (0, 1]"),
        ("--top-p", "1.5", "top_p must be in (0, 1]"),
        ("--min-p", "2", "min_p must be in [0, 1]"),
        ("--repetition-penalty", "0", "repetition_penalty must be > 0"),
        ("--num-beams", "0", "num_beams must be >= 1"),
    ],
)
def test_generate_bad_numbers(
    capsys: pytest.CaptureFixture[str], gpt_run: Path, option: str, value: str, message: str
) -> None:
    argv = ["generate", str(gpt_run), "--prompt", "To be", "--strategy", "greedy", option, value]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_generate_unproducible_stop_string_is_not_echoed(
    capsys: pytest.CaptureFixture[str], gpt_run: Path
) -> None:
    argv = ["generate", str(gpt_run), "--prompt", "To be", "--stop", "\u00e9"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and "can never be generated" in err


# ---- evaluate ----------------------------------------------------------------------------------


def test_evaluate_an_imported_run_without_data(
    capsys: pytest.CaptureFixture[str], gpt_run: Path
) -> None:
    code, out, err = run_cli(capsys, "evaluate", str(gpt_run))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no data split of its own" in err
    assert "--tasks, --text or --source" in err


def test_evaluate_text_is_scored_exactly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--text FILE` scores the file's bytes as they are; --normalize scores the cleaned text."""
    from groundwork import evaluate, pretrained

    exact = "\n\n\nThe cat sat on the mat.   \nIt was happy.  \n\n\n\n\nThe end.\n\n"
    file = tmp_path / "text.txt"
    file.write_bytes(exact.encode("utf-8"))
    name = "smollm2-135m-instruct"
    smol = pretrained.load(name)
    monkeypatch.setattr(pretrained, "load", lambda *args, **kwargs: smol)  # load it once
    code, out, err = run_cli(capsys, "evaluate", name, "--text", str(file), "--json")
    assert code == 0, err
    got = json.loads(out)
    code, out, err = run_cli(capsys, "evaluate", name, "--text", str(file), "--normalize", "--json")
    assert code == 0, err
    normalised = json.loads(out)

    want = evaluate.perplexity(smol.model, smol.tokenizer, exact)
    assert got["perplexity"] == pytest.approx(want.perplexity, rel=1e-6)
    assert got["bytes"] == len(exact.encode("utf-8"))
    assert normalised["bytes"] < got["bytes"]
    assert normalised["perplexity"] != pytest.approx(got["perplexity"], rel=1e-6)


def test_evaluate_text_must_be_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "evaluate", "smollm2-135m-instruct", "--text", str(bad))
    assert code == 2 and err.count("\n") == 1
    assert "latin1.txt is not valid UTF-8" in err and "offset 3" in err


# ---- chat: the model is positional -------------------------------------------------------------


def test_chat_takes_the_model_positionally() -> None:
    script = "What is the capital of France?\n/quit\n"
    argv = [sys.executable, "-m", "groundwork.cli", "chat", "smollm2-135m-instruct"]
    argv += ["--temperature", "0", "--max-new-tokens", "12"]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "assistant> " in done.stdout and "Paris" in done.stdout


def test_chat_on_a_run_without_template(capsys: pytest.CaptureFixture[str], gpt_run: Path) -> None:
    code, _, err = run_cli(capsys, "chat", str(gpt_run))
    assert code == 2 and "no chat template" in err
