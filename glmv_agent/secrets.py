"""Secret values the model may type without ever seeing them.

The user passes `secrets={"password": "hunter2"}` and tells the model (in the task text) to
type the placeholder `{{password}}`. The agent substitutes the real value only when it
executes the action, and masks every occurrence of a secret value as `***` in prompts,
logs and traces.
"""

from __future__ import annotations

import logging
import re
from typing import Any

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
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(set(secrets.values()), key=len, reverse=True)

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


class MaskingFilter(logging.Filter):
    """A logging filter that masks secret values in formatted log messages."""

    def __init__(self, vault: SecretVault) -> None:
        super().__init__()
        self.vault = vault

    def filter(self, record: logging.LogRecord) -> bool:
        if self.vault:
            record.msg = self.vault.mask(record.getMessage())
            record.args = None
        return True


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
