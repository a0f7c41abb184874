"""The FastAPI application: routes, API key, body limits, and the request's way through.

    POST /v1/chat/completions   (streaming SSE or not; also /chat/completions)
    GET  /v1/models, /v1/models/{id}
    GET  /health                (open even with an API key)

A chat request goes: body read (size and time capped, JSON only) -> validated
(`protocol.py`) -> admitted (503 beyond --max-queue) -> images fetched/decoded and the
prompt tokenized in a small worker pool (prompt + max_tokens must fit the context) ->
queued for the batch scheduler -> answered. A client that disconnects cancels its request.
Every error is JSON in OpenAI's shape, never an HTML page, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ConfigError, GlmvAgentError
from .config import ServerConfig
from .images import ImagePolicy, load_images
from .protocol import (ChatJob, RequestError, chunk_body, completion_body, error_body, finish_reason,
                       json_object_text, parse_chat_request, parse_json_body)
from .scheduler import BatchScheduler, Ticket, group_key

log = logging.getLogger("glmv_agent.server")

# A prompt cannot hold more tokens than characters times this (a cheap refusal of a 60 MB
# text before the tokenizer spends memory on it); the exact token count is checked after.
_MAX_CHARS_PER_TOKEN = 16
_OPEN_PATHS = ("/health", "/v1/health", "/docs", "/openapi.json")
_CLOSE = {"Connection": "close"}

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class ApiKeyMiddleware:
    """`Authorization: Bearer KEY` on every route but the open ones, compared in constant time.

    Plain ASGI (not BaseHTTPMiddleware), so streaming and disconnect detection are untouched."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        exc = RequestError("missing or wrong API key: send 'Authorization: Bearer <key>' (the key "
                           "given to glmv-agent serve --api-key)", 401, "invalid_api_key")
        response = JSONResponse(error_body(exc), 401, headers={"WWW-Authenticate": "Bearer", **_CLOSE})
        await response(scope, receive, send)


def create_app(engine: Any, config: ServerConfig, policy: ImagePolicy | None = None) -> FastAPI:
    """The ASGI app over one engine. The batch scheduler runs while the app's lifespan does."""
    config.validate()
    policy = policy or ImagePolicy.from_config(config)
    scheduler = BatchScheduler(engine, max_queue=config.max_queue, max_batch=config.max_batch,
                               batch_wait_s=config.batch_wait_s)
    # Image decoding and tokenizing: a small pool bounds the memory they take at once.
    workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="glmv-preprocess")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="glmv-agent", summary="OpenAI-compatible API over the in-process GLM-4.1V engine",
                  lifespan=lifespan)
    app.state.scheduler = scheduler
    app.state.config = config
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = _CLOSE if exc.status in (408, 411, 413, 415) else None  # the body may be unread
        return JSONResponse(error_body(exc), exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
        return JSONResponse(error_body(RequestError(str(exc.detail), exc.status_code, code)),
                            exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_body(RequestError("internal server error; see the server log", 500,
                                                    "server_error")), 500)

    @app.get("/health")
    @app.get("/v1/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "admitted": scheduler.admitted,
                "queued": scheduler.waiting, "running": scheduler.running,
                "batches": len(scheduler.batch_sizes)}

    def model_card() -> dict[str, Any]:
        return {"id": config.model_name, "object": "model", "created": 0, "owned_by": "glmv-agent",
                "max_model_len": config.context_length}

    @app.get("/v1/models")
    @app.get("/models", include_in_schema=False)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    @app.get("/models/{model_id:path}", include_in_schema=False)
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != config.model_name:
            raise RequestError(f"model {model_id!r:.80} does not exist; this server serves "
                               f"{config.model_name!r}", 404, "model_not_found", "model")
        return model_card()

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        with scheduler.arrival():
            raw = await read_body(request, config)
            body = await loop.run_in_executor(workers, parse_json_body, raw)
            job = parse_chat_request(body, config)
            slot = scheduler.admit()
        handed_over = False
        try:
            ticket = await loop.run_in_executor(workers, prepare, engine, job, config, policy, loop)
            scheduler.submit(ticket)
            if job.stream:
                handed_over = True  # the stream releases the slot when it ends

                def finished() -> None:  # also runs when the client left before the first event
                    ticket.cancel()
                    slot.release()

                return StreamingResponse(sse_events(ticket, job, config.model_name, finished),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"},
                                         background=BackgroundTask(finished))
            result = await result_or_disconnect(ticket, request)
            if result is None:  # the client went away; nobody reads this
                return Response(status_code=499)
            text = json_object_text(result.text) if job.json_mode else result.text
            return JSONResponse(completion_body(job, config.model_name, text, result))
        finally:
            if not handed_over:
                slot.release()

    return app


async def read_body(request: Request, config: ServerConfig) -> bytes:
    """The raw body: JSON content type, at most max_body_bytes, within body_timeout_s."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        # Browsers can send text/plain cross-origin without asking; application/json they cannot.
        raise RequestError("the body must be JSON with 'Content-Type: application/json'", 415,
                           "unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
        raise RequestError(f"request body is {declared} bytes; the limit is {config.max_body_bytes}", 413)

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise RequestError(f"request body is over the limit of {config.max_body_bytes} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), config.body_timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(f"the request body did not arrive within {config.body_timeout_s:g} s", 408,
                           "request_timeout") from None


def prepare(engine: Any, job: ChatJob, config: ServerConfig, policy: ImagePolicy,
            loop: asyncio.AbstractEventLoop) -> Ticket:
    """After admission (worker thread): images decoded, prompt length checked, settings grouped."""
    chars = sum(len(p) for p in _texts(job.messages))
    if chars > config.context_length * _MAX_CHARS_PER_TOKEN:
        raise RequestError(f"the prompt has {chars} characters, far more than fits the model's context of "
                           f"{config.context_length} tokens; shorten it", param="messages")
    messages = load_images(job.messages, policy)
    try:
        prompt_tokens = int(engine.prepare(messages, enable_thinking=job.enable_thinking)["input_ids"].shape[1])
    except GlmvAgentError as exc:
        raise RequestError(str(exc)) from None
    room = config.context_length - prompt_tokens
    if room < 1:
        raise RequestError(f"the prompt is {prompt_tokens} tokens; the context is {config.context_length}: "
                           "shorten it or send fewer/smaller images", param="messages")
    options = dict(job.options)
    if options["max_new_tokens"] > room:
        if job.max_tokens_given:
            raise RequestError(f"max_tokens is {options['max_new_tokens']} but only {room} tokens remain after "
                               f"the {prompt_tokens}-token prompt (context {config.context_length})",
                               param="max_tokens")
        options["max_new_tokens"] = room  # the server's default, clipped as vLLM does
    try:
        generation = engine.generation_config(**options)
    except (ConfigError, TypeError, ValueError) as exc:
        raise RequestError(str(exc)) from None
    key, options = group_key(generation, job.enable_thinking, unique=object())
    return Ticket(messages=messages, options=options, enable_thinking=job.enable_thinking, key=key,
                  stream=job.stream, loop=loop)


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for message in messages:
        content = message["content"]
        found.extend([content] if isinstance(content, str)
                     else [p["text"] for p in content if p.get("type") == "text"])
    return found


async def result_or_disconnect(ticket: Ticket, request: Request) -> Any:
    """The GenerationResult, or None if the client disconnected first (then it is cancelled)."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        while True:
            event = asyncio.ensure_future(ticket.events.get())
            done, _ = await asyncio.wait({event, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if event not in done:
                event.cancel()
                ticket.cancel()
                log.info("client went away; its request is cancelled")
                return None
            kind, value = event.result()
            if kind == "done":
                return value
            if kind == "error":
                raise _as_request_error(value)
    finally:
        watcher.cancel()


def _as_request_error(exc: Exception) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, GlmvAgentError):
        return RequestError(str(exc))
    return RequestError("generation failed; see the server log", 500, "server_error")


async def sse_events(ticket: Ticket, job: ChatJob, model: str,
                     finished: Callable[[], None]) -> AsyncIterator[str]:
    """Server-sent events of one streamed answer. Closing it (client gone) cancels the request.
    A failure after the 200 went out is an `error` event, never a second HTTP response."""
    def event(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    try:
        yield event(chunk_body(job, model, {"role": "assistant", "content": ""}))
        while True:
            kind, value = await ticket.events.get()
            if kind == "delta":
                yield event(chunk_body(job, model, {"content": value}))
            elif kind == "done":
                yield event(chunk_body(job, model, {}, finish_reason(value)))
                if job.include_usage:
                    yield event(chunk_body(job, model, None, usage_of=value))
                break
            else:
                yield event(error_body(_as_request_error(value)))
                break
        yield "data: [DONE]\n\n"
    finally:
        finished()
