"""LLM.int8(): exact integer matmul, the decomposition's limits, its point (outliers), the model
transform, the outlier statistics, and parity with bitsandbytes' ``Linear8bitLt``."""

import math
import warnings

import pytest
import torch
from torch import nn

from groundwork.compress.llm_int8 import (
    Int8OutlierLinear,
    apply_llm_int8,
    decomposed_matmul,
    int8_linear,
    int8_matmul,
    mixed_int8_matmul,
    outlier_features,
    outlier_statistics,
    shared_outlier_dims,
    vectorwise_quantize,
)
from groundwork.errors import ConfigError, DataError
from groundwork.models.llama import Llama, LlamaConfig

OUTLIER_DIMS = [3, 40]


def planted(rows: int = 32, cols: int = 64, magnitude: float = 40.0) -> torch.Tensor:
    """Activations ~N(0, 1) with two systematic outlier features: every token has
    ``|x| >= 6`` there (the paper's emergent features)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cols, generator=g)
    signs = torch.randint(0, 2, (rows, len(OUTLIER_DIMS)), generator=g) * 2 - 1
    x[:, OUTLIER_DIMS] = signs * (magnitude + torch.rand(rows, len(OUTLIER_DIMS), generator=g))
    return x


def tiny_llama_with_outliers() -> Llama:
    """The tiny Llama with a few norm gains blown up, so the q/k/v and gate/up inputs carry
    outlier features of magnitude ~20, as large trained models do."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny")).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[OUTLIER_DIMS] = 20.0
            layer.post_attention_layernorm.weight[[5, 17]] = 15.0
    return model


def test_vectorwise_quantize_by_hand() -> None:
    # row absmax 2.54 -> scale 0.02; 1.0 / 0.02 = 50; -0.011 / 0.02 = -0.55 -> -1.
    codes, scale = vectorwise_quantize(torch.tensor([[2.54, 1.0, -0.011], [0.0, 0.0, 0.0]]))
    assert codes.dtype == torch.int8
    assert codes.tolist() == [[127, 50, -1], [0, 0, 0]]
    torch.testing.assert_close(scale, torch.tensor([[0.02], [1.0]]))


def test_int8_matmul_is_exact_in_integers() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (37, 1536), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (23, 1536), dtype=torch.int8, generator=g)
    c = int8_matmul(a, b)
    assert c.dtype == torch.int32
    assert torch.equal(c.long(), a.long() @ b.long().t())  # int64 reference
    # The worst case: every product 127 * 127, summed over k = 1536 (beyond float32's 2^24).
    full = torch.full((2, 1536), 127, dtype=torch.int8)
    assert int8_matmul(full, full).tolist() == [[127 * 127 * 1536] * 2] * 2
    with pytest.raises(ConfigError, match="int8"):
        int8_matmul(a.float(), b)


def test_int8_linear_dequantises_with_the_outer_product_of_scales() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(8, 64), torch.randn(16, 64)
    xq, xs = vectorwise_quantize(x)
    wq, ws = vectorwise_quantize(w)
    expected = (xq.double() * xs.double()) @ (wq.double() * ws.double()).t()  # fake-quant
    torch.testing.assert_close(int8_linear(x, wq, ws).double(), expected, rtol=1e-6, atol=1e-6)


def test_infinite_threshold_is_pure_vectorwise_int8() -> None:
    x, w = planted(), torch.randn(16, 64)
    wq, ws = vectorwise_quantize(w)
    assert torch.equal(decomposed_matmul(x, wq, ws, math.inf), int8_linear(x, wq, ws))
    assert torch.equal(mixed_int8_matmul(x, w, math.inf), int8_linear(x, wq, ws))


def test_zero_threshold_is_the_float_product() -> None:
    torch.manual_seed(0)
    x, w = planted(), torch.randn(16, 64)
    assert bool(outlier_features(x, 0.0).all())
    torch.testing.assert_close(mixed_int8_matmul(x, w, 0.0), x @ w.t(), rtol=1e-5, atol=1e-5)


def test_decomposition_rescues_a_planted_outlier_feature() -> None:
    # The paper's point: one feature of magnitude 40 sets every token's int8 step to 40/127, so
    # the ordinary features (|x| ~ 1) keep about 2 bits; routed through float, they keep 8.
    torch.manual_seed(0)
    x, w = planted(), torch.randn(16, 64) * 0.05
    exact = x.double() @ w.double().t()
    int8_err = (mixed_int8_matmul(x, w, math.inf).double() - exact).abs().mean()
    mixed_err = (mixed_int8_matmul(x, w, 6.0).double() - exact).abs().mean()
    assert outlier_features(x, 6.0).nonzero().flatten().tolist() == OUTLIER_DIMS
    assert mixed_err < int8_err / 10
    # Without outliers the decomposition changes nothing.
    clean = torch.randn(32, 64)
    assert torch.equal(mixed_int8_matmul(clean, w, 6.0), mixed_int8_matmul(clean, w, math.inf))


def test_int8_outlier_linear_stores_int8_and_matches_the_function() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 16)
    layer = Int8OutlierLinear(linear, 6.0)
    assert layer.weight_codes.dtype == torch.int8 and layer.weight_codes.shape == (16, 64)
    assert layer.weight_scale.shape == (16, 1)
    assert not any(True for _ in layer.parameters())  # nothing float left to train
    x = planted().reshape(2, 16, 64)  # (B, T, in)
    y = layer(x)
    assert y.shape == (2, 16, 16)
    expected = decomposed_matmul(x.reshape(-1, 64), layer.weight_codes, layer.weight_scale, 6.0)
    torch.testing.assert_close(y, (expected + linear.bias).reshape(2, 16, 16))
    # Outlier columns times the dequantised weight: close to the float layer.
    torch.testing.assert_close(y, linear(x).detach(), rtol=0, atol=0.05)
    torch.testing.assert_close(
        layer.dequantized_weight(), linear.weight.detach(), atol=2e-3, rtol=0
    )


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.nan])
def test_bad_thresholds_are_refused(threshold: float) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        Int8OutlierLinear(nn.Linear(4, 4), threshold)
    with pytest.raises(ConfigError, match="threshold"):
        apply_llm_int8(nn.Sequential(nn.Linear(4, 4)), threshold)


def test_apply_llm_int8_on_a_tiny_llama_keeps_the_logits() -> None:
    model = tiny_llama_with_outliers()
    idx = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(idx)
        apply_llm_int8(model, 6.0)
        logits = model(idx)
    names = [n for n, m in model.named_modules() if isinstance(m, Int8OutlierLinear)]
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down per layer; the tied head stays
    assert isinstance(model.lm_head, nn.Linear)
    rel = (logits - reference).norm() / reference.norm()
    assert rel < 0.02


def test_decomposition_beats_pure_int8_on_the_tiny_llama() -> None:
    idx = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    errors = {}
    for threshold in (6.0, math.inf):
        model = tiny_llama_with_outliers()
        with torch.no_grad():
            reference = model(idx)
            errors[threshold] = (apply_llm_int8(model, threshold)(idx) - reference).norm()
    # Much of what is left is the int8 weights' own rounding, which both share.
    assert errors[6.0] < 0.7 * errors[math.inf]


def test_outlier_statistics_find_the_planted_features() -> None:
    model = tiny_llama_with_outliers()
    batches = [
        torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(2)
    ]
    stats = outlier_statistics(model, batches, 6.0)
    q = stats["model.layers.0.self_attn.q_proj"]
    assert q.tokens == 64 and q.in_features == 64
    assert set(OUTLIER_DIMS) <= set(q.systematic_dims())
    assert q.max_abs >= 6.0
    torch.testing.assert_close(q.channel_max.max(), torch.tensor(q.max_abs))
    gate = stats["model.layers.1.mlp.gate_proj"]
    assert {5, 17} <= set(gate.systematic_dims())
    shared = shared_outlier_dims(stats, width=64, min_layer_fraction=0.25)
    assert {3, 40, 5, 17} <= set(shared)
    assert "lm_head" not in stats
    with pytest.raises(DataError, match="batch"):
        outlier_statistics(model, [], 6.0)
    with pytest.raises(ConfigError, match="threshold"):
        outlier_statistics(model, batches, 0.0)


def test_parity_with_bitsandbytes_linear8bitlt() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    linear = nn.Linear(64, 32).half().float()  # fp16 values: bitsandbytes quantises in fp16
    x = planted().half().float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours_threshold, bnb_threshold in ((6.0, 6.0), (math.inf, 0.0)):  # bnb: 0 = off
            ref = bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False, threshold=bnb_threshold)
            ref.load_state_dict(linear.state_dict())
            ref = ref.to("cpu").eval()  # CPU training mode would dequantise instead
            ours = Int8OutlierLinear(linear, ours_threshold)
            assert torch.equal(ref.weight.CB, ours.weight_codes)
            torch.testing.assert_close(ref.weight.SCB / 127, ours.weight_scale.squeeze(1))
            with torch.no_grad():
                expected, actual = ref(x), ours(x)
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)
