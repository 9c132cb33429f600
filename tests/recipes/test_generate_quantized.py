"""`groundwork generate MODEL --quantize int8|int4|w8a8|w4a8 [--dtype bfloat16]` on tiny runs: the
text is what the model quantised in-process generates, shapes the int4 kernel cannot take stay
int8 (said on stderr; w4a8 takes any), and bad choices are refused in one line."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from groundwork import cli
from groundwork.compress.fused_decode import fused_decoder
from groundwork.compress.int_dot import IntDotLinear, quantize_int_dot
from groundwork.compress.weight_only import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    quantize_weights,
)
from groundwork.generate import GenerationConfig, generate
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig
from groundwork.recipes.generate import prepare_for_decoding
from groundwork.runs import load_run, write_run
from groundwork.tokenize import train_tokenizer

TEXT = "To be, or not to be, that is the question.\n" * 20
PROMPT = "To be"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _run(out: Path, make_model: Callable[[int], nn.Module]) -> Path:
    """A run as `groundwork import` writes one; ``make_model`` builds the model for the
    tokenizer's vocabulary size."""
    tok = train_tokenizer("char", [TEXT], vocab_size=64, special_tokens=[])
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
    def make(vocab_size: int) -> nn.Module:  # every layer but the head (int8) fits int4
        return GPT(GPTConfig.from_name("tiny", vocab_size=vocab_size, max_seq_len=64))

    return _run(tmp_path_factory.mktemp("runs") / "gpt", make)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def make(vocab_size: int) -> nn.Module:  # d_ff 172 does not fit int4
        return Llama(LlamaConfig.from_name("tiny", vocab_size=vocab_size, max_seq_len=64))

    return _run(tmp_path_factory.mktemp("runs") / "llama", make)


def in_process(run: Path, quantize: str, new: int) -> str:
    """The greedy text of the run's model quantised here (as the command should do it)."""
    net, tokenizer, _ = load_run(run)
    if quantize in ("w8a8", "w4a8"):
        net = quantize_int_dot(net, quantize)  # type: ignore[arg-type]
    else:
        net = quantize_weights(net, quantize, group_size=32, fallback="int8")  # type: ignore[arg-type]
    ids = tokenizer.encode(PROMPT)
    out = generate(net, [ids], GenerationConfig(max_new_tokens=new, temperature=0))
    return PROMPT + tokenizer.decode(out.sequences[0])


@pytest.mark.parametrize("quantize", ["int8", "int4", "w8a8", "w4a8"])
def test_generate_quantized_equals_the_model_quantised_in_process(
    capsys: pytest.CaptureFixture[str], gpt_run: Path, quantize: str
) -> None:
    argv = ["generate", str(gpt_run), "--prompt", PROMPT, "--strategy", "greedy"]
    code, out, err = run_cli(capsys, *argv, "--max-new-tokens", "24", "--quantize", quantize)
    assert code == 0, err
    assert err == ""  # every GPT layer fits the kernels: no note
    assert out == in_process(gpt_run, quantize, 24) + "\n"


def test_generate_bf16_and_quantized_runs(
    capsys: pytest.CaptureFixture[str], gpt_run: Path
) -> None:
    argv = ["generate", str(gpt_run), "--prompt", PROMPT, "--max-new-tokens", "8"]
    for extra in (["--dtype", "bfloat16"], ["--dtype", "bfloat16", "--quantize", "int4"]):
        code, out, err = run_cli(capsys, *argv, "--strategy", "greedy", *extra)
        assert code == 0, err
        assert out.startswith(PROMPT)
    code, out, err = run_cli(capsys, *argv, "--strategy", "beam", "--quantize", "int8")
    assert code == 0, err
    assert out.startswith(PROMPT)


def test_int4_layers_the_kernel_cannot_take_stay_int8(
    capsys: pytest.CaptureFixture[str], llama_run: Path
) -> None:
    argv = ["generate", str(llama_run), "--prompt", PROMPT, "--strategy", "greedy"]
    code, out, err = run_cli(capsys, *argv, "--max-new-tokens", "8", "--quantize", "int4")
    assert code == 0, err
    assert "6 layer(s) kept at int8" in err and "model.layers.1.mlp.down_proj" in err
    assert out == in_process(llama_run, "int4", 8) + "\n"

    net = prepare_for_decoding(load_run(llama_run).model, "float32", "int4")
    kinds = {name: type(m) for name, m in net.named_modules()}
    assert kinds["model.layers.0.self_attn.q_proj"] is Int4WeightOnlyLinear
    assert kinds["model.layers.0.mlp.gate_proj"] is Int8WeightOnlyLinear
    assert kinds["lm_head"] is Int8WeightOnlyLinear
    capsys.readouterr()  # prepare_for_decoding's note

    code, out, err = run_cli(capsys, *argv, "--max-new-tokens", "8", "--quantize", "w4a8")
    assert code == 0 and err == "", err  # w4a8 pads any width: no note
    assert out == fused_in_process(llama_run, "w4a8", 8) + "\n"  # a Llama: the fused step
    net = prepare_for_decoding(load_run(llama_run).model, "float32", "w4a8")
    assert all(not isinstance(m, nn.Linear) for m in net.modules())
    assert net.get_submodule("model.layers.1.mlp.down_proj").bits == 4
    assert isinstance(net.lm_head, IntDotLinear) and net.lm_head.bits == 8


@pytest.mark.parametrize(("option", "value"), [("--quantize", "int2"), ("--dtype", "float16")])
def test_bad_choices_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], gpt_run: Path, option: str, value: str
) -> None:
    code, out, err = run_cli(capsys, "generate", str(gpt_run), "--prompt", PROMPT, option, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and value in err


def fused_in_process(run: Path, quantize: str, new: int) -> str:
    """The greedy text of the run's model quantised here and decoded by the fused C++ step."""
    net, tokenizer, _ = load_run(run)
    ids = tokenizer.encode(PROMPT)
    decoder = fused_decoder(quantize_int_dot(net, quantize), len(ids) + new)  # type: ignore[arg-type]
    out = decoder.generate([ids], GenerationConfig(max_new_tokens=new, temperature=0))
    return PROMPT + tokenizer.decode(out.sequences[0])


@pytest.mark.parametrize("compile", [False, True])
def test_w4a8_llama_streams_from_the_fused_step(
    capsys: pytest.CaptureFixture[str], llama_run: Path, compile: bool
) -> None:
    argv = ["generate", str(llama_run), "--prompt", PROMPT, "--strategy", "greedy"]
    extra = ["--compile"] if compile else []
    code, out, err = run_cli(capsys, *argv, "--max-new-tokens", "12", "--quantize", "w4a8", *extra)
    assert code == 0, err
    assert out == fused_in_process(llama_run, "w4a8", 12) + "\n"
    # past the context (64) the window slides: the PyTorch step streams instead
    code, out, err = run_cli(capsys, *argv, "--max-new-tokens", "70", "--quantize", "w4a8")
    assert code == 0, err
    assert out == in_process(llama_run, "w4a8", 70) + "\n"
