"""The model commands called as functions: `model list`, `model info`, `export`, `import`."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from groundwork import tokenize
from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import GPT, GPTConfig, registry
from groundwork.pretrained import PRETRAINED
from groundwork.recipes.models import export, import_, model_info, model_list
from groundwork.runs import load_run, write_run


def test_model_list_names_architectures_presets_and_pretrained_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_list()
    out = capsys.readouterr().out
    for name in ("gpt", "llama", "lstm", "gpt2-124m", "smollm2-135m", "smollm2-135m-instruct"):
        assert name in out
    assert "GPT2LMHeadModel" in out and "LlamaForCausalLM" in out
    assert PRETRAINED["smollm2-135m-instruct"].description in out


def test_model_info_of_a_named_pretrained_model(capsys: pytest.CaptureFixture[str]) -> None:
    model_info("smollm2-135m-instruct")
    out = capsys.readouterr().out
    assert out.startswith("model: llama")
    assert "134,515,008" in out  # SmolLM2-135M's parameters, no weights read


def test_model_info_of_a_preset_of_a_given_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    model_info("tiny", arch="lstm")
    assert capsys.readouterr().out.startswith("model: lstm")


def test_model_info_of_an_unknown_name_suggests_one() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'smollm2-135m-instruct'"):
        model_info("smollm2-135m-instrct")
    with pytest.raises(UnknownNameError, match="did you mean 'gpt2-124m'"):
        model_info("gpt2-124")


def test_every_pretrained_source_names_a_registered_preset() -> None:
    for source in PRETRAINED.values():
        assert type(source.config()) is registry.get(source.arch).config_cls


@pytest.fixture
def run(tmp_path: Path) -> Path:
    tok = tokenize.train_tokenizer("char", ["to be, or not to be: that is the question"], 64)
    tok.save(tmp_path / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", vocab_size=tok.vocab_size, max_seq_len=32))
    return write_run(model, tmp_path / "run", tokenizer=tmp_path / "tokenizer.json")


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("inside", [".", "hf", "hf/deeper"])
def test_export_into_the_run_is_refused_and_the_run_left_intact(run: Path, inside: str) -> None:
    before = _digest(run)
    with pytest.raises(ConfigError, match="run"):
        export(run, run / inside)
    assert _digest(run) == before
    assert not (run / "hf").exists()
    load_run(run, device="cpu")  # still loads


def test_export_writes_the_tokenizer_end_of_text_id_and_import_reads_it_back(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer, _ = load_run(run, device="cpu")
    assert tokenizer.eot_id is not None
    export(run, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == tokenizer.eot_id
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    import_(tmp_path / "hf", tmp_path / "back")
    back, _, _ = load_run(tmp_path / "back", device="cpu")
    idx = torch.randint(0, tokenizer.vocab_size, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(back(idx), model(idx), rtol=0, atol=0)
    assert "exported" in capsys.readouterr().out
