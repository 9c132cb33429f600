"""`groundwork export RUN OUT --format gguf --quant ...`: a Llama run or the named SmolLM2 as one
GGUF file, called as a function and through the command line."""

from pathlib import Path

import numpy as np
import pytest
import torch

import helpers
from groundwork import cli, tokenize
from groundwork.errors import CheckpointError, ConfigError, UnknownNameError
from groundwork.interop.gguf import GGUFFile, llama_from_gguf, load_state_dict
from groundwork.interop.gguf_quants import dequantize_q4_0
from groundwork.interop.gguf_tokenizer import chat_template_from_gguf, tokenizer_from_gguf
from groundwork.interop.gguf_writer import quantize_q4_0
from groundwork.recipes.models import export
from groundwork.runs import load_run, write_run

TEXTS = ["to be, or not to be: that is the question 42", "whether 'tis nobler in the mind"] * 3


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama run (d 32, d_ff 64) with a byte-level BPE tokenizer."""
    return helpers.tiny_llama_run(tmp_path_factory.mktemp("llama"), TEXTS, vocab_size=300)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    vocab_size = model.config.vocab_size
    idx = torch.randint(0, vocab_size, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(idx)


def test_export_a_run_to_a_gguf_file(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny.gguf"
    export(run, out, format="gguf", quant="f32")
    model, tokenizer, _ = load_run(run, device="cpu")
    back = llama_from_gguf(out)
    torch.testing.assert_close(_logits(back), _logits(model), rtol=1e-5, atol=1e-5)
    metadata = GGUFFile(out).metadata
    assert metadata["general.name"] == "run" and metadata["general.file_type"] == 0
    assert "tokenizer.chat_template" not in metadata
    rebuilt = tokenizer_from_gguf(metadata)
    for text in [*TEXTS, "<|endoftext|>2024"]:
        assert rebuilt.encode(text).ids == tokenizer.encode(text), text
    printed = capsys.readouterr().out
    assert f"-> {out} (GGUF f32: 20 tensors, 20 F32" in printed


def test_export_into_a_directory_writes_model_gguf_at_q8_0_by_default(
    run: Path, tmp_path: Path
) -> None:
    export(run, tmp_path / "out", format="gguf")
    f = GGUFFile(tmp_path / "out" / "model.gguf")
    assert f.metadata["general.file_type"] == 7
    assert f.tensors["blk.0.ffn_down.weight"].type_name == "Q8_0"


def test_export_gguf_through_the_command_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q4.gguf"
    code = cli.main(["export", str(run), str(out), "--format", "gguf", "--quant", "q4_0"])
    assert code == 0, capsys.readouterr().err
    f = GGUFFile(out)
    assert f.metadata["general.file_type"] == 2
    assert f.tensors["blk.1.attn_v.weight"].type_name == "Q4_0"
    assert f.tensors["token_embd.weight"].type_name == "Q8_0"  # the tied head keeps 8 bits
    model, _, _ = load_run(run, device="cpu")
    w = model.state_dict()["model.layers.1.mlp.up_proj.weight"].numpy()
    expected = dequantize_q4_0(quantize_q4_0(w)).reshape(w.shape)
    assert np.array_equal(load_state_dict(f)["model.layers.1.mlp.up_proj.weight"], expected)

    code = cli.main(["export", str(run), str(out), "--format", "gguf", "--quant", "q5_0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--quant must be one of: f32, f16, q8_0, q4_0 (got 'q5_0')" in err


def test_export_gguf_carries_the_chat_template_of_an_aligned_run(
    tmp_path: Path,
) -> None:
    run = helpers.tiny_llama_run(tmp_path, TEXTS, vocab_size=300)
    (run / "chat_template.jinja").write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    export(run, tmp_path / "chat.gguf", format="gguf")
    template = chat_template_from_gguf(GGUFFile(tmp_path / "chat.gguf").metadata)
    assert template == "{{ messages[0]['content'] }}"


@pytest.mark.parametrize("inside", [".", "m.gguf", "deeper"])
def test_export_gguf_into_the_run_is_refused(run: Path, inside: str) -> None:
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ConfigError, match="run"):
        export(run, run / inside, format="gguf")
    assert sorted(p.name for p in run.iterdir()) == before


def test_export_gguf_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'smollm2-135m-instruct'"):
        export(Path("smollm2-135m-instrct"), tmp_path / "x.gguf", format="gguf")
    tokenize.train_tokenizer("char", TEXTS, 64).save(tmp_path / "tokenizer.json")
    gpt = write_run(helpers.tiny_gpt(), tmp_path / "gpt", tokenizer=tmp_path / "tokenizer.json")
    with pytest.raises(ConfigError, match="Llama-architecture models; got a GPT"):
        export(gpt, tmp_path / "x.gguf", format="gguf")
    llama = write_run(helpers.tiny_llama(), tmp_path / "llama")  # no tokenizer.json
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json"):
        export(llama, tmp_path / "x.gguf", format="gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parity
def test_export_smollm2_to_q4_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The main use: SmolLM2-135M-Instruct (read from its Q4_1 GGUF) written as Q4_0, with the
    tokenizer, special tokens and chat template of the original file."""
    from groundwork import corpus

    (original_path,) = sorted(corpus.fetch("smollm2-135m-instruct").glob("*.gguf"))
    export(Path("smollm2-135m-instruct"), tmp_path, format="gguf", quant="q4_0")
    ours, original = GGUFFile(tmp_path / "model.gguf"), GGUFFile(original_path)
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
        "llama.block_count",
        "llama.context_length",
        "llama.rope.freq_base",
        "llama.attention.head_count_kv",
        "llama.attention.layer_norm_rms_epsilon",
    ]:
        assert ours.metadata[key] == original.metadata[key], key
        assert ours.value_types[key] == original.value_types[key], key
    assert ours.tensors.keys() == original.tensors.keys()  # tied: no output.weight
    assert ours.tensors["token_embd.weight"].type_name == "Q8_0"
    assert ours.tensors["blk.0.attn_q.weight"].type_name == "Q4_0"
    # the Q/K rows are back in llama.cpp's order: re-quantizing the original's weights in its
    # own row order gives our bytes
    q = original.dequantize("blk.3.attn_k.weight")
    assert np.array_equal(ours.raw("blk.3.attn_k.weight"), quantize_q4_0(q).ravel())
    assert "GGUF q4_0: 272 tensors" in capsys.readouterr().out
