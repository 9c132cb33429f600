"""``groundwork.load``: SmolLM2 from its GGUF into our Llama, cached as safetensors; and
all-MiniLM-L6-v2, a Hugging Face BERT checkpoint read in place with our WordPiece."""

import time
from pathlib import Path

import pytest
import torch

import groundwork
from groundwork.errors import UnknownNameError
from groundwork.generate import sample
from groundwork.pretrained import Pretrained


@pytest.fixture(scope="module")
def smol() -> Pretrained:
    return groundwork.load("smollm2-135m-instruct")


def test_greedy_completion_knows_paris(smol: Pretrained) -> None:
    ids = smol.tokenizer.encode("The capital of France is")
    new = sample(smol.model, ids, max_new_tokens=3, temperature=0)
    assert smol.tokenizer.decode(new).startswith(" Paris")


def test_second_load_is_fast_and_identical(smol: Pretrained) -> None:
    start = time.perf_counter()
    again = groundwork.load("smollm2-135m-instruct")
    assert time.perf_counter() - start < 20, "the cached safetensors load takes seconds"
    ids = torch.tensor([smol.tokenizer.encode("To be, or not to be")])
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids), smol.model(ids), rtol=0, atol=0)
    assert smol.chat_template is not None and "<|im_start|>" in smol.chat_template
    assert smol.tokenizer.eot_id == smol.tokenizer.token_to_id("<|im_end|>") or (
        smol.tokenizer.eot_id == smol.tokenizer.token_to_id("<|endoftext|>")
    )


@pytest.mark.parity
def test_cache_is_hugging_face_layout(smol: Pretrained) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(smol.path).eval()
    ids = torch.tensor([smol.tokenizer.encode("Hello, world")])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, smol.model(ids), rtol=1e-4, atol=1e-4)


def test_unknown_model() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'smollm2-135m-instruct'"):
        groundwork.load("smollm2-135m")


def test_the_source_preset_describes_the_loaded_model(smol: Pretrained) -> None:
    """``groundwork model info smollm2-135m-instruct`` reads the preset, not the weights."""
    from dataclasses import asdict

    from groundwork.models import info
    from groundwork.pretrained import PRETRAINED

    preset = PRETRAINED["smollm2-135m-instruct"].config()
    assert info(preset)["parameters"]["total"] == smol.model.num_parameters()
    loaded = asdict(smol.model.config)
    assert loaded.pop("rms_norm_eps") == pytest.approx(preset.rms_norm_eps)  # float32 in GGUF
    assert {k: v for k, v in asdict(preset).items() if k != "rms_norm_eps"} == loaded


def test_conversion_writes_the_gguf_special_token_ids(tmp_path: Path) -> None:
    import json

    from groundwork.pretrained import PRETRAINED, _convert

    _convert(PRETRAINED["smollm2-135m-instruct"], tmp_path / "cache")
    config = json.loads((tmp_path / "cache" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)  # <|im_start|>, <|im_end|>


# ----------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2: a Hugging Face checkpoint directory, read in place


def test_minilm_loads_as_our_bert_with_our_wordpiece(minilm_dir: Path) -> None:
    from groundwork.models.bert import Bert
    from groundwork.tokenize import WordPiece

    mini = groundwork.load("all-minilm-l6-v2")
    assert isinstance(mini.model, Bert) and not mini.model.training
    assert isinstance(mini.tokenizer, WordPiece)
    assert mini.chat_template is None
    assert mini.path == minilm_dir  # no conversion, no copy
    assert mini.tokenizer.encode("Hello, world!") == [7592, 1010, 2088, 999]
    assert mini.tokenizer.token_to_id("[CLS]") == 101


def test_the_minilm_preset_describes_the_loaded_model() -> None:
    """``groundwork model info all-minilm-l6-v2`` reads the preset, not the weights."""
    from dataclasses import asdict

    from groundwork.models import info
    from groundwork.pretrained import PRETRAINED

    mini = groundwork.load("all-minilm-l6-v2")
    preset = PRETRAINED["all-minilm-l6-v2"].config()
    assert asdict(preset) == asdict(mini.model.config)
    total = sum(p.numel() for p in mini.model.parameters())
    assert info(preset)["parameters"]["total"] == total == 22_713_216


def test_model_info_of_minilm_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from groundwork import cli

    assert cli.main(["model", "info", "all-minilm-l6-v2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model: bert") and "22,713,216" in out


@pytest.mark.parity
def test_minilm_equals_transformers_from_pretrained(minilm_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    mini = groundwork.load("all-minilm-l6-v2")
    hf = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ids = torch.tensor([[101, *mini.tokenizer.encode("All the world's a stage."), 102]])
    with torch.no_grad():
        expected = hf(input_ids=ids).last_hidden_state
        torch.testing.assert_close(mini.model(ids), expected, rtol=1e-5, atol=1e-5)
