"""The fused C++ decoding step (groundwork.compress.fused_decode): with float products, the same
logits at 1e-5, step by step, as the PyTorch model with float layers of the same weights (greedy
and sampled; odd shapes: inputs padded to 64, a head size with a tail after the 16-wide loop,
GQA); with 8-bit activations, the tokens of the PyTorch model with the int_dot layers; every
instruction-set path of the kernel; the models and caches it refuses."""

import copy
from typing import Any

import pytest
import torch
from torch import nn

from groundwork.compress import fused_decode
from groundwork.compress.fused_decode import FusedLlamaStep, fused_decoder, unsupported
from groundwork.compress.int_dot import IntDotLinear, quantize_int_dot
from groundwork.compress.quantize import set_submodule
from groundwork.errors import ConfigError
from groundwork.generate import GenerateOutput, GenerationConfig, StaticDecoder
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig
from groundwork.nn.kv_cache import StaticKVCache
from helpers import INT_DOT_PATHS, int_dot_build

SHAPES = {
    # d 64, d_ff 172 (padded to 192), d_head 16, 4 query heads on 2 key/value heads
    "tiny": dict(vocab_size=96, max_seq_len=64),
    # d 48 (q/k/v/gate/up inputs padded to 64), d_head 12 (the dot product's 4-wide tail)
    "odd": dict(vocab_size=80, max_seq_len=64, d_model=48, n_heads=4, n_kv_heads=2, d_ff=100),
}


def quantized_llama(shape: str = "tiny", scheme: str = "w4a8", head: str = "int8") -> Llama:
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny", **SHAPES[shape]))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)  # varied text
            else:
                p.uniform_(0.5, 1.5)  # norm weights other than 1
    return quantize_int_dot(model.eval(), scheme, head=head)  # type: ignore[arg-type]


def float_twin(model: Llama) -> Llama:
    """``model`` with each IntDotLinear replaced by an ``nn.Linear`` of its dequantised weight."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, IntDotLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=False)
            linear.weight.data = module.dequantized_weight()
            set_submodule(twin, name, linear)
    return twin


def decode(
    model: nn.Module,
    config: GenerationConfig,
    prompt: list[int],
    fused: Llama | None = None,
    **options: Any,
) -> GenerateOutput:
    """``prompt`` decoded by ``model`` (the prefill, and the steps unless ``fused`` is given: then
    the fused steps of that model)."""
    decoder = StaticDecoder(model, 1, len(prompt) + config.max_new_tokens)
    if fused is not None:
        decoder.step = FusedLlamaStep(fused, decoder.cache, **options)
    return decoder.generate([prompt], config, return_logits=True)


PROMPT = [5, 17, 3, 60, 2, 9, 41]


def assert_close(got: torch.Tensor | None, want: torch.Tensor | None) -> None:
    """fp32 agreement: 1e-5 relative, and 1e-5 of the largest logit absolute."""
    assert got is not None and want is not None
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("scheme", ["w4a8", "w8a8"])
def test_the_step_equals_the_model_with_float_layers(shape: str, scheme: str) -> None:
    """Products in float (no 8-bit activations): the step's norms, RoPE, cache writes,
    attention and SwiGLU equal the PyTorch model with the same (dequantised) weights (the
    output head, run in Python by both, stays float)."""
    model = quantized_llama(shape, scheme, head="float")
    config = GenerationConfig(max_new_tokens=40, temperature=0)
    twin = float_twin(model)
    want = decode(twin, config, PROMPT)
    got = decode(twin, config, PROMPT, fused=model, float_products=True)
    assert got.sequences == want.sequences
    assert_close(got.logits, want.logits)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("scheme", ["w4a8", "w8a8"])
def test_decoding_matches_the_pytorch_step(shape: str, scheme: str) -> None:
    """With 8-bit activations both round the same numbers in another order: an activation at a
    code boundary now and then goes the other way (as batching does, chapter 10.13). The
    tokens agree, and so do the logits at 1e-5 at nearly every step; a moved code shifts one
    step's logits by a fraction of their spread, no more."""
    model = quantized_llama(shape, scheme)
    config = GenerationConfig(max_new_tokens=40, temperature=0)
    want = decode(model, config, PROMPT)
    got = decode(model, config, PROMPT, fused=model)
    assert got.sequences == want.sequences
    assert got.logits is not None and want.logits is not None
    error = (got.logits - want.logits).abs().amax(dim=-1)[0]  # (steps,)
    spread = want.logits.std().item()
    assert (error <= 1e-5 + 1e-5 * want.logits.abs().max()).float().mean() >= 0.9
    assert error.max() < 0.2 * spread


def test_sampled_decoding_matches_the_pytorch_step() -> None:
    model = quantized_llama(head="float")
    config = GenerationConfig(max_new_tokens=16, temperature=0.9, top_k=20, seed=7)
    twin = float_twin(model)
    want = decode(twin, config, [1, 2, 3])
    got = decode(twin, config, [1, 2, 3], fused=model, float_products=True)
    assert got.sequences == want.sequences


def test_fused_decoder_is_a_batch_one_static_decoder() -> None:
    model = quantized_llama()
    config = GenerationConfig(max_new_tokens=8, temperature=0)
    decoder = fused_decoder(model, 20)
    assert isinstance(decoder, StaticDecoder) and isinstance(decoder.step, FusedLlamaStep)
    want = decode(model, config, [4, 8, 15]).sequences
    assert decoder.generate([[4, 8, 15]], config).sequences == want
    assert decoder.generate([[4, 8, 15]], config).sequences == want  # the cache is reused


@pytest.mark.slow
@pytest.mark.parametrize("isa", list(INT_DOT_PATHS))
def test_every_instruction_set_path_decodes_alike(isa: str) -> None:
    kernel = int_dot_build(isa)
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    for shape in SHAPES:
        model = quantized_llama(shape, head="float")
        twin = float_twin(model)
        want = decode(twin, config, PROMPT)
        got = decode(twin, config, PROMPT, fused=model, kernel=kernel, float_products=True)
        assert_close(got.logits, want.logits)
        got = decode(model, config, PROMPT, fused=model, kernel=kernel)
        assert got.sequences == decode(model, config, PROMPT).sequences


def test_models_it_cannot_run_are_refused() -> None:
    float_llama = Llama(LlamaConfig.from_name("tiny"))
    assert "quantize_int_dot" in str(unsupported(float_llama))
    with pytest.raises(ConfigError, match="not IntDotLinear"):
        fused_decoder(float_llama)
    gpt = quantize_int_dot(GPT(GPTConfig.from_name("tiny")), "w4a8")
    assert "not a Llama-style decoder" in str(unsupported(gpt))
    partly = quantize_int_dot(Llama(LlamaConfig.from_name("tiny")), "w4a8", skip=("down_proj",))
    assert "mlp.down_proj is Linear" in str(unsupported(partly))
    pruned = Llama(LlamaConfig.from_name("tiny", pruned_heads={1: [0, 1]}))
    assert "pruned heads" in str(unsupported(quantize_int_dot(pruned, "w4a8")))
    assert unsupported(quantized_llama()) is None


def test_caches_and_calls_it_cannot_serve_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = quantized_llama()
    with pytest.raises(ConfigError, match="one sequence at a time"):
        FusedLlamaStep(model, StaticKVCache(2, 2, 2, 16, 16))
    with pytest.raises(ConfigError, match="float32 cache"):
        FusedLlamaStep(model, StaticKVCache(1, 2, 2, 16, 16, dtype=torch.bfloat16))
    cache = StaticKVCache(1, 2, 2, 16, 16)
    step = FusedLlamaStep(model, cache)
    other = StaticKVCache(1, 2, 2, 16, 16)
    with pytest.raises(ConfigError, match="another cache"):
        step(model, other, torch.tensor([[1]]), torch.tensor([[0]]))
    with pytest.raises(RuntimeError, match="outside the cache's 16 positions"):
        step._step.step(torch.zeros(64), torch.ones(16), torch.zeros(16), 16)
    monkeypatch.setattr(fused_decode, "_extension", lambda: None)
    with pytest.raises(ConfigError, match="compiled int_dot kernel"):
        FusedLlamaStep(model, cache)
