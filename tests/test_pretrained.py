"""``groundwork.load``: SmolLM2 from its GGUF into our Llama, cached as safetensors."""

import time

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
