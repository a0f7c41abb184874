"""Render a checkpoint's own chat template, the way transformers does.

The template comes from `chat_template.jinja`, else `chat_template.json`, else the
`chat_template` field of `tokenizer_config.json` (a string, or a list of named templates).
It runs in jinja2's immutable sandbox with `trim_blocks` and `lstrip_blocks` and the helpers
Hugging Face templates expect (`raise_exception`, a non-escaping `tojson`, `strftime_now`,
`namespace`, loop controls). Works for GLM-4.1V, GLM-4.5V/4.6V (`enable_thinking`) and
AutoGLM templates alike, because it renders whatever the checkpoint ships.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

# Templates only test media parts for presence; their payload (a PIL image, an array) is
# replaced by this marker so the sandbox never sees rich objects.
MEDIA_PLACEHOLDER = "<media>"
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates want plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """Compile a template once; syntax errors become CheckpointError."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise CheckpointError(f"the chat template does not compile: {exc} (line {exc.lineno})") from exc


def load_chat_template(directory: str | Path, name: str | None = None) -> str:
    """The template text a checkpoint ships; `name` picks one of several named templates."""
    root = Path(directory)
    jinja_path = root / "chat_template.jinja"
    if jinja_path.is_file() and name is None:
        return jinja_path.read_text(encoding="utf-8")
    candidates: list[Any] = []
    for file_name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        path = root / file_name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"cannot read {path}: {exc}") from exc
            if isinstance(value, dict) and value.get("chat_template"):
                candidates.append(value["chat_template"])
    for template in candidates:
        if isinstance(template, str) and name is None:
            return template
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            chosen = named.get(name or "default")
            if isinstance(chosen, str):
                return chosen
            if name is not None:
                raise CheckpointError(f"no chat template named {name!r} in {root}; available: {sorted(map(str, named))}")
    if name is not None:
        raise CheckpointError(f"no chat template named {name!r} in {root}")
    raise CheckpointError(
        f"no chat template in {root}: expected chat_template.jinja or a 'chat_template' entry in "
        "tokenizer_config.json; copy it from the model repository"
    )


def _plain(value: Any) -> Any:
    """Deep copy into plain JSON-like data; anything else becomes MEDIA_PLACEHOLDER."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return MEDIA_PLACEHOLDER


def _with_reasoning_aliases(message: dict[str, Any]) -> dict[str, Any]:
    # Templates read reasoning under different names; expose it under all of them.
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """Render one conversation. Extra kwargs (`enable_thinking`, `tools`, ...) reach the template.

    `enable_thinking=None` is not passed at all, so templates see it as undefined.
    """
    if not isinstance(messages, list):
        raise InputError("messages must be a list of {'role', 'content'} dicts")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"message {i} must be a dict, got {type(message).__name__}")
        chat.append(_with_reasoning_aliases(_plain(message)))
    context: dict[str, Any] = {k: _plain(v) for k, v in (special_tokens or {}).items()}
    context.update({k: _plain(v) for k, v in kwargs.items() if v is not None})
    try:
        return compile_template(template).render(
            messages=chat, add_generation_prompt=add_generation_prompt, **context
        )
    except jinja2.exceptions.TemplateError as exc:
        raise InputError(f"the chat template rejected these messages: {exc}") from exc
