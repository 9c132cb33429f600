"""QLoRA: equal to LoRA on the dequantised weights (Llama and GPT, LoRA and DoRA); only the
adapters train; storage about 4.1 bits a weight; head and embeddings kept (and tied); state_dict
round trip; dequantise then merge; errors."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.nn.nf4 import NF4Linear
from groundwork.peft import LoRAConfig, LoRALinear, apply_lora, load_lora, merge_lora, save_lora
from groundwork.peft.qlora import apply_qlora, dequantize_model, quantize_model

ALL_PROJ = LoRAConfig(r=4, alpha=8, target_modules=r".*_proj")  # every linear of the blocks
BLOCK_LINEARS = {"llama": 2 * 7, "gpt": 2 * 4}  # q k v o gate up down / qkv o up down, 2 layers


def _model(family: str, **overrides: object) -> nn.Module:
    torch.manual_seed(0)
    if family == "llama":
        c = LlamaConfig.from_name("tiny", vocab_size=97, n_heads=4, n_kv_heads=2, **overrides)
        return Llama(c).eval()
    return GPT(GPTConfig.from_name("tiny", vocab_size=97, **overrides)).eval()


def _randomise_adapters(model: nn.Module) -> None:
    """Non-zero B and magnitudes away from the row norms, so the adapters change the output."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            for b in m.lora_B.values():
                nn.init.normal_(b.weight, std=0.1)
            for mag in m.lora_magnitude_vector.values():
                mag.data.mul_(1 + 0.1 * torch.randn_like(mag))


def _nf4_layers(model: nn.Module) -> dict[str, NF4Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, NF4Linear)}


@pytest.mark.parametrize("family", ["llama", "gpt"])
@pytest.mark.parametrize("use_dora", [False, True])
def test_equal_to_lora_on_the_dequantised_weights(family: str, use_dora: bool) -> None:
    config = LoRAConfig(r=4, alpha=8, target_modules=r".*_proj", use_dora=use_dora)
    reference = _model(family)
    qlora = apply_qlora(copy.deepcopy(reference), config)
    _randomise_adapters(qlora)
    layers = _nf4_layers(qlora)
    assert len(layers) == BLOCK_LINEARS[family]
    with torch.no_grad():  # the reference: full-precision layers holding the dequantised weights
        for name, layer in layers.items():
            linear = reference.get_submodule(name.removesuffix(".base_layer"))
            assert isinstance(linear, nn.Linear)
            linear.weight.copy_(layer.dequantize())
    apply_lora(reference, config)
    adapters = {k: v for k, v in qlora.state_dict().items() if "lora_" in k}
    missing, unexpected = reference.load_state_dict(adapters, strict=False)
    assert not unexpected and not [k for k in missing if "lora_" in k]
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        ours, theirs = qlora(ids), reference(ids)
    print(f"{family} dora={use_dora}: max |QLoRA - LoRA| = {(ours - theirs).abs().max().item()}")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_only_the_adapters_train(family: str) -> None:
    model = apply_qlora(_model(family), ALL_PROJ)
    _randomise_adapters(model)  # B != 0, so A gets a gradient too
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    ids = torch.randint(0, 97, (2, 9))
    model.train()
    model(ids).logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
        assert (p.grad is not None) == ("lora_" in name), name
    # the gradient reaches the first layer's adapter through every dequantised layer above it
    first = next(m for m in model.modules() if isinstance(m, LoRALinear))
    for p in (first.lora_A["default"].weight, first.lora_B["default"].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    for key, value in model.state_dict().items():
        if key in buffers:
            assert torch.equal(value, buffers[key]), key


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_storage_is_about_4_bits_a_weight(family: str) -> None:
    model = quantize_model(_model(family))
    n_weights = n_bytes = 0
    for layer in _nf4_layers(model).values():
        n = layer.in_features * layer.out_features
        n_blocks = -(-n // 64)
        # 4-bit codes, an 8-bit constant per 64 weights, a float32 scale per 256 constants and
        # the constants' float32 mean
        expected = n // 2 + n_blocks + 4 * -(-n_blocks // 256) + 4
        assert layer.quantized.nbytes == expected
        n_weights += n
        n_bytes += expected
    bits = 8 * n_bytes / n_weights
    print(f"{family}: {bits:.4f} bits a weight ({n_bytes} bytes, float32: {4 * n_weights})")
    assert 4.127 < bits < 4.2  # 4.127 for large layers; the per-layer mean and scales add a bit


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_embeddings_and_head_stay_in_full_precision(family: str) -> None:
    tied = quantize_model(_model(family))
    embedding = tied.model.embed_tokens if family == "llama" else tied.wte
    assert isinstance(tied.lm_head, nn.Linear) and isinstance(embedding, nn.Embedding)
    assert tied.lm_head.weight is embedding.weight  # still tied
    # a tied head is kept even when not skipped by name: quantising it would untie it
    tied2 = quantize_model(_model(family), skip=())
    assert isinstance(tied2.lm_head, nn.Linear) and len(_nf4_layers(tied2)) == BLOCK_LINEARS[family]
    untied = quantize_model(_model(family, tie_embeddings=False))
    assert isinstance(untied.lm_head, nn.Linear)
    untied2 = quantize_model(_model(family, tie_embeddings=False), skip=())
    assert isinstance(untied2.lm_head, NF4Linear)


def test_state_dict_round_trip() -> None:
    model = apply_qlora(_model("llama"), ALL_PROJ)
    _randomise_adapters(model)
    torch.manual_seed(5)
    fresh = apply_qlora(Llama(model.config).eval(), ALL_PROJ)  # other random weights
    fresh.load_state_dict(model.state_dict())
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), model(ids), rtol=0, atol=0)


def test_saved_adapter_loads_onto_a_quantised_model(tmp_path: Path) -> None:
    model = apply_qlora(_model("llama"), ALL_PROJ)
    _randomise_adapters(model)
    save_lora(model, tmp_path, ALL_PROJ)
    loaded = load_lora(quantize_model(_model("llama")), tmp_path)  # same base, quantised alike
    assert any(
        isinstance(m, LoRALinear) and isinstance(m.base_layer, NF4Linear) for m in loaded.modules()
    )
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


@pytest.mark.parametrize("use_dora", [False, True])
def test_dequantise_then_merge(use_dora: bool) -> None:
    config = LoRAConfig(r=4, alpha=8, target_modules=r".*_proj", use_dora=use_dora)
    model = apply_qlora(_model("gpt"), config)
    _randomise_adapters(model)
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        before = model(ids)
        with pytest.raises(ConfigError, match="cannot merge into a quantised NF4Linear"):
            merge_lora(model)
        dequantize_model(model)
        assert not _nf4_layers(model)
        torch.testing.assert_close(model(ids), before, rtol=0, atol=0)
        merge_lora(model)
        torch.testing.assert_close(model(ids), before, rtol=1e-5, atol=1e-5)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_bad_input() -> None:
    model = quantize_model(_model("llama"))
    with pytest.raises(ConfigError, match="quantised already"):
        quantize_model(model)
    with pytest.raises(ConfigError, match="quantised already"):
        apply_qlora(model, ALL_PROJ)
    lora = apply_lora(_model("llama"), ALL_PROJ)
    with pytest.raises(ConfigError, match="before adding LoRA adapters"):
        quantize_model(lora)
    plain = _model("llama")
    for blocksize in (0, 63):
        with pytest.raises(ConfigError, match="blocksize must be"):
            quantize_model(plain, blocksize=blocksize)
    with pytest.raises(ConfigError, match=r"match no linear layer.*named .*q_proj"):
        apply_qlora(plain, LoRAConfig(target_modules=("c_attn",)))
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    with pytest.raises(ConfigError, match="no linear layer to quantise"):
        quantize_model(plain, skip=projections)  # and the tied head is kept anyway
    assert not _nf4_layers(plain)  # every refusal left the model as it was
    with pytest.raises(ConfigError, match="no NF4 layer"):
        dequantize_model(plain)
