"""Model info: parameter counts against Hugging Face models built on the meta device."""

import pytest
import torch

from groundwork.interop.hf import hf_config_dict
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig, format_info, info


@pytest.mark.parametrize(
    "config",
    [
        GPTConfig.from_name("tiny"),
        GPTConfig.from_name("tiny", norm_position="post", bias=False, tie_embeddings=False),
        LlamaConfig.from_name("tiny"),
        LlamaConfig.from_name("tiny", tie_embeddings=False, n_kv_heads=1, d_head=24),
    ],
)
def test_counts_equal_the_built_model(config: GPTConfig | LlamaConfig) -> None:
    with torch.device("meta"):
        model = GPT(config) if isinstance(config, GPTConfig) else Llama(config)
    params = info(config)["parameters"]
    assert params["total"] == model.num_parameters()
    parts = ("embeddings", "attention", "mlp", "norms", "head")
    assert sum(params[k] for k in parts) == params["total"]


@pytest.mark.parity
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (GPTConfig.from_name("gpt2-124m"), 124_439_808),
        (LlamaConfig.from_name("smollm2-135m"), 134_515_008),
    ],
)
def test_counts_equal_hugging_face(config: GPTConfig | LlamaConfig, expected: int) -> None:
    transformers = pytest.importorskip("transformers")
    d = hf_config_dict(config)
    hf_config = transformers.AutoConfig.for_model(
        **{k: v for k, v in d.items() if k != "architectures"}
    )
    with torch.device("meta"):
        hf_model = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert hf_model.num_parameters() == expected
    assert info(config)["parameters"]["total"] == expected


def test_flops_and_memory_formulas() -> None:
    config = GPTConfig.from_name("gpt2-124m")
    report = info(config, seq_len=1000)
    params = report["parameters"]
    n = params["total"] - params["embeddings"] + 50257 * 768  # head matmul counted
    flops = report["flops_per_token"]
    assert flops["matmul_params"] == n
    assert flops["forward"] == 2 * n + 2 * 12 * 1000 * 768
    assert flops["training"] == 3 * flops["forward"]
    fp32 = report["memory_bytes"]["fp32"]
    assert fp32["weights"] == 4 * params["total"]
    assert fp32["total"] == fp32["weights"] + fp32["gradients"] + fp32["adamw_state"]
    assert report["memory_bytes"]["bf16"]["weights"] == 2 * params["total"]


def test_format_info_table() -> None:
    text = format_info(info(LlamaConfig.from_name("smollm2-135m")))
    assert "134,515,008" in text
    assert "FLOPs per token (T = 8192)" in text
    assert "bf16" in text


@pytest.mark.parametrize("name", ["gpt", "llama", "lstm"])
def test_every_registered_family_counts_its_parameters(name: str) -> None:
    from groundwork.models import registry

    config = registry.find_preset("tiny", name)
    report = info(config)
    assert report["architecture"] == name
    with torch.device("meta"):
        model = registry.build_model(config)
    assert report["parameters"]["total"] == model.num_parameters()


def test_attention_term_only_for_attention_models() -> None:
    from groundwork.models import LSTMConfig

    lstm = info(LSTMConfig.from_name("tiny"), seq_len=100)["flops_per_token"]
    assert lstm["forward"] == 2 * lstm["matmul_params"]
    llama = LlamaConfig.from_name("tiny", d_head=24)  # d_attn = n_heads * d_head != d_model
    flops = info(llama, seq_len=100)["flops_per_token"]
    assert flops["forward"] - 2 * flops["matmul_params"] == 2 * 2 * 100 * 4 * 24


@pytest.mark.parametrize("tie", [True, False])
def test_the_output_head_is_one_matmul_tied_or_not(tie: bool) -> None:
    """N counts the head's matrix once, whether it is shared with the embeddings or not."""
    config = LlamaConfig.from_name("tiny", tie_embeddings=tie)
    report = info(config)
    params = report["parameters"]
    head = config.vocab_size * config.d_model
    non_embedding = params["attention"] + params["mlp"] + params["norms"]
    assert report["flops_per_token"]["matmul_params"] == non_embedding + head


def test_a_config_outside_the_registry_is_refused() -> None:
    from dataclasses import dataclass

    from groundwork.errors import ConfigError

    @dataclass
    class OtherConfig:
        vocab_size: int = 10
        max_seq_len: int = 8

    with pytest.raises(ConfigError, match="OtherConfig"):
        info(OtherConfig())
