"""The w4a8/w8a8 integer dot-product layers (groundwork.compress.int_dot): the grids' bounds, the
packing round trip, the C++ kernel equal to the same arithmetic in float64 (every instruction-set
path it has), a model decoded with the kernel equal to the PyTorch reference, compiled equal to
eager, and the errors."""

import doctest
import warnings

import pytest
import torch
from torch import nn

from groundwork.compress import int_dot
from groundwork.compress.int_dot import (
    IntDotLinear,
    dequantize,
    int_dot_reference,
    kernel_isa,
    pack_codes,
    pack_scales,
    quantize_activations,
    quantize_groups,
    quantize_int_dot,
    unpack_codes,
    unpack_scales,
)
from groundwork.errors import ConfigError
from groundwork.generate import GenerationConfig, StaticDecoder, generate
from groundwork.models import Llama, LlamaConfig
from helpers import INT_DOT_PATHS, int_dot_build


def exact(
    x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, bits: int, out: int
) -> torch.Tensor:
    """``x̂ @ Ŵ.T`` in float64: the number the kernel rounds."""
    codes, d = quantize_activations(x)
    x_hat = (codes.double().reshape(*d.shape, 32) * d.double()[..., None]).reshape(x.shape)
    codes_w = unpack_codes(packed, bits, out).double().reshape(out, -1, 32)
    s, m = (t.double() for t in unpack_scales(scales, out))
    w_hat = (codes_w * s[..., None] + m[..., None]).reshape(out, -1)
    return x_hat @ w_hat.T


def inputs(rows: int, k: int, seed: int = 0) -> torch.Tensor:
    """Activations with the spread a model's have: some large channels, a group of zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    x[:, 3] *= 40.0  # an outlier channel
    x[:, 32:64] = 0.0 if k >= 64 else x[:, 32:64]  # a whole group of zeros: d = 0
    return x


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_grid_bounds_and_packing_round_trip(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(24, 128) * 0.1
    w[0, :32] = 0.25  # a constant group: scale 0, stored exactly up to fp16
    codes, scale, offset = quantize_groups(w, bits)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    s = scale.float().repeat_interleave(32, dim=1)
    m = offset.float().repeat_interleave(32, dim=1)
    err = (w - (codes * s + m)).abs()
    # half a step, plus the fp16 rounding of the group's minimum for its lowest weights
    assert (err <= s / 2 + m.abs() * 2**-11 + 1e-7).all()
    assert scale[0, 0] == 0 and torch.equal(codes[0, :32], torch.zeros(32, dtype=torch.int32))
    packed = pack_codes(codes, bits)  # 24 rows: 2 tiles of 16, the second half empty
    assert packed.shape == (2, 16 * 128 * bits // 8) and packed.dtype == torch.uint8
    assert torch.equal(unpack_codes(packed, bits, 24), codes)
    assert not packed[1].reshape(4, -1, 16, 4)[:, :, 8:].any()  # rows 24-31: zeros
    # tile 1, group 2, row 3 (row 19), inputs 64 + 4..7: chunk 1, bytes 4 * 3 + 0..3
    group = packed[1, 2 * 16 * 32 * bits // 8 :]
    if bits == 8:
        assert torch.equal(group[64 + 12 : 64 + 16], codes[19, 68:72].to(torch.uint8))
    else:  # ... with inputs 64 + 20..23 in the high nibbles
        both = codes[19, 68:72] | (codes[19, 84:88] << 4)
        assert torch.equal(group[64 + 12 : 64 + 16], both.to(torch.uint8))
    scales = pack_scales(scale, offset)
    assert scales.shape == (2, 4, 2, 16)
    assert scales[1, 2, 0, 3] == scale[19, 2] and scales[1, 2, 1, 3] == offset[19, 2]
    back_scale, back_offset = unpack_scales(scales, 24)
    assert torch.equal(back_scale, scale) and torch.equal(back_offset, offset)


def test_docstring_examples() -> None:
    assert doctest.testmod(int_dot).failed == 0


def test_activation_grid() -> None:
    x = inputs(3, 128)
    codes, d = quantize_activations(x)
    assert codes.dtype == torch.int8 and d.shape == (3, 4)
    assert codes.abs().max() == 127
    assert (
        torch.equal(codes[:, 32:64], torch.zeros(3, 32, dtype=torch.int8)) and (d[:, 1] == 0).all()
    )
    x_hat = codes.float().reshape(3, 4, 32) * d[..., None]
    assert ((x.reshape(3, 4, 32) - x_hat).abs() <= d[..., None] / 2 + 1e-6).all()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize(("out", "k", "rows"), [(33, 64, 1), (48, 192, 3), (7, 576, 5)])
def test_kernel_equals_the_exact_product(bits: int, out: int, k: int, rows: int) -> None:
    torch.manual_seed(1)
    w = torch.randn(out, k) * 0.05
    codes, scale, offset = quantize_groups(w, bits)
    packed, scales = pack_codes(codes, bits), pack_scales(scale, offset)
    x = inputs(rows, k)
    want = exact(x, packed, scales, bits, out)
    tol = 1e-5 * want.abs().max().item()
    reference = int_dot_reference(x, packed, scales, bits, out).double()
    assert torch.allclose(reference, want, atol=tol)
    got = int_dot.int_dot_linear(x, packed, scales, bits, out)  # the compiled kernel
    assert got.dtype == torch.float32 and got.shape == (rows, out)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=tol)


def test_each_row_is_independent_of_the_batch() -> None:
    """Rows in fours (twos on AVX2) share each loaded tile of weights, the rest go alone: bit for
    bit the same (a server batches whatever requests are in flight)."""
    torch.manual_seed(4)
    layer = IntDotLinear.from_weight(torch.randn(40, 192) * 0.05)
    x = inputs(7, 192)
    together = layer(x)
    alone = torch.cat([layer(x[i : i + 1]) for i in range(7)])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("bits", [4, 8])
def test_layer_pads_any_width_and_keeps_dtype_and_bias(bits: int) -> None:
    torch.manual_seed(2)
    linear = nn.Linear(100, 40)  # 100 inputs: padded to 128 with zero weights; 3 tiles of rows
    layer = IntDotLinear.from_linear(linear, bits=bits)
    assert layer.padded_in == 128 and layer.packed.shape == (3, 16 * 128 * bits // 8)
    x = torch.randn(2, 3, 100)
    y = layer(x)
    assert y.shape == (2, 3, 40)
    padded = nn.functional.pad(x.reshape(6, 100), (0, 28))
    want = exact(padded, layer.packed, layer.scales, bits, 40) + linear.bias.double()
    assert torch.allclose(y.reshape(6, 40).double(), want, rtol=1e-5, atol=1e-5)
    # and close to the float layer: 8-bit within 2%, 4-bit within 15% (random weights)
    rel = (y - linear(x)).norm() / linear(x).norm()
    assert rel < (0.02 if bits == 8 else 0.15)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16
    w = layer.dequantized_weight()
    assert w.shape == (40, 100)
    assert torch.equal(w, dequantize(layer.packed, layer.scales, bits, 40)[:, :100])


def tiny_llama() -> Llama:
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny", vocab_size=96, max_seq_len=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)  # varied text
    return model.eval()


def test_model_transform_replaces_every_linear() -> None:
    model = quantize_int_dot(tiny_llama(), "w4a8")
    kinds = {name: m for name, m in model.named_modules() if isinstance(m, IntDotLinear)}
    assert kinds["model.layers.0.mlp.down_proj"].bits == 4  # d_ff 172: any width works
    assert kinds["lm_head"].bits == 8
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    kept = quantize_int_dot(tiny_llama(), "w8a8", head="float", skip=["q_proj"])
    assert isinstance(kept.lm_head, nn.Linear)
    assert isinstance(kept.get_submodule("model.layers.0.self_attn.q_proj"), nn.Linear)
    assert kept.get_submodule("model.layers.0.self_attn.k_proj").bits == 8


def test_decoding_with_the_kernel_equals_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    model = quantize_int_dot(tiny_llama(), "w4a8")
    ids = torch.tensor([[5, 17, 3, 60, 2, 9, 41]])
    with torch.no_grad():
        logits = model(ids)
        monkeypatch.setattr(int_dot, "_extension", lambda: None)  # as if it could not build
        assert kernel_isa() == "reference"
        reference = model(ids)
    assert torch.allclose(logits, reference, rtol=1e-4, atol=1e-4)


def test_no_compiler_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(arch_flags: object = ()) -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(int_dot, "build_kernel", no_compiler)
    int_dot._extension.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built.*Ninja is required"):
            assert kernel_isa() == "reference"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            layer = IntDotLinear.from_weight(torch.randn(16, 64))
            x = torch.randn(2, 64)
            want = int_dot_reference(x, layer.packed, layer.scales, 4, 16)
            assert torch.allclose(layer(x), want)
    finally:
        int_dot._extension.cache_clear()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="bits must be 4 or 8"):
        IntDotLinear(64, 16, bits=3)
    with pytest.raises(ConfigError, match="has no weights"):
        IntDotLinear(0, 16)
    with pytest.raises(ConfigError, match="2-D float weight"):
        IntDotLinear.from_weight(torch.ones(4, 64, dtype=torch.int64))
    with pytest.raises(ConfigError, match="float16's range"):
        IntDotLinear.from_weight(torch.tensor([[1e6] + [-1e6] * 63]))
    with pytest.raises(ConfigError, match="scheme must be"):
        quantize_int_dot(tiny_llama(), "w2a8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="head must be"):
        quantize_int_dot(tiny_llama(), head="int2")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="multiple of 32"):  # the kernel's own checks
        int_dot.int_dot_linear(
            torch.randn(1, 48),
            torch.zeros(1, 384, dtype=torch.uint8),
            torch.zeros(1, 1, 2, 16, dtype=torch.float16),
            4,
            16,
        )
    with pytest.raises(RuntimeError, match=r"codes: expected \(2, 256\)"):
        int_dot.int_dot_linear(
            torch.randn(1, 32),
            torch.zeros(1, 256, dtype=torch.uint8),
            torch.zeros(1, 1, 2, 16, dtype=torch.float16),
            4,
            17,
        )


@pytest.mark.slow
@pytest.mark.parametrize("isa", list(INT_DOT_PATHS))
def test_every_instruction_set_path_equals_the_exact_product(isa: str) -> None:
    ext = int_dot_build(isa)
    assert ext.isa() == isa
    torch.manual_seed(3)
    for bits in (4, 8):
        w = torch.randn(40, 320) * 0.05  # 3 tiles, the last partial; 5 rows: 4 + 1, 2 + 2 + 1
        codes, scale, offset = quantize_groups(w, bits)
        codes[:, :32] = 2**bits - 1  # the largest codes times activation codes 127: exact sums
        packed, scales = pack_codes(codes, bits), pack_scales(scale, offset)
        x = inputs(5, 320)
        x[0, :32] = 127.0
        want = exact(x, packed, scales, bits, 40)
        got = ext.int_dot_linear(x, packed, scales, bits, 40).double()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.slow
def test_compiled_decoding_equals_eager() -> None:
    model = quantize_int_dot(tiny_llama(), "w4a8")
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    prompt = [5, 17, 3, 60, 2]
    eager = generate(model, [prompt], config).sequences
    decoder = StaticDecoder(model, 1, 24, compile=True)
    assert decoder.generate([prompt], config).sequences == eager
