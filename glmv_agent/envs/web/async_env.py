"""`AsyncWebEnv`: the web environment for playwright's async API.

The page logic is `core._WebCore`, shared with the sync `WebEnv` (which this module never
imports); this class only awaits it. Same constructor options, same observations and
outcomes, with `await env.observe()`, `await env.execute(action)` and `await env.close()`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from ...actions import BaseAction, TypeText
from ...errors import ConfigError, EnvError, UnsupportedActionError
from ..base import ActionHandler, ActionOutcome, Observation, Platform
from .core import (
    WEB_ACTIONS, PlaywrightError, _WebCore, _WebEnvShared, close_plan, drive_async,
    open_env_plan, translate_error,
)

logger = logging.getLogger(__name__)


class AsyncWebEnv(_WebEnvShared):
    """A browser page driven through playwright's async API (see `WebEnv`)."""

    platform: ClassVar[Platform] = "web"

    def __init__(
        self, page: Any, *, allowed_domains: Iterable[str] | None = None,
        set_of_marks: bool | None = None, allow_file_chooser: bool = False,
        stability_timeout: float = 5.0, rewrite_selects: bool = True,
        _owned: tuple[Any, Any] | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(getattr(page, "title", None)):
            raise ConfigError("this is a sync playwright Page; wrap it with WebEnv")
        self._core = _WebCore(
            page, allowed_domains=allowed_domains, set_of_marks=set_of_marks,
            allow_file_chooser=allow_file_chooser, stability_timeout=stability_timeout,
            rewrite_selects=rewrite_selects,
        )
        self._owned = _owned
        self._closed = False
        self._routed = False
        self._handlers: dict[str, ActionHandler] = {}
        self.last_observation: Observation | None = None

    @classmethod
    async def launch(
        cls, url: str | None = None, *, headless: bool = True,
        viewport: tuple[int, int] = (1280, 720), device_scale_factor: float = 1,
        executable_path: str | None = None, allowed_domains: Iterable[str] | None = None,
        set_of_marks: bool | None = None, allow_file_chooser: bool = False,
        stability_timeout: float = 5.0, rewrite_selects: bool = True,
        browser_args: Iterable[str] = (),
    ) -> AsyncWebEnv:
        """Start Chromium with one page of `viewport` CSS pixels and open `url` if given
        (http(s), or a local `file:` URL: see `normalize_start_url`)."""
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        env: AsyncWebEnv = await drive_async(open_env_plan(
            cls, playwright,
            dict(headless=headless, viewport=viewport, device_scale_factor=device_scale_factor,
                 executable_path=executable_path, browser_args=browser_args),
            dict(allowed_domains=allowed_domains, set_of_marks=set_of_marks,
                 allow_file_chooser=allow_file_chooser, stability_timeout=stability_timeout,
                 rewrite_selects=rewrite_selects),
        ))
        try:
            await env._ensure_routing()
            if url is not None:
                await env.execute(env._start_at(url))
        except BaseException:
            await env.close()
            raise
        return env

    # -- plumbing ----------------------------------------------------------------------
    async def _route(self, route: Any, request: Any) -> None:
        await drive_async(self._core.route(route, request))

    async def _ensure_routing(self) -> None:
        # An async constructor is impossible, so the allow-list route goes in on first use.
        if self._core.allowed is not None and not self._routed:
            self._routed = True
            await self._core.context.route("**/*", self._route)

    async def _run(self, plan: Any, what: str) -> Any:
        if self._closed:
            raise EnvError("this AsyncWebEnv is closed; create a new one")
        try:
            await self._ensure_routing()
            return await drive_async(plan)
        except PlaywrightError as exc:
            raise translate_error(exc, what) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await drive_async(close_plan(self._core, self._owned, self._route if self._routed else None))

    async def __aenter__(self) -> AsyncWebEnv:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the Environment API, awaited --------------------------------------------------
    def supported_actions(self) -> set[str]:
        return set(WEB_ACTIONS) | set(self._handlers)

    def supports(self, action_type: str) -> bool:
        return action_type in self.supported_actions()

    def register_handler(self, action_type: str, handler: ActionHandler) -> None:
        """Run `handler(env, action, observation)` (may be async) for `action_type`."""
        self._handlers[action_type] = handler

    async def observe(self) -> Observation:
        observation = await self._run(self._core.capture(), "taking a screenshot")
        self.last_observation = observation
        return observation

    async def execute(
        self, action: BaseAction, observation: Observation | None = None
    ) -> ActionOutcome:
        """Execute one action, with coordinates relative to `observation` (default: last)."""
        observation = observation or self.last_observation
        if observation is None:
            observation = await self.observe()
        handler = self._handlers.get(action.type)
        if handler is not None:
            result = handler(self, action, observation)  # type: ignore[arg-type]
            if inspect.isawaitable(result):
                result = await result
            return result if isinstance(result, ActionOutcome) else ActionOutcome(action=action)
        if action.type not in WEB_ACTIONS:
            raise UnsupportedActionError(
                f"AsyncWebEnv cannot execute {action.type!r} actions; it supports: "
                + ", ".join(sorted(self.supported_actions()))
            )
        return await self._run(
            self._core.act(action, observation.env_point),
            f"{action.type!r} action",
        )

    async def types_into_password(self, action: TypeText, observation: Observation) -> bool:
        """Whether `action` types into a password field (see `WebEnv.types_into_password`)."""
        point = None if action.target is None else observation.env_point(action.target)
        return await self._run(self._core.types_into_password(point),
                               "looking at the field typed into")

    async def wait_until_stable(self) -> bool:
        """Wait (at most `stability_timeout`) until the page stops changing."""
        return await self._run(self._core.wait_stable(), "waiting for the page")
