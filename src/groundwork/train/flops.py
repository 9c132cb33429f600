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

:func:`measured_flops` counts the FLOPs a model actually runs, with PyTorch's
:class:`~torch.utils.flop_counter.FlopCounterMode`; ``tests/train/test_flop_counter.py`` checks
every formula here against it, to the FLOP, and states each place where the convention differs
from the count (chapter 9).

Chapter 8 (Training).
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.info import attention_width
from groundwork.nn.moe import MoE

if TYPE_CHECKING:  # imported where used: torch.utils.flop_counter takes 0.3 s (it loads triton)
    from torch.utils.flop_counter import FlopCounterMode

# --8<-- [start:peak]
# Dense (no 2:4 sparsity) peak tensor-core FLOP/s for bf16 inputs (fp32 accumulation), from the
# vendors' data sheets; the sheets print the sparse figure too, twice these. The first key found
# in the device name wins, so more specific names come first ("H100 PCIe" before "H100", "A100"
# before "A10", "L40S" before "L40" before "L4"). Devices not listed get no MFU ("n/a"), never a
# guess.
PEAK_FLOPS_BF16: dict[str, float] = {
    # NVIDIA H100 Tensor Core GPU datasheet (2023): SXM 1,979 / PCIe 1,513 / NVL 1,671 TFLOPS
    # bf16 with sparsity
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM ("NVIDIA H100 80GB HBM3")
    # NVIDIA H200 datasheet (2024): SXM 1,979 / NVL 1,671 TFLOPS bf16 with sparsity; GH200 as SXM
    "H200 NVL": 835e12,
    "H200": 989e12,
    "GH200": 989e12,
    # NVIDIA DGX/HGX B200 datasheet (2024): 4.5 PFLOPS bf16 with sparsity per GPU
    "B200": 2250e12,
    # NVIDIA A100 datasheet (2021): 312 TFLOPS bf16 dense (624 sparse), SXM and PCIe
    "A100": 312e12,
    # NVIDIA A10 datasheet: 125 TFLOPS bf16 dense (250 sparse); AWS's A10G (G5) is its variant
    "A10G": 125e12,
    "A10": 125e12,
    # NVIDIA L40S datasheet (2023): 362.05 TFLOPS bf16 dense (733 sparse)
    "L40S": 362e12,
    # NVIDIA L40 datasheet: 181.05 TFLOPS bf16 dense (362.1 sparse)
    "L40": 181e12,
    # NVIDIA L4 datasheet (2023): 121 TFLOPS bf16 dense (242 sparse)
    "L4": 121e12,
    # NVIDIA Ada Lovelace architecture whitepaper, appendix: RTX 4090 165.2 TFLOPS bf16 dense
    # (fp32 accumulation); RTX 6000 Ada 364.2 (its datasheet: 1,457 fp8 sparse / 4)
    "RTX 4090": 165e12,
    "RTX 6000 Ada": 364e12,
    # NVIDIA Ampere GA102 whitepaper: RTX 3090 71 TFLOPS bf16 dense (fp32 accumulation);
    # RTX A6000 datasheet 309.7 sparse -> 154.8 dense
    "RTX 3090": 71e12,
    "RTX A6000": 155e12,
    # AMD Instinct MI300X datasheet (2023): 1,307.4 TFLOPS bf16 dense (ROCm shows it as "cuda")
    "MI300X": 1307e12,
    # Volta and Turing have no bf16 tensor cores: these are their fp16 peaks (V100 SXM2 datasheet
    # 125 TFLOPS; T4 datasheet 65 TFLOPS)
    "V100": 125e12,
    "T4": 65e12,
}


def peak_flops_for_name(name: str) -> float | None:
    """The dense bf16 peak of the device called ``name`` (as ``torch.cuda.get_device_name``
    says it, e.g. ``"NVIDIA H100 80GB HBM3"``), or ``None`` when it is not in
    :data:`PEAK_FLOPS_BF16`."""
    for key, value in PEAK_FLOPS_BF16.items():
        if key in name:
            return value
    return None


def peak_flops(device: torch.device | str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or ``None`` when unknown (e.g. on CPU): MFU is
    then reported as "n/a" rather than against a guessed peak."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


# --8<-- [end:peak]


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
    n_cross_kv: int = 0,
) -> float:
    r"""Training FLOPs per token, encoder or decoder token alike, of an encoder-decoder with
    $S$ = ``seq_len`` encoder and $T$ = ``decoder_seq_len`` (default $S$) decoder tokens:
    $[6 (S N_{enc} + T N_{dec}) + 12\, d_{attn} (L_{enc} S^2 + L_{dec} T^2 + L_{dec} T S)]
    / (S + T)$.

    ``n_decoder`` includes the output head (tied to the embeddings or not). ``n_cross_kv`` of
    the decoder's weights, the key and value projections of its cross-attention, multiply the
    encoder output, $S$ positions rather than $T$: they are counted so, $6 (S (N_{enc} +
    N_{kv}) + T (N_{dec} - N_{kv}))$ for the weights, the exact matmul count
    (:func:`model_flops_per_token` passes them). The default 0 counts them for the $T$ decoder
    tokens instead: $6 (S - T) N_{kv}$ FLOPs per example short when $S > T$.
    """
    S, T = seq_len, seq_len if decoder_seq_len is None else decoder_seq_len
    weights = 6.0 * (S * (n_encoder + n_cross_kv) + T * (n_decoder - n_cross_kv))
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


def matmul_parameter_count(model: nn.Module) -> int:
    """$N$ of the $6N$ rule: the (active) parameters of ``model`` that take part in a matrix
    multiply, looked-up embedding tables left out."""
    return round(sum(_matmul_parameters(model).values()))


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
    into those inside ``model.encoder`` and the rest (decoder and output head); the decoder's
    cross-attention key and value projections (``cross_attn.k_proj``, ``v_proj``) count for the
    encoder's positions, on which they run (that function's ``n_cross_kv``), as in
    :func:`groundwork.models.info`.

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
        assert isinstance(encoder, nn.Module) and isinstance(decoder, nn.Module)
        assert n_decoder_layers is not None
        in_encoder = {id(p) for p in encoder.parameters()}
        n_encoder = round(sum(size for key, size in sizes.items() if key in in_encoder))
        cross_kv = [
            p
            for name, p in decoder.named_parameters()
            if ".cross_attn." in f".{name}" and name.split(".")[-2] in ("k_proj", "v_proj")
        ]
        return encoder_decoder_training_flops_per_token(
            n_encoder,
            n - n_encoder,
            n_layers=n_layers,
            n_decoder_layers=n_decoder_layers,
            d_attn=d_attn,
            seq_len=seq_len,
            decoder_seq_len=decoder_seq_len,
            n_cross_kv=round(sum(sizes.get(id(p), 0) for p in cross_kv)),
        )
    return training_flops_per_token(
        n, n_layers=n_layers, d_model=d_model, seq_len=seq_len, d_attn=d_attn
    )


def _sdpa_flop(
    query: torch.Size, key: torch.Size, value: torch.Size, *args: Any, **kwargs: Any
) -> int:
    """PyTorch's own count for its fused attention kernels: $QK^\\top$ and $AV$ over the full
    window (a causal mask does not reduce it)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query, key, value))


def _sdpa_backward_flop(
    grad_out: torch.Size,
    query: torch.Size,
    key: torch.Size,
    value: torch.Size,
    *args: Any,
    **kwargs: Any,
) -> int:
    """PyTorch's own count for its fused attention kernels' backward: five matmuls, the scores
    $QK^\\top$ recomputed and the four gradient products."""
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return int(sdpa_backward_flop_count(grad_out, query, key, value))


def _grouped_mm_flop(mat_a: torch.Size, mat_b: torch.Size, *args: Any, **kwargs: Any) -> int:
    """``torch._grouped_mm(mat_a, mat_b, offs)``: ``offs`` cuts one dimension into groups and each
    group is a dense matmul, so the groups together cost $2mkn$ of the whole dimension."""
    if len(mat_a) == 2 and len(mat_b) == 2:  # (m, K) @ (K, n), K cut: (E, m, n), weight grads
        return 2 * mat_a[0] * mat_a[1] * mat_b[1]
    if len(mat_a) == 2:  # (M, k) @ (E, k, n), the rows M cut: (M, n), tokens through experts
        return 2 * mat_a[0] * mat_a[1] * mat_b[2]
    if len(mat_b) == 2:  # (E, m, k) @ (k, N), the columns N cut: (m, N)
        return 2 * mat_a[1] * mat_a[2] * mat_b[1]
    return 2 * mat_a[0] * mat_a[1] * mat_a[2] * mat_b[2]  # (E, m, k) @ (E, k, n): batched


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    formulas: dict[str, Callable[..., int]] = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_flop,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward_flop,
        "_grouped_mm": _grouped_mm_flop,
    }
    ops: dict[Any, Callable[..., int]] = {}
    for name, formula in formulas.items():
        try:
            ops[getattr(torch.ops.aten, name)] = formula
        except (AttributeError, RuntimeError):  # an older torch without the op
            continue
    return ops


EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = _extra_flop_formulas()
"""Formulas :class:`~torch.utils.flop_counter.FlopCounterMode` lacks (torch 2.13), passed as its
``custom_mapping`` by :func:`measured_flops`: ``_scaled_dot_product_flash_attention_for_cpu``
and its backward, the fused kernel :func:`~torch.nn.functional.scaled_dot_product_attention`
runs on a CPU (counted with PyTorch's own formulas for the GPU's kernels), and ``_grouped_mm``
(:func:`~torch.nn.functional.grouped_mm`, the experts of :class:`~groundwork.nn.moe.MoE`).
Without them both count 0."""


def _summed_outputs(out: Any) -> torch.Tensor | None:
    """The sum of every floating-point tensor in ``out`` (a tensor, tuple, list or dict) that
    has a gradient; ``None`` when there is none."""
    if isinstance(out, torch.Tensor):
        return out.sum() if out.is_floating_point() and out.requires_grad else None
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, tuple | list):
        parts = [s for s in map(_summed_outputs, out) if s is not None]
        if parts:
            return torch.stack(parts).sum()
    return None


def _by_op(counter: "FlopCounterMode") -> dict[str, int]:
    counts = counter.get_flop_counts().get("Global", {})
    return {str(op).removeprefix("aten."): int(n) for op, n in counts.items()}


# --8<-- [start:measured]
def measured_flops(
    model: nn.Module, *inputs: Any, backward: bool = True, **kwargs: Any
) -> dict[str, int]:
    r"""The FLOPs ``model(*inputs, **kwargs)`` runs, counted by PyTorch's
    :class:`~torch.utils.flop_counter.FlopCounterMode`: the forward and, with ``backward``, the
    gradients of the sum of the outputs with respect to the trainable parameters (``.grad`` is
    left untouched). The model runs in the mode it is in (``train()`` or ``eval()``). Autograd
    computes only the gradients those need: a matmul costs twice its forward in the backward
    (the gradients of its input and of its weight), once when its input needs none (the first
    layer's, when nothing before it trains; a language model's embeddings do).

    FlopCounterMode sees every ATen operator and counts those it has a formula for: the matrix
    multiplies (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``_scaled_mm``), the convolutions and
    the fused attention kernels (flash, memory-efficient, cuDNN; flex attention), plus
    :data:`EXTRA_FLOP_FORMULAS` (the CPU's fused attention kernel, ``_grouped_mm``). A matmul
    of an $m \times k$ by a $k \times n$ matrix costs $2mkn$: one multiply and one add per
    term. Everything else counts 0: elementwise operations (activations, residual additions,
    RoPE, scaling), the bias added by ``addmm``, norms, softmax, reductions, embedding lookups,
    gathers. So these are *matmul FLOPs*, what $6N$ and MFU count; LayerNorm and the biases,
    which the $6N$ convention counts in $N$, are missing from them.

    Attention is counted dense whichever way it runs: ``attn_impl="math"`` as two ``bmm`` s
    ($QK^\top$ and $AV$, each $2 T_q T_k d_{head}$ per head, a causal mask included, with the
    shared heads of grouped-query attention repeated), ``"sdpa"`` as the fused kernel with the
    same forward count. Their backward differs: the written-out matmuls cost twice their
    forward, the fused kernel counts $2.5\times$ (it recomputes $QK^\top$).

    Args:
        model: The module to run.
        *inputs: Its positional arguments.
        backward: Also count the backward pass.
        **kwargs: Its keyword arguments.

    Returns:
        ``total``, ``forward`` and ``backward`` (0 without ``backward``) FLOPs, and the FLOPs of
        each operator over both passes, by ATen name (``mm``, ``addmm``, ``bmm``, ...).

    Raises:
        ValueError: ``backward`` but no output has a gradient.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as forward_counter:
        out = model(*inputs, **kwargs)
    forward = _by_op(forward_counter)
    by_op = dict(forward)
    n_backward = 0
    if backward:
        loss = _summed_outputs(out)
        params = [p for p in model.parameters() if p.requires_grad]
        if loss is None or not params:
            raise ValueError("no output of the model has a gradient to count the backward of")
        with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
            torch.autograd.grad(loss, params, allow_unused=True)
        for op, n in _by_op(counter).items():
            by_op[op] = by_op.get(op, 0) + n
            n_backward += n
    n_forward = sum(forward.values())
    return {"total": n_forward + n_backward, "forward": n_forward, "backward": n_backward, **by_op}


# --8<-- [end:measured]
