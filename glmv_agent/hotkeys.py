"""Global hotkeys for the desktop assistant (X11): pause/resume and stop from anywhere.

The assistant's terminal may be hidden behind the very windows the agent is working in,
so the assistant also listens for key combinations grabbed on the X server's root window:

* Ctrl+Alt+P: pause, or resume when paused
* Ctrl+Alt+S: stop the current task

Only X11 is supported (through python-xlib, which pyautogui already depends on); on other
platforms `HotkeyListener.start` raises `EnvError` and the assistant says hotkeys are off.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from collections.abc import Callable

from .errors import EnvError

logger = logging.getLogger("glmv_agent.hotkeys")

# (modifier names, key) -> the name passed to the callback.
DEFAULT_HOTKEYS: dict[tuple[tuple[str, ...], str], str] = {
    (("ctrl", "alt"), "p"): "pause",
    (("ctrl", "alt"), "s"): "stop",
}


class HotkeyListener:
    """Grabs key combinations on an X display and calls `on_hotkey(name)` when pressed."""

    def __init__(self, on_hotkey: Callable[[str], None], *, display: str | None = None,
                 hotkeys: dict[tuple[tuple[str, ...], str], str] | None = None) -> None:
        self.on_hotkey = on_hotkey
        self.display_name = display or os.environ.get("DISPLAY")
        self.hotkeys = dict(hotkeys or DEFAULT_HOTKEYS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> HotkeyListener:
        """Grab the keys and listen in a daemon thread; EnvError if that is impossible."""
        if sys.platform in ("darwin", "win32"):
            raise EnvError("global hotkeys are only available on X11 (Linux desktops)")
        if not self.display_name:
            raise EnvError("global hotkeys need an X display: DISPLAY is not set")
        self._thread = threading.Thread(target=self._run, name="glmv-hotkeys", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise EnvError(f"cannot grab hotkeys on {self.display_name}: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> HotkeyListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the listening thread (the only user of its Xlib connection) ----------------------
    def _run(self) -> None:
        try:
            from Xlib import X, XK, display as xdisplay
            from Xlib.error import CatchError

            from .envs._xvfb import quiet_xlib_auth

            quiet_xlib_auth()
            conn = xdisplay.Display(self.display_name)
        except Exception as exc:  # no python-xlib, or the display is unreachable
            self._error = exc
            self._ready.set()
            return
        masks = {"ctrl": X.ControlMask, "alt": X.Mod1Mask, "shift": X.ShiftMask,
                 "super": X.Mod4Mask}
        root = conn.screen().root
        bindings: dict[tuple[int, int], str] = {}
        conflict = CatchError()
        try:
            for (mods, key), name in self.hotkeys.items():
                keycode = conn.keysym_to_keycode(XK.string_to_keysym(key))
                state = 0
                for mod in mods:
                    state |= masks[mod]
                bindings[(keycode, state)] = name
                # Also grab with Caps Lock / Num Lock on, which X reports as modifiers.
                for extra in (0, X.LockMask, X.Mod2Mask, X.LockMask | X.Mod2Mask):
                    root.grab_key(keycode, state | extra, True, X.GrabModeAsync,
                                  X.GrabModeAsync, onerror=conflict)
            conn.sync()
            if conflict.get_error():
                raise RuntimeError("another program already grabbed one of the hotkeys")
        except Exception as exc:
            self._error = exc
            self._ready.set()
            conn.close()
            return
        self._ready.set()
        relevant = X.ControlMask | X.Mod1Mask | X.ShiftMask | X.Mod4Mask
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([conn.fileno()], [], [], 0.2)
                if not readable and not conn.pending_events():
                    continue
                while conn.pending_events():
                    event = conn.next_event()
                    if event.type != X.KeyPress:
                        continue
                    pressed = bindings.get((event.detail, event.state & relevant))
                    if pressed is not None:
                        self._dispatch(pressed)
        finally:
            conn.close()

    def _dispatch(self, name: str) -> None:
        try:
            self.on_hotkey(name)
        except Exception:  # a failing callback must not kill the listener
            logger.exception("hotkey %s handler failed", name)
