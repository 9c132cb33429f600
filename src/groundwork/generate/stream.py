r"""Streaming text out of a decoder as it is generated, with stop strings.

Tokens are not characters. A byte-level BPE tokenizer (GPT-2, SmolLM2) may split one UTF-8
character across two tokens: "é" is the bytes ``C3 A9`` and can arrive as two tokens, the first of
which alone decodes to the replacement character U+FFFD. So :func:`stream` never decodes token by
token; it decodes *all* new ids so far and emits only the part of the text that is new and final:

* while the text ends in U+FFFD (an unfinished character), the tail is held back;
* while the text ends with the beginning of a stop string (``"\n\nUs"`` of ``"\n\nUser:"``), that
  part is held back too, since the next token may complete the stop string, which is never shown.

Sampling itself is :func:`~groundwork.generate.decode.decode_steps` (KV cache, the strategies of
:mod:`~groundwork.generate.processors`: Holtzman et al. 2020, Fan et al. 2018, Keskar et al. 2019,
Nguyen et al. 2024). Chapter 10 (Decoding) of the docs.
"""

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import decode_steps, generate
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer

REPLACEMENT = "\ufffd"
"""What ``bytes.decode("utf-8", errors="replace")`` gives for an unfinished character."""


# --8<-- [start:stream_helpers]
def find_stop(text: str, stop_strings: Sequence[str], start: int = 0) -> int | None:
    """Index of the earliest stop string in ``text[start:]`` (as an index into ``text``), or None.

    >>> find_stop("Hi!\\nUser: x", ["User:", "\\n"])
    3
    """
    found = [i for s in stop_strings if (i := text.find(s, start)) >= 0]
    return min(found) if found else None


def partial_stop_len(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a stop string.

    >>> partial_stop_len("Hello\\nUs", ["\\nUser:"])
    3
    """
    longest = 0
    for s in stop_strings:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


# --8<-- [end:stream_helpers]


def check_stop_strings(tokenizer: Tokenizer, stop_strings: Sequence[str]) -> None:
    """Refuse a stop string the tokenizer can never produce (one that does not survive
    encode/decode, e.g. a character outside a character tokenizer's vocabulary).

    Raises:
        ConfigError: naming the stop string.
    """
    for stop in stop_strings:
        if tokenizer.decode(tokenizer.encode(stop)) != stop:
            raise ConfigError(
                f"the stop string {stop!r} can never be generated: this tokenizer cannot "
                "produce it (it does not survive encode/decode); remove it or change it"
            )


# --8<-- [start:stream]
def stream(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    config: GenerationConfig,
    *,
    stop_at_eot: bool = True,
    steps: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Iterator[str]:
    """Generate a continuation of ``prompt_ids``, yielding text as soon as it is final.

    The pieces joined equal the decoded new tokens, cut just before the first stop string; no
    piece contains half a character. Generation ends at ``config.max_new_tokens``, at a stop
    string, or at a stop id (``config.stop_ids``, and the tokenizer's end-of-text id when
    ``stop_at_eot``); a stop id's own text is not yielded.

    Args:
        model: A ``GPT`` or ``Llama`` (see :func:`~groundwork.generate.decode.generate`).
        tokenizer: Decodes the new ids.
        prompt_ids: The prompt's token ids (at least one).
        config: Decoding settings, including ``stop_strings`` and ``stop_ids``.
        stop_at_eot: Also stop at ``tokenizer.eot_id``.
        steps: The decoding steps to stream, ``(next_ids (1,), logits)`` pairs for
            ``prompt_ids`` and ``config`` (default:
            :func:`~groundwork.generate.decode.decode_steps` of ``model``); for instance a
            :class:`~groundwork.generate.static.StaticDecoder`'s :meth:`steps`.

    Yields:
        Consecutive pieces of the generated text (never empty).

    Raises:
        ConfigError: as :func:`~groundwork.generate.decode.generate` (empty or too long prompt),
            or a stop string this tokenizer can never produce.
    """
    check_stop_strings(tokenizer, config.stop_strings)
    stop_ids = set(config.stop_ids)
    if stop_at_eot and tokenizer.eot_id is not None:
        stop_ids.add(tokenizer.eot_id)
    new_ids: list[int] = []
    text, emitted = "", 0  # the decoded new ids; how many of its characters were yielded
    if steps is None:
        steps = decode_steps(model, [prompt_ids], config)
    for next_ids, _ in steps:
        token = int(next_ids[0])  # one host sync per token: streaming needs each token now
        if token in stop_ids:
            break
        new_ids.append(token)
        text = tokenizer.decode(new_ids)
        cut = find_stop(text, config.stop_strings, start=emitted)
        if cut is not None:  # a stop string is complete: show what precedes it, then stop
            if cut > emitted:
                yield text[emitted:cut]
            return
        stable = text.rstrip(REPLACEMENT)  # hold back an unfinished character ...
        final = len(stable) - partial_stop_len(stable, config.stop_strings)  # ... and "\nUs"
        if final > emitted:
            yield text[emitted:final]
            emitted = final
    if len(text) > emitted:  # the end: what was held back is final now
        yield text[emitted:]


# --8<-- [end:stream]


def generate_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    config: GenerationConfig,
    *,
    stop_at_eot: bool = True,
) -> str:
    """Encode ``prompt``, generate, and return the new text (cut before any stop string).

    Args:
        model: A ``GPT`` or ``Llama``.
        tokenizer: Encodes the prompt and decodes the continuation.
        prompt: The text to continue (not empty).
        config: Decoding settings.
        stop_at_eot: Also stop at ``tokenizer.eot_id``.

    Example:
        >>> import groundwork  # doctest: +SKIP
        >>> pre = groundwork.load("smollm2-135m-instruct")  # doctest: +SKIP
        >>> generate_text(pre.model, pre.tokenizer, "The capital of France is",
        ...               GenerationConfig(max_new_tokens=5, temperature=0))  # doctest: +SKIP
        ' Paris. It is the'
    """
    prompt_ids = tokenizer.encode(prompt)
    return "".join(stream(model, tokenizer, prompt_ids, config, stop_at_eot=stop_at_eot))


def end_of_turn_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids that end a text or a chat turn: the tokenizer's end of text and, where it has them,
    ``<|im_end|>`` (ChatML), ``<|eot_id|>`` (Llama 3), ``<end_of_turn>`` (Gemma)."""
    ends = {tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")}
    ends.add(tokenizer.eot_id)
    return {i for i in ends if i is not None}


# --8<-- [start:generate_texts]
def generate_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    *,
    batch_size: int = 8,
    stop_at_eot: bool = True,
) -> list[str]:
    """Continue many prompts, ``batch_size`` at a time; each text cut before any stop string.

    The batched counterpart of :func:`generate_text` for evaluation loops (few-shot answers,
    sampled reasoning paths, retrieve-then-read): one left-padded forward pass per step for a
    whole batch (:func:`~groundwork.generate.decode.generate`). With sampling and a
    ``config.seed``, batch ``i`` is sampled with seed ``config.seed + i``, so results do not
    depend on what else runs in the process.

    Args:
        model: A ``GPT`` or ``Llama``.
        tokenizer: Encodes the prompts and decodes the continuations.
        prompts: The texts to continue (none empty).
        config: Decoding settings, including ``stop_strings``.
        batch_size: Prompts per batch.
        stop_at_eot: Also stop at the end of a text or of a chat turn
            (:func:`end_of_turn_ids`; its text is not returned).

    Returns:
        One continuation per prompt, in order.

    Raises:
        ConfigError: ``batch_size < 1``, a stop string the tokenizer cannot produce, or a
            prompt :func:`~groundwork.generate.decode.generate` refuses (empty, too long).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    check_stop_strings(tokenizer, config.stop_strings)
    eos = sorted(end_of_turn_ids(tokenizer)) if stop_at_eot else []
    ends = {*config.stop_ids, *eos}
    texts: list[str] = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        batch = [tokenizer.encode(p) for p in prompts[start : start + batch_size]]
        cfg = config
        if config.seed is not None:
            cfg = dataclasses.replace(config, seed=config.seed + b)
        with eval_mode(model), torch.no_grad():
            out = generate(model, batch, cfg, eos_ids=eos, decode=tokenizer.decode)
        for seq in out.sequences:
            text = tokenizer.decode([t for t in seq if t not in ends])
            cut = find_stop(text, config.stop_strings)
            texts.append(text if cut is None else text[:cut])
    return texts


# --8<-- [end:generate_texts]
