"""Norms and MLPs against PyTorch's built-ins and their formulas."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groundwork.nn import GELUMLP, LayerNorm, RMSNorm, SwiGLU, gelu_tanh, layer_norm

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_layernorm_matches_torch(eps: float) -> None:
    torch.manual_seed(0)
    ours, ref = LayerNorm(24, eps=eps), nn.LayerNorm(24, eps=eps)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
        ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 24) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parity
def test_layer_norm_formula_matches_torch() -> None:
    torch.manual_seed(0)
    ref = nn.LayerNorm(24, eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    x = torch.randn(3, 5, 24) * 4 + 2
    expected = ref(x)
    torch.testing.assert_close(layer_norm(x, ref.weight, ref.bias, 1e-5), expected, **TOL)
    no_bias = layer_norm(x, ref.weight, None, 1e-5)
    torch.testing.assert_close(no_bias, expected - ref.bias, **TOL)


def test_layernorm_without_bias_has_no_bias_parameter() -> None:
    assert [n for n, _ in LayerNorm(8, bias=False).named_parameters()] == ["weight"]


@pytest.mark.parity
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rmsnorm_matches_torch(eps: float) -> None:
    torch.manual_seed(0)
    ours, ref = RMSNorm(16, eps=eps), nn.RMSNorm(16, eps=eps)
    with torch.no_grad():
        ref.weight.normal_()
        ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 7, 16) * 0.1
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_rmsnorm_output_has_unit_rms_and_keeps_dtype() -> None:
    x = torch.randn(4, 32, dtype=torch.bfloat16) * 7
    y = RMSNorm(32, eps=0.0)(x)
    assert y.dtype == torch.float32  # weight is fp32: promoted, like Hugging Face's LlamaRMSNorm
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4), rtol=1e-2, atol=1e-2)


@pytest.mark.parity
def test_gelu_tanh_matches_torch() -> None:
    x = torch.linspace(-8, 8, 1001)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), rtol=1e-5, atol=1e-6)


def test_gelu_mlp_is_down_gelu_up() -> None:
    torch.manual_seed(0)
    mlp = GELUMLP(8, 32)
    x = torch.randn(2, 3, 8)
    expected = mlp.down_proj(gelu_tanh(mlp.up_proj(x)))
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-5)


def test_swiglu_formula() -> None:
    torch.manual_seed(0)
    mlp = SwiGLU(8, 20)
    x = torch.randn(2, 3, 8)
    gate = mlp.gate_proj(x)
    expected = mlp.down_proj(gate * torch.sigmoid(gate) * mlp.up_proj(x))
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-5)
    assert all(p.ndim == 2 for p in mlp.parameters())  # no biases
