"""Model info: parameter counts against Hugging Face models built on the meta device."""

import itertools

import pytest
import torch

from groundwork.interop.hf import hf_config_dict
from groundwork.models import (
    GPT,
    GPTConfig,
    Llama,
    LlamaConfig,
    T5Config,
    format_info,
    info,
    registry,
)


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


# T5 (encoder-decoder) and BERT (bidirectional encoder): the attention term and what a token is.


def _tiny_t5(feed_forward: str, tie: bool) -> T5Config:
    # inner width n_heads * d_kv = 4 * 24 = 96 != d_model = 64; 2 encoder, 3 decoder blocks
    return T5Config.from_name(
        "tiny", d_kv=24, n_decoder_layers=3, feed_forward=feed_forward, tie_embeddings=tie
    )


@pytest.mark.parametrize(("feed_forward", "tie"), [("relu", True), ("gated-gelu", False)])
def test_t5_flops_per_token_by_hand(feed_forward: str, tie: bool) -> None:
    """A token is one position of either stack: one example's FLOPs divided by S + T."""
    config = _tiny_t5(feed_forward, tie)
    d, inner, d_ff, vocab = 64, 4 * 24, 128, 512
    L_enc, L_dec, S, T = 2, 3, 40, 10
    attention = 4 * d * inner  # q, k, v (d -> inner) and o (inner -> d)
    ffn = (2 if feed_forward == "relu" else 3) * d * d_ff  # up, down (+ gate for gated GELU)
    # encoder block: self-attention, FFN, 2 norms; decoder block: self, cross, FFN, 3 norms;
    # a final norm per stack; the head (tied or not) is a vocab x d matmul for decoder tokens
    n_enc = L_enc * (attention + ffn + 2 * d) + d
    n_dec = L_dec * (2 * attention + ffn + 3 * d) + d + vocab * d
    # QK^T and AV: 2 * inner FLOPs each per query-key pair. Encoder: S x S pairs; decoder
    # self-attention: T x T/2 (the causal average, as for GPT); cross-attention: T x S.
    pairs = L_enc * S * S + L_dec * T * T / 2 + L_dec * T * S
    # the cross-attention's keys and values are computed once per encoder position
    n_kv = L_dec * 2 * d * inner
    forward = (2 * (S * (n_enc + n_kv) + T * (n_dec - n_kv)) + 4 * inner * pairs) / (S + T)

    flops = info(config, seq_len=S, decoder_seq_len=T)["flops_per_token"]
    assert flops["seq_len"] == S and flops["decoder_seq_len"] == T
    assert flops["encoder_matmul_params"] == n_enc
    assert flops["decoder_matmul_params"] == n_dec
    assert flops["matmul_params"] == n_enc + n_dec
    assert flops["forward"] == pytest.approx(forward, rel=1e-12)
    assert flops["training"] == pytest.approx(3 * forward, rel=1e-12)


@pytest.mark.parametrize(("feed_forward", "tie"), [("relu", True), ("gated-gelu", False)])
def test_t5_matmul_params_split_like_the_built_model(feed_forward: str, tie: bool) -> None:
    from torch import nn

    from groundwork.models import T5

    config = _tiny_t5(feed_forward, tie)
    with torch.device("meta"):
        model = T5(config)

    def matrices(module: nn.Module) -> int:  # all but the relative-position bias tables
        tables = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in module.parameters() if id(p) not in tables)

    flops = info(config)["flops_per_token"]
    assert flops["encoder_matmul_params"] == matrices(model.encoder)
    head = config.vocab_size * config.d_model
    assert flops["decoder_matmul_params"] == matrices(model.decoder) + head


def test_t5_attention_flops_are_counted_and_grow_with_the_lengths() -> None:
    from groundwork.models.info import attention_flops_per_token

    config = _tiny_t5("relu", True)
    terms = [attention_flops_per_token(config, s) for s in (16, 32, 64, 128)]
    assert terms[0] > 0
    assert all(a < b for a, b in itertools.pairwise(terms))
    by_decoder = [attention_flops_per_token(config, 64, decoder_seq_len=t) for t in (8, 64, 512)]
    assert by_decoder[0] > 0
    assert all(a < b for a, b in itertools.pairwise(by_decoder))
    flops = [info(config, seq_len=s)["flops_per_token"] for s in (16, 128)]
    assert flops[0]["forward"] < flops[1]["forward"]
    # with S = T the weights cost N per token (each token goes through one of the two stacks)
    assert flops[0]["forward"] - flops[0]["matmul_params"] == pytest.approx(terms[0])


def test_t5_full_window_counts_the_decoder_self_attention_twice() -> None:
    from groundwork.models.info import attention_flops_per_token

    config = _tiny_t5("relu", True)
    S, T, inner = 40, 10, 96
    average = attention_flops_per_token(config, S, decoder_seq_len=T)
    full = attention_flops_per_token(config, S, decoder_seq_len=T, full_window=True)
    assert full - average == pytest.approx(4 * inner * 3 * T * T / 2 / (S + T))


def test_bert_attention_is_bidirectional() -> None:
    from groundwork.models import BertConfig

    config = BertConfig.from_name("tiny")  # 2 layers, 4 heads of 16
    flops = info(config, seq_len=100)["flops_per_token"]
    # every query sees all T keys: 2 * d_attn FLOPs for QK^T and as many for AV per pair
    assert flops["forward"] - 2 * flops["matmul_params"] == 4 * 2 * 100 * 64
    assert flops["training"] == 3 * flops["forward"]
    params = info(config)["parameters"]  # the encoder's matrices and norms, and the pooler
    assert flops["matmul_params"] == params["total"] - params["embeddings"]
    gpt = info(GPTConfig.from_name("tiny"), seq_len=100)["flops_per_token"]  # the same shape
    assert flops["forward"] - 2 * flops["matmul_params"] == 2 * (
        gpt["forward"] - 2 * gpt["matmul_params"]
    )


def test_decoder_length_is_only_for_encoder_decoders() -> None:
    from groundwork.errors import ConfigError

    with pytest.raises(ConfigError, match="decoder_seq_len"):
        info(GPTConfig.from_name("tiny"), decoder_seq_len=10)


def test_format_info_says_what_a_t5_token_is() -> None:
    text = format_info(info(_tiny_t5("relu", True), seq_len=64, decoder_seq_len=16))
    assert "FLOPs per token (S = 64 encoder + T = 16 decoder tokens)" in text


@pytest.mark.parametrize(
    ("name", "arch"), [("clip-vit-base-patch32", "clip"), ("digits", "image-cnn")]
)
def test_models_without_one_token_stream_have_no_flops_per_token(name: str, arch: str) -> None:
    report = info(registry.find_preset(name, arch))
    assert report["flops_per_token"] is None
    assert report["memory_bytes"]["fp32"]["weights"] == 4 * report["parameters"]["total"]
    assert "FLOPs per token: not defined" in format_info(report)


def test_vit_flops_count_every_patch_token() -> None:
    report = info(registry.find_preset("vit-base-patch16-224", "vit"))
    assert report["flops_per_token"]["seq_len"] == 197  # [CLS] + 14 x 14 patches
    assert report["parameters"]["total"] == 86_389_248
