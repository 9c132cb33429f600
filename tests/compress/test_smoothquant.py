"""SmoothQuant: the smoothing factors, function-preserving folding into the norms (Llama and
GPT), flatter activations, W8A8 layers, and the error smoothing saves."""

import pytest
import torch
from torch import nn

from groundwork.compress.llm_int8 import vectorwise_quantize
from groundwork.compress.quantize import fake_quantize
from groundwork.compress.smoothquant import (
    W8A8Linear,
    activation_absmax,
    apply_smoothquant,
    quantize_w8a8,
    smooth_model,
    smoothing_factors,
    smoothing_groups,
)
from groundwork.errors import ConfigError, DataError
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig

OUTLIER_DIMS = [3, 40]


def tiny_llama_with_outliers() -> Llama:
    """The tiny Llama with some norm gains blown up, so q/k/v and gate/up read a few channels
    10-20× larger than the rest, as trained LLMs do."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny")).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[OUTLIER_DIMS] = 20.0
            layer.post_attention_layernorm.weight[[5, 17]] = 15.0
    return model


def calibration(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    return [
        torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(seed + i))
        for i in range(n)
    ]


def test_smoothing_factors_by_hand() -> None:
    # alpha = 0.5: s = sqrt(max|X| / max|W|); then both maxima become sqrt(max|X| max|W|).
    act, weight = torch.tensor([16.0, 1.0, 4.0]), torch.tensor([1.0, 4.0, 4.0])
    s = smoothing_factors(act, weight, 0.5)
    torch.testing.assert_close(s, torch.tensor([4.0, 0.5, 1.0]))
    torch.testing.assert_close(act / s, weight * s)  # difficulty split evenly
    # alpha = 1: all of it into the weights (activations flat at 1); alpha = 0: none.
    torch.testing.assert_close(act / smoothing_factors(act, weight, 1.0), torch.ones(3))
    torch.testing.assert_close(weight * smoothing_factors(act, weight, 0.0), torch.ones(3))


def test_groups_pair_norms_with_their_projections() -> None:
    groups = smoothing_groups(tiny_llama_with_outliers())
    assert [g.norm_name for g in groups[:2]] == [
        "model.layers.0.input_layernorm",
        "model.layers.0.post_attention_layernorm",
    ]
    assert [n.rsplit(".", 1)[1] for n in groups[0].linears] == ["q_proj", "k_proj", "v_proj"]
    assert [n.rsplit(".", 1)[1] for n in groups[1].linears] == ["gate_proj", "up_proj"]
    assert len(groups) == 4
    # SwiGLU's down_proj, through the rows of up_proj, after the norms.
    with_down = smoothing_groups(tiny_llama_with_outliers(), smooth_down_proj=True)
    assert len(with_down) == 6
    assert [(g.norm_name, list(g.linears)) for g in with_down[4:5]] == [
        ("model.layers.0.mlp.up_proj", ["model.layers.0.mlp.down_proj"])
    ]
    gpt_groups = smoothing_groups(GPT(GPTConfig.from_name("tiny")), smooth_down_proj=True)
    assert len(gpt_groups) == 4  # GELU is not linear in anything: no down_proj group
    assert [list(g.linears) for g in gpt_groups[:2]] == [
        ["blocks.0.attn.qkv_proj"],
        ["blocks.0.mlp.up_proj"],
    ]


@pytest.mark.parametrize(
    ("arch", "smooth_down_proj"), [("llama", False), ("llama", True), ("gpt", False)]
)
def test_smoothing_preserves_the_function(arch: str, smooth_down_proj: bool) -> None:
    if arch == "llama":
        model: nn.Module = tiny_llama_with_outliers()
    else:
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_name("tiny")).eval()
        with torch.no_grad():
            for block in model.blocks:
                block.ln_1.bias.normal_()  # LayerNorm's β must be divided by s too
    idx = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        reference = model(idx)
        apply_smoothquant(
            model, calibration(), alpha=0.5, quantize=False, smooth_down_proj=smooth_down_proj
        )
        torch.testing.assert_close(model(idx), reference, rtol=1e-5, atol=1e-5)


def test_smoothing_flattens_the_channel_maxima() -> None:
    model = tiny_llama_with_outliers()
    layers = {"q": model.model.layers[0].self_attn.q_proj, "up": model.model.layers[1].mlp.up_proj}
    before = activation_absmax(model, calibration(), layers)
    smooth_model(model, activation_absmax(model, calibration(), layers | _all(model)), 0.5)
    after = activation_absmax(model, calibration(), layers)

    def spread(m: torch.Tensor) -> float:
        return float(m.max() / m.median())

    for name in layers:
        assert spread(after[name]) < spread(before[name]) / 3, name


def _all(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for g in smoothing_groups(model) for n, m in g.linears.items()}


def test_w8a8_linear_is_fake_quantisation_in_integers() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 16)
    x = torch.randn(2, 8, 64)
    w_hat = fake_quantize(linear.weight.detach(), "int8")  # per output channel
    xq, xs = vectorwise_quantize(x.reshape(-1, 64))
    x_hat = (xq.float() * xs).reshape(2, 8, 64)  # per token
    expected = nn.functional.linear(x_hat, w_hat, linear.bias.detach())
    torch.testing.assert_close(W8A8Linear(linear)(x), expected, rtol=1e-5, atol=1e-5)
    # Static per-tensor: one calibrated scale, values beyond it clipped to ±127.
    layer = W8A8Linear(linear, "per-tensor", act_absmax=2.0)
    codes, scale = layer.quantize_input(torch.tensor([[1.0, -5.0]]))
    assert codes.tolist() == [[64, -127]]  # 1 / (2/127) = 63.5 rounds to even
    torch.testing.assert_close(scale, torch.tensor([[2.0 / 127]]))
    with pytest.raises(ConfigError, match="act_quant"):
        W8A8Linear(linear, "per-channel")  # type: ignore[arg-type]


@pytest.mark.parametrize("act_quant", ["per-token", "per-tensor"])
def test_smoothing_lowers_w8a8_error_on_planted_outlier_channels(act_quant: str) -> None:
    # One linear layer reading activations with two channels ~50× the rest.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, generator=g)
    x[:, OUTLIER_DIMS] *= 50
    linear = nn.Linear(128, 64, bias=False)
    exact = linear(x).detach()

    def w8a8_error(x: torch.Tensor, linear: nn.Linear) -> float:
        layer = W8A8Linear(linear, act_quant)  # type: ignore[arg-type]
        return float((layer(x) - exact).norm() / exact.norm())

    plain = w8a8_error(x, linear)
    s = smoothing_factors(x.abs().amax(0), linear.weight.abs().amax(0).detach(), 0.5)
    smoothed = nn.Linear(128, 64, bias=False)
    with torch.no_grad():
        smoothed.weight.copy_(linear.weight * s)  # W diag(s)
    torch.testing.assert_close(smoothed(x / s), exact, rtol=1e-4, atol=1e-4)  # same product
    assert w8a8_error(x / s, smoothed) < plain / 3


def test_smoothquant_beats_plain_w8a8_on_the_tiny_llama() -> None:
    # Per-token activations. (With static per-tensor scales this toy gains nothing: its two
    # planted channels carry most of the signal and are quantised well either way; the
    # SmolLM2 script measures the real case.)
    act_quant = "per-token"
    idx = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = tiny_llama_with_outliers()(idx)
        plain_model = tiny_llama_with_outliers()
        act = activation_absmax(plain_model, calibration(), _all(plain_model) | _rest(plain_model))
        plain = quantize_w8a8(plain_model, act_quant, act)(idx)
        smooth_model_ = apply_smoothquant(
            tiny_llama_with_outliers(),
            calibration(),
            alpha=0.5,
            act_quant=act_quant,
        )
        smooth = smooth_model_(idx)
    assert isinstance(smooth_model_.model.layers[0].self_attn.q_proj, W8A8Linear)
    assert isinstance(smooth_model_.lm_head, nn.Linear)
    plain_err = (plain - reference).norm() / reference.norm()
    smooth_err = (smooth - reference).norm() / reference.norm()
    assert smooth_err < plain_err
    assert smooth_err < 0.05


def _rest(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_the_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        apply_smoothquant(tiny_llama_with_outliers(), calibration(), alpha=alpha)
    with pytest.raises(ConfigError, match="alpha"):
        smoothing_factors(torch.ones(2), torch.ones(2), alpha)


def test_bad_calibration_is_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        apply_smoothquant(tiny_llama_with_outliers(), [], alpha=0.5)
    with pytest.raises(DataError, match="token ids"):
        apply_smoothquant(tiny_llama_with_outliers(), [torch.randn(2, 8)], alpha=0.5)


def test_a_model_without_norm_projection_pairs_is_refused() -> None:
    with pytest.raises(ConfigError, match="pre-norm"):
        apply_smoothquant(nn.Sequential(nn.Linear(4, 4)), calibration(), alpha=0.5)
