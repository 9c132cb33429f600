r"""FLOPs per token and model FLOPs utilisation (MFU).

Training a dense decoder costs about $6N$ FLOPs per token for the weights (2 for the forward
multiply-accumulate, 4 for the backward pass: gradients with respect to activations and to
weights), plus the attention scores and their weighted sum, $12 \cdot n_{layers} \cdot d_{attn}
\cdot T$ per token for context length $T$ and attention width $d_{attn} = n_{heads} d_{head}$
($d_{model}$ for GPT-2; Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, appendix B). That
attention term counts every query against the full window, the convention MFU figures are quoted
in (PaLM, nanoGPT); :func:`groundwork.models.info` reports Kaplan et al.'s causal average,
$6\,n_{layers} d_{attn} T$, half as much. A bidirectional encoder (BERT) does attend to the full
window, so the same formula is exact for it.

An encoder-decoder (T5) reads $S$ encoder tokens and writes $T$ decoder tokens; the loop counts
both ($S + T$ tokens per example, :class:`~groundwork.train.objectives.Seq2SeqObjective`), so its
FLOPs per token are those of one example divided by $S + T$: the encoder's weights
$N_{enc}$ for each of the $S$ tokens, the decoder's $N_{dec}$ (output head included) for each of
the $T$, and the attention pairs of the encoder ($S^2$ per layer), the decoder's self-attention
($T^2$, full window) and its cross-attention ($T S$):

$$ \frac{6 (S N_{enc} + T N_{dec}) + 12\, d_{attn} (L_{enc} S^2 + L_{dec} T^2
+ L_{dec} T S)}{S + T}, $$

the convention of :func:`groundwork.models.info` with the decoder's full window.
A mixture-of-experts layer (:class:`~groundwork.nn.moe.MoE`) runs ``top_k`` of its
``n_experts`` experts on each token, so its routed experts count ``top_k / n_experts`` of their
weights (the *active* parameters); the router and shared experts count in full.
MFU is the achieved rate of those *model* FLOPs divided by the hardware's peak:

$$ \text{MFU} = \frac{\text{tokens/s} \times \text{FLOPs/token}}{\text{peak FLOP/s}}. $$

Chapter 8 (Training).
"""

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.info import attention_width
from groundwork.nn.moe import MoE

# Dense (no sparsity) peak tensor-core FLOP/s from the vendors' data sheets, for bf16/fp16.
PEAK_FLOPS_BF16: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def peak_flops(device: torch.device | str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or ``None`` when unknown (e.g. on CPU)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756e12
    for key, value in PEAK_FLOPS_BF16.items():
        if key in name:
            return value
    return None


# --8<-- [start:flops]
def training_flops_per_token(
    n_params: int, *, n_layers: int, d_model: int, seq_len: int, d_attn: int | None = None
) -> float:
    r"""$6N + 12\,n_{layers} d_{attn} T$: training FLOPs per token of a dense decoder (or of a
    bidirectional encoder), with $d_{attn}$ = ``d_attn``, by default ``d_model``.

    ``n_params`` should exclude the position-embedding table (no multiplies); the token embedding
    counts when it is tied to the output projection (it is then a matrix multiply).
    """
    width = d_model if d_attn is None else d_attn
    return 6.0 * n_params + 12.0 * n_layers * width * seq_len


def encoder_decoder_training_flops_per_token(
    n_encoder: int,
    n_decoder: int,
    *,
    n_layers: int,
    n_decoder_layers: int,
    d_attn: int,
    seq_len: int,
    decoder_seq_len: int | None = None,
) -> float:
    r"""Training FLOPs per token, encoder or decoder token alike, of an encoder-decoder with
    $S$ = ``seq_len`` encoder and $T$ = ``decoder_seq_len`` (default $S$) decoder tokens:
    $[6 (S N_{enc} + T N_{dec}) + 12\, d_{attn} (L_{enc} S^2 + L_{dec} T^2 + L_{dec} T S)]
    / (S + T)$.

    ``n_decoder`` includes the output head (tied to the embeddings or not).
    """
    S, T = seq_len, seq_len if decoder_seq_len is None else decoder_seq_len
    weights = 6.0 * (S * n_encoder + T * n_decoder)
    attention = 12.0 * d_attn * (n_layers * S * S + n_decoder_layers * (T * T + T * S))
    return (weights + attention) / (S + T)


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or ``None`` when the peak is unknown."""
    if peak is None or peak <= 0:
        return None
    return tokens_per_second * flops_per_token / peak


# --8<-- [end:flops]


def _matmul_parameters(model: nn.Module) -> dict[int, float]:
    """Active size of each parameter (by id) that takes part in a matrix multiply: all but
    embedding tables that are only looked up (not tied to an output projection); a routed
    expert's weights count ``top_k / n_experts`` of their size."""
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    lookup_only = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in linear_weights
    }
    active = {
        id(p): m.config.top_k / m.config.n_experts
        for m in model.modules()
        if isinstance(m, MoE)
        for p in m.experts.parameters()
    }
    return {
        id(p): p.numel() * active.get(id(p), 1.0)
        for p in model.parameters()
        if id(p) not in lookup_only
    }


def model_flops_per_token(
    model: nn.Module, seq_len: int, *, decoder_seq_len: int | None = None
) -> float | None:
    """Training FLOPs per token of ``model`` at context ``seq_len``, from its config's
    ``n_layers``, ``d_model`` and attention width (``n_heads`` times ``d_head`` or ``d_kv``);
    ``None`` for a model without them, e.g. a classifier.

    Embedding tables that are only looked up (not tied to an output projection) do no multiplies
    and are left out; a model without attention (an LSTM) costs just $6N$. An encoder-decoder (a
    config with ``n_decoder_layers`` and a model with ``encoder`` and ``decoder`` stacks, T5)
    reads ``seq_len`` encoder tokens and writes ``decoder_seq_len`` (default ``seq_len``)
    decoder tokens, and costs :func:`encoder_decoder_training_flops_per_token`, its weights split
    into those inside ``model.encoder`` and the rest (decoder and output head).

    Raises:
        ConfigError: ``decoder_seq_len`` for a model without a decoder stack.
    """
    config = getattr(model, "config", None)
    n_layers = getattr(config, "n_layers", None)
    d_model = getattr(config, "d_model", None)
    if n_layers is None or d_model is None:
        return None
    sizes = _matmul_parameters(model)
    n = round(sum(sizes.values()))
    n_decoder_layers = getattr(config, "n_decoder_layers", None)
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    encoder_decoder = n_decoder_layers is not None and all(
        isinstance(m, nn.Module) for m in (encoder, decoder)
    )
    if decoder_seq_len is not None and not encoder_decoder:
        raise ConfigError("decoder_seq_len is only for encoder-decoder models")
    if getattr(config, "n_heads", None) is None:  # no attention (an LSTM): just 6N
        return 6.0 * n
    d_attn = attention_width(config) or d_model
    if encoder_decoder:
        assert isinstance(encoder, nn.Module) and n_decoder_layers is not None
        in_encoder = {id(p) for p in encoder.parameters()}
        n_encoder = round(sum(size for key, size in sizes.items() if key in in_encoder))
        return encoder_decoder_training_flops_per_token(
            n_encoder,
            n - n_encoder,
            n_layers=n_layers,
            n_decoder_layers=n_decoder_layers,
            d_attn=d_attn,
            seq_len=seq_len,
            decoder_seq_len=decoder_seq_len,
        )
    return training_flops_per_token(
        n, n_layers=n_layers, d_model=d_model, seq_len=seq_len, d_attn=d_attn
    )
