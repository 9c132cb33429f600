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

from collections.abc import Iterator, Sequence

from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import decode_steps
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
    for next_ids, _ in decode_steps(model, [prompt_ids], config):
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
