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
the lookup tables: token and position embeddings, relative-position biases; plus the output head
even when it is tied to the embeddings), $T$ is the context length and
$d_{\\text{attn}} = n_{\\text{heads}} d_{\\text{head}}$ (T5: $n_{\\text{heads}} d_{\\text{kv}}$).
Each multiply-add is 2 FLOPs; the backward pass costs twice the forward, hence the 3x from
forward to training. The attention term counts the scores $QK^\\top$ and the weighted sum $AV$,
$2 d_{\\text{attn}}$ FLOPs each per query-key pair, so $4 d_{\\text{attn}}$ per pair and layer:

* **causal** self-attention (GPT, Llama; a T5 decoder) takes the causal average, each query
  seeing $T/2$ keys: $2\\,n_{\\text{layers}} T d_{\\text{attn}}$ per token. The MFU that the
  training loop reports (:mod:`groundwork.train.flops`) uses PaLM's full window instead, twice
  as much, the convention MFU figures are quoted in;
* **bidirectional** self-attention (the encoders: BERT; a T5 encoder) has every query see all $T$
  keys: $4\\,n_{\\text{layers}} T d_{\\text{attn}}$ per token. A family that is not a causal LM
  (``causal_lm=False`` in the registry) attends bidirectionally;
* an **encoder-decoder** (T5: a config with ``n_decoder_layers``) reads $S$ encoder tokens and
  writes $T$ decoder tokens. A *token* is one position of either stack, as in Raffel et al. 2020,
  §3.2.2 (an $L$+$L$ encoder-decoder costs about what an $L$-layer decoder does per token) and in
  the training loop's token count (encoder tokens plus decoder tokens): the FLOPs of one example
  divided by $S + T$. Encoder tokens pass through the encoder's $N_{\\text{enc}}$ parameters,
  decoder tokens through the decoder's $N_{\\text{dec}}$ (self-attention, cross-attention,
  feed-forward, and the output head), and the attention pairs are $L_{\\text{enc}} S^2$
  (bidirectional), $L_{\\text{dec}} T^2/2$ (causal average) and $L_{\\text{dec}} T S$ (cross):

$$C_{\\text{forward}} \\approx \\frac{2 (S N_{\\text{enc}} + T N_{\\text{dec}})
+ 4 d_{\\text{attn}} (L_{\\text{enc}} S^2 + L_{\\text{dec}} T^2/2 + L_{\\text{dec}} T S)}{S + T}.$$

Parameters used once per sequence rather than per token (BERT's pooler, on ``[CLS]`` only) are
counted per token like the rest, a small overestimate (0.6% of BERT-base's forward at $T = 512$).
Chapter 5 (and chapter 9 on scaling laws) of the docs uses these numbers. An LSTM language model
(:class:`~groundwork.models.rnn.LSTMConfig`) has no attention term: $C_{\\text{train}} \\approx 6N$
whatever the context length (chapter 4).
"""

from typing import Any

from groundwork.errors import ConfigError
from groundwork.models import registry

BYTES_PER_PARAM = {"fp32": 4, "bf16": 2}

LOOKUP_COMPONENTS = ("embeddings", "position_bias")
"""Parameter components that are only looked up (no multiplies): left out of $N$."""


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


def attention_width(config: Any) -> int | None:
    r"""$d_{\text{attn}} = n_{\text{heads}} d_{\text{head}}$, the width of the queries, keys and
    values (``d_head``, or T5's ``d_kv``); ``None`` for a config without attention (an LSTM)."""
    n_heads = getattr(config, "n_heads", None)
    d_head = getattr(config, "d_head", None)
    if d_head is None:
        d_head = getattr(config, "d_kv", None)
    if n_heads is None or d_head is None:
        return None
    return int(n_heads * d_head)


def is_encoder_decoder(config: Any) -> bool:
    """Whether the config has a decoder stack next to its encoder (a ``n_decoder_layers``)."""
    return getattr(config, "n_decoder_layers", None) is not None


def attention_flops_per_token(
    config: Any, seq_len: int, *, decoder_seq_len: int | None = None, full_window: bool = False
) -> float:
    r"""The attention scores and weighted sums ($QK^\top$, $AV$) of the forward FLOPs per token:
    $4 d_{\text{attn}}$ per query-key pair and layer, see the module docstring.

    * A causal LM: $2\,n_{\text{layers}} T d_{\text{attn}}$ (each query sees $T/2$ keys on
      average), or $4\,n_{\text{layers}} T d_{\text{attn}}$ with ``full_window`` (PaLM's MFU
      convention: every query against the whole window).
    * An encoder (not a causal LM): $4\,n_{\text{layers}} T d_{\text{attn}}$, bidirectional.
    * An encoder-decoder with $S$ = ``seq_len`` encoder and $T$ = ``decoder_seq_len`` (default
      $S$) decoder tokens: $4 d_{\text{attn}} (L_{\text{enc}} S^2 + L_{\text{dec}} T^2/2 +
      L_{\text{dec}} T S) / (S + T)$ per token of either stack (with ``full_window``, $T^2$ for
      the decoder's self-attention).
    * 0 for a config without attention (an LSTM).

    Raises:
        ConfigError: ``decoder_seq_len`` for a model without a decoder stack.
    """
    if decoder_seq_len is not None and not is_encoder_decoder(config):
        raise ConfigError("decoder_seq_len is only for encoder-decoder models")
    d_attn = attention_width(config)
    n_layers = getattr(config, "n_layers", None)
    if d_attn is None or n_layers is None:
        return 0
    if is_encoder_decoder(config):
        S, T = seq_len, seq_len if decoder_seq_len is None else decoder_seq_len
        causal_pairs_x2 = (2 if full_window else 1) * T * T  # twice the decoder's own pairs
        pairs_x2 = 2 * n_layers * S * S + config.n_decoder_layers * (causal_pairs_x2 + 2 * T * S)
        return 2 * d_attn * pairs_x2 / (S + T)
    causal = not full_window and registry.arch_of(config).causal_lm
    return int((2 if causal else 4) * n_layers * seq_len * d_attn)


def encoder_decoder_matmul_params(config: Any) -> tuple[int, int]:
    r"""$(N_{\text{enc}}, N_{\text{dec}})$ of an encoder-decoder in T5's layout: the matrices
    (and norms) an encoder token goes through, and those a decoder token goes through, the output
    head included (tied or not). Each encoder block has one attention sublayer and a feed-forward
    layer, each decoder block two attention sublayers (self, cross) and a feed-forward layer;
    each sublayer has a norm and each stack a final one. The split is read off the family's
    ``attention``, ``mlp`` and ``norms`` counts.

    Raises:
        ConfigError: The family's counts do not split that way.
    """
    params = parameter_counts(config)
    L_enc, L_dec = config.n_layers, config.n_decoder_layers
    attention = params["attention"] // (L_enc + 2 * L_dec)  # q, k, v, o of one sublayer
    ffn = params["mlp"] // (L_enc + L_dec)
    norm = params["norms"] // (2 * L_enc + 1 + 3 * L_dec + 1)
    head = params["head"] or config.vocab_size * config.d_model  # tied: the embedding matrix
    n_enc = L_enc * (attention + ffn + 2 * norm) + norm
    n_dec = L_dec * (2 * attention + ffn + 3 * norm) + norm + head
    lookups = sum(params.get(k, 0) for k in LOOKUP_COMPONENTS)
    if n_enc + n_dec != params["total"] - lookups - params["head"] + head:
        raise ConfigError(
            f"the parameters of {type(config).__name__} do not split into an encoder and a "
            "decoder stack in T5's layout"
        )
    return n_enc, n_dec


def info(
    config: Any, *, seq_len: int | None = None, decoder_seq_len: int | None = None
) -> dict[str, Any]:
    """Parameter counts, FLOPs per token and memory of a model config.

    Args:
        config: The config of a registered model with parameter counts (``GPTConfig``,
            ``LlamaConfig``, ``LSTMConfig``, ``BertConfig``, ``T5Config``, ...).
        seq_len: Context length $T$ for the attention FLOPs (default: ``config.max_seq_len``);
            for an encoder-decoder, the encoder's length $S$.
        decoder_seq_len: An encoder-decoder's decoder length $T$ (default: ``seq_len``).

    Returns:
        A dict with ``architecture`` (the registry name), ``parameters`` (by component, see
        :func:`parameter_counts`), ``flops_per_token`` (``None`` for a model without one
        token stream: CLIP's two towers, a CNN; else ``seq_len``, ``matmul_params`` $N$,
        ``forward``, ``training``; an encoder-decoder adds ``decoder_seq_len`` and
        ``encoder_matmul_params``/``decoder_matmul_params``, its FLOPs are per token of either
        stack, a float) and ``memory_bytes``: for ``fp32`` and ``bf16``, the bytes of ``weights``,
        ``gradients`` (same dtype as the weights), ``adamw_state`` (two moments per parameter,
        same dtype) and their ``total``.

    Raises:
        ConfigError: ``decoder_seq_len`` for a model without a decoder stack.

    Example:
        >>> info(registry.find_preset("gpt2-124m"))["parameters"]["total"]
        124439808
    """
    params = parameter_counts(config)
    memory: dict[str, dict[str, int]] = {}
    for dtype, nbytes in BYTES_PER_PARAM.items():
        weights = params["total"] * nbytes
        memory[dtype] = dict(
            weights=weights, gradients=weights, adamw_state=2 * weights, total=4 * weights
        )
    report = dict(
        architecture=registry.arch_of(config).name,
        parameters=params,
        flops_per_token=None,
        memory_bytes=memory,
    )
    if not hasattr(config, "d_model"):  # two towers (CLIP) or a CNN: no single token stream
        return report
    T = seq_len if seq_len is not None else config.max_seq_len
    attention_term = attention_flops_per_token(config, T, decoder_seq_len=decoder_seq_len)
    # Lookups cost no multiplications; a head tied to the embeddings is a matmul the counts
    # leave out (its matrix is counted once, as an embedding), so it is added back. A mixture
    # of experts multiplies by its ``active`` parameters only (top_k experts per token).
    tied_head = config.vocab_size * config.d_model if params["head"] == 0 else 0
    lookups = sum(params.get(k, 0) for k in LOOKUP_COMPONENTS)
    n_matmul = params.get("active", params["total"]) - lookups + tied_head
    flops: dict[str, Any] = dict(seq_len=T, matmul_params=n_matmul)
    if is_encoder_decoder(config):
        T_dec = T if decoder_seq_len is None else decoder_seq_len
        n_enc, n_dec = encoder_decoder_matmul_params(config)
        # The cross-attention's key and value projections multiply the T encoder positions
        # (``seq_len``), not the T_dec decoder tokens: half of each cross sublayer's q, k, v, o.
        n_kv = (
            config.n_decoder_layers
            * (
                parameter_counts(config)["attention"]
                // (config.n_layers + 2 * config.n_decoder_layers)
            )
            // 2
        )
        forward = 2 * (T * (n_enc + n_kv) + T_dec * (n_dec - n_kv)) / (T + T_dec) + attention_term
        flops.update(
            decoder_seq_len=T_dec,
            encoder_matmul_params=n_enc,
            decoder_matmul_params=n_dec,
            forward=forward,
            training=3 * forward,
        )
    else:
        flops.update(
            forward=2 * n_matmul + attention_term, training=6 * n_matmul + 3 * attention_term
        )
    report["flops_per_token"] = flops
    return report


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
    if flops is None:
        lines += ["", "FLOPs per token: not defined (no single token stream: two towers or a CNN)"]
    elif "decoder_seq_len" in flops:  # an encoder-decoder: per token of either stack
        window = f"S = {flops['seq_len']} encoder + T = {flops['decoder_seq_len']} decoder tokens"
    else:
        window = f"T = {flops['seq_len']}"
    if flops is not None:
        lines += [
            "",
            f"FLOPs per token ({window})",
            f"  {'forward':<12}{_human(flops['forward'], 'FLOP'):>16}",
            f"  {'training':<12}{_human(flops['training'], 'FLOP'):>16}",
        ]
    lines += [
        "",
        f"memory{'':<8}{'weights':>12}{'gradients':>12}{'AdamW':>12}{'total':>12}",
    ]
    for dtype, mem in report["memory_bytes"].items():
        cells = "".join(
            f"{_human(mem[k], 'B'):>12}" for k in ("weights", "gradients", "adamw_state", "total")
        )
        lines.append(f"  {dtype:<12}{cells}")
    return "\n".join(lines)
