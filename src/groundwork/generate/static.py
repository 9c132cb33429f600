"""Decoding with a static KV cache and a compiled decode step.

:func:`~groundwork.generate.decode.generate` is right but slow on a GPU for small batches: each
step launches a few hundred small kernels from Python, and the shapes grow by one key every step
(the cache returns ``0..t``), so nothing can be captured once and replayed. Here the prompt is
run once (*prefill*, any length), then every *decode step* has the same shapes: it feeds one
token per row, writes its key and value into a preallocated slot chosen by a tensor
(``index_copy_``), and attends over the whole cache with a mask of the filled slots
(:class:`~groundwork.nn.kv_cache.StaticKVCache`). The step is then a fixed graph:
``torch.compile`` traces it without graph breaks, and with ``mode="reduce-overhead"`` on a GPU
records it once as a CUDA graph and replays it every step, one launch instead of hundreds (the
technique of gpt-fast, and of ``transformers``' ``cache_implementation="static"``).

The tokens are the ones :func:`~groundwork.generate.decode.generate` gives (same processors,
same random draws: ``tests/generate/test_static.py``), batched prompts left-padded as there.
The whole sequence must fit the model's context (no sliding window): prompt plus new tokens
``<= max_seq_len``. Models whose attention takes a bias (ALiBi) are not supported.

Chapter 10 (Decoding), "Static cache and compiled decoding".
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import (
    GenerateOutput,
    Stopping,
    _left_pad,
    _penalty_ids,
    check_prompts,
    context_window,
)
from groundwork.generate.processors import process_logits, sample_next
from groundwork.models.protocol import CausalLM
from groundwork.nn.kv_cache import KVCache, StaticKVCache


# --8<-- [start:decode_step]
def decode_step(
    model: nn.Module, cache: StaticKVCache, ids: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """One decoding step with fixed shapes: logits ``(B, V)`` after feeding ``ids`` ``(B, 1)``
    at ``positions`` ``(B, 1)``, the new keys and values written at ``cache.index``."""
    cache.advance()  # the new slot becomes visible to the queries
    logits = model(ids, position_ids=positions, kv_cache=cache)  # (B, 1, V)
    cache.step_done()  # index += 1
    return logits[:, -1]  # (B, V)


# --8<-- [end:decode_step]


def static_cache_for(model: nn.Module, batch: int, max_seq_len: int) -> StaticKVCache:
    """A :class:`~groundwork.nn.kv_cache.StaticKVCache` of ``max_seq_len`` slots shaped like
    ``model``'s own cache (layers, key/value heads, head size, dtype, device).

    Raises:
        ConfigError: the model keeps no key/value cache (a recurrent model), or
            ``max_seq_len`` exceeds its context.
    """
    like = cast(CausalLM, model).new_kv_cache(1, 1)
    if not isinstance(like, KVCache):
        raise ConfigError(
            f"{type(model).__name__} keeps a recurrent state, not a key/value cache: "
            "use groundwork.generate.generate"
        )
    limit = context_window(model)
    if limit is not None and max_seq_len > limit:
        raise ConfigError(
            f"a static cache of {max_seq_len} positions exceeds the model's context of {limit} "
            "(max_seq_len): generate fewer tokens, or use groundwork.generate.generate, whose "
            "window slides"
        )
    n_layers, _, n_kv_heads, _, d_head = like.k.shape
    return StaticKVCache(
        batch, n_layers, n_kv_heads, max_seq_len, d_head, like.k.dtype, like.k.device
    )


class StaticDecoder:
    """Generates with one preallocated :class:`~groundwork.nn.kv_cache.StaticKVCache`, reused
    by every call (so a compiled step, or its CUDA graph, is reused too).

    Args:
        model: A decoder-only model with ``forward(ids, attention_mask=, position_ids=,
            kv_cache=)`` and ``new_kv_cache`` (GPT, Llama and their relatives).
        batch_size: Rows decoded together; every call passes exactly this many prompts.
        max_seq_len: Prompt plus new tokens, at most (default: the model's context).
        compile: Compile :func:`decode_step` with ``torch.compile(fullgraph=True,
            dynamic=False)``: ``mode="reduce-overhead"`` (CUDA graphs) on a GPU, the default
            mode elsewhere.
        mode: The ``torch.compile`` mode (default as just said).
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        max_seq_len: int | None = None,
        *,
        compile: bool = False,
        mode: str | None = None,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        length = max_seq_len if max_seq_len is not None else context_window(model)
        if length is None:
            raise ConfigError("give max_seq_len: the model has no context length of its own")
        self.cache = static_cache_for(model, batch_size, length)
        self.step: Callable[..., torch.Tensor] = decode_step
        if compile:
            if mode is None and self.cache.filled.device.type == "cuda":
                mode = "reduce-overhead"
            # dynamic=False: every decoder (model, batch, length) gets its own static graph,
            # never a shape-generic one (which dynamo would otherwise try after a recompile)
            compiled = torch.compile(decode_step, mode=mode, fullgraph=True, dynamic=False)
            self.step = cast(Any, compiled)

    # --8<-- [start:static_generate]
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig,
        *,
        pad_id: int = 0,
        eos_ids: Sequence[int] = (),
        return_logits: bool = False,
        decode: Callable[[list[int]], str] | None = None,
    ) -> GenerateOutput:
        """Continue each prompt, as :func:`~groundwork.generate.decode.generate` does
        (arguments, stopping rules and result alike).

        Raises:
            ConfigError: a wrong number of prompts; prompt plus ``max_new_tokens`` longer than
                the cache; what ``generate`` refuses (empty prompts, beams, stop strings
                without ``decode``).
        """
        if config.stop_strings and decode is None:
            raise ConfigError("stop_strings need the text: pass decode=tokenizer.decode")
        self._check(prompts, config)
        rows = Stopping(
            len(prompts),
            config,
            pad_id=pad_id,
            eos_ids=eos_ids,
            decode=decode,
            device=self.cache.filled.device,
        )
        steps = self.steps(prompts, config, pad_id=pad_id, finished=lambda: rows.done)
        for step, (next_ids, logits) in enumerate(steps):
            if rows.record(step, next_ids, logits if return_logits else None):
                break
        return rows.output()

    @torch.no_grad()
    def steps(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig,
        *,
        pad_id: int = 0,
        finished: Callable[[], torch.Tensor] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(next_ids (B,), raw_logits (B, V))`` once per step, as
        :func:`~groundwork.generate.decode.decode_steps` does (the caller stops by leaving the
        loop; ``finished`` gives the rows whose next ids are ``pad_id``): the prefill, then one
        fixed-shape :attr:`step` a token. What :meth:`generate` and streaming
        (:func:`~groundwork.generate.stream.stream`'s ``steps``) are made of.

        Raises:
            ConfigError: as :meth:`generate` (at the first step).
        """
        self._check(prompts, config)
        model, cache, n = self.model, self.cache, config.max_new_tokens
        device = cache.filled.device
        batch = _left_pad(prompts, n, pad_id, device)
        L = batch.prompt_len
        padded = min(len(p) for p in prompts) < L
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=device).manual_seed(config.seed)

        cache.reset()
        mask = batch.mask[:, :L]  # (B, L)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)  # (B, L): 0 at the first token
        logits = model(  # prefill: the prompt at once, any length
            batch.ids[:, :L],
            attention_mask=mask if padded else None,
            position_ids=positions,
            kv_cache=cache,
        )[:, -1]  # (B, V)
        cache.start_decoding(mask)
        for step in range(n):
            end = L + step  # columns 0..end-1 are filled
            seen = _penalty_ids(batch, end) if config.repetition_penalty else batch.ids[:, :end]
            scores = process_logits(logits.float(), seen, config)  # (B, V)
            next_ids = sample_next(scores, config, generator)
            if finished is not None:
                next_ids = torch.where(finished(), pad_id, next_ids)  # (B,)
            batch.ids[:, end] = next_ids
            yield next_ids, logits
            if step < n - 1:
                position = batch.lengths[:, None] + step  # (B, 1): the new token's position
                ids = next_ids[:, None].clone()  # (B, 1), a fresh tensor for the graph
                logits = self.step(model, cache, ids, position).clone()  # (B, V)

    # --8<-- [end:static_generate]

    def _check(self, prompts: Sequence[Sequence[int]], config: GenerationConfig) -> None:
        check_prompts(self.model, prompts)
        if config.num_beams > 1:
            raise ConfigError(
                f"num_beams={config.num_beams}: use groundwork.generate.beam for beam search"
            )
        if len(prompts) != self.batch_size:
            raise ConfigError(
                f"this decoder's static cache holds {self.batch_size} rows, got "
                f"{len(prompts)} prompts: build a StaticDecoder with batch_size={len(prompts)}"
            )
        need = max(len(p) for p in prompts) + config.max_new_tokens
        if need > self.cache.max_seq_len:
            raise ConfigError(
                f"the longest prompt plus max_new_tokens is {need} tokens, more than the static "
                f"cache's {self.cache.max_seq_len}: lower max_new_tokens or build a larger cache"
            )


def generate_static(
    model: nn.Module,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    pad_id: int = 0,
    eos_ids: Sequence[int] = (),
    return_logits: bool = False,
    decode: Callable[[list[int]], str] | None = None,
    compile: bool = False,
) -> GenerateOutput:
    """:func:`~groundwork.generate.decode.generate` with a static cache sized to the prompts
    plus ``max_new_tokens``, and with ``compile`` a compiled decode step
    (:class:`StaticDecoder`). Arguments, result and errors as ``generate``'s; in addition the
    prompt plus the new tokens must fit the model's context."""
    check_prompts(model, prompts)
    need = max(len(p) for p in prompts) + config.max_new_tokens
    decoder = StaticDecoder(model, len(prompts), need, compile=compile)
    return decoder.generate(
        prompts,
        config,
        pad_id=pad_id,
        eos_ids=eos_ids,
        return_logits=return_logits,
        decode=decode,
    )
