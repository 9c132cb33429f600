r"""Batched autoregressive decoding with a preallocated KV cache.

A decoder-only model predicts token $t+1$ from tokens $0..t$. Decoding naively reruns the model
over the whole prefix at every step, $O(T^2)$ work for $T$ tokens (:func:`generate_uncached`, kept
as the reference). With a KV cache (:class:`~groundwork.nn.KVCache`) the prompt is run once
(*prefill*) and each later step feeds only the newest token, whose query attends over the stored
keys and values (:func:`generate`): $O(T)$ forward work per sequence.

Prompts of different lengths are batched with **left padding**, so that every row's newest token
sits in the same (last) column::

    pad  pad  The  cat      attention_mask 0 0 1 1     position_ids 0 0 0 1
    A    dog  ran  far                     1 1 1 1                  0 1 2 3

The attention mask hides the padding from every query, and position ids restart at 0 at each
row's first real token, so rotary (Llama) and learned (GPT-2) positions match the unpadded prompt.

A model reads at most ``model.config.max_seq_len`` tokens at once. Generation may go past that:
once the sequence is longer, every step reads only its last ``max_seq_len`` tokens (a sliding
window, as nanoGPT's ``generate`` crops its context), and with a KV cache the cropped window is
prefilled again, since its positions have all moved. Recurrent models (the LSTM) carry their
whole past in a fixed-size state and have no window (:func:`context_window`).

The sampling strategies come from :mod:`groundwork.generate.processors` (Holtzman et al. 2020,
top-p; Fan et al. 2018, top-k; Keskar et al. 2019, repetition penalty; Nguyen et al. 2024,
min-p). Chapter 10 (Decoding) of the docs.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.processors import process_logits, sample_next
from groundwork.models.protocol import CausalLM, max_seq_len, vocab_size
from groundwork.nn import KVCache

SYNC_EVERY = 8
"""Steps between host checks of "is every row finished?" (each check waits for the device)."""


@dataclass
class GenerateOutput:
    """What :func:`generate` returns."""

    sequences: list[list[int]]
    """New tokens of each prompt (a stop id, when reached, is included and ends the row)."""
    logits: torch.Tensor | None = None
    """``(B, steps, V)`` raw model logits at each step (before any processing), if asked for."""


@dataclass
class _Batch:
    """Left-padded prompts and what the decoding loop needs to continue them."""

    ids: torch.Tensor
    """``(B, L + max_new_tokens)``: prompts left-padded to ``L``, room for the new tokens."""
    mask: torch.Tensor
    """``(B, L + max_new_tokens)``: 1 for real tokens (new tokens included), 0 for padding."""
    lengths: torch.Tensor
    """``(B,)`` real prompt lengths."""
    prompt_len: int
    """``L``, the padded prompt length."""


def context_window(model: nn.Module) -> int | None:
    """The most tokens ``model`` reads in one forward pass: its ``config.max_seq_len``, or
    ``None`` for a recurrent model, whose state (what :meth:`~CausalLM.new_kv_cache` gives it
    instead of a :class:`~groundwork.nn.KVCache`) carries any length of past."""
    lm = cast(CausalLM, model)
    if not isinstance(lm.new_kv_cache(1, 1), KVCache):
        return None
    return max_seq_len(lm)


def check_prompts(model: nn.Module, prompts: Sequence[Sequence[int]]) -> None:
    """Raise :class:`~groundwork.errors.ConfigError` for prompts the model cannot continue.

    Generation itself may run past the model's context (the window slides); a prompt may not,
    since cutting the user's text is the caller's decision.

    Raises:
        ConfigError: no prompts; an empty prompt; an id outside the vocabulary; a prompt
            longer than the model's context (:func:`context_window`).
    """
    if not prompts:
        raise ConfigError("no prompts given: pass a list of token-id lists")
    limit = context_window(model)
    vocab = vocab_size(cast(CausalLM, model))
    for i, prompt in enumerate(prompts):
        name = f"prompt {i}" if len(prompts) > 1 else "the prompt"
        if len(prompt) == 0:
            raise ConfigError(f"{name} is empty: give at least one token")
        if not all(0 <= t < vocab for t in prompt):
            bad = next(t for t in prompt if not 0 <= t < vocab)
            raise ConfigError(
                f"{name} holds token id {bad}, outside the model's vocabulary 0..{vocab - 1}"
            )
        if limit is not None and len(prompt) > limit:
            raise ConfigError(
                f"{name} has {len(prompt)} tokens, more than the model's context of {limit} "
                "(max_seq_len): shorten it"
            )


def _left_pad(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int, device: torch.device
) -> _Batch:
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L + max_new_tokens), pad_id, dtype=torch.long)
    mask = torch.ones((B, L + max_new_tokens), dtype=torch.long)
    for b, prompt in enumerate(prompts):
        ids[b, L - len(prompt) : L] = torch.tensor(list(prompt), dtype=torch.long)
        mask[b, : L - len(prompt)] = 0
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    return _Batch(ids.to(device), mask.to(device), lengths.to(device), L)


def _penalty_ids(batch: _Batch, end: int) -> torch.Tensor:
    """``(B, end)`` ids for the repetition penalty, padding replaced by each row's first token.

    The penalty treats every id present once; a repeated real id changes nothing, while a pad id
    would wrongly penalise the pad token.
    """
    ids = batch.ids[:, :end]
    first = batch.ids.gather(1, (batch.prompt_len - batch.lengths)[:, None])  # (B, 1)
    return torch.where(batch.mask[:, :end].bool(), ids, first)


# --8<-- [start:decode_loop]
@torch.no_grad()
def decode_steps(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    *,
    pad_id: int = 0,
    use_cache: bool = True,
    finished: Callable[[], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(next_ids (B,), raw_logits (B, V))`` once per step, up to ``max_new_tokens``.

    The building block of :func:`generate` and :func:`~groundwork.generate.stream.stream`: it
    decides nothing about stopping. The caller stops by leaving the loop; ``finished``, when
    given, returns a ``(B,)`` bool tensor of rows whose next ids should be ``pad_id``.

    Each step reads at most the model's context (:func:`context_window`) of the latest tokens:
    past it the window slides, and the KV cache is filled again from the cropped window.

    Args:
        model: Maps ids ``(B, T)`` (with ``attention_mask``, ``position_ids``, ``kv_cache``
            keywords) to logits ``(B, T, V)``; has ``new_kv_cache`` when ``use_cache``.
        prompts: Token ids, one list per row, of any lengths (left-padded here).
        config: Decoding settings.
        pad_id: Id that fills padding (any valid id: it is masked out).
        use_cache: Prefill once and feed one token per step (``False``: rerun the whole prefix).
        finished: Callback giving the rows already finished.
    """
    check_prompts(model, prompts)
    if config.num_beams > 1:
        raise ConfigError(
            f"num_beams={config.num_beams}: use groundwork.generate.beam for beam search"
        )
    lm = cast(CausalLM, model)
    device = next(model.parameters()).device
    batch = _left_pad(prompts, config.max_new_tokens, pad_id, device)
    L, total = batch.prompt_len, batch.prompt_len + config.max_new_tokens
    window = context_window(model) or total  # the most columns one forward pass reads
    pad_end = L - min(len(p) for p in prompts)  # columns 0..pad_end-1 hold some padding
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    cache = lm.new_kv_cache(len(prompts), max_seq_len=min(total, window)) if use_cache else None

    def forward(start: int, end: int, fed: int) -> torch.Tensor:
        """Logits ``(B, V)`` after columns ``start..end-1``, feeding the model the last ``fed``
        of them (the others are in the cache)."""
        mask = batch.mask[:, start:end]  # (B, end - start)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)  # 0 at each row's first real token
        logits = model(
            batch.ids[:, end - fed : end],
            attention_mask=mask if start < pad_end else None,  # no padding: plain causal path
            position_ids=positions[:, -fed:],
            kv_cache=cache,
        )
        return logits[:, -1]  # (B, V)

    end = L  # columns 0..end-1 are filled
    logits = forward(0, end, end)  # prefill
    for step in range(config.max_new_tokens):
        seen = _penalty_ids(batch, end) if config.repetition_penalty else batch.ids[:, :end]
        scores = process_logits(logits.float(), seen, config)  # (B, V)
        next_ids = sample_next(scores, config, generator)  # (B,)
        if finished is not None:
            next_ids = torch.where(finished(), pad_id, next_ids)
        batch.ids[:, end] = next_ids
        end += 1
        yield next_ids, logits
        if step == config.max_new_tokens - 1:
            break
        start = max(0, end - window)  # the window: at most `window` latest columns
        if cache is None:
            logits = forward(start, end, end - start)  # rerun the whole window
        elif start == 0:
            logits = forward(0, end, 1)  # only the newest token; the rest is cached
        else:  # the window slid: every position moved, so fill the cache again
            cast(KVCache, cache).reset()
            logits = forward(start, end, end - start)


# --8<-- [end:decode_loop]


# --8<-- [start:generate]
def generate(
    model: nn.Module,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    pad_id: int = 0,
    eos_ids: Sequence[int] = (),
    return_logits: bool = False,
    decode: Callable[[list[int]], str] | None = None,
    use_cache: bool = True,
) -> GenerateOutput:
    """Continue each prompt: batched, left-padded, with a KV cache.

    A row stops after emitting one of ``config.stop_ids`` or ``eos_ids`` (that id is kept in its
    sequence), or, when ``decode`` is given, once its decoded new text contains one of
    ``config.stop_strings`` (its sequence ends with the token that completes the stop string;
    :func:`~groundwork.generate.stream.stream` cuts the text itself). Finished rows are fed
    ``pad_id`` while the others go on; the loop ends when every row has finished, checked on
    the host only every :data:`SYNC_EVERY` steps (or every step with stop strings, which need
    the text).

    Args:
        model: A ``GPT`` or ``Llama`` (anything with their ``forward`` and ``new_kv_cache``).
        prompts: Token ids, one non-empty list per row; lengths may differ.
        config: Decoding settings (greedy when ``temperature == 0``).
        pad_id: Id used for padding and for rows that have finished.
        eos_ids: Extra stop ids (e.g. the tokenizer's end of text).
        return_logits: Also return the raw logits of every step.
        decode: Turns ids into text; needed for ``config.stop_strings``.
        use_cache: ``False`` runs :func:`generate_uncached`'s quadratic loop instead.

    Returns:
        The new tokens of each prompt (and the logits if asked).

    Raises:
        ConfigError: an empty prompt; a prompt longer than the model's ``config.max_seq_len``
            (nothing is truncated; generation past it slides the window); ``num_beams > 1``;
            stop strings without ``decode``.
    """
    if config.stop_strings and decode is None:
        raise ConfigError(
            "stop_strings need the text: pass decode=tokenizer.decode, or use "
            "groundwork.generate.stream.generate_text"
        )
    device = next(model.parameters()).device
    rows = Stopping(
        len(prompts), config, pad_id=pad_id, eos_ids=eos_ids, decode=decode, device=device
    )
    steps = decode_steps(
        model, prompts, config, pad_id=pad_id, use_cache=use_cache, finished=lambda: rows.done
    )
    for step, (next_ids, logits) in enumerate(steps):
        if rows.record(step, next_ids, logits if return_logits else None):
            break
    return rows.output()


class Stopping:
    """The new tokens of a batch and which rows have stopped, for :func:`generate` and the
    static-cache loop alike: a row stops at a stop id (kept) or once its decoded text holds a
    stop string; whether *every* row has stopped is read on the host only every
    :data:`SYNC_EVERY` steps (every step with stop strings, which need the text anyway)."""

    def __init__(
        self,
        batch: int,
        config: GenerationConfig,
        *,
        pad_id: int,
        eos_ids: Sequence[int],
        decode: Callable[[list[int]], str] | None,
        device: torch.device,
    ) -> None:
        n = config.max_new_tokens
        self.stop = torch.tensor(
            sorted({*config.stop_ids, *eos_ids}), dtype=torch.long, device=device
        )
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.length = torch.full((batch,), n, dtype=torch.long, device=device)  # tokens kept
        self.new_ids = torch.full((batch, n), pad_id, dtype=torch.long, device=device)
        self.logits: list[torch.Tensor] = []
        self.stop_strings, self.decode = config.stop_strings, decode

    def record(self, step: int, next_ids: torch.Tensor, logits: torch.Tensor | None) -> bool:
        """Store step ``step``'s tokens ``(B,)`` (and its logits, when given); whether every
        row has now stopped (``False`` between host checks)."""
        self.new_ids[:, step] = next_ids
        if logits is not None:
            self.logits.append(logits.float())
        hit = torch.isin(next_ids, self.stop) & ~self.done  # (B,) rows that stop at this token
        if self.stop_strings:
            assert self.decode is not None
            upto = self.new_ids[:, : step + 1]
            hit |= _stop_string_hits(upto, self.done, self.decode, self.stop_strings)
        self.length = torch.where(hit, step + 1, self.length)
        self.done |= hit
        periodic = self.stop.numel() > 0 and step % SYNC_EVERY == SYNC_EVERY - 1
        return (periodic or bool(self.stop_strings)) and bool(self.done.all())  # a host sync

    def output(self) -> GenerateOutput:
        """Each row's new tokens up to where it stopped (and the logits, if recorded)."""
        lengths = self.length.tolist()
        rows = self.new_ids.tolist()
        sequences = [row[:k] for row, k in zip(rows, lengths, strict=True)]
        stacked = torch.stack(self.logits, dim=1) if self.logits else None  # (B, steps, V)
        return GenerateOutput(sequences=sequences, logits=stacked)


# --8<-- [end:generate]


def _stop_string_hits(
    new_ids: torch.Tensor,
    done: torch.Tensor,
    decode: Callable[[list[int]], str],
    stop_strings: Sequence[str],
) -> torch.Tensor:
    """``(B,)`` bool: unfinished rows whose decoded new text now contains a stop string."""
    hits = [
        not finished and any(s in decode(row) for s in stop_strings)
        for row, finished in zip(new_ids.tolist(), done.tolist(), strict=True)
    ]
    return torch.tensor(hits, dtype=torch.bool, device=new_ids.device)


def generate_uncached(
    model: nn.Module,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    pad_id: int = 0,
    eos_ids: Sequence[int] = (),
    return_logits: bool = False,
    decode: Callable[[list[int]], str] | None = None,
) -> GenerateOutput:
    """:func:`generate` without a KV cache: every step reruns the model over the whole prefix.

    Quadratic in the sequence length; the reference that cached decoding must equal, and the
    baseline of ``benchmarks/decode.py``. Arguments and errors as in :func:`generate`.
    """
    return generate(
        model,
        prompts,
        config,
        pad_id=pad_id,
        eos_ids=eos_ids,
        return_logits=return_logits,
        decode=decode,
        use_cache=False,
    )
