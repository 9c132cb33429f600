r"""FLOPs per token and model FLOPs utilisation (MFU).

Training a dense decoder costs about $6N$ FLOPs per token for the weights (2 for the forward
multiply-accumulate, 4 for the backward pass: gradients with respect to activations and to
weights), plus the attention scores and their weighted sum, $12 \cdot n_{layers} \cdot d_{model}
\cdot T$ per token for context length $T$ (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022,
appendix B). That attention term counts every query against the full window, the convention
MFU figures are quoted in (PaLM, nanoGPT); :func:`groundwork.models.info` reports Kaplan et al.'s
causal average, $6\,n_{layers} d_{attn} T$, half as much. MFU is the achieved rate of those
*model* FLOPs divided by the hardware's peak:

$$ \text{MFU} = \frac{\text{tokens/s} \times \text{FLOPs/token}}{\text{peak FLOP/s}}. $$

Chapter 8 (Training).
"""

import torch
from torch import nn

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
def training_flops_per_token(n_params: int, *, n_layers: int, d_model: int, seq_len: int) -> float:
    r"""$6N + 12\,n_{layers} d_{model} T$: training FLOPs per token of a dense decoder.

    ``n_params`` should exclude the position-embedding table (no multiplies); the token embedding
    counts when it is tied to the output projection (it is then a matrix multiply).
    """
    return 6.0 * n_params + 12.0 * n_layers * d_model * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or ``None`` when the peak is unknown."""
    if peak is None or peak <= 0:
        return None
    return tokens_per_second * flops_per_token / peak


# --8<-- [end:flops]


def model_flops_per_token(model: nn.Module, seq_len: int) -> float | None:
    """Training FLOPs per token of ``model`` at context ``seq_len``, from its config's
    ``n_layers`` and ``d_model`` (``None`` for a model without them, e.g. a classifier).

    Embedding tables that are only looked up (not tied to an output projection) do no multiplies
    and are left out; a model without attention (an LSTM) costs just $6N$.
    """
    config = getattr(model, "config", None)
    n_layers = getattr(config, "n_layers", None)
    d_model = getattr(config, "d_model", None)
    if n_layers is None or d_model is None:
        return None
    params = {id(p): p for p in model.parameters()}
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    lookup_only = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in linear_weights
    )
    n = sum(p.numel() for p in params.values()) - lookup_only
    if getattr(config, "n_heads", None) is None:  # no attention (an LSTM): just 6N
        return 6.0 * n
    return training_flops_per_token(n, n_layers=n_layers, d_model=d_model, seq_len=seq_len)
