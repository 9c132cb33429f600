"""NF4: levels, 8-bit dynamic map, packed codes and constants equal to bitsandbytes; NF4Linear
(forward, storage, frozen, state_dict, dtype); errors."""

import io
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.nn.nf4 import (
    NF4Linear,
    NF4Quantized,
    dequantize_nf4,
    dynamic_levels,
    nf4_levels,
    quantize_nf4,
)

# (64, 128) and (96, 64): whole blocks; (10, 50) and (1000,): a short last block; (7, 33): an
# odd count (the last byte is padded). bitsandbytes' CPU dequantiser is not used on (7, 33) (its
# odd-width path torch.compiles, seconds) nor on (3, 80): with AVX-512, a row width that is a
# multiple of 16 but not of the block size gets the wrong block constants (bitsandbytes 0.50.2).
SHAPES = [(64, 128), (96, 64), (10, 50), (1000,), (7, 33), (3, 80)]
BNB_DEQUANT_OK = {(64, 128), (96, 64), (10, 50), (1000,)}


@pytest.fixture(scope="module")
def bnb() -> ModuleType:
    return pytest.importorskip("bitsandbytes.functional")


def _weight(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(shape) * 0.02  # as a pretrained layer: small, about normal


def _bnb_cpu_rounding(scaled: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' CPU 8-bit quantiser (csrc/cpu_ops.cpp, quantize_cpu_impl): the value is
    first rounded to a grid of 65,536 points on [-1, 1], then mapped to the level nearest to
    that grid point; so a value within half a grid step (1.5e-5) of a midpoint can get the
    level on the other side."""
    k = 65536
    grid_index = ((scaled.clamp(-1, 1) + 1.0) * 0.5 * (k - 1) + 0.5).long()
    grid = -1.0 + (2.0 * torch.arange(k, dtype=torch.float32)) / (k - 1)
    midpoints = 0.5 * (levels[:-1] + levels[1:])
    return torch.searchsorted(midpoints, grid)[grid_index]


def _from_bnb(packed: torch.Tensor, state: object) -> NF4Quantized:
    """bitsandbytes' quantised tensor as ours."""
    s = state  # a bitsandbytes QuantState
    nested = getattr(s, "nested", False)
    return NF4Quantized(
        packed.view(-1),
        s.absmax,  # type: ignore[attr-defined]
        s.shape,  # type: ignore[attr-defined]
        s.dtype,  # type: ignore[attr-defined]
        s.blocksize,  # type: ignore[attr-defined]
        absmax_scales=s.state2.absmax if nested else None,  # type: ignore[attr-defined]
        absmax_offset=s.offset if nested else None,  # type: ignore[attr-defined]
        dq_blocksize=s.state2.blocksize if nested else 256,  # type: ignore[attr-defined]
    )


@pytest.mark.parity
def test_levels_equal_bitsandbytes(bnb: ModuleType) -> None:
    ours = nf4_levels()
    theirs = bnb.get_4bit_type("nf4", device="cpu")
    diff = (ours - theirs).abs().max().item()
    print(f"NF4 levels: max |ours - bitsandbytes| = {diff:.3g}")
    assert torch.equal(ours, theirs)
    assert ours.dtype == torch.float32 and ours[7] == 0 and ours[0] == -1 and ours[-1] == 1
    assert (ours > 0).sum() == 8 and (ours < 0).sum() == 7
    # the 8-bit code of the nested constants: create_dynamic_map()
    dyn = dynamic_levels()
    print(f"dynamic map: max diff {(dyn - bnb.create_dynamic_map()).abs().max().item():.3g}")
    assert torch.equal(dyn, bnb.create_dynamic_map())
    assert dyn.unique().numel() == 256 and bool((dyn[1:] > dyn[:-1]).all())


@pytest.mark.parity
@pytest.mark.parametrize("shape", SHAPES)
def test_equal_to_bitsandbytes_without_double_quant(
    bnb: ModuleType, shape: tuple[int, ...]
) -> None:
    w = _weight(shape)
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    q = quantize_nf4(w, blocksize=64, double_quant=False)
    assert torch.equal(q.codes, packed.view(-1))  # same nibbles in the same order
    assert torch.equal(q.absmax, state.absmax)
    # our dequantisation of their quantisation, and of ours
    assert torch.equal(dequantize_nf4(_from_bnb(packed, state)), dequantize_nf4(q))
    if shape in BNB_DEQUANT_OK:
        theirs = bnb.dequantize_4bit(packed, state).view(shape)  # its CPU kernel: 1-D -> (1, n)
        print(f"{shape}: max |dequant diff| = {(dequantize_nf4(q) - theirs).abs().max().item()}")
        assert torch.equal(dequantize_nf4(q), theirs)


@pytest.mark.parity
def test_equal_to_bitsandbytes_in_bfloat16(bnb: ModuleType) -> None:
    w = _weight((64, 128)).bfloat16()
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    q = quantize_nf4(w)
    assert torch.equal(q.codes, packed.view(-1))
    assert torch.equal(q.absmax, state.absmax)
    out = dequantize_nf4(q)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, bnb.dequantize_4bit(packed, state))


@pytest.mark.parity
@pytest.mark.parametrize("shape", [*SHAPES, (256, 512)])
def test_equal_to_bitsandbytes_with_double_quant(bnb: ModuleType, shape: tuple[int, ...]) -> None:
    w = _weight(shape)
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    q = quantize_nf4(w)  # blocks of 64, constants in blocks of 256
    assert torch.equal(q.codes, packed.view(-1))
    assert q.absmax_offset is not None and q.absmax_scales is not None
    assert torch.equal(q.absmax_offset, state.offset)  # the mean of the constants
    assert torch.equal(q.absmax_scales, state.state2.absmax)  # float32, one per 256 constants
    assert state.state2.blocksize == 256 and torch.equal(state.state2.code, dynamic_levels())
    # The 8-bit indices of the centred constants: ours are the nearest level; bitsandbytes' CPU
    # kernel rounds through a 65,536-point grid first. Every difference is that, and ours is
    # never the farther level.
    n_blocks = q.absmax.numel()
    constants = F.pad(w.reshape(-1), (0, -w.numel() % 64)).view(n_blocks, 64).abs().amax(1)
    block = torch.arange(n_blocks) // 256
    scaled = (constants - q.absmax_offset) * (1.0 / q.absmax_scales)[block]  # (n_blocks,)
    levels = dynamic_levels()
    assert torch.equal(state.absmax.long(), _bnb_cpu_rounding(scaled, levels))
    ours, theirs = q.absmax.long(), state.absmax.long()
    assert bool(((scaled - levels[ours]).abs() <= (scaled - levels[theirs]).abs()).all())
    differ = ours != theirs
    print(f"{shape}: {int(differ.sum())} of {n_blocks} nested indices differ (bnb CPU grid)")
    assert differ.float().mean() < 0.01
    # Dequantisation is exact: ours of bitsandbytes' state equals bitsandbytes'.
    mine_of_theirs = dequantize_nf4(_from_bnb(packed, state))
    ours_w = dequantize_nf4(q)
    if shape in BNB_DEQUANT_OK:
        assert torch.equal(mine_of_theirs, bnb.dequantize_4bit(packed, state).view(shape))
    # Blocks whose nested index is the same dequantise identically; the others differ by one
    # step of the 8-bit code (at most 0.0141 of the constants' scale) times an NF4 level.
    same = ~differ[torch.arange(w.numel()) // 64].view(shape)
    assert torch.equal(ours_w[same], mine_of_theirs[same])
    bound = 0.0141 * q.absmax_scales.max().item()
    diff = (ours_w - mine_of_theirs).abs().max().item()
    print(f"{shape}: max |dequant diff| = {diff:.3g} (bound {bound:.3g})")
    assert diff <= bound


def test_storage_and_error_bound() -> None:
    w = _weight((256, 512))
    n, n_blocks = w.numel(), w.numel() // 64
    plain = quantize_nf4(w, double_quant=False)
    assert plain.nbytes == n // 2 + 4 * n_blocks  # 4 bits + a float32 per 64: 4.5 bits
    assert plain.bits_per_value == 4.5
    double = quantize_nf4(w)
    assert double.nbytes == n // 2 + n_blocks + 4 * (n_blocks // 256) + 4  # + the mean
    assert double.bits_per_value == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / n)
    print(f"bits per weight: {plain.bits_per_value} plain, {double.bits_per_value:.4f} double")
    # Rounding to the nearest level errs by at most half the widest gap (1 - 0.7230) times the
    # block's absmax; double quantisation adds a little (the constants are 8-bit).
    absmax = w.view(n_blocks, 64).abs().amax(1, keepdim=True)  # (n_blocks, 1)
    err = (dequantize_nf4(plain) - w).view(n_blocks, 64).abs()
    half_gap = (nf4_levels().diff().max() / 2).item()
    assert bool((err <= half_gap * absmax * (1 + 1e-6)).all())
    err2 = (dequantize_nf4(double) - w).abs().max().item()
    print(f"max error {err.max().item():.3g} plain, {err2:.3g} double (absmax {absmax.max():.3g})")
    assert err2 < 1.05 * half_gap * absmax.max().item()
    # zero stays exactly zero, and each block's absmax is exact (NF4 has 0 and +-1)
    w[0, :64] = 0
    w[1, 3] = 1.0  # its block's largest
    out = dequantize_nf4(quantize_nf4(w, double_quant=False))
    assert bool((out[0, :64] == 0).all()) and out[1, 3] == 1.0


def test_nf4_linear_forward_and_storage() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 48)
    layer = NF4Linear.from_linear(linear)
    assert (layer.in_features, layer.out_features) == (128, 48)
    weight = dequantize_nf4(quantize_nf4(linear.weight))
    assert torch.equal(layer.dequantize(), weight)
    x = torch.randn(2, 5, 128)  # (B, T, in)
    torch.testing.assert_close(layer(x), F.linear(x, weight, linear.bias), rtol=0, atol=0)
    assert not any(p.requires_grad for p in layer.parameters())
    assert not hasattr(layer, "weight")  # the full weight is not kept
    n = 128 * 48
    assert layer.memory_bytes() == n // 2 + n // 64 + 4 + 4 + 4 * 48  # codes, c2, scale, mean, bias
    plain = NF4Linear.from_linear(linear, blocksize=32, double_quant=False)
    assert plain.memory_bytes() == n // 2 + 4 * n // 32 + 4 * 48


def test_nf4_linear_state_dict_round_trip_and_dtype() -> None:
    torch.manual_seed(0)
    for double_quant in (True, False):
        layer = NF4Linear.from_linear(nn.Linear(64, 40, bias=False), double_quant=double_quant)
        buffer = io.BytesIO()
        torch.save(layer.state_dict(), buffer)
        buffer.seek(0)
        fresh = NF4Linear(64, 40, bias=False, double_quant=double_quant)
        fresh.load_state_dict(torch.load(buffer))
        assert torch.equal(fresh.dequantize(), layer.dequantize())
        extra = {"absmax_scales", "absmax_offset"} if double_quant else set()
        assert set(layer.state_dict()) == {"codes", "absmax"} | extra
    # a state saved without double quantisation does not load into a layer with it
    plain = NF4Linear.from_linear(nn.Linear(64, 40, bias=False), double_quant=False)
    with pytest.raises(RuntimeError, match="double_quant"):
        NF4Linear(64, 40, bias=False).load_state_dict(plain.state_dict(), strict=False)
    # .to(dtype) changes the compute dtype, not the float32 constants
    layer = NF4Linear.from_linear(nn.Linear(64, 40))
    weight = layer.dequantize()
    layer.to(torch.bfloat16)
    assert layer.compute_dtype == torch.bfloat16 and layer.bias is not None
    assert layer.bias.dtype == torch.bfloat16 and layer.absmax_scales is not None
    assert layer.absmax_scales.dtype == torch.float32 and layer.codes.dtype == torch.uint8
    assert torch.equal(layer.dequantize(), weight.bfloat16())
    assert layer(torch.randn(3, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_bad_input() -> None:
    w = torch.randn(8, 64)
    for blocksize in (0, -64, 63, 2.0):
        with pytest.raises(ConfigError, match="blocksize must be"):
            quantize_nf4(w, blocksize=blocksize)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dq_blocksize must be"):
        quantize_nf4(w, dq_blocksize=0)
    with pytest.raises(ConfigError, match="floating-point"):
        quantize_nf4(torch.ones(8, 64, dtype=torch.int64))
    with pytest.raises(ConfigError, match="empty"):
        quantize_nf4(torch.ones(0, 64))
    with pytest.raises(ConfigError, match="NaN or infinity"):
        quantize_nf4(torch.full((8, 64), float("nan")))
    with pytest.raises(ConfigError, match="2-D"):
        NF4Linear.from_weight(torch.randn(64))
    with pytest.raises(ConfigError, match="2-D"):
        NF4Linear.from_weight(torch.randn(2, 8, 64))
    with pytest.raises(ConfigError, match="bias of shape"):
        NF4Linear.from_weight(torch.randn(8, 64), torch.zeros(9))
    with pytest.raises(ConfigError, match="blocksize must be even"):
        NF4Linear(64, 8, blocksize=9)


def test_the_input_gradient_is_that_of_the_dequantised_weight() -> None:
    """The custom backward (the weight dequantised again, not kept) gives autograd's gradient."""
    torch.manual_seed(0)
    layer = NF4Linear.from_linear(nn.Linear(64, 48))
    x = torch.randn(2, 5, 64, requires_grad=True)
    layer(x).square().sum().backward()
    ours = x.grad
    x2 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, layer.dequantize(), layer.bias).square().sum().backward()
    torch.testing.assert_close(ours, x2.grad, rtol=1e-5, atol=1e-5)
