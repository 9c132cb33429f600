"""The ``groundwork`` command: parsing, errors, and every command end to end on real data."""

import json
import re
import shlex
from pathlib import Path

import pytest

from groundwork import cli
from groundwork.errors import GroundworkError


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 0
    assert "data" in out and "tokenizer" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from groundwork import __version__

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert __version__ in out


def test_help_comes_from_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "tokenizer", "train", "--help")
    assert code == 0
    assert "Size of the vocabulary, special tokens included." in out
    assert "default: 4096" in out


def test_misspelt_option_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "tokenizer", "train", "--vocab-sise", "10")
    assert code == 2
    assert err.count("\n") == 1, "the error is one line"
    assert "--vocab-sise" in err and "did you mean '--vocab-size'" in err


def test_unknown_command_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "tokeniser", "train")
    assert code == 2
    assert "tokenizer" in err


def test_dashes_and_underscores_both_work() -> None:
    assert cli._normalise_argv(["--vocab-size", "3", "--out=a-b", "--", "--x-y"]) == [
        "--vocab_size",
        "3",
        "--out=a-b",
        "--",
        "--x-y",
    ]


def test_unknown_source_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "data", "fetch", "shakespear")
    assert code == 2
    assert "shakespeare" in err and err.startswith("groundwork: error:")


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GroundworkError):
        cli.main(["data", "fetch", "no-such-source", "--debug"])


def test_bad_vocab_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys, "tokenizer", "train", "--vocab-size", "0", "--out", str(tmp_path)
    )
    assert code == 2
    assert "--vocab-size" in err


def test_missing_tokenizer_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "tokenizer", "encode", str(tmp_path / "nope.json"), "hi")
    assert code == 2
    assert "nope.json" in err


def test_train_on_own_text_and_encode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = tmp_path / "mine.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log.\n" * 50, encoding="utf-8")
    tok = tmp_path / "tok.json"
    code, out, _ = run_cli(
        capsys,
        "tokenizer",
        "train",
        "--text",
        str(text),
        "--vocab-size",
        "300",
        "--out",
        str(tok),
    )
    assert code == 0, out
    assert tok.exists()
    code, out, _ = run_cli(
        capsys, "tokenizer", "encode", str(tok), "the cat sat", "--color", "false"
    )
    assert code == 0
    ids = json.loads(re.search(r"ids:\s+(\[.*\])", out).group(1))  # type: ignore[union-attr]
    assert len(ids) < len("the cat sat"), "merges learnt from the text compress it"
    assert "|".join(["the", " cat", " sat"]) in out


def test_invalid_utf8_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text then \xff\xfe broken")
    code, _, err = run_cli(capsys, "tokenizer", "train", "--text", str(bad), "--out", str(tmp_path))
    assert code == 2
    assert "bad.txt" in err and "UTF-8" in err


def _readme_commands() -> list[list[str]]:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## The command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.strip().splitlines():
        line = line.split("  #", 1)[0].strip()
        argv = shlex.split(line)
        assert argv[0] == "groundwork"
        commands.append(argv[1:])
    return commands


@pytest.mark.slow
def test_readme_commands_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands the README shows run as written, in order, on real data."""
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert len(commands) >= 5
    for argv in commands:
        code, _, err = run_cli(capsys, *argv)
        assert code == 0, f"groundwork {' '.join(argv)} failed: {err}"
    meta = json.loads((tmp_path / "runs/data/meta.json").read_text())
    assert meta["vocab_size"] == 4096
    assert (tmp_path / "lengths.png").stat().st_size > 1000


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``groundwork ...`` line of a ``bash`` block in the README and the docs."""
    root = Path(__file__).parents[1]
    found = []
    for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s#", line.strip().removeprefix("$ "))[0]
                if line.startswith("groundwork "):
                    found.append((f"{path.relative_to(root)}: {line}", shlex.split(line)[1:]))
    return found


def test_documented_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command the README and the docs show is accepted as written (the README's first
    block also runs, in test_readme_commands_run)."""
    monkeypatch.chdir(Path(__file__).parents[1])  # --config paths are relative to the repo
    commands = _documented_commands()
    assert any("chat smollm2-135m-instruct" in where for where, _ in commands)
    parser = cli.build_parser()
    for where, argv in commands:
        args = cli._option_values(cli._normalise_argv(argv))
        try:
            parser.parse_args(args)
        except Exception as err:
            pytest.fail(f"{where}: {cli._explain_parse_error(str(err), args)}")


TINY = [
    "--model.n_layers",
    "1",
    "--model.d_model",
    "32",
    "--model.n_heads",
    "2",
    "--data.tokenizer_kind",
    "char",
    "--train.seq_len",
    "32",
    "--train.batch_size",
    "4",
    "--train.eval_every",
    "5",
    "--train.eval_batches",
    "2",
    "--train.progress",
    "false",
    "--train.tensorboard",
    "false",
]


def test_pretrain_evaluate_sample_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "pretrain", *TINY, "--train.max-steps", "10", "--out", str(run)
    )
    assert code == 0, err
    assert "bits per byte" in out
    config = (run / "config.yaml").read_text()
    assert "n_layers: 1" in config and "source: shakespeare" in config
    code, out, _ = run_cli(capsys, "evaluate", str(run), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["tokens"] > 100_000 and 0 < result["bits_per_byte"] < 8
    code, out, _ = run_cli(
        capsys, "sample", str(run), "--prompt", "ROMEO:", "--max-new-tokens", "20"
    )
    assert code == 0 and out.startswith("ROMEO:")
    # Compare the run with a pretrained model on two tasks: a table with the random-guess row.
    table, plot = tmp_path / "eval.md", tmp_path / "eval.png"
    argv = ["evaluate", str(run), "smollm2-135m-instruct", "--tasks", "piqa,asdiv"]
    argv += ["--shots", "0,1", "--limit", "2", "--markdown", str(table), "--plot", str(plot)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "| smollm2-135m-instruct acc |" in out
    assert "| piqa | 1 | 2 |" in out and "| 0.0 |\n" in out  # asdiv's random guess: 0
    assert table.read_text() in out and plot.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "evaluate", str(run), str(run), "--text", str(table))
    assert code == 2 and "go with --tasks" in err
    code, out, _ = run_cli(capsys, "pretrain", "--resume", str(run), "--train.max-steps", "15")
    assert code == 0, out
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 15

    # Export to Hugging Face format, load it with transformers, import it back as a run.
    transformers = pytest.importorskip("transformers")
    import torch

    from groundwork.runs import load_run

    hf_dir = tmp_path / "hf"
    code, _, err = run_cli(capsys, "export", str(run), str(hf_dir), "--format", "hf")
    assert code == 0, err
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ours, _, _ = load_run(run, device="cpu")
    ids = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-5, atol=1e-5)
    back = tmp_path / "imported"
    code, _, err = run_cli(capsys, "import", str(hf_dir), str(back))
    assert code == 0, err
    again, _, _ = load_run(back, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids), rtol=0, atol=0)
    code, out, _ = run_cli(
        capsys, "sample", str(back), "--prompt", "ROMEO:", "--max-new-tokens", "5"
    )
    assert code == 0 and out.startswith("ROMEO:")
    code, out, _ = run_cli(capsys, "model", "info", str(run))
    assert code == 0 and "param" in out.lower()


def test_pretrain_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "pretrain", "--train.lr", "-1")
    assert code == 2 and "train.lr must be a positive number" in err
    code, _, err = run_cli(capsys, "pretrain", "--train.batch-size", "0")
    assert code == 2 and "train.batch_size" in err
    code, _, err = run_cli(capsys, "pretrain", "--train.lrr", "1")
    assert code == 2 and "did you mean '--train.lr'" in err
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  max_stepz: 3\n")
    code, _, err = run_cli(capsys, "pretrain", "--config", str(recipe))
    assert code == 2 and "did you mean '--train.max-steps'" in err
    code, _, err = run_cli(capsys, "pretrain", "--resume", str(tmp_path / "nope"))
    assert code == 2 and "cannot resume" in err
    code, _, err = run_cli(capsys, "pretrain", "--data.source", "shakespear")
    assert code == 2 and "did you mean 'shakespeare'" in err
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "not a run directory" in err


def test_sigterm_saves_and_says_how_to_resume(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    argv = [sys.executable, "-m", "groundwork.cli", "pretrain", *TINY, "--out", str(run)]
    argv += ["--train.max-steps", "100000", "--train.log-every", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    metrics = run / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Resume with: groundwork pretrain --resume" in out
    step = json.loads((run / "trainer_state.json").read_text())["step"]
    assert step >= 3


def test_generate_streams_a_named_model(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "smollm2-135m-instruct", "--prompt", "The capital of France is"]
    code, out, err = run_cli(capsys, *argv, "--strategy", "greedy", "--max-new-tokens", "4")
    assert code == 0, err
    assert out.startswith("The capital of France is Paris")
    code, _, err = run_cli(capsys, "generate", "smollm2-135m", "--prompt", "Hi")
    assert code == 2 and "did you mean 'smollm2-135m-instruct'" in err
    code, _, err = run_cli(capsys, *argv, "--temperature", "-1")
    assert code == 2 and "temperature must be >= 0" in err
    code, _, err = run_cli(capsys, "generate", "smollm2-135m-instruct")
    assert code == 2 and "--prompt is empty" in err


def test_chat_with_scripted_stdin() -> None:
    import subprocess
    import sys

    script = "What is the capital of France?\n/system Answer briefly.\n/reset\n/quit\n"
    argv = [sys.executable, "-m", "groundwork.cli", "chat", "--temperature", "0"]
    done = subprocess.run(
        [*argv, "--max-new-tokens", "20"], input=script, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "assistant> " in done.stdout and "Paris" in done.stdout
    assert "conversation cleared" in done.stdout


def test_evaluate_tasks_and_perplexity(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = "smollm2-135m-instruct"
    code, out, err = run_cli(capsys, "evaluate", model, "--tasks", "piqa", "--limit", "2", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["results"]
    assert row["task"] == "piqa" and row["n"] == 2 and 0 <= row["acc"] <= 1
    code, out, _ = run_cli(capsys, "evaluate", model, "--tasks", "piqa", "--limit", "2")
    assert code == 0 and "| piqa" in out
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 4, encoding="utf-8")
    code, out, err = run_cli(capsys, "evaluate", model, "--text", str(text), "--json")
    assert code == 0, err
    assert 0 < json.loads(out)["bits_per_byte"] < 8
    code, _, err = run_cli(capsys, "evaluate", model, "--tasks", "piqaa")
    assert code == 2 and "did you mean 'piqa'" in err
    code, _, err = run_cli(capsys, "evaluate", model)
    assert code == 2 and "--tasks" in err


def test_ngram_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    table = tmp_path / "ngram.md"
    argv = ["ngram", "--orders", "1,2", "--smoothing", "kneser-ney", "--markdown", str(table)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "kneser-ney" in out.lower() and table.read_text() in out
    code, _, err = run_cli(capsys, "ngram", "--orders", "0")
    assert code == 2 and "order" in err
    code, _, err = run_cli(capsys, "ngram", "--smoothing", "kneser")
    assert code == 2 and "did you mean" in err


def test_classify_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["classify", "--model", "cnn", "--epochs", "1", "--out", str(tmp_path / "cnn")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "F1" in out and (tmp_path / "cnn").is_dir()
    code, _, err = run_cli(capsys, "classify", "--model", "rnn")
    assert code == 2 and "cnn" in err


def test_word2vec_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["word2vec", "--sources", "[shakespeare]", "--epochs", "1", "--dim", "16"]
    argv += ["--min-count", "20", "--out", str(tmp_path / "w2v"), "--progress", "false"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "analog" in out.lower() and (tmp_path / "w2v").is_dir()
    code, _, err = run_cli(capsys, "word2vec", "--arch", "glove")
    assert code == 2 and "skipgram" in err
