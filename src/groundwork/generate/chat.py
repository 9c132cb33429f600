r"""Chatting with a chat model: chat templates, a session with history, a terminal loop.

A chat model was fine-tuned on conversations written in one exact text format, its *chat
template*: SmolLM2 (like every ChatML model) wraps each message as

    <|im_start|>user
    What is the capital of France?<|im_end|>

and ends the prompt with ``<|im_start|>assistant\n`` so that the model's next tokens are the
assistant's reply, which it closes with ``<|im_end|>``. The template ships with the model as a small
Jinja program (in the GGUF metadata, or ``tokenizer_config.json`` on the Hugging Face Hub);
:func:`render_chat` runs it the way ``transformers``' ``apply_chat_template`` does, in a sandbox,
since templates are code downloaded from the internet.

:class:`ChatSession` keeps the conversation, renders it for every new message, streams the reply and
drops the oldest turns when the conversation outgrows the model's context. :func:`run_chat` is the
terminal loop behind ``groundwork chat``. Chapter 10 (Decoding), section "Chat templates".
"""

import dataclasses
import json
import sys
import types
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any, TextIO, Union, get_args, get_origin

from torch import nn

from groundwork.errors import ConfigError, GroundworkError, did_you_mean
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import context_window
from groundwork.generate.stream import end_of_turn_ids, stream
from groundwork.tokenize.base import Tokenizer

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


# --8<-- [start:render]
def _jinja_environment() -> Any:
    """A sandboxed Jinja environment with the helpers chat templates expect (as in transformers)."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:  # templates reject bad conversations with it
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, **kw)  # no HTML escaping

    def strftime_now(fmt: str) -> str:  # e.g. Llama 3 puts today's date in the system prompt
        return datetime.now().strftime(fmt)

    # trim_blocks/lstrip_blocks: a line holding only {% ... %} leaves no blank line behind.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    return env


def render_chat(
    template: str,
    messages: list[Message],
    *,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> str:
    """Render a conversation with a model's Jinja chat template.

    Args:
        template: The Jinja source (``groundwork.load(...).chat_template``).
        messages: ``[{"role": ..., "content": ...}, ...]``, oldest first.
        add_generation_prompt: End with the header that opens the assistant's turn
            (``<|im_start|>assistant\\n`` for ChatML), so the model's continuation is the reply.
        bos_token: Passed to the template as ``bos_token`` (templates that start with it need it).
        eos_token: Passed to the template as ``eos_token``.

    Example:
        >>> t = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\\n{% endfor %}"
        >>> render_chat(t, [{"role": "user", "content": "hi"}])
        '<user>hi\\n'

    Raises:
        ConfigError: the template is not valid Jinja or rejects the conversation.
    """
    import jinja2

    tokens = {"bos_token": bos_token, "eos_token": eos_token}
    try:
        compiled = _jinja_environment().from_string(template)
        return str(
            compiled.render(
                messages=[dict(m) for m in messages],  # copies: the template cannot edit ours
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **{name: value for name, value in tokens.items() if value is not None},
            )
        )
    except jinja2.TemplateError as e:
        raise ConfigError(f"chat template error: {e}") from e


# --8<-- [end:render]


CHAT_PARAMS = (
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop_strings",
)
"""The :class:`GenerationConfig` fields ``/params`` may change."""

HELP = """\
Commands:
  /reset                 forget the conversation (the system prompt stays)
  /system TEXT           set the system prompt (and forget the conversation)
  /params                show the decoding settings
  /params k=v [k=v ...]  change them, e.g. /params temperature=0.7 top_p=0.9 max_new_tokens=64
                         (settable: {params}; "none" unsets; stop_strings=a,b)
  /help                  this message
  /quit                  leave (so do Ctrl-D and Ctrl-C at the prompt)
Ctrl-C while the model answers stops the answer."""


def _parse_value(field: dataclasses.Field[Any], text: str) -> Any:
    """Turn ``text`` into a value of ``field``'s type (``int | None``, ``float``, ``tuple``...)."""
    kind = field.type
    options = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)
    if text.lower() in ("none", "null") and type(None) in options:
        return None
    for option in options:
        if get_origin(option) is tuple:
            return tuple(s for s in text.split(",") if s)
        if option is int:
            try:
                return int(text)
            except ValueError:
                continue
        if option is float:
            try:
                return float(text)
            except ValueError:
                continue
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{field.name} must be {names}, got {text!r}")


def parse_params(config: GenerationConfig, args: str) -> GenerationConfig:
    """A copy of ``config`` with ``key=value`` settings applied (and validated).

    Example:
        >>> parse_params(GenerationConfig(), "temperature=0.7 top_k=none").temperature
        0.7

    Raises:
        ConfigError: an unknown or unsettable key, a malformed value, or an invalid config.
    """
    fields = {f.name: f for f in dataclasses.fields(GenerationConfig)}
    updates: dict[str, Any] = {}
    for item in args.split():
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise ConfigError(f"expected key=value, got {item!r} (e.g. temperature=0.7)")
        if key not in CHAT_PARAMS:
            raise ConfigError(f"cannot set {key!r} in a chat: {did_you_mean(key, CHAT_PARAMS)}")
        updates[key] = _parse_value(fields[key], value)
    if not updates:
        raise ConfigError("give settings as key=value, e.g. /params temperature=0.7")
    return dataclasses.replace(config, **updates)  # __post_init__ validates the result


class ChatSession:
    """A conversation with a chat model: history, system prompt, decoding settings, commands.

    Args:
        model: A ``GPT`` or ``Llama`` (decoded, with a KV cache, by
            :func:`~groundwork.generate.stream.stream`).
        tokenizer: The model's tokenizer.
        template: Its Jinja chat template.
        config: Decoding settings (``/params`` replaces them).
        system: The system prompt; ``None`` leaves it to the template (SmolLM2 adds its own).
        max_seq_len: The model's context length (default: ``model.config.max_seq_len``; none
            for a recurrent model).
        notify: Called with messages for the user (e.g. that old turns were dropped).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        template: str,
        *,
        config: GenerationConfig,
        system: str | None = None,
        max_seq_len: int | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.config = config
        self.system = system
        if max_seq_len is None and model is not None:
            max_seq_len = context_window(model)
        self.max_seq_len: int | None = max_seq_len
        """The context the conversation must fit in (``None``: no limit)."""
        self.notify = notify or (lambda message: None)
        self.history: list[Message] = []
        """The user and assistant messages so far, oldest first (no system message)."""
        self.done = False
        """Set by ``/quit``."""
        self._told_about_dropping = False

    def messages(self) -> list[Message]:
        """The conversation as the template sees it: the system prompt (if any), then history."""
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return system + self.history

    def prompt_ids(self) -> list[int]:
        """Render and tokenize the conversation, dropping the oldest turns until it fits.

        It must leave ``max_new_tokens`` free: ``len(prompt) + max_new_tokens <= max_seq_len``.

        Raises:
            ConfigError: even the last message alone does not fit.
        """
        while True:
            ids = self.tokenizer.encode(render_chat(self.template, self.messages()))
            if self.max_seq_len is None:
                return ids
            budget = self.max_seq_len - self.config.max_new_tokens
            if len(ids) <= budget:
                return ids
            if len(self.history) <= 1:
                raise ConfigError(
                    f"the message takes {len(ids)} tokens but only {max(budget, 0)} fit "
                    f"(context {self.max_seq_len} minus max_new_tokens "
                    f"{self.config.max_new_tokens}): shorten it or lower max_new_tokens"
                )
            # Drop the oldest turn: a user message and the assistant's answer to it.
            drop = 2 if len(self.history) > 2 and self.history[1]["role"] == "assistant" else 1
            del self.history[:drop]
            if not self._told_about_dropping:
                self.notify(
                    "(the conversation no longer fits the context: dropping the oldest turns)"
                )
                self._told_about_dropping = True

    def send(self, user_text: str) -> Generator[str, None, None]:
        """Add a user message and stream the assistant's reply, piece by piece.

        The reply (or as much as was generated, if the caller stops early) joins the history
        when the iteration ends.
        """
        before = list(self.history)
        self.history.append({"role": "user", "content": user_text})
        try:
            ids = self.prompt_ids()
        except ConfigError:
            self.history = before  # a message that cannot fit changes nothing
            raise
        stop_ids = tuple(sorted(set(self.config.stop_ids) | end_of_turn_ids(self.tokenizer)))
        config = dataclasses.replace(self.config, stop_ids=stop_ids)  # stop at the turn's end
        pieces: list[str] = []
        try:
            for piece in stream(self.model, self.tokenizer, ids, config):
                pieces.append(piece)
                yield piece
        finally:  # also on Ctrl-C or close(): keep the partial answer
            self.history.append({"role": "assistant", "content": "".join(pieces)})

    def handle_command(self, line: str) -> str | None:
        """Run a ``/command``; return the text to show, or ``None`` if ``line`` is not one.

        Example:
            >>> session = ChatSession(None, None, "", config=GenerationConfig())
            >>> session.handle_command("/params max_new_tokens=0")
            'error: max_new_tokens must be a positive integer, got 0'
            >>> session.handle_command("hello") is None
            True
        """
        if not line.startswith("/"):
            return None
        name, _, args = line.strip().partition(" ")
        args = args.strip()
        if name == "/reset":
            self.history.clear()
            self._told_about_dropping = False
            return "(conversation cleared)"
        if name == "/system":
            self.system = args or None
            self.history.clear()
            if not args:
                return "(system prompt removed: the template's default applies; history cleared)"
            return f"(system prompt set: {args!r}; conversation cleared)"
        if name == "/params":
            if not args:
                return " ".join(f"{k}={getattr(self.config, k)}" for k in CHAT_PARAMS)
            try:
                self.config = parse_params(self.config, args)
            except GroundworkError as e:
                return f"error: {e}"
            return "(" + " ".join(f"{k}={getattr(self.config, k)}" for k in CHAT_PARAMS) + ")"
        if name == "/help":
            return HELP.format(params=", ".join(CHAT_PARAMS))
        if name in ("/quit", "/exit"):
            self.done = True
            return "bye"
        commands = ["/reset", "/system", "/params", "/help", "/quit"]
        return f"unknown command {name!r}: {did_you_mean(name, commands)} (/help lists them)"


# --8<-- [start:run_chat]
def run_chat(
    model: nn.Module,
    tokenizer: Tokenizer,
    template: str,
    *,
    config: GenerationConfig,
    system: str | None = None,
    input_fn: Callable[[str], str] = input,
    output: TextIO | None = None,
) -> None:
    """The terminal chat loop: read a line, run it as a command or answer it, repeat.

    Ctrl-C during an answer stops the answer and returns to the prompt; Ctrl-D (EOF), Ctrl-C at
    the prompt or ``/quit`` leaves.

    Args:
        model: The chat model.
        tokenizer: Its tokenizer.
        template: Its Jinja chat template.
        config: Decoding settings.
        system: An initial system prompt.
        input_fn: Reads a line after showing a prompt (``input``; tests pass a script).
        output: Where to write (default ``sys.stdout``).
    """
    out = output if output is not None else sys.stdout

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    session = ChatSession(model, tokenizer, template, config=config, system=system, notify=say)
    say("Chatting; /help lists the commands, /quit leaves.")
    while not session.done:
        try:
            line = input_fn("you> ")
        except (EOFError, KeyboardInterrupt):
            say("")
            return
        if not line.strip():
            continue
        reply = session.handle_command(line.strip())
        if reply is not None:
            say(reply)
            continue
        out.write("assistant> ")
        out.flush()
        answer = session.send(line)
        try:
            for piece in answer:
                out.write(piece)
                out.flush()
            say("")
        except KeyboardInterrupt:
            answer.close()  # keeps the partial answer in the history
            say(" [stopped]")
        except GroundworkError as e:
            say(f"\nerror: {e}")


# --8<-- [end:run_chat]


def main_for_test(max_new_tokens: int = 16) -> None:
    """``groundwork chat smollm2-135m-instruct`` with greedy decoding: for the terminal test."""
    import groundwork

    smol = groundwork.load("smollm2-135m-instruct")
    assert smol.chat_template is not None
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0)
    run_chat(smol.model, smol.tokenizer, smol.chat_template, config=config)
