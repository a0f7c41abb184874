"""An OpenAI-compatible HTTP server over the in-process GLM-4.1V engine.

`glmv-agent serve --model PATH` exposes `POST /v1/chat/completions` (streaming or not),
`GET /v1/models` and `GET /health`, so the `openai` client, Midscene.js or our own
`OpenAIBackend` can use a local GLM-4.1V. It follows vLLM's extensions that GUI agents
rely on: `skip_special_tokens` (default true, like vLLM; agents pass false to keep
`<|begin_of_box|>`), `chat_template_kwargs` (`enable_thinking`), `top_k`,
`repetition_penalty`.

Built on the standard library's threading HTTP server: each request gets a thread, the
engine generates one request at a time (its own lock), and at most `max_queue` requests
wait; beyond that the server answers 503 instead of piling up work.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import httpx
from PIL import Image

from .errors import GlmvAgentError, InputError
from .messages import Message

log = logging.getLogger("glmv_agent.server")

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000


class Engine(Protocol):
    """What the server needs from `glmv_agent.glm4v.engine.Glm4vEngine`."""

    def generate(self, messages: list[Message], **options: Any) -> Any: ...

    def stream(self, messages: list[Message], **options: Any) -> Iterator[str]: ...


class RequestError(GlmvAgentError):
    """A request the server rejects; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class ServerConfig:
    model_name: str
    max_queue: int = 8
    max_body_bytes: int = MAX_BODY_BYTES
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_new_tokens_limit: int = 32768
    default_max_tokens: int = 2048
    allow_remote_images: bool = True


# ----------------------------------------------------------------------------- request parsing


def decode_image_url(url: str, config: ServerConfig) -> Image.Image:
    """A PIL image from a `data:` URL or an http(s) URL (size-limited). Never a local path."""
    if not isinstance(url, str) or not url:
        raise RequestError("image_url.url must be a non-empty string")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise RequestError("image data URLs must be base64 encoded (data:image/png;base64,...)")
        if len(payload) * 3 // 4 > config.max_image_bytes:
            raise RequestError(
                f"image is larger than {config.max_image_bytes // (1024 * 1024)} MiB", status=413
            )
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"image data URL is not valid base64: {exc}") from exc
    elif url.startswith(("http://", "https://")):
        if not config.allow_remote_images:
            raise RequestError("remote image URLs are disabled on this server; send a data URL")
        raw = _fetch(url, config.max_image_bytes)
    else:
        raise RequestError(
            "image_url.url must be a data: URL or an http(s) URL; local paths are not accepted"
        )
    return _open_image(raw, config)


def _fetch(url: str, limit: int) -> bytes:
    try:
        with httpx.stream("GET", url, timeout=20.0, follow_redirects=True) as response:
            if response.status_code != 200:
                raise RequestError(f"fetching image {url} gave HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise RequestError(f"image at {url} is larger than {limit} bytes", status=413)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise RequestError(f"could not fetch image {url}: {exc}") from exc


def _open_image(raw: bytes, config: ServerConfig) -> Image.Image:
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
            if width * height > MAX_IMAGE_PIXELS:
                raise RequestError(
                    f"image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels",
                    status=413,
                )
            probe.load()
            return probe.convert("RGB")
    except RequestError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(f"image could not be decoded: {exc}") from exc


def to_messages(raw_messages: Any, config: ServerConfig) -> list[Message]:
    """OpenAI chat messages -> our message format (images decoded)."""
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError("'messages' must be a non-empty list")
    messages: list[Message] = []
    for i, msg in enumerate(raw_messages):
        if not isinstance(msg, dict):
            raise RequestError(f"messages[{i}] must be an object")
        role = msg.get("role")
        if role not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{i}].role must be system, user or assistant; got {role!r}")
        content = msg.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise RequestError(f"messages[{i}].content must be a string or a list of parts")
        parts: list[Any] = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                spec = part.get("image_url")
                url = spec.get("url") if isinstance(spec, dict) else spec
                if not isinstance(url, str):
                    raise RequestError(f"messages[{i}].content[{j}].image_url.url must be a string")
                parts.append({"type": "image", "image": decode_image_url(url, config)})
            else:
                raise RequestError(
                    f"messages[{i}].content[{j}] must be a text or image_url part; got type {kind!r}"
                )
        messages.append({"role": role, "content": parts})
    return messages


def generation_options(body: dict[str, Any], config: ServerConfig) -> dict[str, Any]:
    """Request sampling fields -> engine generation options, validated."""
    options: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = config.default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError("max_tokens must be a positive integer")
    if max_tokens > config.max_new_tokens_limit:
        raise RequestError(f"max_tokens must be at most {config.max_new_tokens_limit}")
    options["max_new_tokens"] = max_tokens
    for name, kind in (("temperature", float), ("top_p", float), ("top_k", int),
                       ("repetition_penalty", float), ("seed", int)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{name} must be a number")
        if kind is int and int(value) != value:
            raise RequestError(f"{name} must be an integer")
        options[name] = kind(value)
    if body.get("top_k") == -1:  # vLLM's "disabled"
        options["top_k"] = 0
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("stop must be a string or a list of strings")
        options["stop"] = stop
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    skip = body.get("skip_special_tokens", True)
    if not isinstance(skip, bool):
        raise RequestError("skip_special_tokens must be true or false")
    options["keep_special_tokens"] = not skip
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise RequestError("chat_template_kwargs must be an object")
    if "enable_thinking" in kwargs:
        options["enable_thinking"] = bool(kwargs["enable_thinking"])
    return options


# ----------------------------------------------------------------------------- HTTP layer


class _Handler(BaseHTTPRequestHandler):
    server: GlmvHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr
        log.info("%s %s", self.address_string(), fmt % args)

    # -- routes --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok", "model": self.server.config.model_name,
                             "queued": self.server.waiting})
        elif path in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{
                "id": self.server.config.model_name, "object": "model",
                "created": int(self.server.started), "owned_by": "glmv-agent",
            }]})
        else:
            self._error(RequestError(f"no route GET {path}", 404, "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(RequestError(f"no route POST {path}", 404, "not_found"))
            return
        try:
            body = self._read_json()
            self._chat(body)
        except RequestError as exc:
            self._error(exc)
        except GlmvAgentError as exc:  # InputError etc. from the processor
            self._error(RequestError(str(exc), 400))
        except Exception as exc:  # keep serving; report the failure to this client only
            log.exception("chat completion failed")
            self._error(RequestError(f"internal error: {exc}", 500, "server_error"))

    # -- chat ----------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> None:
        config = self.server.config
        model = body.get("model")
        if model not in (None, "", config.model_name):
            raise RequestError(
                f"model {model!r} does not exist; this server serves {config.model_name!r}",
                404, "model_not_found",
            )
        messages = to_messages(body.get("messages"), config)
        options = generation_options(body, config)
        stream = bool(body.get("stream", False))
        with self.server.queue_slot():
            if stream:
                self._stream(messages, options, body)
            else:
                self._complete(messages, options)

    def _complete(self, messages: list[Message], options: dict[str, Any]) -> None:
        result = self.server.engine.generate(messages, **options)
        finish = "length" if result.finish_reason == "length" else "stop"
        self._json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.config.model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": finish,
            }],
            "usage": _usage(result),
        })

    def _stream(self, messages: list[Message], options: dict[str, Any], body: dict[str, Any]) -> None:
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        holder: list[Any] = []
        deltas = self.server.engine.stream(messages, result_holder=holder, **options)
        # Pull the first delta before sending headers, so early errors still get a 4xx/5xx.
        first = next(deltas, None)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            event = {
                "id": chunk_id, "object": "chat.completion.chunk", "created": created,
                "model": self.server.config.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self._sse(event)

        try:
            chunk({"role": "assistant", "content": ""})
            if first:
                chunk({"content": first})
            for delta in deltas:
                chunk({"content": delta})
            result = holder[0] if holder else None
            finish = "length" if result is not None and result.finish_reason == "length" else "stop"
            chunk({}, finish)
            if (body.get("stream_options") or {}).get("include_usage") and result is not None:
                self._sse({
                    "id": chunk_id, "object": "chat.completion.chunk", "created": created,
                    "model": self.server.config.model_name, "choices": [],
                    "usage": _usage(result),
                })
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away mid-stream")
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()

    # -- plumbing ------------------------------------------------------------------
    def _read_json(self) -> dict[str, Any]:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise RequestError("Content-Length header is required", 411)
        try:
            length = int(length_header)
        except ValueError as exc:
            raise RequestError("Content-Length must be an integer") from exc
        if length > self.server.config.max_body_bytes:
            raise RequestError(
                f"request body is {length} bytes; the limit is {self.server.config.max_body_bytes}",
                413,
            )
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        return body

    def _sse(self, event: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:  # tell keep-alive clients not to reuse this socket
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, exc: RequestError) -> None:
        if exc.status >= 500:
            log.error("%s", exc)
        # The body may be unread (e.g. 413): don't try to reuse the connection.
        self.close_connection = True
        self._json(exc.status, {"error": {
            "message": str(exc), "type": exc.code, "code": exc.status,
            "status": HTTPStatus(exc.status).phrase,
        }})


def _usage(result: Any) -> dict[str, int]:
    """OpenAI `usage` of one GenerationResult."""
    return {"prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


class GlmvHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, config: ServerConfig) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.config = config
        self.started = time.time()
        self.waiting = 0
        self._slots = threading.Lock()

    def queue_slot(self) -> _QueueSlot:
        return _QueueSlot(self)


class _QueueSlot:
    """Counts requests waiting for or using the engine; refuses beyond `max_queue`."""

    def __init__(self, server: GlmvHTTPServer) -> None:
        self.server = server

    def __enter__(self) -> None:
        with self.server._slots:
            if self.server.waiting >= self.server.config.max_queue:
                raise RequestError(
                    f"server busy: {self.server.waiting} requests already queued; retry later",
                    503, "server_busy",
                )
            self.server.waiting += 1

    def __exit__(self, *exc: object) -> None:
        with self.server._slots:
            self.server.waiting -= 1


def make_server(engine: Engine, *, host: str = "127.0.0.1", port: int = 8000,
                model_name: str = "glm-4.1v", max_queue: int = 8) -> GlmvHTTPServer:
    """A ready server (call `serve_forever()`, or run it in a thread for tests)."""
    if max_queue < 1:
        raise InputError("max_queue must be at least 1")
    return GlmvHTTPServer((host, port), engine, ServerConfig(model_name=model_name, max_queue=max_queue))
