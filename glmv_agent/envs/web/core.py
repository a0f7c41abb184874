"""The page logic shared by `WebEnv` (sync playwright) and `AsyncWebEnv` (async playwright).

Coordinates: the screenshot is the viewport in device pixels; mouse actions take CSS pixels
of the viewport (device pixels / devicePixelRatio). Viewport coordinates are what the user
sees, so a scrolled page needs no offset for mouse actions; element boxes of
set-of-marks are also given relative to the viewport, in screenshot pixels.

The page logic is written once as generator "plans" (`_WebCore`) that `yield` every
playwright call: the sync driver (`drive_sync`) hands each call's result straight back (the
sync API has already run it), the async driver (`drive_async`) awaits it first. The two
environments (`sync_env.py`, `async_env.py`) only drive these plans and import this module,
never each other. Pure helpers (URL checks, key names, drawing marks) are plain functions
below; the JavaScript evaluated in the page lives in `glmv_agent/data/`.

After every action the environment waits, within `stability_timeout` seconds, until the
page is stable: navigation committed and DOM loaded, no fresh network requests, and an
unchanged layout on consecutive animation frames, so the next screenshot is not stale.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from PIL import Image, ImageDraw, ImageFont

from ...actions import BaseAction, Goto, Target
from ...errors import ActionError, ActionRefusedError, ConfigError, EnvError, UnsupportedActionError
from ...geometry import viewport_mapping
from ...urls import normalize_allowed_domains, url_allowed
from ..base import ActionOutcome, Element, Observation

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "glmv_agent.envs.web needs playwright: pip install 'glmv-agent[web]'"
    ) from exc

logger = logging.getLogger(__name__)

# A plan yields playwright calls (or their coroutines) and returns a result.
Plan = Generator[Any, Any, Any]
Resolver = Callable[[Target], tuple[float, float]]

CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
)
WHEEL_STEP_CSS_PX = 100  # one wheel step, as browsers scroll for a mouse notch
# How long the layout must stay unchanged to count as stable. Short, because what an
# action sets in motion is also watched directly: requests, timers it started
# (page_timers.js), CSS animations; the quiet window covers what those miss (promise
# chains, frames).
QUIET_MS = 35
BLOCKED_QUIET_MS = 200  # after a navigation the allow-list blocked
TIMER_WINDOW_MS = 1000  # timers created this long after an action count as its effects
TIMER_MAX_DELAY_MS = 1000  # ... if they fire within this delay
# How long to wait for the file-chooser event of a click that reached a file input (the
# browser reports it asynchronously, and on a busy machine after the page looks settled).
FILE_CHOOSER_WAIT_S = 3.0
REQUEST_GRACE_S = 2.0  # requests older than this (long polls, streams) do not block stability
# Which document the page shows now (the id page_stable.js gave it) and its URL.
SAME_DOCUMENT_SCRIPT = "() => ({document: document.__glmvId || null, url: location.href})"
MARK_COLORS = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#9a6324",
    "#800000", "#000075", "#d6336c", "#2f9e44", "#1971c2",
)
WEB_ACTIONS = frozenset({
    "click", "double_click", "right_click", "middle_click", "long_press", "hover", "drag",
    "type", "key", "scroll", "goto", "navigate_back", "wait",
})


# -- data files --------------------------------------------------------------------------


@cache
def page_script(name: str) -> str:
    """The text of a JavaScript file from `glmv_agent/data/`."""
    return resources.files("glmv_agent.data").joinpath(name).read_text(encoding="utf-8")


@cache
def observe_script() -> str:
    """One page function for an observation, so it costs a single round trip: installs
    the drop-down helper in the top document, then returns the set-of-marks elements (or
    null), the page state, the title, the viewport size and where the visual viewport lies
    (for the screenshot's clip); with `hideCaret` it hides the text caret last, if a
    focused field shows one (`caretHidden`)."""
    return (
        "(options) => {\n"
        f"const installSelects = ({page_script('select_dropdowns.js')});\n"
        f"const marks = ({page_script('set_of_marks.js')});\n"
        f"const pageState = ({page_script('page_state.js')});\n"
        f"const caret = ({page_script('page_caret.js')});\n"
        "if (options.selects) installSelects();\n"
        "const vv = window.visualViewport;\n"
        "const facts = {items: options.marks ? marks(options.marks) : null,\n"
        "  state: pageState({x: null, y: null}), title: document.title,\n"
        "  viewport: {width: window.innerWidth, height: window.innerHeight},\n"
        "  view: {x: vv ? vv.pageLeft : window.scrollX, y: vv ? vv.pageTop : window.scrollY,\n"
        "         zoom: vv ? vv.scale : 1, dpr: window.devicePixelRatio || 1}};\n"
        "facts.caretHidden = !!(options.hideCaret && facts.state.focusedEditable && caret(true));\n"
        "return facts;\n"
        "}"
    )


@cache
def _key_names() -> dict[str, str]:
    import json

    table = json.loads(page_script("web_keys.json"))
    table.pop("_comment", None)
    return table


# -- pure helpers ------------------------------------------------------------------------


def default_executable_path() -> str | None:
    """$GLMV_CHROMIUM, else the system /usr/bin/chromium if present, else playwright's own."""
    env = os.environ.get("GLMV_CHROMIUM")
    if env:
        return env
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def playwright_key(name: str) -> str:
    """A normalized key name ("enter", "ctrl", "a") as playwright names it."""
    name = name.strip()
    if not name:
        raise ActionError("empty key name")
    mapped = _key_names().get(name.lower())
    if mapped is not None:
        return mapped
    if len(name) == 1:
        return name
    raise ActionError(
        f"unknown key {name!r}; use a single character or one of: "
        + ", ".join(sorted(_key_names()))
    )


def playwright_key_combo(keys: Iterable[str]) -> str:
    """Keys pressed together, e.g. ["ctrl", "a"] or ["ctrl+a"] -> "Control+a"."""
    parts: list[str] = []
    for key in keys:
        pieces = [key] if key.strip() == "+" else [p for p in key.split("+") if p.strip()]
        parts.extend(playwright_key(p) for p in pieces)
    if not parts:
        raise ActionError(f"no key to press in {list(keys)!r}")
    return "+".join(parts)


def normalize_url(url: str) -> str:
    """A URL the model asked for, made absolute; only http(s) and about:blank are allowed."""
    text = url.strip()
    if text == "about:blank":
        return text
    if "://" not in text:
        if text.split(":", 1)[0].lower() in ("javascript", "data", "file", "blob", "chrome"):
            raise ActionRefusedError(f"refusing to open {text[:80]!r}: only http(s) URLs can be opened")
        host = text.split("/")[0].split(":")[0].lower()
        local = host in ("localhost", "127.0.0.1", "[::1]")
        text = ("http://" if local else "https://") + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ActionRefusedError(
            f"refusing to open {url[:80]!r}: scheme {parts.scheme!r} is not allowed, "
            "only http and https URLs can be opened"
        )
    if not parts.hostname:
        raise ActionRefusedError(f"cannot open {url[:80]!r}: the URL has no host name")
    return text


def normalize_start_url(url: str) -> str:
    """The page a user asked to start on: what `normalize_url` allows, or a local file.

    A `file:` URL is the user's choice only (test pages, MiniWoB++ ...); the model's own
    goto stays http(s)-only. A missing file is a ConfigError naming it.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() != "file":
        return normalize_url(text)
    path = Path(url2pathname(parts.path))
    if not path.is_file():
        raise ConfigError(f"start URL {url!r}: no such file {path}")
    return parts._replace(scheme="file").geturl()  # as the browser reports it: lower case


def wheel_delta(direction: str, amount: int) -> tuple[float, float]:
    """Wheel deltas in CSS pixels; "down" shows content below (positive deltaY)."""
    distance = float(amount * WHEEL_STEP_CSS_PX)
    return {
        "down": (0.0, distance), "up": (0.0, -distance),
        "right": (distance, 0.0), "left": (-distance, 0.0),
    }[direction]


def elements_from_page(items: list[dict[str, Any]], scale_x: float, scale_y: float) -> list[Element]:
    """Elements found by set_of_marks.js (CSS px of the viewport) in screenshot pixels."""
    elements = []
    for label, item in enumerate(items):
        attributes = {k: v for k, v in (item.get("attributes") or {}).items() if v}
        if item.get("type"):
            attributes["type"] = item["type"]
        if item.get("ariaLabel"):
            attributes["aria-label"] = item["ariaLabel"]
        elements.append(Element(
            label=label, tag=item["tag"], text=item.get("text") or "",
            x1=item["x1"] * scale_x, y1=item["y1"] * scale_y,
            x2=item["x2"] * scale_x, y2=item["y2"] * scale_y,
            attributes=attributes,
        ))
    return elements


def _label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_marks(image: Image.Image, elements: list[Element], scale: float = 1.0) -> Image.Image:
    """A copy of the screenshot with each element boxed and numbered in its top-left corner.

    `scale` is the devicePixelRatio, so labels have the same size in CSS pixels.
    """
    marked = image.convert("RGB")
    draw = ImageDraw.Draw(marked)
    font = _label_font(max(10, round(12 * scale)))
    line = max(1, round(2 * scale))
    pad = max(1, round(2 * scale))
    for element in elements:
        color = MARK_COLORS[element.label % len(MARK_COLORS)]
        box = [round(element.x1), round(element.y1), round(element.x2) - 1, round(element.y2) - 1]
        draw.rectangle(box, outline=color, width=line)
        text = str(element.label)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        x = box[0]
        y = box[1] - h if box[1] - h >= 0 else box[1]  # above the box, inside at the top edge
        draw.rectangle([x, y, x + w, y + h], fill=color)
        draw.text((x + pad - left, y + pad - top), text, fill="white", font=font)
    return marked


def describe_dialog(info: dict[str, str]) -> str:
    """One line for the trace and the model about a JavaScript dialog that was dismissed."""
    kind, message = info["type"], info["message"]
    outcome = {
        "alert": "it was closed",
        "beforeunload": "it was dismissed, so the page did not unload",
    }.get(kind, "it was dismissed (Cancel)")
    return f"the page showed a {kind} dialog {message!r}; {outcome}"


def _is_gone(exc: BaseException) -> bool:
    text = str(exc)
    return any(s in text for s in (
        "has been closed", "Target closed", "Browser closed", "browser has disconnected",
        "Connection closed", "crashed",
    ))


def _is_navigation_race(exc: BaseException) -> bool:
    text = str(exc)
    return any(s in text for s in (
        "Execution context was destroyed", "navigation", "Navigation", "detached",
        "Cannot find context",
    ))


def translate_error(exc: BaseException, what: str) -> Exception:
    """A playwright failure as our EnvError (browser gone) or ActionError (action failed)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _is_gone(exc):
        return EnvError(
            f"the browser page is closed or crashed ({first}); create a new WebEnv "
            "(WebEnv.launch) or wrap a live page"
        )
    return ActionError(f"{what} failed in the browser: {first}")


# -- drivers -----------------------------------------------------------------------------


def drive_sync(plan: Plan) -> Any:
    """Run a plan with the sync API: every yielded value is already the call's result."""
    value: Any = None
    while True:
        try:
            value = plan.send(value)
        except StopIteration as stop:
            return stop.value


async def drive_async(plan: Plan) -> Any:
    """Run a plan with the async API: await each yielded coroutine, hand back its result.

    A failure is thrown into the plan at the `yield` where it happened, so plans handle
    errors the same way under both APIs.
    """
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = (await step) if inspect.isawaitable(step) else step
        except Exception as exc:  # handed to the plan on the next round
            error = exc


# -- the page logic shared by both APIs ----------------------------------------------------


@dataclass
class _Marks:
    """Counts of page events before an action, to see what the action caused."""

    pages: int
    blocked: int
    choosers: int
    dialogs: int


class _WebCore:
    """State and page logic of a web environment, independent of sync/async playwright."""

    def __init__(
        self, page: Any, *, allowed_domains: Iterable[str] | None, set_of_marks: bool | None,
        allow_file_chooser: bool, stability_timeout: float, rewrite_selects: bool,
    ) -> None:
        if stability_timeout < 0:
            raise ConfigError(f"stability_timeout must be >= 0 seconds, got {stability_timeout}")
        self.page = page
        self.context = page.context
        self.allowed = normalize_allowed_domains(allowed_domains)
        self.start_file: str | None = None  # the user's local start page (a file: URL)
        self.set_of_marks = set_of_marks  # None: off until an agent's dialect needs labels
        self.allow_file_chooser = allow_file_chooser
        self.stability_timeout = stability_timeout
        self.rewrite_selects = rewrite_selects
        self.file_chooser: Any = None  # the last file chooser, when allowed
        # Whether the page saw the last action click a file input (set by wait_stable).
        self._file_input_clicked = False
        self._inflight: dict[Any, dict[Any, float]] = {}
        self._navigations: dict[Any, int] = {}
        self._crashed: set[Any] = set()
        self._new_pages: list[Any] = []
        self._blocked: list[str] = []
        self._choosers: list[Any] = []
        self._dialogs: list[dict[str, str]] = []  # every JavaScript dialog, oldest first
        self._dialogs_observed = 0  # how many of them an observation has reported
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = []
        self._attached: set[Any] = set()
        self._devtools_sessions: dict[Any, Any] = {}  # page -> DevTools session or None
        self._listen(self.context, "page", self._on_new_page)
        self._attach(page)

    # -- events ------------------------------------------------------------------------
    def _listen(self, emitter: Any, event: str, handler: Callable[..., Any]) -> None:
        emitter.on(event, handler)
        self._listeners.append((emitter, event, handler))

    def _attach(self, page: Any) -> None:
        if page in self._attached:
            return
        self._attached.add(page)
        inflight = self._inflight.setdefault(page, {})

        def started(request: Any) -> None:
            inflight[request] = time.monotonic()

        def ended(request: Any) -> None:
            inflight.pop(request, None)

        def navigated(frame: Any) -> None:
            if frame == page.main_frame:
                self._navigations[page] = self._navigations.get(page, 0) + 1

        self._listen(page, "request", started)
        self._listen(page, "requestfinished", ended)
        self._listen(page, "requestfailed", ended)
        self._listen(page, "framenavigated", navigated)
        def chooser(file_chooser: Any) -> None:
            self._choosers.append(file_chooser)

        def crashed(crashed_page: Any) -> None:
            self._crashed.add(crashed_page)

        self._listen(page, "filechooser", chooser)
        self._listen(page, "crash", crashed)
        self._listen(page, "dialog", self._on_dialog)

    def _on_dialog(self, dialog: Any) -> None:
        # Nobody can answer a dialog while it blocks the page, so it is dismissed at once
        # (Cancel for confirm/prompt, "stay" for beforeunload) and reported instead.
        info = {"type": dialog.type, "message": dialog.message}
        if dialog.type == "prompt":
            info["default"] = dialog.default_value
        self._dialogs.append(info)
        logger.info("dismissed a JavaScript %s dialog: %r", dialog.type, dialog.message)
        result = dialog.dismiss()
        if inspect.isawaitable(result):  # async API: the handler runs in the event loop
            asyncio.ensure_future(result)

    def _on_new_page(self, page: Any) -> None:
        logger.info("new tab or popup opened: %s", page.url)
        self._new_pages.append(page)
        self._attach(page)

    def detach(self) -> None:
        """Remove every listener this environment added (the page stays as it is)."""
        for emitter, event, handler in self._listeners:
            try:
                emitter.remove_listener(event, handler)
            except Exception:  # the emitter is already gone
                pass
        self._listeners.clear()

    def route(self, route: Any, request: Any) -> Plan:
        """Route handler plan: abort navigations to hosts outside the allow-list."""
        if request.is_navigation_request() and not self.may_visit(request.url):
            logger.warning("blocked navigation to %s (not in allowed_domains)", request.url)
            self._blocked.append(request.url)
            yield route.abort("blockedbyclient")
        else:
            yield route.fallback()

    def may_visit(self, url: str) -> bool:
        """Whether the page may be at `url`: allowed_domains, or the user's local start
        page (a file has no host for the allow-list to judge)."""
        return url == self.start_file or url_allowed(url, self.allowed)

    # -- pages -------------------------------------------------------------------------
    def live_page(self) -> Any:
        """The current page; falls back to another open tab if it closed itself."""
        page = self.page
        if page in self._crashed:
            raise EnvError("the browser page crashed; create a new WebEnv or reload the page")
        if page.is_closed():
            others = [p for p in self._safe_pages() if not p.is_closed()]
            if not others:
                raise EnvError(
                    "the browser page is closed; create a new WebEnv (WebEnv.launch) or wrap "
                    "a live page"
                )
            self.page = others[-1]
            self._attach(self.page)
            logger.info("current tab closed; switched to %s", self.page.url)
        return self.page

    def _safe_pages(self) -> list[Any]:
        try:
            return list(self.context.pages)
        except Exception:
            return []

    def _busy(self, page: Any) -> bool:
        now = time.monotonic()
        return any(now - t < REQUEST_GRACE_S for t in self._inflight.get(page, {}).values())

    def wait_stable(self, quiet_ms: int = QUIET_MS) -> Plan:
        """Wait (bounded) for a committed, loaded, quiet, unchanging page; True if reached.
        Also notes whether the page saw the last action's click reach a file input."""
        deadline = time.monotonic() + self.stability_timeout
        self._file_input_clicked = False
        while True:
            page = self.live_page()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            navigations = self._navigations.get(page, 0)
            try:
                yield page.wait_for_load_state("domcontentloaded", timeout=remaining * 1000)
                while self._busy(page) and time.monotonic() < deadline:
                    yield page.wait_for_timeout(50)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                stable = yield page.evaluate(
                    page_script("page_stable.js"),
                    {"quietMs": quiet_ms, "timeoutMs": remaining * 1000},
                )
                self._file_input_clicked = bool(stable["fileInputClicked"])
                if self._navigations.get(page, 0) != navigations and not self._busy(page):
                    # A navigation was reported meanwhile. Often it is one the check has
                    # already seen (a hash or history change of this document, whose event
                    # arrives late): measured again only if the document or URL changed.
                    now = yield page.evaluate(SAME_DOCUMENT_SCRIPT)
                    if now != {"document": stable["document"], "url": stable["url"]}:
                        continue
            except PlaywrightTimeoutError:
                return False
            except PlaywrightError as exc:
                if page.is_closed() or _is_navigation_race(exc):
                    continue  # a navigation replaced the document; measure the new one
                raise
            if self._busy(page):
                continue
            return bool(stable["stable"])

    # -- observe -----------------------------------------------------------------------
    def install_scripts(self, page: Any) -> Plan:
        """The drop-down helper in every child frame (the top document gets it from the
        observe script)."""
        if not self.rewrite_selects:
            return
        for frame in page.frames[1:]:
            try:
                yield frame.evaluate(page_script("select_dropdowns.js"))
            except PlaywrightError as exc:
                if _is_gone(exc) and page.is_closed():
                    raise
                logger.debug("could not install select drop-downs in %s: %s", frame.url, exc)

    def _devtools(self, page: Any) -> Plan:
        """A Chromium DevTools session on `page` (made once per page), or None where the
        browser has none (Firefox, WebKit pages a user wrapped)."""
        if page not in self._devtools_sessions:
            try:
                session = yield self.context.new_cdp_session(page)
            except PlaywrightError as exc:
                if _is_gone(exc):
                    raise
                session = None
            self._devtools_sessions[page] = session
        return self._devtools_sessions[page]

    def _screenshot(self, page: Any, session: Any, facts: dict[str, Any]) -> Plan:
        """The viewport as PNG bytes in device pixels, without the text caret.

        With a DevTools session: one `Page.captureScreenshot` (the observe script has
        hidden the caret, shown again after it when a field had one) with Chromium's fast
        PNG encoder. That is what `page.screenshot()` does too, but it spends three more
        page round trips around it (caret, fonts, layout metrics: ~15 ms) and its default
        encoder makes a PNG that is slower to decode (~10 ms vs ~4 ms at 1280x720); the
        pixels are the same.
        """
        if session is None:
            return (yield page.screenshot(type="png"))
        view, css = facts["view"], facts["viewport"]
        zoom = view["zoom"] or 1
        try:
            shot = yield session.send("Page.captureScreenshot", {
                "format": "png", "optimizeForSpeed": True, "captureBeyondViewport": False,
                # Our session has no device-metrics override: the scale gives device pixels.
                "clip": {"x": view["x"], "y": view["y"], "width": css["width"] / zoom,
                         "height": css["height"] / zoom, "scale": zoom * view["dpr"]},
            })
        except PlaywrightError as exc:
            if _is_gone(exc) or page.is_closed():
                raise
            # The session broke (detached): page.screenshot() from now on, never no image.
            logger.debug("DevTools screenshot failed (%s); using page.screenshot()", exc)
            self._devtools_sessions[page] = None
            shot = None
        if facts["caretHidden"]:
            yield page.evaluate(page_script("page_caret.js"), False)
        if shot is None:
            return (yield page.screenshot(type="png"))
        return base64.b64decode(shot["data"])

    def capture(self) -> Plan:
        page = self.live_page()
        yield from self.install_scripts(page)
        session = yield from self._devtools(page)
        facts = yield page.evaluate(observe_script(), {
            "selects": self.rewrite_selects,
            "marks": {"minArea": 20} if self.set_of_marks else None,
            "hideCaret": session is not None,
        })
        items, state, title = facts["items"], facts["state"], facts["title"]
        png = yield from self._screenshot(page, session, facts)
        css = page.viewport_size or facts["viewport"]
        image = Image.open(io.BytesIO(png))
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        scale_x = image.width / css["width"]
        scale_y = image.height / css["height"]
        observation = Observation(
            screenshot=image, screenshot_png=png,
            mapping=viewport_mapping(image.width, image.height, device_pixel_ratio=scale_x),
            platform="web", url=page.url, title=title,
            extra={
                "focused_is_password": bool(state["focusedIsPassword"]),
                "device_pixel_ratio": scale_x,
                "viewport_css": (css["width"], css["height"]),
                "tabs": len([p for p in self._safe_pages() if not p.is_closed()]),
            },
        )
        # The newest dialog since the previous observation (it was dismissed; see _on_dialog).
        if len(self._dialogs) > self._dialogs_observed:
            observation.extra["dialog"] = dict(self._dialogs[-1])
            self._dialogs_observed = len(self._dialogs)
        if items is not None:
            elements = elements_from_page(items, scale_x, scale_y)
            observation.elements = elements
            observation.marked_screenshot = draw_marks(image, elements, scale_x)
        return observation

    # -- act ---------------------------------------------------------------------------
    def act(self, action: BaseAction, resolve: Resolver) -> Plan:
        """Execute one action, wait for the page to settle, report what happened."""
        name = action.type
        if name not in WEB_ACTIONS:
            raise UnsupportedActionError(
                f"the web environment cannot execute {name!r} actions; it supports: "
                + ", ".join(sorted(WEB_ACTIONS))
            )
        page = self.live_page()
        marks = _Marks(
            len(self._new_pages), len(self._blocked), len(self._choosers), len(self._dialogs)
        )
        outcome = ActionOutcome(action=action)
        try:
            yield from self._arm_timers(page)
            notes = yield from getattr(self, f"_{name}")(page, action, resolve, outcome)
            notes = [notes] if isinstance(notes, str) else []
            settle_started = time.monotonic()
            notes += yield from self._settle(marks)
            outcome.settle_s = time.monotonic() - settle_started
        except PlaywrightError as exc:
            raise translate_error(exc, f"{name!r} action") from exc
        outcome.detail = "; ".join(n for n in notes if n)
        return outcome

    def _arm_timers(self, page: Any) -> Plan:
        """Let the stability check see the short timers the coming action starts."""
        try:
            yield page.evaluate(page_script("page_timers.js"), {
                "maxDelayMs": TIMER_MAX_DELAY_MS, "windowMs": TIMER_WINDOW_MS})
        except PlaywrightError as exc:
            if not _is_navigation_race(exc):
                raise  # a navigation in progress: the new document is measured afresh

    def _settle(self, marks: _Marks) -> Plan:
        notes: list[str] = []
        if not (yield from self.wait_stable()):
            notes.append(f"the page was still changing after {self.stability_timeout:g}s")
        if len(self._blocked) > marks.blocked:
            # Chromium commits the error page of a blocked navigation a moment later, which
            # no timer or request shows: give it the long quiet window.
            yield from self.wait_stable(BLOCKED_QUIET_MS)
        notes += [describe_dialog(d) for d in self._dialogs[marks.dialogs:]]
        if len(self._choosers) == marks.choosers and self._file_input_clicked:
            deadline = time.monotonic() + FILE_CHOOSER_WAIT_S
            while len(self._choosers) == marks.choosers and time.monotonic() < deadline:
                yield self.live_page().wait_for_timeout(50)  # lets the event be dispatched
        choosers = self._choosers[marks.choosers:]
        if choosers:
            if not self.allow_file_chooser:
                raise ActionRefusedError(
                    "the action opened a file chooser (an <input type=file>); uploading local "
                    "files is disabled. Create the WebEnv with allow_file_chooser=True and use "
                    "env.file_chooser.set_files(...) to allow it"
                )
            self.file_chooser = choosers[-1]
            notes.append("a file chooser opened; it is available as env.file_chooser")
        blocked = self._blocked[marks.blocked:]
        for page in [p for p in self._new_pages[marks.pages:] if not p.is_closed()]:
            if blocked and (page.url in ("", "about:blank") or not self.may_visit(page.url)):
                yield page.close()  # a popup whose navigation was blocked
                continue
            self.page = page
            yield page.bring_to_front()
            notes.append(f"followed the new tab {page.url}")
            if not (yield from self.wait_stable()):
                notes.append("the new tab was still loading")
        page = self.live_page()
        if blocked and page.url.startswith("chrome-error:"):
            # The blocked navigation left Chromium's error page; return to where we were.
            yield page.go_back(wait_until="commit")
            yield from self.wait_stable()
        elif not self.may_visit(page.url):
            # e.g. a server redirect, which route interception does not see
            where = page.url
            yield page.go_back(wait_until="commit")
            yield from self.wait_stable()
            raise ActionRefusedError(
                f"the page went to {where}, which is outside allowed_domains "
                f"{list(self.allowed or ())}; went back"
            )
        if blocked:
            notes.append(
                "blocked navigation outside allowed_domains: " + ", ".join(blocked)
            )
        return notes

    def _point(self, resolve: Resolver, target: Target, outcome: ActionOutcome) -> tuple[float, float]:
        x, y = resolve(target)
        outcome.env_points.append((x, y))
        return x, y

    def _click(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        x, y = self._point(resolve, action.target, outcome)
        yield page.mouse.click(x, y)

    def _double_click(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        x, y = self._point(resolve, action.target, outcome)
        yield page.mouse.dblclick(x, y)

    def _right_click(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        x, y = self._point(resolve, action.target, outcome)
        yield page.mouse.click(x, y, button="right")

    def _middle_click(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        x, y = self._point(resolve, action.target, outcome)
        yield page.mouse.click(x, y, button="middle")

    def _long_press(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        x, y = self._point(resolve, action.target, outcome)
        yield page.mouse.move(x, y)
        yield page.mouse.down()
        yield page.wait_for_timeout(action.duration * 1000)
        yield page.mouse.up()

    def _hover(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        x, y = self._point(resolve, action.target, outcome)
        yield page.mouse.move(x, y, steps=5)

    def _drag(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        sx, sy = self._point(resolve, action.start, outcome)
        ex, ey = self._point(resolve, action.end, outcome)
        yield page.mouse.move(sx, sy)
        yield page.mouse.down()
        yield page.mouse.move(ex, ey, steps=12)  # intermediate moves: drag listeners need them
        yield page.mouse.up()

    def types_into_password(self, point: tuple[float, float] | None) -> Plan:
        """Whether typing at `point` (CSS pixels of the viewport; None: into the focused
        field) goes into a password field, as the page is now."""
        x, y = point if point is not None else (None, None)
        state = yield self.live_page().evaluate(page_script("page_state.js"), {"x": x, "y": y})
        return bool(state["targetIsPassword"] if point is not None else state["focusedIsPassword"])

    def _type(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        if action.target is not None:
            x, y = self._point(resolve, action.target, outcome)
            state = yield page.evaluate(page_script("page_state.js"), {"x": x, "y": y})
            if state["targetTag"] == "select":
                # Typing into a drop-down means choosing the option with that text.
                chosen = yield page.evaluate(
                    page_script("page_state.js"), {"x": x, "y": y, "selectLabel": action.text}
                )
                if chosen.get("selected") is None:
                    raise ActionError(
                        f"the drop-down has no option {action.text!r}; its options are "
                        f"{chosen.get('options')}"
                    )
                return f"selected option {chosen['selected']!r}"
            yield page.mouse.click(x, y)
        if action.clear:
            yield page.keyboard.press("ControlOrMeta+a")
            yield page.keyboard.press("Backspace")
        if action.text:
            # keyboard.type sends real key events for keyboard characters and inserts
            # anything else (CJK, emoji) as text input, like an IME would.
            yield page.keyboard.type(action.text)
        if action.enter:
            yield page.keyboard.press("Enter")
        return None

    def _key(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        yield page.keyboard.press(playwright_key_combo(action.keys))

    def _scroll(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        if action.target is not None:
            x, y = self._point(resolve, action.target, outcome)
        else:
            size = page.viewport_size or (
                yield page.evaluate("() => ({width: window.innerWidth, height: window.innerHeight})")
            )
            x, y = size["width"] / 2, size["height"] / 2
            outcome.env_points.append((x, y))
        dx, dy = wheel_delta(action.direction, action.amount)
        yield page.mouse.move(x, y)
        # The wheel event scrolls whatever is scrollable under the pointer, like a real mouse.
        yield page.mouse.wheel(dx, dy)

    def _goto(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        # http(s) only, but for the user's own local start page
        url = action.url if action.url == self.start_file else normalize_url(action.url)
        if not self.may_visit(url):
            raise ActionRefusedError(
                f"{url} is outside allowed_domains {list(self.allowed or ())}; not opened"
            )
        try:
            yield page.goto(url, wait_until="commit", timeout=max(1.0, self.stability_timeout) * 1000 * 6)
        except PlaywrightError as exc:
            if _is_gone(exc):
                raise
            first = str(exc).strip().splitlines()[0]
            raise ActionError(f"could not open {url}: {first}") from exc
        return f"opened {url}"

    def _navigate_back(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        before = page.url
        response = yield page.go_back(wait_until="commit")
        if response is None and page.url == before:
            # An error, not a note: the agent tells the model about errors, so it stops trying.
            raise ActionError(
                "there is no previous page in this tab to go back to; open a URL or click a "
                "link instead"
            )
        return f"went back to {page.url}"

    def _wait(self, page: Any, action: Any, resolve: Resolver, outcome: ActionOutcome) -> Plan:
        yield page.wait_for_timeout(action.seconds * 1000)


def _launch_plan(
    playwright: Any, *, headless: bool, viewport: tuple[int, int], device_scale_factor: float,
    executable_path: str | None, browser_args: Iterable[str],
) -> Plan:
    if not (viewport[0] > 0 and viewport[1] > 0):
        raise ConfigError(f"viewport must be positive (width, height), got {viewport}")
    if not device_scale_factor > 0:
        raise ConfigError(f"device_scale_factor must be positive, got {device_scale_factor}")
    executable = executable_path if executable_path is not None else default_executable_path()
    try:
        browser = yield playwright.chromium.launch(
            headless=headless, executable_path=executable,
            args=[*CHROMIUM_ARGS, *browser_args],
        )
    except PlaywrightError as exc:
        raise EnvError(
            f"could not start Chromium ({str(exc).strip().splitlines()[0]}); install chromium "
            "or set $GLMV_CHROMIUM / executable_path to a Chromium binary"
        ) from exc
    context = yield browser.new_context(
        viewport={"width": int(viewport[0]), "height": int(viewport[1])},
        device_scale_factor=device_scale_factor,
    )
    page = yield context.new_page()
    return browser, context, page


def open_env_plan(
    cls: Any, playwright: Any, launch: dict[str, Any], options: dict[str, Any]
) -> Plan:
    """Launch Chromium and wrap its page in `cls`; on any failure close what was started."""
    try:
        browser, _context, page = yield from _launch_plan(playwright, **launch)
    except BaseException:
        yield playwright.stop()
        raise
    try:
        return cls(page, _owned=(playwright, browser), **options)
    except BaseException:  # e.g. a bad allow-list: do not leak the browser we just started
        yield from _close_owned(page.context, (playwright, browser))
        raise


def close_plan(core: _WebCore, owned: tuple[Any, Any] | None, route_handler: Any) -> Plan:
    """Detach from the page; close the browser we launched, or only unroute a user's page."""
    core.detach()
    for session in [s for s in core._devtools_sessions.values() if s is not None]:
        try:
            yield session.detach()
        except Exception:  # the page or browser is already gone
            pass
    core._devtools_sessions.clear()
    if owned is not None:
        yield from _close_owned(core.context, owned)
    elif route_handler is not None:
        try:
            yield core.context.unroute("**/*", route_handler)
        except Exception:  # the user's context may already be closed
            pass


def _close_owned(context: Any, owned: tuple[Any, Any]) -> Plan:
    playwright, browser = owned
    for step in (context.close, browser.close, playwright.stop):
        try:
            yield step()
        except Exception as exc:  # closing what is already gone is fine
            logger.debug("while closing the browser: %s", exc)


class _WebEnvShared:
    """The properties WebEnv and AsyncWebEnv share over their `_WebCore`."""

    _core: _WebCore

    @property
    def page(self) -> Any:
        """The page actions go to (the newest tab after a popup opened)."""
        return self._core.live_page()

    @property
    def context(self) -> Any:
        return self._core.context

    @property
    def file_chooser(self) -> Any:
        """The last file chooser an action opened (only with allow_file_chooser=True)."""
        return self._core.file_chooser

    def _start_at(self, url: str) -> Goto:
        """The goto that opens the user's start page (`normalize_start_url`)."""
        url = normalize_start_url(url)
        if urlsplit(url).scheme.lower() == "file":
            self._core.start_file = url
        return Goto(url=url)

    def enable_element_labels(self) -> bool:
        """Turn set-of-marks labels on (an Agent does this for a dialect that names elements
        by label); ConfigError if they were turned off with `set_of_marks=False`."""
        if self._core.set_of_marks is False:
            raise ConfigError(
                "this web environment was created with set_of_marks=False, but the model's "
                "web prompt names elements by their set-of-marks labels (Click [3]), so it "
                "could not point at anything; leave set_of_marks at its default (or True)"
            )
        self._core.set_of_marks = True
        return True
