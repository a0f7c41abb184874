"""Checks an action must pass before the agent executes it.

`Policy.check` refuses what must never run (a point off the screen, an action the
environment cannot do, a URL outside the allowed domains, an over-long text) by raising
`ActionRefusedError` / `UnsupportedActionError`. `Policy.sensitivity` says why an
otherwise valid action needs the user's confirmation (typing into a password field, a
purchase, deletion, sending a message, a payment, or the model's own `sensitive` flag). Keywords are looked
for in what the action itself does (typed text, target element text, the step's
explanation), not in the whole reasoning, which restates the task at every step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import urlsplit

from .actions import BaseAction, Goto, TypeText
from .dialects.base import Step
from .envs.base import Observation
from .errors import ActionRefusedError, UnsupportedActionError
from .urls import normalize_allowed_domains, url_allowed

# Handled by the agent itself, never sent to the environment.
AGENT_ACTIONS = frozenset({"answer", "done", "take_over"})
# Actions that cannot commit anything, so keywords in the thinking do not matter.
HARMLESS_ACTIONS = frozenset({
    "scroll", "wait", "hover", "answer", "done", "take_over", "navigate_back",
    "navigate_home", "swipe", "drag",
})

# How many closing sentences of the thinking count as the decision when a family's answer
# has no separate explanation (AutoGLM puts everything in <think>). One: the sentence
# before it usually restates the task ("to delete them I first open ...").
DECISION_SENTENCES = 1


def load_keywords() -> dict[str, dict[str, list[str]]]:
    """The sensitive-keyword table shipped in `glmv_agent/data/sensitive_keywords.json`."""
    raw = resources.files("glmv_agent.data").joinpath("sensitive_keywords.json").read_text("utf-8")
    table = json.loads(raw)
    return {k: v for k, v in table.items() if not k.startswith("_")}


@dataclass
class Policy:
    """What the agent may do. Every field has a safe default."""

    allowed_domains: list[str] | None = None  # goto only to these hosts (and subdomains)
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_actions: set[str] | None = None  # further restrict the environment's set
    max_text_length: int = 2000
    keywords: dict[str, dict[str, list[str]]] = field(default_factory=load_keywords)
    confirm_password_fields: bool = True

    def __post_init__(self) -> None:
        self._patterns = {
            category: _keyword_pattern(words) for category, words in self.keywords.items()
        }

    # -- hard checks ---------------------------------------------------------------------
    def check(self, action: BaseAction, observation: Observation, supported: set[str]) -> None:
        """Raise if `action` must not be executed on this observation."""
        kind = action.type
        if self.allowed_actions is not None and kind not in self.allowed_actions | AGENT_ACTIONS:
            raise ActionRefusedError(
                f"{kind!r} actions are not allowed by the policy; allowed: "
                f"{sorted(self.allowed_actions)}"
            )
        if kind not in AGENT_ACTIONS and kind not in supported:
            raise UnsupportedActionError(
                f"this environment cannot execute {kind!r} actions; it supports: "
                f"{', '.join(sorted(supported))}"
            )
        self._check_targets(action, observation)
        if isinstance(action, TypeText) and len(action.text) > self.max_text_length:
            raise ActionRefusedError(
                f"typed text is {len(action.text)} characters, over the policy's "
                f"max_text_length={self.max_text_length}"
            )
        if isinstance(action, Goto):
            self._check_url(action.url)

    def _check_targets(self, action: BaseAction, observation: Observation) -> None:
        mapping = observation.mapping
        for target in action.targets():
            point = observation.locate(target)  # refuses a label that is not shown
            x, y = point.x, point.y
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ActionRefusedError(f"point ({x}, {y}) is outside the screenshot [0, 1]")
            ex, ey = mapping.to_env(point)
            if not mapping.contains_env(ex, ey):
                raise ActionRefusedError(
                    f"point ({x}, {y}) maps to ({ex:.1f}, {ey:.1f}), outside the screen"
                )

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in self.allowed_schemes:
            raise ActionRefusedError(
                f"goto {url!r}: scheme {parts.scheme or '(none)'!r} is not allowed; "
                f"allowed: {list(self.allowed_schemes)} (write a full URL like https://host/)"
            )
        # The web environment applies the same rule to every page, frame and popup.
        if not url_allowed(url, normalize_allowed_domains(self.allowed_domains)):
            raise ActionRefusedError(
                f"goto {url!r}: host {parts.netloc!r} is not in allowed_domains "
                f"{self.allowed_domains}"
            )

    # -- confirmation --------------------------------------------------------------------
    def sensitivity(
        self, action: BaseAction, step: Step | None, observation: Observation, *,
        password_field: bool | None = None,
    ) -> str | None:
        """Why this action needs confirmation, or None.

        `password_field` says whether a TypeText goes into a password field: the field it
        types into, as the environment tells (`Environment.types_into_password`). None
        falls back to the field focused when the screenshot was taken.
        """
        if action.sensitive:
            return "the model flagged this action as sensitive"
        if password_field is None:
            password_field = bool(observation.extra.get("focused_is_password"))
        if self.confirm_password_fields and isinstance(action, TypeText) and password_field:
            return "typing into a password field"
        if action.type in HARMLESS_ACTIONS:
            return None
        text = "\n".join(t for t in self._decision_texts(action, step, observation) if t)
        for category, pattern in self._patterns.items():
            match = pattern.search(text) if pattern is not None else None
            if match:
                return f"{category}: the model mentions {match.group(0)!r}"
        return None

    def _decision_texts(
        self, action: BaseAction, step: Step | None, observation: Observation
    ) -> list[str]:
        """The texts that say what *this* action does: its own text, the target element's
        text and the step's explanation. Long reasoning is left out on purpose: it restates
        the task ("delete the old drafts...") at every step, so scanning it would ask for
        confirmation of every harmless click of such a task. Only when a family gives no
        explanation does the end of the thinking (where the model states its decision)
        stand in for it."""
        texts = [action.reason or ""]
        if isinstance(action, TypeText):
            texts.append(action.text)
        if step is not None:
            explanation = (step.explanation or "").strip()
            texts.append(explanation or last_sentences(step.thinking or ""))
        texts += self._element_texts(action, observation)
        return texts

    @staticmethod
    def _element_texts(action: BaseAction, observation: Observation) -> list[str]:
        labels = {t.element for t in action.targets() if t.element is not None}
        return [e.text for e in observation.elements or [] if e.label in labels]


# An English sentence ends with punctuation *and* a space ("3.5" stays whole); a Chinese one
# with its full-width punctuation alone.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])\s*|\n+")


def last_sentences(text: str, count: int = DECISION_SENTENCES) -> str:
    """The last `count` sentences of `text` (EN or ZH punctuation, or line breaks)."""
    sentences = [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
    return " ".join(sentences[-count:])


def _keyword_pattern(words: dict[str, list[str]]) -> re.Pattern[str] | None:
    parts = [r"\b" + re.escape(w).replace(r"\ ", r"\s+") + r"\b" for w in words.get("en", [])]
    parts += [re.escape(w) for w in words.get("zh", [])]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None
