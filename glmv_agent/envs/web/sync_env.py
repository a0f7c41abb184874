"""`WebEnv`: the web environment for playwright's sync API.

The page logic is `core._WebCore`, shared with `AsyncWebEnv`; this class hands it the sync
API's results (`drive_sync`) and implements the `Environment` contract over it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from ...actions import BaseAction, TypeText
from ...errors import ConfigError, EnvError
from ..base import ActionOutcome, Environment, Observation
from .core import (
    PlaywrightError, _WebCore, _WebEnvShared, close_plan, drive_sync, open_env_plan,
    translate_error,
)


class WebEnv(_WebEnvShared, Environment):
    """A browser page driven through playwright's sync API.

    `WebEnv.launch(url)` starts and owns a Chromium (closed by `close()` or `with`);
    `WebEnv(page)` wraps a live sync `Page` of yours and never closes your browser.
    With `set_of_marks=True` every observation lists the visible interactive elements
    (open shadow roots and same-origin frames included), numbered on
    `observation.marked_screenshot`, for the GLM-V web prompts. The default (None) leaves
    them off until an `Agent` whose dialect needs them turns them on; False keeps them off
    (and such an agent refuses to start).

    `allowed_domains` governs navigations: pages, frames, popups and redirects to other
    hosts are blocked. Subresources (images, scripts, fetch/XHR) of an allowed page may
    still come from any host, as pages need them to render; this is not a network sandbox.

    JavaScript dialogs (alert, confirm, prompt, beforeunload) are dismissed at once
    (Cancel for confirm/prompt) and reported: in the outcome's `detail` of the action
    that raised them and as `observation.extra["dialog"]` (type, message) of the next
    observation.
    """

    platform = "web"

    def __init__(
        self, page: Any, *, allowed_domains: Iterable[str] | None = None,
        set_of_marks: bool | None = None, allow_file_chooser: bool = False,
        stability_timeout: float = 5.0, rewrite_selects: bool = True,
        _owned: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        if inspect.iscoroutinefunction(getattr(page, "title", None)):
            raise ConfigError("this is an async playwright Page; wrap it with AsyncWebEnv")
        self._core = _WebCore(
            page, allowed_domains=allowed_domains, set_of_marks=set_of_marks,
            allow_file_chooser=allow_file_chooser, stability_timeout=stability_timeout,
            rewrite_selects=rewrite_selects,
        )
        self._owned = _owned  # (playwright, browser) when launched by us
        self._closed = False
        if self._core.allowed is not None:
            self._run(self._core.context.route("**/*", self._route), "installing the allow-list")

    @classmethod
    def launch(
        cls, url: str | None = None, *, headless: bool = True,
        viewport: tuple[int, int] = (1280, 720), device_scale_factor: float = 1,
        executable_path: str | None = None, allowed_domains: Iterable[str] | None = None,
        set_of_marks: bool | None = None, allow_file_chooser: bool = False,
        stability_timeout: float = 5.0, rewrite_selects: bool = True,
        browser_args: Iterable[str] = (),
    ) -> WebEnv:
        """Start Chromium with one page of `viewport` CSS pixels and open `url` if given
        (http(s), or a local `file:` URL: see `normalize_start_url`)."""
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        env: WebEnv = drive_sync(open_env_plan(
            cls, playwright,
            dict(headless=headless, viewport=viewport, device_scale_factor=device_scale_factor,
                 executable_path=executable_path, browser_args=browser_args),
            dict(allowed_domains=allowed_domains, set_of_marks=set_of_marks,
                 allow_file_chooser=allow_file_chooser, stability_timeout=stability_timeout,
                 rewrite_selects=rewrite_selects),
        ))
        if url is not None:
            try:
                env.execute(env._start_at(url))
            except BaseException:
                env.close()
                raise
        return env

    # -- plumbing ----------------------------------------------------------------------
    def _route(self, route: Any, request: Any) -> None:
        drive_sync(self._core.route(route, request))

    def _run(self, plan_or_value: Any, what: str) -> Any:
        if self._closed:
            raise EnvError("this WebEnv is closed; create a new one")
        try:
            if inspect.isgenerator(plan_or_value):
                return drive_sync(plan_or_value)
            return plan_or_value
        except PlaywrightError as exc:
            raise translate_error(exc, what) from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        routed = self._route if self._core.allowed is not None else None
        drive_sync(close_plan(self._core, self._owned, routed))

    # -- Environment -------------------------------------------------------------------
    def _capture(self) -> Observation:
        return self._run(self._core.capture(), "taking a screenshot")

    def _act(self, action: BaseAction, observation: Observation) -> ActionOutcome:
        return self._run(
            self._core.act(action, observation.env_point),
            f"{action.type!r} action",
        )

    def types_into_password(self, action: TypeText, observation: Observation) -> bool:
        """Whether `action` types into a password field: the one under its target (point
        or element label) or, without a target, the focused one, looked up in the page."""
        point = None if action.target is None else observation.env_point(action.target)
        return self._run(self._core.types_into_password(point), "looking at the field typed into")

    def wait_until_stable(self) -> bool:
        """Wait (at most `stability_timeout`) until the page stops changing."""
        return self._run(self._core.wait_stable(), "waiting for the page")

    _do_click = _do_double_click = _do_right_click = _do_middle_click = _act
    _do_long_press = _do_hover = _do_drag = _do_type = _do_key = _do_scroll = _act
    _do_goto = _do_navigate_back = _do_wait = _act
