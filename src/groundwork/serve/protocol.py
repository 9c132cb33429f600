"""The OpenAI API's request and response shapes, as the server speaks them.

Requests are pydantic models, so a wrong type or an out-of-range number is refused before
anything runs, with the field named (OpenAI's limits: ``temperature`` in [0, 2], ``top_p`` in
(0, 1], at most 4 stop strings, ``logprobs`` up to 5 for completions and ``top_logprobs`` up to
20 for chat). Fields the API has and this server does not implement (``logit_bias``,
``suffix``, ``best_of`` other than ``n``, tools) are refused by name rather than ignored; fields
it does not know are ignored, as vLLM does, so newer clients keep working.

Errors have OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``
(:func:`error_body`). Chapter 10 (Decoding), section "Serving".
"""

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from groundwork.serve.engine import TokenLogprob

MAX_N = 16
"""The most choices one request may ask for."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> "_Request":
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by this server")
        if self.stop is not None and len(self.stop_strings) > 4:
            raise ValueError("stop: at most 4 stop sequences")
        if any(not s for s in self.stop_strings):
            raise ValueError("stop: a stop sequence may not be empty")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_supported(self) -> "CompletionRequest":
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by this server")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported by this server (use n)")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt: the list of prompts is empty")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per entry of a batch: text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class ChatMessage(BaseModel):
    """One message; ``content`` may be text or OpenAI's list of ``{"type": "text"}`` parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"message content of type {part.get('type')!r} is not supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _chat_supported(self) -> "ChatCompletionRequest":
        if self.tools:
            raise ValueError("tools (function calling) are not supported by this server")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class APIError(Exception):
    """An error answered with OpenAI's body and ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type, param, code)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One sentence for the first problem pydantic found, and the field it concerns."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}", None
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    loc = [x for x in loc if not x.startswith(("function-", "list[", "str", "int"))]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return (f"{param}: {message}" if param else message), param


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class TokenText:
    """Token ids as the strings and bytes logprobs objects show."""

    def __init__(self, decode: Any) -> None:
        self.decode = decode

    def text(self, token_id: int) -> str:
        """One token's text on its own."""
        return str(self.decode([token_id]))

    def completion_logprobs(
        self, ids: list[int], entries: list[TokenLogprob | None], offset: int = 0
    ) -> dict[str, Any]:
        """The legacy completions ``logprobs`` object for tokens ``ids``: ``tokens``,
        ``token_logprobs``, ``top_logprobs`` (``{token: logprob}``) and ``text_offset``
        (characters from the start of the returned text); an entry of ``None`` (the first
        prompt token, which nothing predicts) gives ``null`` logprobs."""
        out: dict[str, list[Any]] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for token_id, entry in zip(ids, entries, strict=True):
            text = self.text(token_id)
            out["tokens"].append(text)
            out["token_logprobs"].append(None if entry is None else entry.logprob)
            top = None if entry is None else {self.text(t): lp for t, lp in entry.top}
            out["top_logprobs"].append(top)
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    def chat_logprob(self, entry: TokenLogprob) -> dict[str, Any]:
        """One entry of the chat ``logprobs.content`` list."""
        text = self.text(entry.token_id)
        return {
            "token": text,
            "logprob": entry.logprob,
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [
                {"token": (t := self.text(i)), "logprob": lp, "bytes": list(t.encode("utf-8"))}
                for i, lp in entry.top
            ],
        }
