"""What a model config costs: parameters by component, FLOPs per token, training memory.

Everything is computed from the config alone (no weights are allocated), so it works for the
largest presets on a laptop. The numbers are tested against Hugging Face models built on the meta
device.

FLOPs per token follow Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", Table 1)
and the PaLM paper's appendix B (Chowdhery et al. 2022):

$$C_{\\text{forward}} \\approx 2N + 2\\,n_{\\text{layers}}\\,T\\,d_{\\text{attn}}, \\qquad
C_{\\text{train}} \\approx 6N + 6\\,n_{\\text{layers}}\\,T\\,d_{\\text{attn}}$$

where $N$ counts the parameters that take part in matrix multiplications (every parameter except
the embedding lookups, plus the output head even when it is tied to the embeddings), $T$ is the
context length and $d_{\\text{attn}} = n_{\\text{heads}} d_{\\text{head}}$. Each multiply-add is 2
FLOPs; the backward pass costs twice the forward, hence the 3x from forward to training.
The attention term is the causal average (each query sees $T/2$ keys on average); the MFU
that the training loop reports (:mod:`groundwork.train.flops`) uses PaLM's full-window
$12\\,n_{\\text{layers}} T\\,d_{\\text{attn}}$, the convention MFU figures are quoted in.
Chapter 5 (and chapter 9 on scaling laws) of the docs uses these numbers. An LSTM language model
(:class:`~groundwork.models.rnn.LSTMConfig`) has no attention term: $C_{\\text{train}} \\approx 6N$
whatever the context length (chapter 4).
"""

from typing import Any

from groundwork.models.gpt import GPTConfig
from groundwork.models.llama import LlamaConfig
from groundwork.models.rnn import LSTMConfig
from groundwork.models.rnn import parameter_counts as lstm_parameter_counts

BYTES_PER_PARAM = {"fp32": 4, "bf16": 2}


def parameter_counts(config: GPTConfig | LlamaConfig) -> dict[str, int]:
    """Parameters by component: embeddings, attention, mlp, norms, head (0 if tied), total."""
    c = config
    d, V, L = c.d_model, c.vocab_size, c.n_layers
    if isinstance(c, GPTConfig):
        assert c.d_ff is not None
        b = 1 if c.bias else 0
        embeddings = V * d + c.max_seq_len * d  # tokens + learned positions
        attention = L * (d * 3 * d + b * 3 * d + d * d + b * d)  # qkv + output projection
        mlp = L * (d * c.d_ff + b * c.d_ff + c.d_ff * d + b * d)  # up + down
        per_norm = d * (1 + b)
        norms = L * 2 * per_norm + (per_norm if c.norm_position == "pre" else 0)
    else:
        assert c.d_head is not None and c.n_kv_heads is not None
        q_size, kv_size = c.n_heads * c.d_head, c.n_kv_heads * c.d_head
        embeddings = V * d
        attention = L * (d * q_size + 2 * d * kv_size + q_size * d)  # q, k, v, o
        mlp = L * 3 * d * c.d_ff  # gate, up, down
        norms = L * 2 * d + d
    head = 0 if c.tie_embeddings else V * d
    total = embeddings + attention + mlp + norms + head
    return dict(
        embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, head=head, total=total
    )


def info(
    config: GPTConfig | LlamaConfig | LSTMConfig, *, seq_len: int | None = None
) -> dict[str, Any]:
    """Parameter counts, FLOPs per token and memory of a model config.

    Args:
        config: A ``GPTConfig``, ``LlamaConfig`` or ``LSTMConfig``.
        seq_len: Context length $T$ for the attention FLOPs (default: ``config.max_seq_len``).

    Returns:
        A dict with ``architecture``, ``parameters`` (by component, see
        :func:`parameter_counts`), ``flops_per_token`` (``seq_len``, ``matmul_params`` $N$,
        ``forward``, ``training``) and ``memory_bytes``: for ``fp32`` and ``bf16``, the bytes
        of ``weights``, ``gradients`` (same dtype as the weights), ``adamw_state`` (two moments
        per parameter, same dtype) and their ``total``.

    Example:
        >>> info(GPTConfig.from_name("gpt2-124m"))["parameters"]["total"]
        124439808
    """
    T = seq_len if seq_len is not None else config.max_seq_len
    if isinstance(config, LSTMConfig):
        params = lstm_parameter_counts(config)
        # The head reads d_model-wide vectors when tied (after the projection), else d_hidden.
        d_head_in = config.d_model if config.tie_embeddings else 0
        attention_term = 0
        architecture = "lstm"
    else:
        params = parameter_counts(config)
        d_head = config.d_head
        assert d_head is not None
        attention_term = 2 * config.n_layers * T * config.n_heads * d_head
        d_head_in = config.d_model
        architecture = "gpt" if isinstance(config, GPTConfig) else "llama"
    lookup_params = params["embeddings"]
    n_matmul = params["total"] - lookup_params + config.vocab_size * d_head_in
    flops = dict(
        seq_len=T,
        matmul_params=n_matmul,
        forward=2 * n_matmul + attention_term,
        training=6 * n_matmul + 3 * attention_term,
    )
    memory: dict[str, dict[str, int]] = {}
    for dtype, nbytes in BYTES_PER_PARAM.items():
        weights = params["total"] * nbytes
        memory[dtype] = dict(
            weights=weights, gradients=weights, adamw_state=2 * weights, total=4 * weights
        )
    return dict(
        architecture=architecture, parameters=params, flops_per_token=flops, memory_bytes=memory
    )


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def format_info(report: dict[str, Any]) -> str:
    """A plain-text table of an :func:`info` report, for the terminal.

    >>> print(format_info(info(GPTConfig.from_name("tiny"))).splitlines()[0])
    model: gpt
    """
    lines = [f"model: {report['architecture']}", "", "parameters"]
    params = report["parameters"]
    for name in params:  # components in order, total last
        share = 100 * params[name] / params["total"]
        lines.append(f"  {name:<12}{params[name]:>16,}  {share:5.1f}%")
    flops = report["flops_per_token"]
    lines += [
        "",
        f"FLOPs per token (T = {flops['seq_len']})",
        f"  {'forward':<12}{_human(flops['forward'], 'FLOP'):>16}",
        f"  {'training':<12}{_human(flops['training'], 'FLOP'):>16}",
        "",
        f"memory{'':<8}{'weights':>12}{'gradients':>12}{'AdamW':>12}{'total':>12}",
    ]
    for dtype, mem in report["memory_bytes"].items():
        cells = "".join(
            f"{_human(mem[k], 'B'):>12}" for k in ("weights", "gradients", "adamw_state", "total")
        )
        lines.append(f"  {dtype:<12}{cells}")
    return "\n".join(lines)
