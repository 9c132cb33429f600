"""Positions: sinusoidal table, RoPE (and its relative property), ALiBi slopes and bias."""

import math

import pytest
import torch

from groundwork.nn import (
    RopeScaling,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_inv_freq,
    sinusoidal_table,
)


def test_sinusoidal_table_formula() -> None:
    table = sinusoidal_table(50, 16)
    p, i = 37, 3
    assert table[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 16)), abs=1e-5)
    assert table[p, 2 * i + 1].item() == pytest.approx(
        math.cos(p / 10000 ** (2 * i / 16)), abs=1e-5
    )
    emb = SinusoidalPositionalEmbedding(50, 16)
    torch.testing.assert_close(emb(torch.tensor([[37]])), table[37].view(1, 1, 16))


def test_sinusoidal_rejects_odd_width() -> None:
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 7)


def _rope_score(rope: RotaryEmbedding, q: torch.Tensor, k: torch.Tensor, m: int, n: int) -> float:
    cos_m, sin_m = rope(torch.tensor([[m]]))
    cos_n, sin_n = rope(torch.tensor([[n]]))
    q_m = apply_rope(q.view(1, 1, 1, -1), cos_m, sin_m)
    k_n = apply_rope(k.view(1, 1, 1, -1), cos_n, sin_n)
    return (q_m * k_n).sum().item()


def test_rope_score_depends_only_on_relative_position() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(16, theta=100.0)
    q, k = torch.randn(16, dtype=torch.float64).float(), torch.randn(16)
    for m, n in [(3, 1), (10, 8), (52, 50)]:  # m - n = 2 in each
        assert _rope_score(rope, q, k, m, n) == pytest.approx(
            _rope_score(rope, q, k, 2, 0), abs=1e-4
        )
    # ... and it does depend on the offset: a test that could fail.
    assert abs(_rope_score(rope, q, k, 3, 1) - _rope_score(rope, q, k, 4, 1)) > 1e-3


def test_rope_is_a_rotation_that_keeps_norms() -> None:
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 3, 5, 8)
    cos, sin = rope(torch.arange(5).expand(2, 5))
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # position 0: angle 0, no rotation


def test_rope_linear_scaling_divides_frequencies() -> None:
    base = rope_inv_freq(16, 10000.0)
    linear = rope_inv_freq(16, 10000.0, RopeScaling(kind="linear", factor=4.0))
    torch.testing.assert_close(linear, base / 4)


def test_rope_llama3_scaling_keeps_high_and_scales_low_frequencies() -> None:
    scaling = RopeScaling(kind="llama3", factor=8.0, original_max_seq_len=64)
    base = rope_inv_freq(32, 500000.0)
    scaled = rope_inv_freq(32, 500000.0, scaling)
    wavelen = 2 * math.pi / base
    high = wavelen < 64 / 4
    low = wavelen > 64 / 1
    assert high.any() and low.any()
    torch.testing.assert_close(scaled[high], base[high])
    torch.testing.assert_close(scaled[low], base[low] / 8)
    middle = ~high & ~low
    assert ((scaled[middle] < base[middle]) & (scaled[middle] > base[middle] / 8)).all()


def test_alibi_slopes_power_of_two() -> None:
    assert alibi_slopes(8).tolist() == [2.0**-i for i in range(1, 9)]


def test_alibi_slopes_not_power_of_two() -> None:
    # 12 heads: the 8 slopes for 8 heads, then every other slope of the 16-head sequence.
    sixteen = [2.0 ** (-i / 2) for i in range(1, 17)]
    expected = [2.0**-i for i in range(1, 9)] + sixteen[0::2][:4]
    assert alibi_slopes(12).tolist() == pytest.approx(expected)


def test_alibi_bias_is_minus_slope_times_distance() -> None:
    bias = alibi_bias(alibi_slopes(2), 3, 5)  # queries at positions 2, 3, 4
    assert bias.shape == (2, 3, 5)
    assert bias[1, 0, 0].item() == pytest.approx(-(2.0**-8) * 2)
    assert bias[0, 2].tolist() == pytest.approx([-4 / 16, -3 / 16, -2 / 16, -1 / 16, 0.0])
