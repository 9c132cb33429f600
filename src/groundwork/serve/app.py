r"""An OpenAI-compatible HTTP server (FastAPI) in front of the continuous-batching engine.

Endpoints, with the request and response bodies of OpenAI's API (so the ``openai`` client,
lm-evaluation-harness' ``local-completions`` and other tools work unchanged):

* ``GET /v1/models``, ``GET /v1/models/{id}``: the one model served;
* ``POST /v1/completions``: text or token-id prompts (a batch of them too), ``max_tokens``,
  ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, penalties, ``logprobs`` and ``echo``
  (the prompt's own token log-probabilities, what a log-likelihood evaluation needs);
* ``POST /v1/chat/completions``: the model's chat template, ``logprobs``/``top_logprobs``;
* ``stream: true`` on either: server-sent events, one ``data: {chunk}`` per token, then
  ``data: [DONE]``; a client that disconnects has its sequence cancelled and its KV-cache row
  freed at the next decoding iteration;
* vLLM's ``GET /tokenizer_info``, ``POST /tokenize`` and ``POST /detokenize``, which
  lm-evaluation-harness uses to tokenize with the server's own tokenizer;
* ``GET /health``, and ``GET /``: the playground page (:mod:`groundwork.serve`'s
  ``playground.html``).

Every error is OpenAI's JSON body with a 4xx status (400 bad request, 404 unknown model or
route, 429 queue full), and a 500 never carries a traceback. Chapter 10 (Decoding), section
"Serving".
"""

import asyncio
import contextlib
import importlib.resources
import json
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from groundwork.errors import ConfigError
from groundwork.generate.chat import render_chat
from groundwork.generate.stream import end_of_turn_ids
from groundwork.serve.engine import Engine, Event, QueueFullError, SamplingParams, Sequence
from groundwork.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    TokenText,
    error_body,
    usage,
    validation_message,
)

DISCONNECT_POLL = 0.5
"""Seconds between checks that the client of a non-streamed request is still there."""


class _Stream:
    """The events of a request's sequences, delivered from the engine thread to asyncio."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    def emitter(self, index: int) -> Any:
        def emit(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return emit


def create_app(
    engine: Engine,
    *,
    model_name: str,
    chat_template: str | None = None,
) -> FastAPI:
    """The FastAPI application serving ``engine``'s model as ``model_name``.

    The engine's thread starts with the application and stops with it.
    """
    tokenizer = engine.tokenizer
    tokens = TokenText(tokenizer.decode)
    created = int(time.time())
    eot = tokenizer.eot_id
    eot_text = None if eot is None else tokenizer.decode([eot])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="Groundwork", lifespan=lifespan, docs_url="/docs", redoc_url=None)

    # -- errors as OpenAI writes them -------------------------------------------------------

    def _json_error(error: APIError) -> JSONResponse:
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return _json_error(APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}"
            return _json_error(APIError(404, message, code="not_found"))
        return _json_error(APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        traceback.print_exc()  # for the server's log, never for the client
        message = f"internal server error ({type(exc).__name__}); the server log has details"
        return _json_error(APIError(500, message, type="server_error"))

    # -- helpers ----------------------------------------------------------------------------

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(
                404,
                f"the model {name!r} does not exist: this server serves {model_name!r}",
                param="model",
                code="model_not_found",
            )

    def encode(prompt: str | list[int]) -> list[int]:
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        return ids

    def submit(seqs: list[Sequence]) -> None:
        try:
            engine.submit(seqs)
        except QueueFullError as e:
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full") from e
        except ConfigError as e:
            code = "context_length_exceeded" if "context length" in str(e) else None
            raise APIError(400, str(e), code=code) from e

    def cancel_unfinished(seqs: list[Sequence]) -> None:
        for seq in seqs:
            if seq.finish_reason is None:
                engine.cancel(seq)

    async def collect(request: Request, stream: _Stream, seqs: list[Sequence]) -> list[list[Event]]:
        """Every event of every sequence (a non-streamed request), cancelling if the client
        goes away."""
        events: list[list[Event]] = [[] for _ in seqs]
        remaining = len(seqs)
        try:
            while remaining:
                try:
                    index, event = await asyncio.wait_for(stream.queue.get(), DISCONNECT_POLL)
                except TimeoutError:
                    if await request.is_disconnected():  # nobody will read the answer
                        raise APIError(499, "the client closed the request") from None
                    continue
                events[index].append(event)
                if event.kind == "finish":
                    remaining -= 1
                    if event.finish_reason == "error":
                        raise APIError(500, event.error or "error", type="server_error")
        finally:
            cancel_unfinished(seqs)
        return events

    def sse(payload: dict[str, Any] | str) -> str:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        return f"data: {data}\n\n"

    def sampling(
        req: CompletionRequest | ChatCompletionRequest,
        max_tokens: int,
        stop_ids: set[int],
        logprobs: int | None,
        prompt_logprobs: bool,
        choice: int,
    ) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=None if req.seed is None else req.seed + choice,
            stop=req.stop_strings,
            stop_ids=frozenset(stop_ids),
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
        )

    # -- endpoints --------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "running": len(engine.running),
            "waiting": len(engine.waiting),
        }

    def model_card() -> dict[str, Any]:
        return {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "groundwork",
            "max_model_len": engine.max_len,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        check_model(name)
        return model_card()

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        return {
            "eos_token": eot_text,
            "bos_token": None,
            "pad_token": None,
            "chat_template": chat_template,
            "model_max_length": engine.max_len,
        }

    @app.post("/tokenize")
    async def tokenize(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise APIError(400, "prompt: a string is required", param="prompt")
        ids = tokenizer.encode(prompt)
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.max_len}

    @app.post("/detokenize")
    async def detokenize(body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            raise APIError(400, "tokens: a list of token ids is required", param="tokens")
        if any(not 0 <= t < engine.vocab for t in ids):
            raise APIError(400, f"tokens: ids must be in 0..{engine.vocab - 1}", param="tokens")
        return {"prompt": tokenizer.decode(ids)}

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        page = importlib.resources.files("groundwork.serve").joinpath("playground.html")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.post("/v1/completions", response_model=None)
    async def completions(req: CompletionRequest, request: Request) -> Response | dict[str, Any]:
        check_model(req.model)
        prompts = [encode(p) for p in req.prompts()]
        texts = [p if isinstance(p, str) else None for p in req.prompts()]
        stream = _Stream(asyncio.get_running_loop())
        seqs: list[Sequence] = []
        for i, ids in enumerate(prompts):
            max_tokens = req.max_tokens if req.max_tokens is not None else 16
            for j in range(req.n):
                params = sampling(
                    req,
                    max_tokens,
                    set() if eot is None else {eot},
                    req.logprobs,
                    req.echo and req.logprobs is not None,
                    j,
                )
                seqs.append(Sequence(ids, params, emit=stream.emitter(i * req.n + j)))
        submit(seqs)
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def prompt_text(i: int) -> str:
            text = texts[i // req.n]
            return text if text is not None else tokenizer.decode(seqs[i].prompt)

        def chunk(index: int, text: str, logprobs: Any, finish: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": now,
                "model": model_name,
                "choices": [
                    {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
                ],
            }

        if req.stream:

            async def sse_stream() -> AsyncIterator[str]:
                remaining, offsets = len(seqs), [0] * len(seqs)
                try:
                    while remaining:
                        index, event = await stream.queue.get()
                        seq = seqs[index]
                        if event.kind == "prompt" and event.prompt is not None:
                            lp = tokens.completion_logprobs(seq.prompt, event.prompt)
                            text = prompt_text(index)
                            offsets[index] = len(text)
                            yield sse(chunk(index, text, lp, None))
                        elif event.kind == "token":
                            lp = None
                            if event.token is not None:
                                lp = tokens.completion_logprobs(
                                    [event.token.token_id], [event.token], offsets[index]
                                )
                                offsets[index] += len(tokens.text(event.token.token_id))
                            yield sse(chunk(index, event.text, lp, None))
                        elif event.kind == "finish":
                            remaining -= 1
                            if event.finish_reason == "error":
                                yield sse(error_body(event.error or "", "server_error"))
                                continue
                            yield sse(chunk(index, "", None, _finish(event)))
                    if req.include_usage:
                        yield sse(usage_chunk(rid, "text_completion", now, seqs))
                    yield sse("[DONE]")
                finally:
                    cancel_unfinished(seqs)

            return StreamingResponse(sse_stream(), media_type="text/event-stream")

        all_events = await collect(request, stream, seqs)
        choices = []
        for index, (seq, events) in enumerate(zip(seqs, all_events, strict=True)):
            text = "".join(e.text for e in events if e.kind == "token")
            prefix = prompt_text(index) if req.echo else ""
            logprobs = None
            if req.logprobs is not None:
                new = [e.token for e in events if e.kind == "token" and e.token is not None]
                ids = [t.token_id for t in new]
                entries: list[Any] = list(new)
                if req.echo:
                    prompt_entries = next(e.prompt for e in events if e.kind == "prompt")
                    ids, entries = seq.prompt + ids, [*(prompt_entries or []), *entries]
                logprobs = tokens.completion_logprobs(ids, entries)
            finish = next(e for e in events if e.kind == "finish")
            choices.append(
                {
                    "index": index,
                    "text": prefix + text,
                    "logprobs": logprobs,
                    "finish_reason": _finish(finish),
                }
            )
        return {
            "id": rid,
            "object": "text_completion",
            "created": now,
            "model": model_name,
            "choices": choices,
            "usage": _usage(seqs),
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        req: ChatCompletionRequest, request: Request
    ) -> Response | dict[str, Any]:
        check_model(req.model)
        if chat_template is None:
            raise APIError(
                400,
                f"{model_name} has no chat template: use /v1/completions, or start the server "
                "with --chat-template FILE",
                param="messages",
            )
        try:
            messages = [
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in req.messages
            ]
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from e
        try:
            rendered = render_chat(chat_template, messages, eos_token=eot_text)
        except ConfigError as e:
            raise APIError(400, str(e), param="messages") from e
        ids = encode(rendered)
        requested = req.max_completion_tokens or req.max_tokens
        max_tokens = requested if requested is not None else max(engine.max_len - len(ids), 1)
        top = (req.top_logprobs or 0) if req.logprobs else None
        stream = _Stream(asyncio.get_running_loop())
        ends = end_of_turn_ids(tokenizer)
        seqs = [
            Sequence(ids, sampling(req, max_tokens, ends, top, False, j), emit=stream.emitter(j))
            for j in range(req.n)
        ]
        submit(seqs)
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(index: int, delta: dict[str, Any], logprobs: Any, finish: str | None) -> dict:
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": now,
                "model": model_name,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": logprobs,
                        "finish_reason": finish,
                    }
                ],
            }

        if req.stream:

            async def sse_stream() -> AsyncIterator[str]:
                remaining = len(seqs)
                try:
                    for index in range(len(seqs)):
                        yield sse(chunk(index, {"role": "assistant", "content": ""}, None, None))
                    while remaining:
                        index, event = await stream.queue.get()
                        if event.kind == "token":
                            lp = None
                            if event.token is not None:
                                lp = {"content": [tokens.chat_logprob(event.token)]}
                            if event.text or lp is not None:
                                yield sse(chunk(index, {"content": event.text}, lp, None))
                        elif event.kind == "finish":
                            remaining -= 1
                            if event.finish_reason == "error":
                                yield sse(error_body(event.error or "", "server_error"))
                                continue
                            yield sse(chunk(index, {}, None, _finish(event)))
                    if req.include_usage:
                        yield sse(usage_chunk(rid, "chat.completion.chunk", now, seqs))
                    yield sse("[DONE]")
                finally:
                    cancel_unfinished(seqs)

            return StreamingResponse(sse_stream(), media_type="text/event-stream")

        all_events = await collect(request, stream, seqs)
        choices = []
        for index, events in enumerate(all_events):
            text = "".join(e.text for e in events if e.kind == "token")
            logprobs = None
            if req.logprobs:
                content = [
                    tokens.chat_logprob(e.token)
                    for e in events
                    if e.kind == "token" and e.token is not None
                ]
                logprobs = {"content": content}
            finish = next(e for e in events if e.kind == "finish")
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": _finish(finish),
                }
            )
        return {
            "id": rid,
            "object": "chat.completion",
            "created": now,
            "model": model_name,
            "choices": choices,
            "usage": _usage(seqs),
        }

    return app


def _finish(event: Event) -> str:
    """OpenAI's finish reasons are ``stop`` and ``length``."""
    return "length" if event.finish_reason == "length" else "stop"


def _usage(seqs: list[Sequence]) -> dict[str, int]:
    prompts = {id(s.prompt): len(s.prompt) for s in seqs}  # n choices share one prompt
    return usage(sum(prompts.values()), sum(len(s.output) for s in seqs))


def usage_chunk(rid: str, obj: str, created: int, seqs: list[Sequence]) -> dict[str, Any]:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, usage."""
    return {"id": rid, "object": obj, "created": created, "choices": [], "usage": _usage(seqs)}
