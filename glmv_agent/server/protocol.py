"""The OpenAI chat-completions wire format: what a request may say, and the answers.

A request body is validated here, before any work: field types and ranges (pydantic, strict,
so `"stream": "false"` is an error, not a truthy string), fields that would change the result
but are not implemented (`tools`, `logprobs`, `n > 1`, `logit_bias`...) rejected with a 400 that
names them, harmless ones (`user`, `metadata`, `store`...) accepted. Image parts stay URLs
here (`ImageRef`); `images.py` turns them into pixels after the request is admitted.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import GlmvAgentError
from .config import ServerConfig

# Temperatures below this mean greedy (as vLLM does): 1e-300 would overflow the logits.
MIN_TEMPERATURE = 1e-5
MAX_JSON_DEPTH = 64
MAX_STOP_STRINGS = 16


class RequestError(GlmvAgentError):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def error_body(exc: RequestError) -> dict[str, Any]:
    """OpenAI's error shape (plus the HTTP status, as the old server sent)."""
    return {"error": {"message": str(exc), "type": exc.code, "param": exc.param,
                      "code": exc.status, "status": HTTPStatus(exc.status).phrase}}


# ----------------------------------------------------------------------------- body


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, refusing nesting deeper than MAX_JSON_DEPTH."""
    try:
        body = json.loads(raw)
    except RecursionError as exc:
        raise RequestError(f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise RequestError(f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels")
    return body


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level + 1) for child in item)
    return deepest


class _StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class _Thinking(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["enabled", "disabled"]


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequest(BaseModel):
    """The fields this server reads. Unknown fields are accepted and ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = None
    messages: list[Any]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=-1, le=1_000_000)
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=100, allow_inf_nan=False)
    # OpenAI's additive penalties (AutoGLM-Phone's official settings send frequency 0.2).
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    skip_special_tokens: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    thinking: _Thinking | None = None
    response_format: _ResponseFormat | None = None


# Fields that would change the answer but are not implemented, and the value that is
# harmless (sent by many clients as a default). Anything else is a 400 naming the field.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "function_call": (None, "none", "auto"), "logprobs": (None, False), "top_logprobs": (None, 0),
    "n": (None, 1), "best_of": (None, 1),
    "logit_bias": (None, {}), "prediction": (None,), "audio": (None,), "modalities": (None, ["text"]),
    "min_tokens": (None, 0), "ignore_eos": (None, False), "echo": (None, False),
    "include_stop_str_in_output": (None, False), "reasoning_effort": (None,),
    "web_search_options": (None,), "guided_json": (None,), "guided_regex": (None,),
    "guided_choice": (None,), "guided_grammar": (None,), "structured_outputs": (None,),
}


def _harmless(value: Any, allowed: tuple[Any, ...]) -> bool:
    if value is None:
        return True
    for ok in allowed:
        if ok is None or isinstance(value, bool) != isinstance(ok, bool):
            continue  # bool is an int in Python: `n: true` must not pass as 1
        numbers = isinstance(ok, (int, float)) and isinstance(value, (int, float))
        if (numbers or type(value) is type(ok)) and value == ok:
            return True
    return False


def rejected_fields(body: dict[str, Any]) -> list[str]:
    """Names of fields present with a value that this server cannot honour."""
    return [name for name, allowed in _UNSUPPORTED.items()
            if name in body and not _harmless(body[name], allowed)]


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class ImageRef:
    """An image part before admission: its URL, not yet fetched or decoded."""

    url: str


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def to_messages(raw: list[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> the engine's message format, image parts as ImageRef."""
    if not raw:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object", param=where)
        role = msg.get("role")
        if role == "tool" or msg.get("tool_calls"):
            raise RequestError(f"{where}: tool messages and tool_calls are not supported by this server "
                               "(it does not implement tool calling)", param=where)
        if role not in _ROLES:
            raise RequestError(f"{where}.role must be system, developer, user or assistant; got {role!r:.40}",
                               param=f"{where}.role")
        content = msg.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            messages.append({"role": _ROLES[role], "content": content})
            continue
        if not isinstance(content, list):
            raise RequestError(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
        messages.append({"role": _ROLES[role], "content": [_part(p, f"{where}.content[{j}]")
                                                            for j, p in enumerate(content)]})
    return messages


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str) or not url:
            raise RequestError(f"{where}.image_url.url must be a non-empty string", param=where)
        return {"type": "image", "image": ImageRef(url)}
    raise RequestError(f"{where} must be a text or image_url part; got type {kind!r:.40}", param=where)


# ----------------------------------------------------------------------------- the parsed request


@dataclass
class ChatJob:
    """A validated chat request: engine messages and options, and how to answer."""

    messages: list[dict[str, Any]]
    options: dict[str, Any]  # engine generation options
    enable_thinking: bool | None
    stream: bool
    include_usage: bool
    json_mode: bool
    max_tokens_given: bool  # False: max_new_tokens is the default and may be clipped to the context
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def parse_chat_request(body: dict[str, Any], config: ServerConfig) -> ChatJob:
    """Validate a chat-completions body; RequestError (400/404) says what is wrong."""
    rejected = rejected_fields(body)
    if rejected:
        raise RequestError(f"unsupported field(s) {', '.join(rejected)}: this server cannot honour them "
                           "(no tool calling, log-probabilities, several choices, logit bias or "
                           "constrained decoding); remove them", param=rejected[0])
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5])
        param = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
        raise RequestError(f"invalid request: {problems}", param=param or None) from None
    if request.model not in (None, "", config.model_name):
        raise RequestError(f"model {request.model!r:.80} does not exist; this server serves "
                           f"{config.model_name!r}", 404, "model_not_found", "model")
    json_mode = False
    if request.response_format is not None:
        if request.response_format.type == "json_schema":
            raise RequestError("response_format json_schema is not supported (no constrained decoding); "
                               "use {\"type\": \"json_object\"} or leave it out", param="response_format")
        json_mode = request.response_format.type == "json_object"
        if json_mode and request.stream:
            raise RequestError("response_format json_object cannot be streamed: the answer is validated "
                               "as a whole; send stream=false", param="response_format")
    if request.stream_options is not None and not request.stream:
        raise RequestError("stream_options is only allowed with stream=true", param="stream_options")
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None and max_tokens > config.max_tokens_limit:
        raise RequestError(f"max_tokens must be at most {config.max_tokens_limit}", param="max_tokens")
    return ChatJob(
        messages=to_messages(request.messages),
        options=_generation_options(request, max_tokens or config.default_max_tokens),
        enable_thinking=_enable_thinking(request),
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        json_mode=json_mode,
        max_tokens_given=max_tokens is not None,
    )


def _generation_options(request: ChatCompletionRequest, max_tokens: int) -> dict[str, Any]:
    options: dict[str, Any] = {"max_new_tokens": max_tokens,
                               "keep_special_tokens": not request.skip_special_tokens}
    if request.temperature is not None:
        options["temperature"] = 0.0 if request.temperature < MIN_TEMPERATURE else request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.top_k is not None:
        options["top_k"] = max(request.top_k, 0)  # vLLM's -1 means "off", as our 0
    if request.repetition_penalty is not None:
        options["repetition_penalty"] = request.repetition_penalty
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name) is not None:
            options[name] = getattr(request, name)
    if request.seed is not None:
        options["seed"] = request.seed
    if request.stop is not None:
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        if len(stop) > MAX_STOP_STRINGS or not all(stop):
            raise RequestError(f"stop must be at most {MAX_STOP_STRINGS} non-empty strings", param="stop")
        options["stop"] = stop
    return options


def _enable_thinking(request: ChatCompletionRequest) -> bool | None:
    """`thinking: {"type": ...}` (GLM's API) or `chat_template_kwargs.enable_thinking` (vLLM's)."""
    from_kwargs = (request.chat_template_kwargs or {}).get("enable_thinking")
    if from_kwargs is not None and not isinstance(from_kwargs, bool):
        raise RequestError("chat_template_kwargs.enable_thinking must be true or false",
                           param="chat_template_kwargs")
    from_thinking = None if request.thinking is None else request.thinking.type == "enabled"
    if from_kwargs is not None and from_thinking is not None and from_kwargs != from_thinking:
        raise RequestError("thinking.type and chat_template_kwargs.enable_thinking disagree; send one",
                           param="thinking")
    return from_thinking if from_thinking is not None else from_kwargs


# ----------------------------------------------------------------------------- answers


def finish_reason(result: Any) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def usage(result: Any) -> dict[str, Any]:
    """OpenAI `usage` of one GenerationResult; `cached_tokens` are the prompt tokens served
    from the engine's prefix cache (as OpenAI and vLLM report them)."""
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": int(getattr(result, "cached_tokens", 0))}}


def completion_body(job: ChatJob, model: str, text: str, result: Any) -> dict[str, Any]:
    return {"id": job.id, "object": "chat.completion", "created": job.created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason(result)}],
            "usage": usage(result)}


def chunk_body(job: ChatJob, model: str, delta: dict[str, Any] | None,
               finish: str | None = None, usage_of: Any = None) -> dict[str, Any]:
    """One streamed chunk; with `usage_of` the final usage-only chunk (no choices)."""
    body: dict[str, Any] = {"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                            "model": model}
    if usage_of is not None:
        body["choices"] = []
        body["usage"] = usage(usage_of)
    else:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return body


_BOX = ("<|begin_of_box|>", "<|end_of_box|>")


def json_object_text(text: str) -> str:
    """The JSON object an answer holds, as compact text, for `response_format: json_object`.

    The model is not constrained while decoding, so the answer is checked afterwards: the
    object may stand alone, follow a `<think>` block, sit in a GLM `<|begin_of_box|>` or a
    Markdown code fence, or be the first object in the text. No object -> RequestError 422."""
    candidates = [text.split("</think>")[-1]]
    if _BOX[0] in text:
        candidates.insert(0, text.split(_BOX[0], 1)[1].split(_BOX[1], 1)[0])
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        while start >= 0:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except (ValueError, RecursionError):
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return json.dumps(value, ensure_ascii=False)
            start = candidate.find("{", start + 1)
    raise RequestError("response_format json_object: the model's answer holds no JSON object "
                       f"(it began {text[:120]!r}); retry, or raise max_tokens if it was cut off",
                       422, "json_validation_failed", "response_format")
