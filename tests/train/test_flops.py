"""Training FLOPs per token (for MFU), checked against formulas written out by hand."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models import (
    GPT,
    LSTMLM,
    BertConfig,
    BertForPreTraining,
    GPTConfig,
    Llama,
    LlamaConfig,
    LSTMConfig,
    T5Config,
    T5Encoder,
    info,
)
from groundwork.models import T5 as T5Model
from groundwork.train import flops as flops_module
from groundwork.train.flops import mfu, model_flops_per_token, peak_flops, peak_flops_for_name


def _on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


def _matrices(model: nn.Module) -> int:
    """Every parameter but the embedding tables that are only looked up."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    tables = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in linear
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def test_a_decoder_costs_6n_plus_the_full_window() -> None:
    config = GPTConfig.from_name("tiny")  # 2 layers, d_model 64
    model = _on_meta(lambda: GPT(config))
    n = _matrices(model)
    assert model_flops_per_token(model, 128) == 6 * n + 12 * 2 * 64 * 128


def test_the_attention_term_uses_the_attention_width() -> None:
    config = LlamaConfig.from_name("tiny", d_head=24)  # 4 heads of 24: 96 != d_model 64
    model = _on_meta(lambda: Llama(config))
    assert model_flops_per_token(model, 100) == 6 * _matrices(model) + 12 * 2 * 96 * 100


def test_bert_attends_to_the_full_window_as_info_counts_it() -> None:
    config = BertConfig.from_name("tiny")  # 2 layers, 4 heads of 16
    model = _on_meta(lambda: BertForPreTraining(config))
    flops = model_flops_per_token(model, 100)
    assert flops == 6 * _matrices(model) + 12 * 2 * 64 * 100
    report = info(config, seq_len=100)["flops_per_token"]  # bidirectional there too
    assert report["training"] - 6 * report["matmul_params"] == 12 * 2 * 64 * 100


@pytest.mark.parametrize(("feed_forward", "tie"), [("relu", True), ("gated-gelu", False)])
def test_t5_by_hand(feed_forward: str, tie: bool) -> None:
    """Per token of either stack (the loop counts encoder plus decoder tokens), the decoder's
    self-attention over its full window."""
    config = T5Config.from_name(
        "tiny", d_kv=24, n_decoder_layers=3, feed_forward=feed_forward, tie_embeddings=tie
    )
    model = _on_meta(lambda: T5Model(config))
    d, inner, d_ff, vocab = 64, 4 * 24, 128, 512
    L_enc, L_dec, S, T = 2, 3, 40, 10
    attention = 4 * d * inner
    ffn = (2 if feed_forward == "relu" else 3) * d * d_ff
    n_enc = L_enc * (attention + ffn + 2 * d) + d  # + 2 norms per block, a final one
    n_dec = L_dec * (2 * attention + ffn + 3 * d) + d + vocab * d  # self, cross; the head
    assert n_enc + n_dec == _matrices(model)
    pairs = L_enc * S * S + L_dec * T * T + L_dec * T * S  # encoder, decoder self, cross
    n_kv = L_dec * 2 * d * inner  # cross-attention keys and values: on the S encoder positions
    expected = (6 * (S * (n_enc + n_kv) + T * (n_dec - n_kv)) + 3 * 4 * inner * pairs) / (S + T)
    flops = model_flops_per_token(model, S, decoder_seq_len=T)
    assert flops == pytest.approx(expected, rel=1e-12)
    # info's count, with the causal average of the decoder's self-attention made full
    report = info(config, seq_len=S, decoder_seq_len=T)["flops_per_token"]
    causal_half = 3 * 4 * inner * L_dec * T * T / 2 / (S + T)
    assert flops == pytest.approx(report["training"] + causal_half, rel=1e-12)


def test_t5_attention_grows_with_the_lengths() -> None:
    config = T5Config.from_name("tiny")
    model = _on_meta(lambda: T5Model(config))
    n = _matrices(model)
    by_length = [model_flops_per_token(model, s) or 0.0 for s in (16, 64, 256)]
    # with S = T each token goes through one stack: 6N / 2 for the weights, then attention
    assert by_length[0] > 3 * n
    assert by_length[0] < by_length[1] < by_length[2]


def test_a_t5_encoder_alone_is_a_bidirectional_encoder() -> None:
    config = T5Config.from_name("tiny", d_kv=24)  # 2 layers, 4 heads of 24
    model = _on_meta(lambda: T5Encoder(config))
    assert model_flops_per_token(model, 50) == 6 * _matrices(model) + 12 * 2 * 96 * 50
    with pytest.raises(ConfigError, match="decoder_seq_len"):
        model_flops_per_token(model, 50, decoder_seq_len=10)


def test_no_attention_no_config() -> None:
    lstm = _on_meta(lambda: LSTMLM(LSTMConfig.from_name("tiny")))
    assert model_flops_per_token(lstm, 100) == 6 * _matrices(lstm)
    assert model_flops_per_token(nn.Linear(4, 4), 100) is None


def test_mfu() -> None:
    assert mfu(1000.0, 6e6, 1e10) == pytest.approx(0.6)
    assert mfu(1000.0, 6e6, None) is None


def test_a_mixture_of_experts_counts_its_active_parameters() -> None:
    """top_k of n_experts experts per token: an MoE GPT with 4 experts, 1 active, costs what the
    dense GPT of the same shape costs plus its routers."""
    from groundwork.models.switch_gpt import SwitchGPT, SwitchGPTConfig

    config = SwitchGPTConfig.from_name("tiny", n_experts=4, top_k=1, capacity_factor=None)
    moe = _on_meta(lambda: SwitchGPT(config))
    dense = _on_meta(lambda: GPT(GPTConfig.from_name("tiny")))
    routers = 2 * 4 * 64  # one (E, d_model) router per block
    assert model_flops_per_token(moe, 128) == model_flops_per_token(dense, 128) + 6 * routers


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA A10G", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("Tesla T4", 65e12),
        ("NVIDIA Quadro Mystery 9000", None),
    ],
)
def test_peak_flops_by_device_name(
    name: str, peak: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The most specific name wins (H100 PCIe is not an SXM card, an L40 not an L4); an unknown
    device has no peak, so MFU says n/a instead of guessing."""
    assert peak_flops_for_name(name) == peak
    monkeypatch.setattr(flops_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(flops_module.torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops("cuda") == peak
    assert peak_flops("cpu") is None
    assert (mfu(1e5, 6e8, peak_flops("cuda")) is None) == (peak is None)
