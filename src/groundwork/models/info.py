"""What a model config costs: parameters by component, FLOPs per token, training memory.

Everything is computed from the config alone (no weights are allocated), so it works for the
largest presets on a laptop. Each family counts its own parameters by component (the
``parameter_counts`` of its registry entry, :mod:`groundwork.models.registry`, written next to its
model); this module knows no family by name. The numbers are tested against Hugging Face models
built on the meta device.

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

from groundwork.errors import ConfigError
from groundwork.models import registry

BYTES_PER_PARAM = {"fp32": 4, "bf16": 2}


def parameter_counts(config: Any) -> dict[str, int]:
    """Parameters by component of a registered config (the family's own ``parameter_counts``,
    e.g. :func:`groundwork.models.gpt.parameter_counts`): at least ``embeddings`` (lookup
    tables), ``head`` (0 if tied to the embeddings) and ``total``.

    Raises:
        ConfigError: The config's architecture is not registered or cannot count its parameters.
    """
    arch = registry.arch_of(config)
    if arch.parameter_counts is None:
        raise ConfigError(f"architecture {arch.name!r} does not count its parameters")
    return arch.parameter_counts(config)


def attention_flops_per_token(config: Any, seq_len: int) -> int:
    r"""The causal attention term $2\,n_{\text{layers}}\,T\,n_{\text{heads}}\,d_{\text{head}}$
    of the forward FLOPs per token, for a config with those fields; 0 for one without attention
    (an LSTM)."""
    n_layers = getattr(config, "n_layers", None)
    n_heads = getattr(config, "n_heads", None)
    d_head = getattr(config, "d_head", None)
    if n_layers is None or n_heads is None or d_head is None:
        return 0
    return int(2 * n_layers * seq_len * n_heads * d_head)


def info(config: Any, *, seq_len: int | None = None) -> dict[str, Any]:
    """Parameter counts, FLOPs per token and memory of a model config.

    Args:
        config: The config of a registered causal LM (``GPTConfig``, ``LlamaConfig``,
            ``LSTMConfig``, ...).
        seq_len: Context length $T$ for the attention FLOPs (default: ``config.max_seq_len``).

    Returns:
        A dict with ``architecture`` (the registry name), ``parameters`` (by component, see
        :func:`parameter_counts`), ``flops_per_token`` (``seq_len``, ``matmul_params`` $N$,
        ``forward``, ``training``) and ``memory_bytes``: for ``fp32`` and ``bf16``, the bytes
        of ``weights``, ``gradients`` (same dtype as the weights), ``adamw_state`` (two moments
        per parameter, same dtype) and their ``total``.

    Example:
        >>> info(registry.find_preset("gpt2-124m"))["parameters"]["total"]
        124439808
    """
    T = seq_len if seq_len is not None else config.max_seq_len
    params = parameter_counts(config)
    attention_term = attention_flops_per_token(config, T)
    # Lookups cost no multiplications; a head tied to the embeddings is a matmul the counts
    # leave out (its matrix is counted once, as an embedding), so it is added back.
    tied_head = config.vocab_size * config.d_model if params["head"] == 0 else 0
    n_matmul = params["total"] - params["embeddings"] + tied_head
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
        architecture=registry.arch_of(config).name,
        parameters=params,
        flops_per_token=flops,
        memory_bytes=memory,
    )


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def format_info(report: dict[str, Any]) -> str:
    """A plain-text table of an :func:`info` report, for the terminal.

    >>> print(format_info(info(registry.find_preset("tiny", "gpt"))).splitlines()[0])
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
