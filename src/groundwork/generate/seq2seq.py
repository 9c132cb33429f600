r"""Decoding an encoder-decoder model (T5): greedy, sampling and beam search.

An encoder-decoder reads its input once and writes its output token by token:

1. the **encoder** maps the input ids ``(B, S)`` to hidden states ``(B, S, d)``: once per
   generation, since the input never changes;
2. the **decoder** starts every output with the decoder start id (T5: the pad id, 0) and
   predicts the next token from the tokens so far, attending causally to them
   (self-attention) and to the encoder output (cross-attention).

Two caches make each step cost one token's work (chapter 10): the decoder's self-attention keys
and values grow by one position per step, as in a decoder-only model, and the cross-attention
keys and values, projections of the encoder output, are computed at the first step and reused.
Both live in the model's cache (:class:`~groundwork.models.t5.T5Cache`).
``use_cache=False`` is the reference they must equal: every step runs the model's plain
teacher-forcing forward on the input and the whole output so far, the encoder included.

Inputs of different lengths are batched with right padding and an attention mask (T5's relative
positions make the side irrelevant); outputs need no padding, since every row starts with the
same single token and finished rows are fed the pad id until the others finish.

Token choice reuses the logit processors of :mod:`groundwork.generate.processors` (temperature,
top-k, top-p, min-p, repetition penalty over the output so far). Beam search keeps ``num_beams``
hypotheses per input with the bookkeeping of :mod:`groundwork.generate.beam` (Hugging Face's),
all inputs decoded together: input ``b`` owns rows ``b * W .. b * W + W - 1`` of the batch.

References: Sutskever, Vinyals & Le 2014, "Sequence to Sequence Learning with Neural Networks";
Raffel et al. 2020 (T5). Chapter 10 (Decoding) of the docs.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError
from groundwork.generate.beam import Beams, reorder_kv_cache
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import SYNC_EVERY, GenerateOutput, check_prompts
from groundwork.generate.processors import process_logits, sample_next
from groundwork.models.t5 import T5


def pad_inputs(
    inputs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad encoder inputs: ids ``(B, S)`` and attention mask ``(B, S)`` (1 = token).

    >>> ids, mask = pad_inputs([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    S = max(len(x) for x in inputs)
    ids = torch.full((len(inputs), S), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), S), dtype=torch.long)
    for b, x in enumerate(inputs):
        ids[b, : len(x)] = torch.tensor(list(x), dtype=torch.long)
        mask[b, : len(x)] = 1
    return ids.to(device), mask.to(device)


def _setup(
    model: T5,
    inputs: Sequence[Sequence[int]],
    config: GenerationConfig,
    eos_ids: Sequence[int] | None,
    pad_id: int | None,
    decoder_start_id: int | None,
) -> tuple[int, int, set[int]]:
    """Check the inputs; the padding id, the decoder's first id and every id that ends an
    output (the EOS, or ``eos_ids``, and ``config.stop_ids``), the model's by default."""
    check_prompts(model, inputs)  # empty, out of the vocabulary (no length limit: relative)
    if config.stop_strings:
        raise ConfigError(
            "stop_strings are not supported by encoder-decoder decoding: use stop_ids"
        )
    c = model.config
    pad = c.pad_id if pad_id is None else pad_id
    start = c.decoder_start_id if decoder_start_id is None else decoder_start_id
    ends = set((c.eos_id,) if eos_ids is None else eos_ids) | set(config.stop_ids)
    return pad, start, ends


# --8<-- [start:generate_seq2seq]
@torch.no_grad()
def generate_seq2seq(
    model: T5,
    inputs: list[list[int]],
    config: GenerationConfig,
    *,
    eos_ids: Sequence[int] | None = None,
    pad_id: int | None = None,
    decoder_start_id: int | None = None,
    return_logits: bool = False,
    use_cache: bool = True,
) -> GenerateOutput:
    """The output of each input: greedy (``temperature == 0``) or sampled, batched.

    A row stops after emitting an end-of-sequence id or one of ``config.stop_ids`` (kept in its
    sequence); finished rows are fed ``pad_id`` until every row has finished, checked on the
    host every :data:`~groundwork.generate.decode.SYNC_EVERY` steps. Call ``model.eval()``
    first (T5 has dropout).

    Args:
        model: A :class:`~groundwork.models.t5.T5` (``encode``, ``forward`` with
            ``encoder_hidden``/``kv_cache``, ``new_kv_cache``).
        inputs: Encoder input ids, one non-empty list per row; lengths may differ.
        config: Decoding settings (``num_beams`` must be 1: see :func:`beam_search_seq2seq`).
        eos_ids: End-of-sequence ids; default ``(model.config.eos_id,)``.
        pad_id: Padding id; default ``model.config.pad_id``.
        decoder_start_id: First decoder token; default ``model.config.decoder_start_id``.
        return_logits: Also return the raw logits of every step.
        use_cache: ``False`` reruns the whole model (encoder too) on the output so far at every
            step: the quadratic reference.

    Returns:
        The new tokens of each input, without the decoder start id (and the logits if asked:
        ``(B, steps, V)``).

    Raises:
        ConfigError: no inputs, an empty input, an id outside the vocabulary, ``num_beams > 1``
            or stop strings.
    """
    pad, start, ends = _setup(model, inputs, config, eos_ids, pad_id, decoder_start_id)
    if config.num_beams > 1:
        raise ConfigError(f"num_beams={config.num_beams}: use beam_search_seq2seq")
    device = model.lm_head.weight.device
    B, n = len(inputs), config.max_new_tokens
    ids, mask = pad_inputs(inputs, pad, device)  # (B, S)
    stop = torch.tensor(sorted(ends), dtype=torch.long, device=device)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    decoder_ids = torch.full((B, n + 1), pad, dtype=torch.long, device=device)
    decoder_ids[:, 0] = start
    done = torch.zeros(B, dtype=torch.bool, device=device)
    length = torch.full((B,), n, dtype=torch.long, device=device)  # new tokens kept per row
    all_logits: list[torch.Tensor] = []
    if use_cache:
        encoder_hidden = model.encode(ids, mask)  # (B, S, d_model): the encoder runs once
        cache = model.new_kv_cache(B, n)  # decoder positions 0 .. n-1 are ever fed
    for step in range(n):
        if use_cache:  # only the newest token: the rest is in the cache
            logits = model(
                decoder_input_ids=decoder_ids[:, step : step + 1],
                encoder_hidden=encoder_hidden,
                attention_mask=mask,
                kv_cache=cache,
            )[:, -1]  # (B, V)
        else:  # everything, from the input ids
            prefix = decoder_ids[:, : step + 1]
            logits = model(ids, attention_mask=mask, decoder_input_ids=prefix)[:, -1]
        scores = process_logits(logits.float(), decoder_ids[:, : step + 1], config)  # (B, V)
        next_ids = torch.where(done, pad, sample_next(scores, config, generator))  # (B,)
        decoder_ids[:, step + 1] = next_ids
        if return_logits:
            all_logits.append(logits.float())
        hit = torch.isin(next_ids, stop) & ~done  # (B,) rows that stop at this token
        length = torch.where(hit, step + 1, length)
        done |= hit
        if step % SYNC_EVERY == SYNC_EVERY - 1 and bool(done.all()):  # a host sync
            break
    rows = decoder_ids[:, 1:].tolist()
    sequences = [row[:k] for row, k in zip(rows, length.tolist(), strict=True)]
    stacked = torch.stack(all_logits, dim=1) if return_logits else None  # (B, steps, V)
    return GenerateOutput(sequences=sequences, logits=stacked)


# --8<-- [end:generate_seq2seq]


# --8<-- [start:beam_search_seq2seq]
@torch.no_grad()
def beam_search_seq2seq(
    model: T5,
    inputs: list[list[int]],
    config: GenerationConfig,
    *,
    eos_ids: Sequence[int] | None = None,
    pad_id: int | None = None,
    decoder_start_id: int | None = None,
    use_cache: bool = True,
) -> list[list[tuple[list[int], float]]]:
    r"""The ``config.num_return_sequences`` best outputs of each input by beam search.

    Each input's search is :func:`groundwork.generate.beam.beam_search`'s, step for step (and so
    Hugging Face's ``generate(num_beams=..., do_sample=False)``): extend every running beam by
    every token, keep the $K = \max(2, E + 1) \cdot W$ best candidates, let the top $W$ of them
    finish when they end (score $\sum \log p / L^{\alpha}$, $L$ the new tokens, end id
    included), continue with the $W$ best that do not, and stop on ``early_stopping`` or when
    the best running beam cannot beat the worst finished hypothesis. All inputs advance
    together, one forward pass per step over ``B * W`` rows; an input whose search has stopped
    keeps its rows (fed the pad id) until every search has.

    The encoder runs once per input and its output is repeated for the input's $W$ rows. When
    the surviving beams descend from other rows, the self-attention cache follows them
    (:func:`~groundwork.generate.beam.reorder_kv_cache`); the cross-attention keys and values
    do not need to, since beams only move between the rows of one input, which share its
    encoder output.

    Args:
        model: A :class:`~groundwork.models.t5.T5`, in eval mode.
        inputs: Encoder input ids, one non-empty list per input.
        config: ``num_beams``, ``length_penalty``, ``early_stopping``,
            ``num_return_sequences``, ``max_new_tokens``; its ``stop_ids`` also end
            hypotheses. Sampling settings are ignored.
        eos_ids: End-of-sequence ids; default ``(model.config.eos_id,)``.
        pad_id: Padding id; default ``model.config.pad_id``.
        decoder_start_id: First decoder token; default ``model.config.decoder_start_id``.
        use_cache: ``False`` reruns the whole model on every beam at every step.

    Returns:
        For each input, ``[(new_tokens, score), ...]``, best first, ``num_return_sequences``
        entries; the tokens include the end id that finished them.

    Raises:
        ConfigError: no inputs, an empty input, an id outside the vocabulary, stop strings, or
            more beams than vocabulary entries.
    """
    pad, start, ends = _setup(model, inputs, config, eos_ids, pad_id, decoder_start_id)
    c = model.config
    W, n = config.num_beams, config.max_new_tokens
    if config.num_beams > c.vocab_size:
        raise ConfigError(f"num_beams ({W}) is larger than the vocabulary ({c.vocab_size} tokens)")
    device = model.lm_head.weight.device
    B = len(inputs)
    ids, mask = pad_inputs(inputs, pad, device)  # (B, S)
    ids, mask = ids.repeat_interleave(W, dim=0), mask.repeat_interleave(W, dim=0)  # (B*W, S)
    cache = model.new_kv_cache(B * W, n) if use_cache else None
    if cache is not None:  # the encoder runs once per input; its W rows share the output
        encoder_hidden = model.encode(ids[::W], mask[::W]).repeat_interleave(W, dim=0)
    searches = [Beams(config, ends, device) for _ in range(B)]
    last = [start] * (B * W)  # the token each row is fed next

    for step in range(1, n + 1):  # step = number of new tokens after it
        if cache is not None:
            logits = model(
                decoder_input_ids=torch.tensor(last, device=device)[:, None],  # (B*W, 1)
                encoder_hidden=encoder_hidden,
                attention_mask=mask,
                kv_cache=cache,
            )[:, -1]  # (B*W, V)
        else:  # every row's whole output so far (rows without a running beam: padding)
            prefix = [[start, *_output(searches, r, W, step - 1, pad)] for r in range(B * W)]
            decoder_ids = torch.tensor(prefix, device=device)  # (B*W, step)
            logits = model(ids, attention_mask=mask, decoder_input_ids=decoder_ids)[:, -1]
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (B*W, V)
        rows, last = list(range(B * W)), [pad] * (B * W)  # parent row, next token of each row
        for b, search in enumerate(searches):
            if not search.active:
                continue
            first = b * W  # this input's rows: first .. first + W - 1
            parents = search.step(log_probs[first : first + len(search.tokens)], step)
            for j, parent in enumerate(parents):
                rows[first + j], last[first + j] = first + parent, search.tokens[j][-1]
        if not any(s.active for s in searches):
            break
        if cache is not None:
            reorder_kv_cache(cache.self_attn, torch.tensor(rows))  # follow the parents
    return [s.finished.hypotheses[: config.num_return_sequences] for s in searches]


def _output(searches: list[Beams], row: int, W: int, length: int, pad: int) -> list[int]:
    """The new tokens of the running beam in ``row`` (``length`` of them), or padding."""
    search, j = searches[row // W], row % W
    if search.active and j < len(search.tokens):
        return search.tokens[j]
    return [pad] * length


# --8<-- [end:beam_search_seq2seq]
