"""glmv-agent: let GLM-V vision-language models operate desktops, web pages and phones.

Heavy parts (torch engine, playwright, pyautogui) are imported lazily, so
`import glmv_agent` stays fast and works with only the base dependencies installed.
"""

from __future__ import annotations

from ._lazy import lazy_getattr
from .actions import (
    Action, BaseAction, Box, Point, Target, action_from_dict, action_from_json,
    register_action, registered_actions,
)
from .errors import (
    ActionError, ActionRefusedError, BackendError, CheckpointError, ConfigError, EnvError,
    GlmvAgentError, InputError, ParseError, StoppedError, TaskFailedError, UnsupportedActionError,
)

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access.
_LAZY = {
    "Agent": ".agent",
    "RunResult": ".agent",
    "RunState": ".run_state",
    "parse": ".dialects",
    "get_dialect": ".dialects",
    "Step": ".dialects.base",
    "DesktopEnv": ".envs.desktop",
    "WebEnv": ".envs.web",
    "AsyncWebEnv": ".envs.web",
    "AndroidEnv": ".envs.android",
    "LocalBackend": ".backends.local",
    "OpenAIBackend": ".backends.openai",
    "ReplayBackend": ".backends.replay",
    "PageAgent": ".page_agent",
    "AsyncPageAgent": ".page_agent",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "Action", "BaseAction", "Box", "Point", "Target", "action_from_dict", "action_from_json",
    "register_action", "registered_actions", "ActionError", "ActionRefusedError",
    "BackendError", "CheckpointError", "ConfigError", "EnvError", "GlmvAgentError",
    "InputError", "ParseError", "StoppedError", "TaskFailedError", "UnsupportedActionError",
    *_LAZY,
]
