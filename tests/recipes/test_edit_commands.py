"""`groundwork edit` and `groundwork trace` on a tiny run: the edited model is a run directory
that loads, with only the edited weight changed and what was done recorded; the trace writes
its heat map and numbers; bad input is refused in one line."""

from pathlib import Path

import pytest
import torch
from torch import nn

from groundwork import cli
from groundwork.fileio import read_json
from groundwork.models import Llama, LlamaConfig
from groundwork.runs import load_run, read_config, write_run
from groundwork.tokenize import train_tokenizer

TEXT = "To be, or not to be, that is the question.\n" * 20
PROMPT = "To be, or not to be, that is the"
SUBJECT = "not to be"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "llama"
    tok = train_tokenizer("char", [TEXT], vocab_size=64, special_tokens=[])
    tok_file = tok.save(out.parent / "tokenizer.json")
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny", vocab_size=tok.vocab_size, max_seq_len=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)
    return write_run(model, out, tokenizer=tok_file)


def test_edit_ft_writes_a_run_with_only_that_weight_changed(
    llama_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "edited"
    code, printed, err = run_cli(
        capsys,
        "edit",
        str(llama_run),
        "--prompt",
        PROMPT,
        "--subject",
        SUBJECT,
        "--target",
        " quest",
        "--method",
        "ft",
        "--layer",
        "1",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "before:" in printed and "after:" in printed
    before, _, _ = load_run(llama_run, device="cpu")
    after, _, _ = load_run(out, device="cpu")
    changed = {
        name
        for (name, p), (_, q) in zip(
            before.named_parameters(), after.named_parameters(), strict=True
        )
        if not torch.equal(p, q)
    }
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
    record = read_json(out / "edit.json")
    assert record["method"] == "ft" and record["layers"] == [1]
    assert record["p_target_after"] > record["p_target_before"]
    assert read_config(out)["edit"]["target"] == " quest"


def test_trace_writes_the_heat_map_and_numbers(
    llama_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "trace.png"
    code, printed, err = run_cli(
        capsys,
        "trace",
        str(llama_run),
        "--prompt",
        PROMPT,
        "--subject",
        SUBJECT,
        "--samples",
        "2",
        "--kinds",
        "hidden,mlp",
        "--out",
        str(png),
    )
    assert code == 0, err
    assert png.stat().st_size > 0
    summary = read_json(png.with_suffix(".json"))
    assert set(summary["kinds"]) == {"hidden", "mlp"}
    n_tokens = len(summary["tokens"])
    assert len(summary["kinds"]["mlp"]["scores"]) == n_tokens
    assert "hidden: peak at token" in printed


EDIT = ["edit", "RUN", "--prompt", PROMPT, "--subject", SUBJECT, "--out", "OUT"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["edit", "RUN", "--subject", "x", "--target", " y", "--out", "OUT"], "--prompt"),
        ([*EDIT, "--subject", "Hamlet", "--target", " y"], "does not occur in the prompt"),
        ([*EDIT, "--target", "  "], "target is empty"),
        ([*EDIT, "--target", " q", "--layers", "[1]"], "--layers is for --method memit"),
        ([*EDIT, "--target", " q", "--method", "ft", "--layer", "7"], "out of range"),
        (["trace", "RUN", "--prompt", PROMPT, "--subject", SUBJECT, "--out", "t.txt"], ".png"),
        (["trace", "RUN", "--prompt", PROMPT, "--subject", "Hamlet"], "does not occur"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    llama_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    argv = [
        str(llama_run) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
