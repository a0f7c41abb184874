"""Web pages through playwright: `WebEnv` (sync API) and `AsyncWebEnv` (async API).

One implementation serves both playwright APIs: `core` holds the page logic as generator
plans plus the pure helpers (URL checks, key names, drawing marks); `sync_env` and
`async_env` each drive those plans with their API and share nothing but `core`. This
package re-exports what users and tests import (`from glmv_agent.envs.web import WebEnv`).

Coordinates: the screenshot is the viewport in device pixels; mouse actions take CSS pixels
of the viewport (device pixels / devicePixelRatio). After every action the environment
waits, within `stability_timeout` seconds, until the page is stable, so the next
screenshot is not stale (see `core`).
"""

from __future__ import annotations

from ...urls import url_allowed
from .async_env import AsyncWebEnv
from .core import (
    CHROMIUM_ARGS, WEB_ACTIONS, WHEEL_STEP_CSS_PX, default_executable_path, describe_dialog,
    draw_marks, drive_async, drive_sync, elements_from_page, normalize_start_url, normalize_url,
    playwright_key, playwright_key_combo, wheel_delta,
)
from .sync_env import WebEnv

__all__ = [
    "AsyncWebEnv", "CHROMIUM_ARGS", "WEB_ACTIONS", "WHEEL_STEP_CSS_PX", "WebEnv",
    "default_executable_path", "describe_dialog", "draw_marks", "drive_async", "drive_sync",
    "elements_from_page", "normalize_start_url", "normalize_url", "playwright_key",
    "playwright_key_combo", "url_allowed", "wheel_delta",
]
