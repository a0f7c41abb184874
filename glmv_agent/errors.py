"""One exception family for the whole SDK.

Every message says what was wrong and what to do about it. Catch `GlmvAgentError` to catch
anything this library raises on purpose.
"""

from __future__ import annotations


class GlmvAgentError(Exception):
    """Base class of every error raised by glmv-agent."""


class ConfigError(GlmvAgentError, ValueError):
    """A configuration (checkpoint config.json, agent options, CLI flags) is invalid."""


class CheckpointError(GlmvAgentError):
    """Weights or checkpoint files are missing, truncated, or do not match the config."""


class InputError(GlmvAgentError, ValueError):
    """An input (image, video, message list) cannot be used: corrupt, too large, wrong type."""


class ParseError(GlmvAgentError, ValueError):
    """Model output did not follow the expected format.

    `text` keeps the raw model output so nothing is lost; `expected` says what the parser
    was looking for, and is what the agent feeds back to the model when it re-asks.
    """

    def __init__(self, message: str, *, text: str = "", expected: str = "") -> None:
        super().__init__(message)
        self.text = text
        self.expected = expected


class ActionError(GlmvAgentError):
    """An action is invalid, unsupported by the environment, or failed to execute."""


class UnsupportedActionError(ActionError):
    """The environment has no way to perform this kind of action."""


class ActionRefusedError(ActionError):
    """A policy refused the action (outside the screen, blocked domain, not confirmed)."""


class EnvError(GlmvAgentError):
    """The environment (browser, X display, phone) is unavailable or broke mid-run."""


class BackendError(GlmvAgentError):
    """The model backend failed: server unreachable, auth, model not found, timeout."""


class StoppedError(GlmvAgentError):
    """The run was stopped from outside (Agent.stop())."""


class TaskFailedError(GlmvAgentError):
    """A page-agent command (act, click, query, ...) did not do what was asked.

    `result` is the agent's `RunResult` of that command when there is one (status, steps,
    trace directory), so the caller can see how far it got.
    """

    def __init__(self, message: str, *, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result
