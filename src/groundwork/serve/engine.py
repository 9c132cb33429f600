r"""Continuous batching: an iteration-level scheduler over a slotted KV cache.

A static batch (``groundwork generate`` with several prompts) starts together and ends with its
longest member: a request that wants 5 tokens waits for one that wants 500, and a request that
arrives a moment late waits for the whole batch. Orca (Yu et al. 2022) schedules at the
granularity of one decoding *iteration* instead. Every iteration of :meth:`Engine.step`:

1. drops the requests whose client went away (their rows are freed at once);
2. **admits** waiting requests while there are free rows and runs their prompts through the
   model as one batch (*prefill*, which also gives each its first token), up to
   ``max_prefill_tokens`` (padded) prompt tokens per iteration, so that a burst of long prompts
   cannot stall the requests already decoding for long;
3. runs **one decoding step** for every running request as a single batch (each row at its own
   length: :class:`~groundwork.serve.slots.SlotKVCache`), samples each row with the request's
   own settings and random generator, and retires the rows that finished (end of turn, a stop
   string, ``max_tokens``), whose places the next iteration fills.

Decoding a batch of ``B`` rows costs little more than one row on a CPU or GPU whose time goes to
reading the weights (chapter 18: batch-1 decoding is memory-bound), so throughput grows with the
number of concurrent requests while each keeps streaming. vLLM (Kwon et al. 2023) adds paged KV
blocks and prefix sharing on top of the same loop. Chapter 10 (Decoding), section "Serving".

The engine runs in a thread of its own (:meth:`Engine.start`); the HTTP layer
(:mod:`groundwork.serve.app`) submits :class:`Sequence` objects and receives their events
through each one's ``emit`` callback. Tests drive :meth:`Engine.step` directly.
"""

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from groundwork.errors import ConfigError, GroundworkError
from groundwork.generate.processors import top_p_filter
from groundwork.generate.stream import REPLACEMENT, find_stop, partial_stop_len
from groundwork.models.protocol import CausalLM, max_seq_len, vocab_size
from groundwork.nn import KVCache
from groundwork.serve.slots import SlotKVCache
from groundwork.tokenize.base import Tokenizer


class QueueFullError(GroundworkError):
    """More requests are waiting than the engine accepts (the client should retry later)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is decoded (the OpenAI request fields, checked by the caller)."""

    max_tokens: int
    """Generate at most this many tokens (0: only score the prompt)."""
    temperature: float = 1.0
    """0 is greedy (argmax); otherwise logits are divided by it before sampling."""
    top_p: float = 1.0
    """Nucleus sampling (Holtzman et al. 2020): the smallest set reaching this probability."""
    seed: int | None = None
    """Seeds this sequence's own random generator (None: fresh entropy)."""
    stop: tuple[str, ...] = ()
    """Stop strings: the text is cut just before the first one that appears."""
    stop_ids: frozenset[int] = frozenset()
    """Token ids that end the sequence (end of text, end of turn); their text is not returned."""
    logprobs: int | None = None
    """Report each new token's log-probability and this many top alternatives (None: none)."""
    prompt_logprobs: bool = False
    """Also report the prompt tokens' log-probabilities (``echo`` with ``logprobs``)."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token already generated (OpenAI's definition)."""
    frequency_penalty: float = 0.0
    """Subtracted from a token's logit once per time it was already generated."""


@dataclass
class TokenLogprob:
    """One token with its log-probability under the model and the most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Event:
    """What the engine tells a sequence's owner: ``kind`` is ``"prompt"`` (the prompt's
    logprobs, first entry None), ``"token"`` (a new token and the text that became final, maybe
    empty) or ``"finish"`` (``finish_reason``: stop, length, cancelled or error)."""

    kind: str
    text: str = ""
    token: TokenLogprob | None = None
    prompt: list[TokenLogprob | None] | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass(eq=False)
class Sequence:
    """One generation (one choice of one request) as the engine tracks it."""

    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Event], None] = lambda event: None
    output: list[int] = field(default_factory=list)
    """Generated ids (a stop id excluded)."""
    text: str = ""
    """The decoded output, cut before a stop string once one appears."""
    emitted: int = 0
    """How many characters of :attr:`text` were sent."""
    finish_reason: str | None = None
    cancelled: bool = False
    """Set (from any thread) by :meth:`Engine.cancel`; the next iteration drops the sequence."""
    length: int = 0
    """Positions of this sequence in its cache row."""
    next_token: int = -1
    """The sampled token the next decoding step feeds."""
    times: dict[str, float] = field(default_factory=dict)
    """``submitted``, ``admitted``, ``first_token``, ``finished`` (``time.perf_counter``)."""
    generator: torch.Generator | None = None


# --8<-- [start:engine]
class Engine:
    """Decode many requests at once with continuous batching.

    Args:
        model: A decoder-only transformer (GPT, Llama, Mixtral, ...) in eval mode.
        tokenizer: Decodes new tokens into text (for streaming and stop strings).
        slots: Rows of the KV cache: the most sequences decoded together.
        max_len: Positions per row, the longest prompt + completion (default: the model's
            context, at most 4,096).
        max_waiting: Sequences that may wait while every row is taken; more is
            :class:`QueueFullError`.
        max_prefill_tokens: Prompt tokens (padding included) prefilled per iteration (at
            least one prompt).

    Raises:
        ConfigError: a model without a KV cache (a recurrent model), or bad sizes.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        *,
        slots: int = 16,
        max_len: int | None = None,
        max_waiting: int = 256,
        max_prefill_tokens: int = 512,
    ) -> None:
        if slots < 1 or max_waiting < 0 or max_prefill_tokens < 1:
            raise ConfigError("slots and max_prefill_tokens must be >= 1, max_waiting >= 0")
        context = max_seq_len(cast(CausalLM, model))
        max_len = min(context, 4096) if max_len is None else max_len
        if not 1 <= max_len <= context:
            raise ConfigError(f"max_len must be between 1 and the model's context {context}")
        storage = cast(CausalLM, model).new_kv_cache(slots, max_len)
        if not isinstance(storage, KVCache):
            raise ConfigError(
                f"{type(model).__name__} has no KV cache (a recurrent model): serving needs a "
                "decoder-only transformer"
            )
        self.model, self.tokenizer = model, tokenizer
        self.cache = SlotKVCache(storage)
        self.vocab = vocab_size(cast(CausalLM, model))
        self.max_len, self.max_waiting = max_len, max_waiting
        self.max_prefill_tokens = max_prefill_tokens
        self.device = next(model.parameters()).device
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # running[b] owns cache row b
        self.timeline: deque[dict[str, float]] = deque(maxlen=100_000)
        """One record per iteration: time, prefill tokens, decode batch, waiting, seconds."""
        self.finished: deque[dict[str, float]] = deque(maxlen=100_000)
        """One record per finished sequence: its ``times``, prompt and completion tokens."""
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- what callers do --------------------------------------------------------------------

    def check(self, prompt: list[int], max_tokens: int) -> None:
        """Raise :class:`~groundwork.errors.ConfigError` for a prompt this engine cannot run."""
        if not prompt:
            raise ConfigError("the prompt is empty: give at least one token")
        bad = [t for t in prompt if not 0 <= t < self.vocab]
        if bad:
            raise ConfigError(
                f"the prompt holds token id {bad[0]}, outside the vocabulary 0..{self.vocab - 1}"
            )
        if len(prompt) + max_tokens > self.max_len:
            raise ConfigError(
                f"this model's maximum context length is {self.max_len} tokens; however you "
                f"requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the prompt, "
                f"{max_tokens} for the completion): shorten the prompt or lower max_tokens"
            )

    def submit(self, sequences: list[Sequence]) -> None:
        """Queue ``sequences`` (all or none). Raises :class:`QueueFullError` when the queue
        would hold more than ``max_waiting``."""
        for seq in sequences:
            self.check(seq.prompt, seq.params.max_tokens)
        with self._cond:
            free = self.cache.slots - len(self.running)
            if len(self.waiting) + len(sequences) > self.max_waiting + free:
                raise QueueFullError(
                    f"the server is busy: every slot is taken and {len(self.waiting)} "
                    f"requests are waiting (limit {self.max_waiting}); retry later"
                )
            now = time.perf_counter()
            for seq in sequences:
                seq.times["submitted"] = now
                seed = seq.params.seed
                seq.generator = torch.Generator(self.device)
                if seed is None:
                    seq.generator.seed()
                else:
                    seq.generator.manual_seed(seed)
                self.waiting.append(seq)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """Stop ``seq`` (its client went away); its row is freed at the next iteration."""
        seq.cancelled = True
        with self._cond:
            self._cond.notify()

    def start(self) -> None:
        """Run :meth:`step` in a background thread until :meth:`stop`."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (sequences still running are cancelled)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for seq in [*self.running, *self.waiting]:
            seq.cancelled = True
        self._drop_cancelled()

    @property
    def busy(self) -> bool:
        """Whether any sequence is running or waiting."""
        return bool(self.running or self.waiting)

    def run_until_idle(self) -> None:
        """Step until every submitted sequence has finished (without the thread)."""
        with torch.inference_mode():
            while self.busy:
                self.step()

    # -- one iteration ----------------------------------------------------------------------

    def step(self) -> None:
        """One iteration: drop cancelled sequences, admit and prefill, one decoding step."""
        start = time.perf_counter()
        self._drop_cancelled()
        admitted: list[Sequence] = []
        with self._cond:
            free = self.cache.slots - len(self.running)
            longest = 0
            while self.waiting and len(admitted) < free:
                longest = max(longest, len(self.waiting[0].prompt))
                if admitted and longest * (len(admitted) + 1) > self.max_prefill_tokens:
                    break  # the padded batch would exceed the budget: next iteration
                admitted.append(self.waiting.popleft())
        if admitted:
            self._prefill(admitted)
        batch = len(self.running)
        if self.running:
            self._decode()
        self.timeline.append(
            {
                "time": start,
                "prefill_tokens": sum(len(s.prompt) for s in admitted),
                "decode_batch": batch,
                "waiting": len(self.waiting),
                "seconds": time.perf_counter() - start,
            }
        )

    def _prefill(self, seqs: list[Sequence]) -> None:
        """Run the prompts of ``seqs`` into the next free rows as one right-padded batch; each
        one's first token comes from the logits at its last prompt token.

        Right padding needs no mask: causal attention never lets a real token see the padding
        after it. The padding's keys and values land past each row's length, where decoding
        overwrites them or the mask hides them.
        """
        now = time.perf_counter()
        first = len(self.running)
        lengths = [len(s.prompt) for s in seqs]
        ids = torch.zeros((len(seqs), max(lengths)), dtype=torch.long)  # (B, T), 0-padded
        for b, seq in enumerate(seqs):
            ids[b, : lengths[b]] = torch.tensor(seq.prompt)
            seq.times["admitted"] = now
        ids = ids.to(self.device)
        logits = self.model(ids, kv_cache=self.cache.prefill(first, len(seqs)))  # (B, T, V)
        for b, seq in enumerate(seqs):
            seq.length = lengths[b]
            self.running.append(seq)
        for b, seq in enumerate(seqs):
            if seq.params.prompt_logprobs:
                self._prompt_logprobs(seq, logits[b, : lengths[b]])
        for b, seq in enumerate(seqs):
            if seq.params.max_tokens == 0:
                self._finish(seq, "length")
            else:
                self._accept(seq, logits[b, lengths[b] - 1])

    def _prompt_logprobs(self, seq: Sequence, logits: torch.Tensor) -> None:
        """Send the log-probability of each prompt token given the ones before it."""
        ids = torch.tensor(seq.prompt, device=logits.device)
        logp = logits[:-1].float().log_softmax(-1)  # (T-1, V): predicts tokens 1..T-1
        k = max(seq.params.logprobs or 0, 1)
        top_lp, top_id = logp.topk(k, dim=-1)  # (T-1, k)
        chosen = logp.gather(1, ids[1:, None])[:, 0]  # (T-1,)
        entries: list[TokenLogprob | None] = [None]
        for i, token in enumerate(seq.prompt[1:]):
            top = list(zip(top_id[i].tolist(), top_lp[i].tolist(), strict=True))
            entries.append(TokenLogprob(token, float(chosen[i]), top))
        seq.emit(Event("prompt", prompt=entries))

    def _decode(self) -> None:
        """One token for every running sequence, as one batch."""
        seqs = list(self.running)
        positions = torch.tensor([s.length for s in seqs], device=self.device)  # (B,)
        inputs = torch.tensor([[s.next_token] for s in seqs], device=self.device)  # (B, 1)
        view, mask = self.cache.decode(positions)
        logits = self.model(
            inputs, attention_mask=mask, position_ids=positions[:, None], kv_cache=view
        )[:, -1]  # (B, V)
        for seq in seqs:  # every row holds one more position (before any row moves)
            seq.length += 1
        for seq, row in zip(seqs, logits, strict=True):
            self._accept(seq, row)

    # --8<-- [end:engine]

    def _accept(self, seq: Sequence, logits: torch.Tensor) -> None:
        """Sample ``seq``'s next token from ``logits`` ``(V,)``, stream it, maybe finish."""
        token, info = self._sample(seq, logits)
        if "first_token" not in seq.times:
            seq.times["first_token"] = time.perf_counter()
        p = seq.params
        if token in p.stop_ids:
            self._finish(seq, "stop")
            return
        seq.output.append(token)
        seq.next_token = token
        seq.text = self.tokenizer.decode(seq.output)
        cut = find_stop(seq.text, p.stop, start=seq.emitted)  # held-back text starts no earlier
        if cut is not None:  # a stop string is complete: send what precedes it, then stop
            seq.text = seq.text[:cut]
            seq.emit(Event("token", text=seq.text[seq.emitted :], token=info))
            seq.emitted = len(seq.text)
            self._finish(seq, "stop")
            return
        stable = seq.text.rstrip(REPLACEMENT)  # hold back an unfinished character ...
        final = len(stable) - partial_stop_len(stable, p.stop)  # ... and the start of a stop
        piece = seq.text[seq.emitted : final] if final > seq.emitted else ""
        seq.emitted += len(piece)
        if len(seq.output) >= p.max_tokens:
            piece += seq.text[seq.emitted :]  # the end: what was held back is final now
            seq.emitted = len(seq.text)
            seq.emit(Event("token", text=piece, token=info))
            self._finish(seq, "length")
            return
        seq.emit(Event("token", text=piece, token=info))

    def _sample(self, seq: Sequence, logits: torch.Tensor) -> tuple[int, TokenLogprob | None]:
        """The next token of ``seq`` and, if asked, its log-probability under the model (the
        raw distribution, before penalties, temperature and top-p) with the top alternatives."""
        p = seq.params
        logits = logits.float()
        adjusted = logits
        if seq.output and (p.presence_penalty or p.frequency_penalty):
            counts = torch.bincount(
                torch.tensor(seq.output, device=logits.device), minlength=logits.shape[0]
            ).to(logits.dtype)  # (V,)
            adjusted = logits - p.frequency_penalty * counts - p.presence_penalty * (counts > 0)
        if p.temperature == 0:
            token = int(adjusted.argmax())
        else:
            scaled = adjusted / p.temperature
            if p.top_p < 1.0:
                scaled = top_p_filter(scaled[None], p.top_p)[0]
            probs = scaled.softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=seq.generator))
        if p.logprobs is None:
            return token, None
        logp = logits.log_softmax(-1)
        top_lp, top_id = logp.topk(max(p.logprobs, 1))
        top = list(zip(top_id.tolist(), top_lp.tolist(), strict=True))[: p.logprobs]
        return token, TokenLogprob(token, float(logp[token]), top)

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        """Retire ``seq``: move the last running row into its row, tell its owner."""
        if seq in self.running:
            row = self.running.index(seq)
            last = self.running.pop()
            if last is not seq:
                self.cache.move(len(self.running), row, last.length)
                self.running[row] = last
        seq.finish_reason = reason
        seq.times["finished"] = time.perf_counter()
        self.finished.append(
            {**seq.times, "prompt_tokens": len(seq.prompt), "completion_tokens": len(seq.output)}
        )
        seq.emit(Event("finish", finish_reason=reason, error=error))

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.running if s.cancelled]:
            self._finish(seq, "cancelled")
        with self._cond:
            gone = [s for s in self.waiting if s.cancelled]
            for seq in gone:
                self.waiting.remove(seq)
        for seq in gone:
            seq.finish_reason = "cancelled"
            seq.emit(Event("finish", finish_reason="cancelled"))

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._stopping or self.running or self.waiting):
                        self._cond.wait()
                    if self._stopping:
                        return
                try:
                    self.step()
                except Exception as error:  # a bug must not leave clients hanging forever
                    traceback.print_exc()
                    message = f"internal error while decoding: {type(error).__name__}: {error}"
                    for seq in list(self.running):
                        self._finish(seq, "error", message)
                    with self._cond:
                        waiting, self.waiting = list(self.waiting), deque()
                    for seq in waiting:
                        seq.finish_reason = "error"
                        seq.emit(Event("finish", finish_reason="error", error=message))
