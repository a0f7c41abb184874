"""The desktop environment: mss screenshots, pyautogui mouse and keyboard.

Coordinates: the model's normalized point is mapped to the captured screenshot's pixel and
from there to pyautogui's input units (logical points: on a Retina Mac or a scaled Windows
display these differ from the physical pixels mss captures), offset by the monitor's
position in the virtual desktop (negative for a monitor left of / above the primary).

Text: ASCII goes through `pyautogui.write` (or `xdotool type` on X11 for the few characters
pyautogui sends wrongly there); anything else is pasted from the clipboard (xclip / pbcopy /
PowerShell), which is then restored. `typing="xdotool"` types Unicode with xdotool instead:
no clipboard involved, but best-effort, as applications may read a remapped key late.

pyautogui connects to the X display when it is imported, so it is imported lazily, on the
first action or observation, with this environment's display.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, Literal

from PIL import Image

from ..actions import (
    BaseAction, Click, DoubleClick, Drag, Hover, Key, MiddleClick, RightClick, Scroll, Target,
    TypeText, Wait,
)
from ..errors import (
    ActionRefusedError, ConfigError, EnvError, StoppedError, UnsupportedActionError,
)
from ..geometry import ScreenMapping
from . import keys as keymap
from ._xvfb import ensure_xauthority, quiet_xlib_auth
from .base import ActionOutcome, Environment, Observation, StillFrame, wait_until_still

logger = logging.getLogger(__name__)
quiet_xlib_auth()  # before pyautogui's import opens its X connection

TypingMode = Literal["auto", "pyautogui", "xdotool", "clipboard"]
_TYPING_MODES = ("auto", "pyautogui", "xdotool", "clipboard")
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(32, 127)) | {"\n", "\t"}


def monitor_mapping(
    monitor: Mapping[str, int],
    image_size: tuple[int, int],
    *,
    mss_primary_size: tuple[int, int],
    input_primary_size: tuple[int, int],
    hidpi: float | None = None,
) -> ScreenMapping:
    """How a screenshot of `monitor` maps to pyautogui's input coordinates.

    `monitor` is mss's dict (left, top, width, height in mss units), `image_size` the
    captured image in physical pixels. mss units and input units agree on the primary
    monitor up to the ratio `input_primary_size / mss_primary_size` (1 on X11; on Windows
    when only one side is DPI-aware it is the scaling factor). One screenshot pixel is then
    `monitor width / image width` mss units (0.5 on a Retina Mac, where mss reports points
    but captures pixels). `hidpi` overrides the detection: physical pixels per input unit
    (2.0 for Retina, 1.25 for 125 % Windows scaling).
    """
    units_x = input_primary_size[0] / mss_primary_size[0]
    units_y = input_primary_size[1] / mss_primary_size[1]
    if hidpi is not None:
        scale_x = scale_y = 1.0 / hidpi
    else:
        scale_x = monitor["width"] / image_size[0] * units_x
        scale_y = monitor["height"] / image_size[1] * units_y
    return ScreenMapping(
        width=image_size[0], height=image_size[1],
        origin_x=monitor["left"] * units_x, origin_y=monitor["top"] * units_y,
        scale_x=scale_x, scale_y=scale_y,
    )


def focused_window_facts(display: Any) -> tuple[str | None, int | None]:
    """(title, process id) of the focused window of a python-xlib `display`.

    The window manager's _NET_ACTIVE_WINDOW when there is one, else the input focus (what
    a bare X server has), walking up to the first ancestor with a name (the focus may sit
    on an unnamed child); the pid is _NET_WM_PID, which only some applications set.
    """
    from Xlib import X

    def atom(name: str) -> int:
        return int(display.intern_atom(name))

    root = display.screen().root
    active = root.get_full_property(atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
    if active is not None and len(active.value) and active.value[0]:
        window = display.create_resource_object("window", int(active.value[0]))
    else:
        window = display.get_input_focus().focus
        if isinstance(window, int):  # X.NONE or X.PointerRoot: no window has the focus
            return None, None
    title = None
    while window is not None and window.id != root.id:
        name = window.get_full_property(atom("_NET_WM_NAME"), atom("UTF8_STRING"))
        if name is not None and name.value:
            value = name.value
            title = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        else:
            legacy = window.get_wm_name()
            title = legacy.decode("latin-1") if isinstance(legacy, bytes) else legacy
        if title:
            break
        window = window.query_tree().parent
    if not title or window is None:
        return None, None
    pid = window.get_full_property(atom("_NET_WM_PID"), X.AnyPropertyType)
    return title, (int(pid.value[0]) if pid is not None and len(pid.value) else None)


def _alive(connection: Any) -> bool:
    """Whether an Xlib connection still reaches its server (an X server restarted on the
    same display number leaves the old connection dead)."""
    try:
        connection.sync()
    except Exception:
        return False
    return True


class DesktopEnv(Environment):
    """Operate the local desktop (or an X display such as Xvfb) with mouse and keyboard.

    monitor: mss monitor index, 1 = primary, 2.. = others, 0 = all monitors together.
    scale: HiDPI factor override (physical pixels per input point); None = auto-detect.
    failsafe: keep pyautogui's fail-safe: moving the mouse into a screen corner aborts the
        run with `StoppedError`.
    pause: seconds pyautogui waits after each call.
    typing: how text is entered: "auto" (pyautogui for ASCII, clipboard paste for the rest),
        or force one of "pyautogui", "xdotool", "clipboard".
    display: X display (e.g. ":99") on Linux; default $DISPLAY.
    ctrl_as_cmd: on macOS press Command where the model says ctrl (models are trained on
        Linux/Windows shortcuts); default True on macOS.
    settle_timeout: after an action, wait at most this long for the screen to stop
        changing (two frames `settle_interval` apart that look the same); 0 = no wait.
        An observation right after that wait (within `SETTLED_FRAME_MAX_AGE`) reuses its
        last frame instead of grabbing the same still screen again.
    """

    platform = "pc"

    def __init__(
        self,
        monitor: int = 1,
        *,
        scale: float | None = None,
        failsafe: bool = True,
        pause: float = 0.05,
        typing: TypingMode = "auto",
        display: str | None = None,
        drag_duration: float = 0.3,
        paste_timeout: float = 3.0,
        ctrl_as_cmd: bool | None = None,
        settle_timeout: float = 2.0,
        settle_interval: float = 0.03,
    ) -> None:
        super().__init__()
        if not isinstance(monitor, int) or monitor < 0:
            raise ConfigError(f"monitor must be an mss index >= 0 (1 = primary, 0 = all), got {monitor!r}")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ConfigError(f"scale must be a positive HiDPI factor such as 2.0, got {scale!r}")
        if typing not in _TYPING_MODES:
            raise ConfigError(f"typing must be one of {', '.join(_TYPING_MODES)}; got {typing!r}")
        if pause < 0 or drag_duration < 0 or paste_timeout <= 0:
            raise ConfigError("pause and drag_duration must be >= 0 and paste_timeout > 0")
        if not (settle_timeout >= 0 and settle_interval >= 0):
            raise ConfigError("settle_timeout and settle_interval must be >= 0 seconds")
        self.os_name = sys.platform
        if typing == "xdotool" and not (self._is_x11 and shutil.which("xdotool")):
            raise ConfigError("typing='xdotool' needs Linux/X11 with xdotool installed (apt-get install xdotool)")
        self.monitor = monitor
        self.scale = float(scale) if scale is not None else None
        self.failsafe = failsafe
        self.pause = pause
        self.typing: TypingMode = typing
        self.display = display if display is not None else os.environ.get("DISPLAY")
        self.drag_duration = drag_duration
        self.paste_timeout = paste_timeout
        self.ctrl_as_cmd = self.os_name == "darwin" if ctrl_as_cmd is None else ctrl_as_cmd
        self.settle_timeout = settle_timeout
        self.settle_interval = settle_interval
        # The still frame the last action's settle wait ended on, with mss's monitors.
        self._settled: tuple[StillFrame, list[dict[str, int]]] | None = None
        self._x: Any = None  # python-xlib connection for window facts, opened on first use
        self._x_lock = threading.Lock()

    @property
    def _is_x11(self) -> bool:
        return self.os_name.startswith("linux")

    # -- platform access ------------------------------------------------------------
    def _require_display(self) -> str:
        if not self.display:
            raise EnvError(
                "no X display: DISPLAY is not set. Start an X server (for a headless one: "
                "`Xvfb :99 -screen 0 1920x1080x24 &`), then set DISPLAY=:99 or pass "
                "DesktopEnv(display=':99')"
            )
        return self.display

    def _tool_env(self) -> dict[str, str]:
        """Environment variables for xdotool / xclip subprocesses."""
        env = dict(os.environ)
        if self._is_x11:
            env["DISPLAY"] = self._require_display()
        return env

    def _mss(self) -> Any:
        try:
            import mss
        except ImportError as exc:
            raise EnvError("mss is not installed; pip install 'glmv-agent[desktop]'") from exc
        factory = getattr(mss, "MSS", None) or mss.mss
        try:
            if self._is_x11:
                return factory(display=self._require_display())
            return factory()
        except mss.exception.ScreenShotError as exc:
            raise EnvError(
                f"cannot open display {self.display!r} for screenshots ({exc}). Is the X server "
                "running? Start one (e.g. `Xvfb :99 -screen 0 1920x1080x24 &`) and set DISPLAY"
            ) from exc

    def _gui(self) -> ModuleType:
        """pyautogui, connected to this environment's display and configured."""
        if self._is_x11:
            gui = self._pyautogui_x11(self._require_display())
        else:
            try:
                import pyautogui as gui
            except ImportError as exc:
                raise EnvError("pyautogui is not installed; pip install 'glmv-agent[desktop]'") from exc
        gui.FAILSAFE = self.failsafe
        gui.PAUSE = self.pause
        return gui

    @staticmethod
    def _pyautogui_x11(display: str) -> ModuleType:
        # pyautogui opens $DISPLAY at import and keeps that connection in a module global;
        # point DISPLAY at ours for the import, and rebind the connection when a later
        # environment in this process uses another display.
        ensure_xauthority()
        previous = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        try:
            import pyautogui
            import pyautogui._pyautogui_x11 as x11
            from Xlib.display import Display
            if x11._display.get_display_name() != display or not _alive(x11._display):
                x11._display = Display(display)
        except ImportError as exc:
            raise EnvError("pyautogui is not installed; pip install 'glmv-agent[desktop]'") from exc
        except Exception as exc:  # Xlib raises its own error types for unreachable displays
            raise EnvError(
                f"cannot connect pyautogui to X display {display!r} ({type(exc).__name__}: {exc}). "
                "Is the X server running and DISPLAY right?"
            ) from exc
        finally:
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous
        return pyautogui

    @contextlib.contextmanager
    def _input_errors(self) -> Iterator[None]:
        """Translate pyautogui / X errors into the SDK's errors."""
        try:
            yield
        except Exception as exc:
            failsafe = getattr(sys.modules.get("pyautogui"), "FailSafeException", None)
            if failsafe is not None and isinstance(exc, failsafe):
                raise StoppedError(
                    "pyautogui fail-safe: the mouse was moved into a screen corner, which "
                    "aborts the run. Move it away to continue, or use DesktopEnv(failsafe=False)"
                ) from exc
            if isinstance(exc, (ActionRefusedError, EnvError, UnsupportedActionError, StoppedError)):
                raise
            raise EnvError(f"desktop input failed: {type(exc).__name__}: {exc}") from exc

    # -- observation ----------------------------------------------------------------
    @staticmethod
    def _primary(monitors: list[dict[str, int]]) -> dict[str, int]:
        for monitor in monitors[1:]:
            if monitor.get("is_primary"):
                return monitor
        return monitors[1] if len(monitors) > 1 else monitors[0]

    def _chosen(self, monitors: list[dict[str, int]]) -> dict[str, int]:
        if self.monitor >= len(monitors):
            listed = ", ".join(
                f"{i}: {m['width']}x{m['height']}+{m['left']}+{m['top']}" for i, m in enumerate(monitors)
            )
            raise EnvError(f"monitor {self.monitor} does not exist; available (0 = all): {listed}")
        return monitors[self.monitor]

    def _capture(self) -> Observation:
        settled, self._settled = self._settled, None
        if settled is not None and settled[0].fresh():
            # The settle wait after the last action ended on this frame a moment ago.
            image, monitors = settled[0].image, settled[1]
            monitor = self._chosen(monitors)
        else:
            with self._mss() as sct:
                monitors = list(sct.monitors)
                monitor = self._chosen(monitors)
                shot = sct.grab(monitor)
            image = Image.frombytes("RGB", shot.size, shot.rgb)
        primary = self._primary(monitors)
        with self._input_errors():
            input_size = tuple(self._gui().size())
        mapping = monitor_mapping(
            monitor, image.size,
            mss_primary_size=(primary["width"], primary["height"]),
            input_primary_size=(int(input_size[0]), int(input_size[1])),
            hidpi=self.scale,
        )
        title, app = self._focused_window()
        return Observation(
            screenshot=image, mapping=mapping, platform="pc", title=title, app=app,
            extra={"monitor": dict(monitor), "monitor_index": self.monitor, "display": self.display},
        )

    def execute(self, action: BaseAction, observation: Observation | None = None) -> ActionOutcome:
        """Execute the action, then wait (at most `settle_timeout`) for a still screen."""
        self._settled = None
        outcome = super().execute(action, observation)
        if self.settle_timeout > 0 and action.type != "wait":
            started = time.monotonic()
            with self._mss() as sct:
                monitors = list(sct.monitors)
                monitor = self._chosen(monitors)

                def grab() -> Image.Image:
                    shot = sct.grab(monitor)
                    return Image.frombytes("RGB", shot.size, shot.rgb)

                still = wait_until_still(grab, self.settle_timeout, self.settle_interval)
            if still is None:
                note = f"the screen was still changing after {self.settle_timeout:g}s"
                outcome.detail = f"{outcome.detail}; {note}" if outcome.detail else note
            else:
                self._settled = (still, monitors)  # the next observe() may reuse the frame
            outcome.settle_s = time.monotonic() - started
        return outcome

    def _focused_window(self) -> tuple[str | None, str | None]:
        """(title, program) of the focused window on X11; None where unknown.

        Read with python-xlib over one kept connection (a few property reads, no xdotool
        processes). Best effort, never an error: on macOS/Windows, or on a bare X server
        with no focused window (no window manager), both are None.
        """
        if not self._is_x11 or not self.display:
            return None, None
        with self._x_lock:
            try:
                if self._x is None:
                    from Xlib.display import Display
                    ensure_xauthority()
                    self._x = Display(self.display)
                title, pid = focused_window_facts(self._x)
            except Exception as exc:  # Xlib has its own error types; a dead server too
                logger.debug("could not read the focused window: %s", exc)
                self._close_x()
                return None, None
        app = None
        if pid is not None:
            with contextlib.suppress(OSError):
                app = open(f"/proc/{pid}/comm", encoding="utf-8").read().strip() or None
        return title, app

    def _close_x(self) -> None:
        if self._x is not None:
            with contextlib.suppress(Exception):
                self._x.close()
            self._x = None

    def close(self) -> None:
        with self._x_lock:
            self._close_x()

    def _monitor_rect(self) -> tuple[float, float, float, float]:
        """The chosen monitor as (left, top, width, height) in input units, queried now."""
        with self._mss() as sct:
            monitors = list(sct.monitors)
        monitor, primary = self._chosen(monitors), self._primary(monitors)
        with self._input_errors():
            width, height = self._gui().size()
        ux, uy = width / primary["width"], height / primary["height"]
        return (monitor["left"] * ux, monitor["top"] * uy, monitor["width"] * ux, monitor["height"] * uy)

    # -- coordinates ----------------------------------------------------------------
    def _points(self, targets: list[Target], observation: Observation) -> list[tuple[int, int]]:
        """Input coordinates of every target, all checked before anything is executed."""
        left, top, width, height = self._monitor_rect()
        points = []
        for target in targets:
            x, y = observation.env_point(target)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ActionRefusedError(f"target maps to a non-finite point ({x}, {y})")
            ix, iy = math.floor(x), math.floor(y)
            if not (left <= ix < left + width and top <= iy < top + height):
                raise ActionRefusedError(
                    f"point ({ix}, {iy}) is outside monitor {self.monitor} "
                    f"({width:g}x{height:g} at {left:g},{top:g}); the screenshot it refers to is "
                    "stale or from another screen: observe() again"
                )
            points.append(self._off_failsafe_corner(ix, iy))
        return points

    def _off_failsafe_corner(self, x: int, y: int) -> tuple[int, int]:
        # Our own move into a corner would trip pyautogui's fail-safe on the next call,
        # so exact corner pixels are nudged one pixel inwards.
        if not self.failsafe:
            return x, y
        width, height = self._gui().size()
        if x in (0, width - 1) and y in (0, height - 1):
            return (1 if x == 0 else width - 2), (1 if y == 0 else height - 2)
        return x, y

    def _centre(self) -> tuple[int, int]:
        left, top, width, height = self._monitor_rect()
        return math.floor(left + width / 2), math.floor(top + height / 2)

    # -- mouse actions --------------------------------------------------------------
    def _click(self, action: Click | DoubleClick | RightClick | MiddleClick, observation: Observation,
               button: str, clicks: int) -> ActionOutcome:
        (x, y), = self._points([action.target], observation)
        with self._input_errors():
            self._gui().click(x=x, y=y, clicks=clicks, interval=0.05, button=button)
        return ActionOutcome(action=action, env_points=[(x, y)], detail=f"{button} x{clicks}")

    def _do_click(self, action: Click, observation: Observation) -> ActionOutcome:
        return self._click(action, observation, "left", 1)

    def _do_double_click(self, action: DoubleClick, observation: Observation) -> ActionOutcome:
        return self._click(action, observation, "left", 2)

    def _do_right_click(self, action: RightClick, observation: Observation) -> ActionOutcome:
        return self._click(action, observation, "right", 1)

    def _do_middle_click(self, action: MiddleClick, observation: Observation) -> ActionOutcome:
        return self._click(action, observation, "middle", 1)

    def _do_hover(self, action: Hover, observation: Observation) -> ActionOutcome:
        (x, y), = self._points([action.target], observation)
        with self._input_errors():
            self._gui().moveTo(x, y)
        return ActionOutcome(action=action, env_points=[(x, y)])

    def _do_drag(self, action: Drag, observation: Observation) -> ActionOutcome:
        start, end = self._points([action.start, action.end], observation)
        with self._input_errors():
            gui = self._gui()
            gui.moveTo(*start)
            # dragTo = mouseDown, a gradual move, mouseUp; on macOS it sends real drag
            # events where a plain move with the button down would not.
            try:
                gui.dragTo(*end, duration=self.drag_duration, button="left")
            except Exception:
                with contextlib.suppress(Exception):  # do not leave the button held down
                    gui.mouseUp(button="left")
                raise
        return ActionOutcome(action=action, env_points=[start, end])

    def _do_scroll(self, action: Scroll, observation: Observation) -> ActionOutcome:
        if action.target is not None:
            (x, y), = self._points([action.target], observation)
        else:
            x, y = self._centre()
        # "down" brings the content below into view: the wheel turned towards the user,
        # which pyautogui counts as negative; "right" is a positive horizontal scroll.
        with self._input_errors():
            gui = self._gui()
            gui.moveTo(x, y)
            if action.direction in ("up", "down"):
                gui.scroll(action.amount if action.direction == "up" else -action.amount)
            elif self.os_name == "win32":
                # pyautogui has no horizontal wheel on Windows; Shift+wheel is the convention.
                with gui.hold("shift"):
                    gui.scroll(-action.amount if action.direction == "right" else action.amount)
            else:
                gui.hscroll(action.amount if action.direction == "right" else -action.amount)
        return ActionOutcome(action=action, env_points=[(x, y)], detail=f"{action.direction} x{action.amount}")

    # -- keyboard actions -----------------------------------------------------------
    def _canonical_keys(self, names: list[str]) -> list[str]:
        keys = [keymap.canonical_key(name) for name in names]
        if self.os_name == "darwin" and self.ctrl_as_cmd:
            keys = ["cmd" if key == "ctrl" else key for key in keys]
        return keys

    def _press(self, keys: list[str]) -> str:
        """Press canonical keys together; returns which tool did it."""
        if self._is_x11 and keymap.pyautogui_x11_mistyped() & set(keys) and shutil.which("xdotool"):
            combo = "+".join(keymap.xdotool_key(key) for key in keys)
            self._run_tool(["xdotool", "key", "--clearmodifiers", combo], timeout=10)
            return "xdotool"
        names = [keymap.pyautogui_key(key, self.os_name) for key in keys]
        with self._input_errors():
            gui = self._gui()
            if len(names) == 1:
                gui.press(names[0])
            else:
                gui.hotkey(*names, interval=0.02)
        return "pyautogui"

    def _do_key(self, action: Key, observation: Observation) -> ActionOutcome:
        keys = self._canonical_keys(action.keys)
        tool = self._press(keys)
        return ActionOutcome(action=action, detail=f"{'+'.join(keys)} via {tool}")

    def _typing_method(self, text: str) -> str:
        pyautogui_ok = set(text) <= _PRINTABLE_ASCII and not (
            self._is_x11 and keymap.pyautogui_x11_mistyped() & set(text)
        )
        if self.typing == "auto":
            if pyautogui_ok:
                return "pyautogui"
            has_xdotool = self._is_x11 and shutil.which("xdotool") is not None
            if set(text) <= _PRINTABLE_ASCII and has_xdotool:
                return "xdotool"  # ASCII keys exist in the keymap: exact and race-free
            # xdotool types other characters by remapping a spare keycode per character,
            # which applications can read late (lost or doubled characters under load);
            # a clipboard paste is exact.
            if not self._is_x11 or shutil.which("xclip") is not None or not has_xdotool:
                return "clipboard"
            return "xdotool"
        if self.typing == "pyautogui" and not pyautogui_ok:
            bad = sorted({c for c in text if c not in _PRINTABLE_ASCII} | (
                set(text) & keymap.pyautogui_x11_mistyped() if self._is_x11 else set()))
            raise UnsupportedActionError(
                f"typing='pyautogui' cannot type {''.join(bad)!r} correctly; use typing='auto', "
                "'xdotool' or 'clipboard'"
            )
        return self.typing

    def _do_type(self, action: TypeText, observation: Observation) -> ActionOutcome:
        method = self._typing_method(action.text)
        points = self._points([action.target], observation) if action.target is not None else []
        with self._input_errors():
            gui = self._gui()
            if points:
                gui.click(*points[0])
            if action.clear:
                self._press(self._canonical_keys(["ctrl", "a"]))
                self._press(["backspace"])
            if action.text:
                if method == "pyautogui":
                    gui.write(action.text, interval=0.0)
                elif method == "xdotool":
                    # Non-ASCII needs a keymap change per character; give the app time to
                    # read each one before the next change.
                    delay = 12 if set(action.text) <= _PRINTABLE_ASCII else 50
                    self._run_tool(
                        ["xdotool", "type", "--delay", str(delay), "--clearmodifiers", "--", action.text],
                        timeout=10 + delay / 1000 * 2 * len(action.text),
                    )
                else:
                    self._paste(action.text)
            if action.enter:
                self._press(["enter"])
        return ActionOutcome(action=action, env_points=[(float(x), float(y)) for x, y in points],
                             detail=f"{len(action.text)} characters via {method}")

    def _do_wait(self, action: Wait, observation: Observation) -> ActionOutcome:
        time.sleep(action.seconds)
        return ActionOutcome(action=action, detail=f"waited {action.seconds:g}s")

    # -- tools and clipboard --------------------------------------------------------
    def _run_tool(self, command: list[str], *, input: bytes | None = None, timeout: float = 10) -> bytes:
        if shutil.which(command[0]) is None:
            raise EnvError(f"{command[0]} is not installed; install it to type or paste this text")
        try:
            result = subprocess.run(
                command, input=input, capture_output=True, timeout=timeout, env=self._tool_env(),
            )
        except subprocess.TimeoutExpired as exc:
            raise EnvError(f"{command[0]} did not finish within {timeout:g}s") from exc
        if result.returncode != 0:
            raise EnvError(f"{' '.join(command[:2])} failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    def _paste(self, text: str) -> None:
        """Put `text` on the clipboard, paste it, then put the previous content back."""
        if self._is_x11 and shutil.which("xclip") is None:
            raise EnvError("pasting text on X11 needs xclip (apt-get install xclip), or use typing='xdotool'")
        previous = self._clipboard_read()
        try:
            if self._is_x11:
                self._x11_paste_once(text)
            else:
                self._clipboard_write(text)
                self._press(self._canonical_keys(["ctrl", "v"]))
                time.sleep(0.3)  # the application reads the clipboard asynchronously
        finally:
            # An empty clipboard is restored as empty text so typed secrets do not linger.
            self._clipboard_write(previous or "")

    def _x11_paste_once(self, text: str) -> None:
        # xclip in the foreground serves exactly one paste request and then exits, so we know
        # when the application has read the text and the old content can come back.
        process = subprocess.Popen(
            ["xclip", "-selection", "clipboard", "-i", "-quiet", "-loops", "1"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self._tool_env(),
        )
        assert process.stdin is not None and process.stderr is not None
        try:
            process.stdin.write(text.encode("utf-8"))
            process.stdin.close()
            # It announces "Waiting for one selection request." once it owns the clipboard.
            ready, _, _ = select.select([process.stderr], [], [], self.paste_timeout)
            if not ready:
                raise EnvError("xclip did not take the clipboard; is the X server reachable?")
            process.stderr.readline()
            self._press(self._canonical_keys(["ctrl", "v"]))
            try:
                process.wait(timeout=self.paste_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("no application read the pasted text within %.1fs; is a text field focused?",
                               self.paste_timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stderr.close()

    def _clipboard_read(self) -> str | None:
        if self._is_x11:
            command = ["xclip", "-selection", "clipboard", "-o"]
        elif self.os_name == "darwin":
            command = ["pbpaste"]
        else:
            command = ["powershell", "-NoProfile", "-Command", "Get-Clipboard -Raw"]
        try:
            return self._run_tool(command, timeout=5).decode("utf-8", errors="replace")
        except EnvError:
            return None  # empty clipboard, or nothing that is text

    def _clipboard_write(self, text: str) -> None:
        if self._is_x11:
            # xclip forks a server that holds the content; its output must not be piped,
            # or we would wait for that server to exit.
            try:
                subprocess.run(
                    ["xclip", "-selection", "clipboard", "-i"], input=text.encode("utf-8"),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5,
                    env=self._tool_env(), check=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise EnvError(f"could not set the clipboard with xclip: {exc}") from exc
        elif self.os_name == "darwin":
            self._run_tool(["pbcopy"], input=text.encode("utf-8"), timeout=5)
        else:
            encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
            script = (
                "Set-Clipboard -Value ([Text.Encoding]::UTF8.GetString("
                f"[Convert]::FromBase64String('{encoded}')))"
            )
            self._run_tool(["powershell", "-NoProfile", "-Command", script], timeout=10)
