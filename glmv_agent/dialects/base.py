"""The contract every model-family dialect implements: build prompts, parse answers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from ..actions import BaseAction
from ..envs.base import Observation, Platform
from ..messages import Message, inert_text


class Step(BaseModel):
    """One parsed model answer: reasoning, memory, and exactly one canonical action."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    action: SerializeAsAny[BaseAction]
    thinking: str | None = None
    memory: str | None = None
    explanation: str | None = None
    raw: str = ""
    # Family-specific leftovers (e.g. the original action string) for traces and history.
    extra: dict[str, Any] = Field(default_factory=dict)


class HistoryItem(BaseModel):
    """A past step as dialects need it to rebuild the conversation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    step: Step
    screenshot: Image.Image | None = Field(default=None, exclude=True)
    observation_text: str | None = None  # url / app / element list at that step
    # What happened to the action, for prompts that report it (the web prompt's
    # "Observation:"): "Success", or why it was not executed / failed.
    observation: str | None = None
    # False for an attempt that did not run (refused, denied, failed); only dialects whose
    # `shows_unexecuted` is True are given those.
    executed: bool = True


class Dialect(ABC):
    """Prompt building and response parsing for one model family on one platform."""

    family: ClassVar[str]
    platforms: ClassVar[tuple[Platform, ...]]
    # Model coordinate grid: 999 means integers 0..999, 1000 means 0..1000.
    grid_max: ClassVar[int]

    def __init__(self, platform: Platform) -> None:
        if platform not in self.platforms:
            raise ValueError(
                f"{self.family} has no {platform!r} prompt; it supports {list(self.platforms)}"
            )
        self.platform = platform

    @abstractmethod
    def build_messages(
        self, task: str, observation: Observation, history: list[HistoryItem]
    ) -> list[Message]:
        """The chat messages for the next step, exactly as the family was trained."""

    @abstractmethod
    def parse(self, text: str) -> Step:
        """One Step from raw model text, or ParseError saying what was expected."""

    def retry_messages(
        self, messages: list[Message], bad_answer: str, error: str
    ) -> list[Message]:
        """Messages to re-ask after an unparseable answer (default: append a correction).

        The answer and the error (which quotes it) are echoed as inert text: a literal
        `<|image|>` or `<|user|>` in them must not become a template token."""
        return [
            *messages,
            {"role": "assistant", "content": inert_text(bad_answer)},
            {"role": "user", "content": f"Your answer could not be used: {inert_text(error)} "
                                         "Answer again in exactly the required format."},
        ]

    def shows_unexecuted(self) -> bool:
        """Whether the history given to `build_messages` includes attempts that did not
        run (`HistoryItem.executed` False), e.g. for a prompt that lists each action with
        its observed outcome. Default: only executed steps."""
        return False

    def supported_actions(self) -> set[str]:
        """Canonical action types this dialect can emit on its platform."""
        return set()

    def generation_defaults(self) -> dict[str, Any]:
        """Sampling parameters the family's official client uses (GenerationParams fields;
        `extra` for server-only ones). The Agent sends them to every backend, under the
        user's own settings."""
        return {}
