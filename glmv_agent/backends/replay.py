"""A backend that answers with recorded responses: for tests, demos and trace replays."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError
from ..messages import Message, validate_messages
from .base import Backend


class ReplayBackend(Backend):
    """Returns `responses` one by one, in order, whatever it is asked.

    Every call's messages and parameters are kept in `calls` so a test or demo can check
    what the agent sent.
    """

    name = "replay"

    def __init__(self, responses: Iterable[str]) -> None:
        self.responses = list(responses)
        for i, r in enumerate(self.responses):
            if not isinstance(r, str):
                raise ConfigError(f"replay response {i} must be a string, got {type(r).__name__}")
        self.calls: list[tuple[list[Message], dict[str, Any]]] = []
        self._next = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        return len(self.responses) - self._next

    @property
    def messages(self) -> list[list[Message]]:
        """The messages of every call so far."""
        return [m for m, _ in self.calls]

    def complete(self, messages: list[Message], **params: Any) -> str:
        validate_messages(messages)
        with self._lock:
            self.calls.append((messages, params))
            if self._next >= len(self.responses):
                raise BackendError(
                    f"replay backend has no responses left: all {len(self.responses)} were used; "
                    "add more responses or lower max_steps"
                )
            text = self.responses[self._next]
            self._next += 1
        return text

    @classmethod
    def from_trace(cls, directory: str | Path) -> ReplayBackend:
        """Replay the answers recorded in a trace directory (failed parses included)."""
        from ..trace import TraceReader  # trace imports dialects; keep backends light

        return cls(TraceReader(directory).responses())

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayBackend:
        """Load answers from a JSON list of strings, or JSONL with one string (or
        `{"response": str}` object) per line."""
        path = Path(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read replay file {path}: {exc}") from exc
        stripped = text.lstrip()
        try:
            if stripped.startswith("["):
                items = json.loads(text)
            else:
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path} is not a JSON list of strings or JSONL of strings: {exc}"
            ) from exc
        responses = [i["response"] if isinstance(i, dict) and "response" in i else i for i in items]
        return cls(responses)
