"""Environments: a web page (playwright), the desktop (mss + pyautogui), an Android phone (adb).

`from glmv_agent.envs import WebEnv` works like `from glmv_agent import WebEnv`: each
environment's module (and so playwright or pyautogui) is imported on first access, so
importing this package needs only the base dependencies.
"""

from __future__ import annotations

from .._lazy import lazy_getattr
from .base import ActionOutcome, Element, Environment, Observation, Platform

# name -> module that defines it; resolved on first access.
_LAZY = {
    "WebEnv": ".web",
    "AsyncWebEnv": ".web",
    "DesktopEnv": ".desktop",
    "AndroidEnv": ".android",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["ActionOutcome", "Element", "Environment", "Observation", "Platform", *_LAZY]
