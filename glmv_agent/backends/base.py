"""The contract every inference backend implements: messages in, text out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..messages import Message


@dataclass
class GenerationParams:
    """Sampling parameters understood by every backend (unset = backend default).

    An `Agent` starts from its dialect's `generation_defaults()` (the family's official
    settings) and applies the fields set here on top."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    enable_thinking: bool | None = None
    # False keeps `<|begin_of_box|>` and friends in the text (the GUI-agent setting).
    skip_special_tokens: bool | None = None
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class BackendProtocol(Protocol):
    """What the agent needs from a model: any object with this method can be its `model`.

    `stream(messages, **params)`, `close()` and a `name` are optional; `make_backend` wraps
    such an object in a `ProtocolBackend`, which supplies what it lacks.
    """

    def complete(self, messages: list[Message], **params: Any) -> str:
        """The whole answer. `params` are GenerationParams fields."""
        ...


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


class ProtocolBackend(Backend):
    """A `Backend` over a user's object that implements only `BackendProtocol`.

    Its own `stream` and `close` are used when it has them; any other attribute (a `model`
    name, say) reads through to it.
    """

    def __init__(self, wrapped: BackendProtocol) -> None:
        self.wrapped = wrapped
        self.name = str(getattr(wrapped, "name", None) or type(wrapped).__name__)

    def complete(self, messages: list[Message], **params: Any) -> str:
        return self.wrapped.complete(messages, **params)

    def stream(self, messages: list[Message], **params: Any) -> Iterator[str]:
        own = getattr(self.wrapped, "stream", None)
        if callable(own):
            yield from own(messages, **params)
        else:
            yield self.complete(messages, **params)

    def close(self) -> None:
        own = getattr(self.wrapped, "close", None)
        if callable(own):
            own()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks; "wrapped" itself must not recurse.
        if name == "wrapped":
            raise AttributeError(name)
        return getattr(self.wrapped, name)
