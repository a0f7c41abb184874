"""The contract every inference backend implements: messages in, text out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..messages import Message


@dataclass
class GenerationParams:
    """Sampling parameters understood by every backend (unset = backend default)."""

    max_new_tokens: int = 2048
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    enable_thinking: bool | None = None
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Turns chat messages (see `glmv_agent.messages`) into the model's raw text."""

    name: str = "backend"

    @abstractmethod
    def complete(self, messages: list[Message], **params: Any) -> str:
        """The whole answer. `params` are GenerationParams fields."""

    def stream(self, messages: list[Message], **params: Any) -> Iterator[str]:
        """Text deltas as they are generated (default: one chunk)."""
        yield self.complete(messages, **params)

    def close(self) -> None:
        """Free resources (weights, HTTP sessions); idempotent."""
