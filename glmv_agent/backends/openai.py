"""A backend for any OpenAI-compatible chat-completions server (vLLM, SGLang, hosted APIs,
`glmv-agent serve`), spoken to with httpx directly.

Images travel as base64 data URLs, each encoded once: an agent re-sends its history
screenshots every step, so the backend keeps the last few encodings, keyed by the image's
content (a hash of its pixels, so an image changed in place is encoded again).
`skip_special_tokens: false` is sent (unless a caller
asks for true) so GLM's `<|begin_of_box|>` markers survive, and `chat_template_kwargs.enable_thinking` switches
thinking. Servers that split reasoning into `reasoning_content` get it re-wrapped as
`<think>...</think>` in front of the answer, so dialect parsers see the same text as from
the local engine.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from ..errors import BackendError, InputError
from ..messages import Message, validate_messages
from .base import Backend

logger = logging.getLogger("glmv_agent")

API_KEY_VARS = ("GLMV_API_KEY", "OPENAI_API_KEY")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Encoded images kept for reuse: the current screenshot plus the few history ones a dialect
# sends (GLM-4.1V PC: up to 4), with room to spare; a 1280x720 PNG URL is ~1-3 MB.
IMAGE_CACHE_SIZE = 16
# GenerationParams field -> request body key.
_BODY_KEYS = {
    "max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
    "top_k": "top_k", "repetition_penalty": "repetition_penalty", "stop": "stop",
}


def retry_delay(attempt: int, backoff: float, max_backoff: float,
                retry_after: str | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    A server's `Retry-After` (seconds or an HTTP date) wins over exponential backoff; both
    are capped at `max_backoff`.
    """
    if retry_after:
        value = retry_after.strip()
        try:
            return min(max_backoff, max(0.0, float(value)))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (ValueError, TypeError):
                when = None  # neither seconds nor a date: fall back to backoff
            if when is not None:
                return min(max_backoff, max(0.0, when.timestamp() - time.time()))
    return min(max_backoff, backoff * (2 ** attempt))


def image_data_url(payload: Any, fmt: str = "PNG", quality: int = 90) -> str:
    """A `data:` URL for a PIL image, an image file path, or encoded image bytes."""
    if isinstance(payload, str) and payload.startswith(("data:", "http://", "https://")):
        return payload
    if isinstance(payload, (str, Path)):
        try:
            with Image.open(payload) as img:
                img.load()
                payload = img.copy()
        except OSError as exc:
            raise InputError(f"cannot read image {payload}: {exc}") from exc
    if isinstance(payload, bytes):
        try:
            with Image.open(io.BytesIO(payload)) as img:
                img.load()
                payload = img.copy()
        except OSError as exc:
            raise InputError(f"image bytes are not a readable image: {exc}") from exc
    if not isinstance(payload, Image.Image):
        raise InputError(
            f"an image part must hold a PIL image, a file path or bytes, got "
            f"{type(payload).__name__}"
        )
    fmt = fmt.upper()
    img = payload.convert("RGB") if fmt == "JPEG" or payload.mode not in ("RGB", "RGBA", "L") \
        else payload
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class ImageUrlCache:
    """Data URLs of recently sent images, so each image is encoded once (LRU, bounded).

    PIL images and encoded bytes are keyed by a SHA-256 of their content (~2 ms for a
    1280x720 screenshot, against ~20-150 ms to PNG-encode it); paths and URLs are not
    cached (a file may change under the same name).
    """

    def __init__(self, size: int = IMAGE_CACHE_SIZE) -> None:
        self.size = size
        self._urls: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self.encoded = 0  # how many images were actually encoded (for tests, stats)

    def url(self, payload: Any, fmt: str) -> str:
        key = self._key(payload, fmt)
        if key is None:
            return image_data_url(payload, fmt)
        url = self._urls.get(key)
        if url is not None:
            self._urls.move_to_end(key)
            return url
        url = image_data_url(payload, fmt)
        self.encoded += 1
        self._urls[key] = url
        while len(self._urls) > self.size:
            self._urls.popitem(last=False)
        return url

    @staticmethod
    def _key(payload: Any, fmt: str) -> tuple[Any, ...] | None:
        if isinstance(payload, Image.Image):
            digest = hashlib.sha256(payload.tobytes())
            if payload.palette is not None:  # "P" pixels are indices into it
                digest.update(payload.palette.tobytes())
            transparency = repr(payload.info.get("transparency"))
            return ("image", fmt, payload.mode, payload.size, transparency, digest.digest())
        if isinstance(payload, bytes):
            return ("bytes", fmt, hashlib.sha256(payload).digest())
        return None


class OpenAIBackend(Backend):
    """Chat completions over HTTP with retries, streaming and clear errors."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        image_format: str = "PNG",
        extra_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise BackendError(f"base_url must start with http:// or https://, got {base_url!r}")
        if image_format.upper() not in ("PNG", "JPEG"):
            raise BackendError(f"image_format must be PNG or JPEG, got {image_format!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or next(
            (os.environ[v] for v in API_KEY_VARS if os.environ.get(v)), None
        )
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.image_format = image_format.upper()
        self.extra_body = dict(extra_body or {})
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        self._client = httpx.Client(headers=all_headers, timeout=timeout)
        self.image_urls = ImageUrlCache()

    # -- request building -------------------------------------------------------------------
    def to_openai_messages(self, messages: list[Message]) -> list[dict[str, Any]]:
        """HF-style messages as OpenAI chat messages (images as data URLs)."""
        validate_messages(messages)
        out: list[dict[str, Any]] = []
        for msg in messages:
            content = msg["content"]
            if isinstance(content, str):
                out.append({"role": msg["role"], "content": content})
                continue
            if msg["role"] != "user":  # system/assistant content must be plain text
                texts = [p["text"] for p in content if p.get("type") == "text"]
                if len(texts) != len(content):
                    raise InputError(f"{msg['role']} messages can only hold text over the "
                                     "OpenAI API; move images into a user message")
                out.append({"role": msg["role"], "content": "".join(texts)})
                continue
            parts: list[dict[str, Any]] = []
            for part in content:
                if part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif part["type"] == "image":
                    url = self.image_urls.url(part["image"], self.image_format)
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    raise InputError(
                        f"{part['type']!r} parts cannot be sent to an OpenAI-compatible "
                        "server by this backend; send frames as images instead"
                    )
            out.append({"role": "user", "content": parts})
        return out

    def request_body(self, messages: list[Message], stream: bool, **params: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.to_openai_messages(messages),
            "stream": stream,
            # Kept by default whatever the dialect says: parsers need the box markers.
            "skip_special_tokens": bool(params.get("skip_special_tokens") or False),
        }
        for key, name in _BODY_KEYS.items():
            value = params.get(key)
            if value is not None and value != []:
                body[name] = value
        if params.get("enable_thinking") is not None:
            body["chat_template_kwargs"] = {"enable_thinking": bool(params["enable_thinking"])}
        body.update(self.extra_body)
        body.update(params.get("extra") or {})
        return body

    # -- Backend API -------------------------------------------------------------------------
    def complete(self, messages: list[Message], **params: Any) -> str:
        body = self.request_body(messages, stream=False, **params)
        response = self._post(body, params.get("timeout"))
        try:
            data = response.json()
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"{self.base_url}/chat/completions answered something that is not a chat "
                f"completion: {response.text[:300]!r}"
            ) from exc
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning and "<think>" not in content:
            return f"<think>{reasoning}</think>{content}"
        return content

    def stream(self, messages: list[Message], **params: Any) -> Iterator[str]:
        body = self.request_body(messages, stream=True, **params)
        timeout = params.get("timeout") or self.timeout
        url = f"{self.base_url}/chat/completions"
        yielded = False  # once text is out, a retry would repeat it: fail instead
        for attempt in range(self.max_retries + 1):
            try:
                with self._client.stream("POST", url, json=body, timeout=timeout) as response:
                    if response.status_code >= 400:
                        response.read()
                        if self._should_retry(response, attempt):
                            continue
                        self._raise_for(response)
                    for delta in self._sse_text(response):
                        yielded = True
                        yield delta
                    return
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < self.max_retries:
                    self._wait(attempt, None, exc)
                    continue
                raise self._timeout_error(timeout) from exc
            except httpx.TransportError as exc:
                if yielded:
                    raise BackendError(
                        f"the stream from {self.base_url} broke mid-answer ({exc}); "
                        "retry the step"
                    ) from exc
                if attempt < self.max_retries:
                    self._wait(attempt, None, exc)
                    continue
                raise self._unreachable(exc) from exc

    def list_models(self) -> list[str]:
        """Model ids the server reports at `/models`."""
        response = self._client.get(f"{self.base_url}/models", timeout=min(10.0, self.timeout))
        response.raise_for_status()
        return [m["id"] for m in response.json().get("data", [])]

    def close(self) -> None:
        self._client.close()

    # -- transport ---------------------------------------------------------------------------
    def _post(self, body: dict[str, Any], timeout: float | None) -> httpx.Response:
        url = f"{self.base_url}/chat/completions"
        timeout = timeout or self.timeout
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.post(url, json=body, timeout=timeout)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < self.max_retries:
                    self._wait(attempt, None, exc)
                    continue
                raise self._timeout_error(timeout) from exc
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    self._wait(attempt, None, exc)
                    continue
                raise self._unreachable(exc) from exc
            if response.status_code < 400:
                return response
            if self._should_retry(response, attempt):
                continue
            self._raise_for(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _should_retry(self, response: httpx.Response, attempt: int) -> bool:
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return False
        self._wait(attempt, response.headers.get("Retry-After"),
                   f"HTTP {response.status_code}")
        return True

    def _wait(self, attempt: int, retry_after: str | None, why: object) -> None:
        delay = retry_delay(attempt, self.backoff, self.max_backoff, retry_after)
        logger.warning("model server %s: %s; retry %d/%d in %.1fs", self.base_url, why,
                       attempt + 1, self.max_retries, delay)
        time.sleep(delay)

    def _sse_text(self, response: httpx.Response) -> Iterator[str]:
        """Text deltas of an SSE stream; reasoning deltas re-wrapped in <think> tags."""
        in_reasoning = False
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            if payload == "[DONE]":
                break
            try:
                choice = json.loads(payload)["choices"][0]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise BackendError(f"malformed stream chunk from {self.base_url}: "
                                   f"{payload[:200]!r}") from exc
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                if not in_reasoning:
                    in_reasoning = True
                    yield "<think>"
                yield reasoning
            content = delta.get("content")
            if content:
                if in_reasoning:
                    in_reasoning = False
                    yield "</think>"
                yield content
        if in_reasoning:
            yield "</think>"

    # -- errors ------------------------------------------------------------------------------
    def _raise_for(self, response: httpx.Response) -> None:
        status = response.status_code
        detail = _error_text(response)
        where = f"{self.base_url}/chat/completions"
        if status in (401, 403):
            key_state = "was sent" if self.api_key else "was not set"
            raise BackendError(
                f"{where} refused the request (HTTP {status}: {detail}); the API key "
                f"{key_state}: set GLMV_API_KEY (or OPENAI_API_KEY) or pass api_key="
            )
        if status == 404 or (status == 400 and "model" in detail.lower()
                             and "not" in detail.lower() and "exist" in detail.lower()):
            raise BackendError(self._not_found_message(status, detail))
        if status in RETRY_STATUSES:
            raise BackendError(
                f"{where} kept failing (HTTP {status}: {detail}) after {self.max_retries} "
                "retries; the server is overloaded or broken"
            )
        raise BackendError(f"{where} rejected the request (HTTP {status}: {detail})")

    def _not_found_message(self, status: int, detail: str) -> str:
        try:
            models = self.list_models()
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return (f"{self.base_url}/chat/completions returned HTTP {status} ({detail}); check "
                    "that base_url ends with /v1 and that the server serves "
                    f"model {self.model!r}")
        return (f"model {self.model!r} is not served at {self.base_url} (HTTP {status}: "
                f"{detail}); available models: {models}")

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(
            f"cannot reach the model server at {self.base_url} ({type(exc).__name__}: {exc}) "
            f"after {self.max_retries} retries; start one (e.g. `vllm serve "
            "zai-org/GLM-4.1V-9B-Thinking`, SGLang, or `glmv-agent serve`) or fix base_url"
        )

    def _timeout_error(self, timeout: float) -> BackendError:
        return BackendError(
            f"the model server at {self.base_url} did not answer within {timeout}s; raise "
            "timeout= or lower max_new_tokens"
        )


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])[:300]
    return str(error or data)[:300]
