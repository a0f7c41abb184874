"""Secret values the model may type without ever seeing them.

The user passes `secrets={"password": "hunter2"}` and tells the model (in the task text) to
type the placeholder `{{password}}`. The agent substitutes the real value only when it
executes the action, and masks every occurrence of a secret value as `***` in prompts,
logs and traces.

A secret leaves in more forms than its plain text: URL-encoded (a GET form puts it in the
next page's URL), base64 (ADB Keyboard types base64 of the text), JSON- or HTML-escaped.
`SecretVault.mask` hides each of those forms. Log records of every `glmv_agent.*` logger
are masked when they are created (`activate`), so every handler sees only masked text,
including handlers a user adds and loggers created later.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import threading
import weakref
from typing import Any
from urllib.parse import quote, quote_plus

from .actions import BaseAction
from .errors import ConfigError
from .messages import Message

MASK = "***"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class SecretVault:
    """Holds secret values; substitutes placeholders and masks values."""

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        secrets = dict(secrets or {})
        for name, value in secrets.items():
            if not _PLACEHOLDER.fullmatch("{{" + str(name) + "}}"):
                raise ConfigError(
                    f"secret name {name!r} must be an identifier (letters, digits, _) so the "
                    f"model can type it as {{{{{name}}}}}"
                )
            if not isinstance(value, str) or not value:
                raise ConfigError(f"secret {name!r} must be a non-empty string")
            if len(value) < 4:
                logging.getLogger("glmv_agent").warning(
                    "secret %r is shorter than 4 characters: masking it will also hide "
                    "unrelated text in prompts and traces", name)
        self._secrets = secrets
        forms = {form for value in secrets.values() for form in leaked_forms(value)}
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    @property
    def names(self) -> list[str]:
        return sorted(self._secrets)

    def mask(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        return text

    def mask_obj(self, obj: Any) -> Any:
        """A copy of JSON-like data with every string masked."""
        if not self._values:
            return obj
        if isinstance(obj, str):
            return self.mask(obj)
        if isinstance(obj, dict):
            return {self.mask_obj(k): self.mask_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.mask_obj(v) for v in obj)
        return obj

    def mask_messages(self, messages: list[Message]) -> list[Message]:
        """Messages with every secret value in their text masked (images untouched)."""
        if not self._values:
            return messages
        masked: list[Message] = []
        for msg in messages:
            content = msg["content"]
            if isinstance(content, str):
                content = self.mask(content)
            else:
                content = [
                    {**p, "text": self.mask(p["text"])} if p.get("type") == "text" else p
                    for p in content
                ]
            masked.append({**msg, "content": content})
        return masked

    def substitute(self, text: str) -> str:
        """Replace known `{{name}}` placeholders with their real values."""
        return _PLACEHOLDER.sub(
            lambda m: self._secrets.get(m.group(1), m.group(0)), text
        )

    def uses_secret(self, action: BaseAction) -> bool:
        return any(
            m.group(1) in self._secrets
            for s in _strings(action.to_dict()) for m in _PLACEHOLDER.finditer(s)
        )

    def reveal(self, action: BaseAction) -> BaseAction:
        """The action with placeholders replaced, for execution only (never log or store it)."""
        if not self.uses_secret(action):
            return action
        data = _replace_strings(action.to_dict(), self.substitute)
        return type(action).model_validate(data)


# Shorter encoded pieces would mask unrelated text (base64 of 1-2 bytes is 2-3 characters).
_MIN_FORM_LENGTH = 4


def leaked_forms(value: str) -> set[str]:
    """The secret as it may appear on its way out: plain, URL-encoded (%20 and + for
    spaces), JSON- and HTML-escaped, and base64 at each of the three byte alignments it
    can have inside a longer base64 text (only the characters that depend on the secret's
    bytes alone, so the surrounding text does not matter)."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value),
             json.dumps(value)[1:-1], html.escape(value)}
    data = value.encode("utf-8")
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        # Characters fully inside the secret's bytes: skip those sharing bits with the
        # padding bytes in front and with whatever follows the secret.
        first = -(-offset * 8 // 6)
        last = (offset + len(data)) * 8 // 6
        forms.add(encoded[first:last])
    forms.add(base64.b64encode(data).decode("ascii"))  # the whole text is the secret
    forms.add(base64.urlsafe_b64encode(data).decode("ascii"))
    return {form for form in forms if len(form) >= min(_MIN_FORM_LENGTH, len(value))}


# Vaults of the runs in progress; log records of glmv_agent.* are masked with all of them.
_ACTIVE: weakref.WeakSet[SecretVault] = weakref.WeakSet()
_ACTIVE_LOCK = threading.Lock()
_FACTORY_INSTALLED = False
_LOGGER_PREFIX = "glmv_agent"


def activate(vault: SecretVault) -> None:
    """Mask `vault`'s secrets in every glmv_agent.* log record from now on."""
    global _FACTORY_INSTALLED
    if not vault:
        return
    with _ACTIVE_LOCK:
        _ACTIVE.add(vault)
        if not _FACTORY_INSTALLED:
            previous = logging.getLogRecordFactory()

            def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                if record.name == _LOGGER_PREFIX or record.name.startswith(_LOGGER_PREFIX + "."):
                    _mask_record(record)
                return record

            logging.setLogRecordFactory(masked_record)
            _FACTORY_INSTALLED = True


def deactivate(vault: SecretVault) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(vault)


def _mask_record(record: logging.LogRecord) -> None:
    vaults = list(_ACTIVE)
    if not vaults:
        return
    text = record.getMessage()
    for vault in vaults:
        text = vault.mask(text)
    record.msg, record.args = text, None
    if record.exc_info:  # handlers would format the traceback later, unmasked
        traceback_text = logging.Formatter().formatException(record.exc_info)
        for vault in vaults:
            traceback_text = vault.mask(traceback_text)
        record.exc_text = traceback_text
        record.exc_info = None
    if record.stack_info:
        for vault in vaults:
            record.stack_info = vault.mask(record.stack_info)


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _replace_strings(obj: Any, fn: Any) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: (v if k == "type" else _replace_strings(v, fn)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_strings(v, fn) for v in obj]
    return obj
