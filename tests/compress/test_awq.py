"""AWQ: folding scales keeps the function, the search never loses to RTN on its data, clipping,
a tiny end-to-end, and bad input."""

import copy

import pytest
import torch
from torch import nn

from groundwork.compress.awq import (
    apply_scale,
    llama_scale_groups,
    quantize_model_awq,
    rtn,
    search_clip,
    search_scale,
)
from groundwork.compress.calibration import LinearInputs, block_inputs, run_block
from groundwork.compress.quantize import quantize_model_rtn
from groundwork.errors import ConfigError, DataError
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig


def tiny_llama(seed: int = 0, outliers: bool = False, **overrides: int) -> Llama:
    """A tiny Llama (d_model 64, d_ff 128); with ``outliers``, a few norm weights 10-20x the
    rest, so some input channels of q/k/v and gate/up carry large activations, as in trained
    LLMs."""
    torch.manual_seed(seed)
    model = Llama(LlamaConfig.from_name("tiny", d_ff=128, **overrides)).eval()
    if outliers:
        with torch.no_grad():
            for block in model.model.layers:
                block.input_layernorm.weight[:3] = 20.0
                block.post_attention_layernorm.weight[5:7] = 15.0
    return model


def batches(n: int = 2, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 512, (2, 32), generator=g) for _ in range(n)]


@pytest.mark.parametrize("n_kv_heads", [2, 4])
def test_folded_scales_preserve_the_function(n_kv_heads: int) -> None:
    # Any positive scales folded into norm -> q/k/v, v -> o (MHA only), norm -> gate/up and
    # up -> down leave the logits unchanged before rounding.
    model = tiny_llama(n_kv_heads=n_kv_heads)
    ids = batches(1)[0]
    with torch.no_grad():
        expected = model(ids)
        for block in model.model.layers:
            groups = llama_scale_groups(block)
            assert [g.name for g in groups] == (
                ["qkv", "gate_up", "down"] if n_kv_heads == 2 else ["qkv", "o", "gate_up", "down"]
            )
            for group in groups:
                apply_scale(group, torch.rand(group.linears[0].in_features) * 4 + 0.1)
        torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [2, 4])
def test_searched_scales_without_rounding_preserve_the_function(n_kv_heads: int) -> None:
    model = tiny_llama(outliers=True, n_kv_heads=n_kv_heads)
    data = batches()
    with torch.no_grad():
        expected = [model(b) for b in data]
    report: dict = {}
    scaled = quantize_model_awq(
        copy.deepcopy(model), data, 4, 32, clip=False, quantize=False, report=report
    )
    assert any(v["alpha"] > 0 for b in report.values() for v in b.values())  # scales moved
    with torch.no_grad():
        for b, e in zip(data, expected, strict=True):
            torch.testing.assert_close(scaled(b), e, rtol=1e-5, atol=1e-5)


def test_search_at_alpha_zero_is_rtn_and_never_worse() -> None:
    model = tiny_llama(outliers=True)
    data = batches()
    block = model.model.layers[0]
    inputs = block_inputs(model, data)
    (qkv, *_) = llama_scale_groups(block)
    with LinearInputs({"q": block.self_attn.q_proj}, hessian=False, keep_inputs=True) as stats:
        run_block(block, inputs)
    xs, kwargs = stats.inputs["q"], [kw for _, kw in inputs]
    weights = [fc.weight.detach().clone() for fc in qkv.linears]
    s, losses = search_scale(qkv, xs, kwargs, 4, 32)
    assert len(losses) == 20 and min(losses) <= losses[0]
    assert min(losses) < 0.8 * losses[0]  # the outlier channels make scaling pay off
    for fc, w in zip(qkv.linears, weights, strict=True):
        assert torch.equal(fc.weight, w)  # the search restores the weights
    # losses[0] is plain round-to-nearest of q, k and v
    with torch.no_grad():
        expected = [block.self_attn(x, **kw) for x, kw in zip(xs, kwargs, strict=True)]
        for fc in qkv.linears:
            fc.weight.copy_(rtn(fc.weight, 4, 32, symmetric=False))
        got = [block.self_attn(x, **kw) for x, kw in zip(xs, kwargs, strict=True)]
    mse = sum(float((g - e).pow(2).sum()) for g, e in zip(got, expected, strict=True))
    mse /= sum(e.numel() for e in expected)
    assert losses[0] == pytest.approx(mse, rel=1e-4)
    # the normalised scales sit around 1 in log scale
    torch.testing.assert_close((s.max() * s.min()).sqrt(), torch.tensor(1.0))


def test_clip_search_ranges() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    w[0, 3] = 8.0  # one outlier weight: clipping it helps the rest of its group
    x = torch.randn(600, 64)
    m = search_clip(w, x, 4, 32)
    full = w.view(16, 2, 32).abs().amax(-1, keepdim=True)
    assert m.shape == (16, 2, 1)
    assert (m <= full + 1e-6).all() and (m >= 0.55 * full - 1e-6).all()
    assert m[0, 0, 0] < full[0, 0, 0]


def output_error(model: nn.Module, reference: nn.Module, data: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum((model(b) - reference(b)).pow(2).mean() for b in data)) / len(data)


@pytest.mark.parametrize("clip", [False, True])
def test_tiny_llama_end_to_end_beats_rtn(clip: bool) -> None:
    model = tiny_llama(outliers=True)
    data = batches()
    quantized = quantize_model_awq(copy.deepcopy(model), data, 4, 32, clip=clip)
    for name, layer in quantized.named_modules():
        if isinstance(layer, nn.Linear) and "layers" in name:
            groups = layer.weight.reshape(-1, 32)  # rows of groups of 32 columns
            assert max(len(torch.unique(g)) for g in groups) <= 16  # 4 bits: 16 grid points
    rtn_model = quantize_model_rtn(copy.deepcopy(model), "int4", group_size=32)
    assert output_error(quantized, model, data) <= output_error(rtn_model, model, data)


def test_bad_input_raises() -> None:
    model = tiny_llama()
    data = batches(1)
    with pytest.raises(ConfigError, match="bits"):
        quantize_model_awq(model, data, 9, 32)
    with pytest.raises(ConfigError, match="does not divide"):
        quantize_model_awq(model, data, 4, 48)
    with pytest.raises(DataError, match="calibration"):
        quantize_model_awq(model, [], 4, 32)
    gpt = GPT(GPTConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layers=1, n_heads=2))
    with pytest.raises(ConfigError, match="Llama-style"):
        quantize_model_awq(gpt, [torch.zeros(1, 4, dtype=torch.long)], 4, 32)
