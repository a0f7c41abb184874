"""An Android phone driven through the real `adb` client (`AndroidEnv`).

Each step: wake the screen if it is off (refusing to go on when a secure lock screen
shows), read the display size / rotation / foreground app, capture `screencap -p`, and map
normalized coordinates to the physical pixels that `input tap` / `input swipe` take.

Typing uses ADB Keyboard (`com.android.adbkeyboard/.AdbIME`, base64 broadcasts, any
Unicode text) when it is installed, switching back to the user's keyboard afterwards;
otherwise `input text`, which can only type ASCII.

What was verified, and how: every command this module sends was checked byte for byte as
it arrives at a scripted fake adb server (tests/support/fake_adb_server.py) from the real adb
29.0.6 client binary; the parsers were checked on hand-reconstructed Android 12-14
outputs. Nothing was run on a real phone or emulator: device-side behaviour (how long
`input` takes, whether two `input tap`s register as a double tap, vendor lock screens,
`wm size` overrides vs. screencap size on a given build) is unverified.
"""

from __future__ import annotations

import base64
import difflib
import json
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import ClassVar, Literal

from ..actions import (
    BaseAction, Click, DoubleClick, Key, LongPress, NavigateBack, NavigateHome, OpenApp, Scroll, Swipe,
    Target, TypeText, Wait,
)
from ..errors import ActionError, ActionRefusedError, EnvError, UnsupportedActionError
from ..geometry import ScreenMapping
from .adb import (
    ADB_KEYBOARD_IME, AdbClient, AdbDevice, DisplaySize, WindowState, is_black,
    parse_ime_list, parse_rotation, parse_wakefulness, parse_window_state, parse_wm_size,
    screencap,
)
from .base import ActionOutcome, Environment, Observation, StillFrame, wait_until_still

logger = logging.getLogger(__name__)

KeyboardMode = Literal["auto", "adb_keyboard", "input_text"]

# The lines of `dumpsys window` the env needs; filtered on the phone (the full dump is
# hundreds of KB on a busy device).
WINDOW_GREP = (
    "mCurrentFocus|mFocusedApp|mRotation=|mCurrentRotation|showing=|secure=|mIsShowing"
    "|mShowingLockscreen|mDreamingLockscreen|isKeyguardShowing"
)
INPUT_GREP = "SurfaceOrientation|orientation="

# Friendly key names -> Android KeyEvent names (see android.view.KeyEvent).
KEY_NAMES: dict[str, str] = {
    "enter": "ENTER", "return": "ENTER", "back": "BACK", "home": "HOME",
    "delete": "DEL", "backspace": "DEL", "del": "FORWARD_DEL", "forward_delete": "FORWARD_DEL",
    "tab": "TAB", "space": "SPACE", "escape": "ESCAPE", "esc": "ESCAPE",
    "up": "DPAD_UP", "down": "DPAD_DOWN", "left": "DPAD_LEFT", "right": "DPAD_RIGHT",
    "volume_up": "VOLUME_UP", "volumeup": "VOLUME_UP", "volume_down": "VOLUME_DOWN",
    "volumedown": "VOLUME_DOWN", "volume_mute": "VOLUME_MUTE", "mute": "VOLUME_MUTE",
    "power": "POWER", "wakeup": "WAKEUP", "wake": "WAKEUP", "sleep": "SLEEP",
    "app_switch": "APP_SWITCH", "appswitch": "APP_SWITCH", "recent": "APP_SWITCH",
    "recents": "APP_SWITCH", "recent_apps": "APP_SWITCH", "overview": "APP_SWITCH",
    "menu": "MENU", "search": "SEARCH", "camera": "CAMERA", "notification": "NOTIFICATION",
    "page_up": "PAGE_UP", "pageup": "PAGE_UP", "page_down": "PAGE_DOWN", "pagedown": "PAGE_DOWN",
    "move_home": "MOVE_HOME", "move_end": "MOVE_END", "end": "MOVE_END",
    "ctrl": "CTRL_LEFT", "control": "CTRL_LEFT", "shift": "SHIFT_LEFT", "alt": "ALT_LEFT",
    "meta": "META_LEFT", "play_pause": "MEDIA_PLAY_PAUSE", "brightness_up": "BRIGHTNESS_UP",
    "brightness_down": "BRIGHTNESS_DOWN", "copy": "COPY", "paste": "PASTE", "cut": "CUT",
}
# `input keycombination` (key chords) exists from Android 13, API level 33.
KEYCOMBINATION_MIN_SDK = 33
# Deleting this many characters clears a field when ADB Keyboard is not available.
CLEAR_KEYSTROKES = 80


def android_keycode(name: str) -> str:
    """`KEYCODE_*` name for a key name ("enter", "volume up", "a", "KEYCODE_TAB", "66")."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if re.fullmatch(r"\d+", key):
        return key
    if key.startswith("keycode_") and re.fullmatch(r"keycode_[a-z0-9_]+", key):
        return key.upper()
    if re.fullmatch(r"[a-z0-9]", key):
        return f"KEYCODE_{key.upper()}"
    if re.fullmatch(r"f([1-9]|1[0-2])", key):
        return f"KEYCODE_{key.upper()}"
    if key in KEY_NAMES:
        return f"KEYCODE_{KEY_NAMES[key]}"
    known = ", ".join(sorted(KEY_NAMES))
    raise UnsupportedActionError(
        f"unknown Android key {name!r}; use one of: {known}, a single letter/digit, F1-F12, "
        "or a KEYCODE_* name"
    )


# ---------------------------------------------------------------------------------------
# app table
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppEntry:
    name: str
    packages: tuple[str, ...]
    activity: str | None = None  # for the first package only


def _normalize_name(name: str) -> str:
    return re.sub(r"[\s\-_'’·.:：!()（）]", "", name.casefold())


_PACKAGE_RE = re.compile(r"[A-Za-z][\w]*(\.[A-Za-z_][\w]*)+")


class AppTable:
    """App names (English, Chinese, aliases) -> packages, from data/android_apps.json."""

    def __init__(self, extra: dict[str, str] | None = None) -> None:
        raw = json.loads(
            resources.files("glmv_agent").joinpath("data/android_apps.json").read_text("utf-8")
        )
        self._by_name: dict[str, AppEntry] = {}
        self._display: dict[str, str] = {}  # normalized -> display name
        self._package_names: dict[str, str] = {}
        for item in raw["apps"]:
            packages = (item["package"], *item.get("alternatives", ()))
            entry = AppEntry(item["names"][0], packages, item.get("activity"))
            for name in item["names"]:
                self._add(name, entry)
            for package in packages:
                self._package_names.setdefault(package, item["names"][0])
        for name, target in (extra or {}).items():
            package, _, activity = target.partition("/")
            if not _PACKAGE_RE.fullmatch(package):
                raise EnvError(f"apps[{name!r}] = {target!r} is not a package name like com.example.app")
            entry = AppEntry(name, (package,), activity or None)
            self._add(name, entry)
            self._package_names[package] = name

    def _add(self, name: str, entry: AppEntry) -> None:
        key = _normalize_name(name)
        self._by_name[key] = entry
        self._display[key] = name

    def names(self) -> list[str]:
        return sorted(self._display.values())

    def name_of(self, package: str) -> str | None:
        return self._package_names.get(package)

    def lookup(self, name: str) -> AppEntry:
        """The entry for an app name; a package name is accepted as is."""
        entry = self._by_name.get(_normalize_name(name))
        if entry is not None:
            return entry
        if _PACKAGE_RE.fullmatch(name.strip()):
            return AppEntry(name.strip(), (name.strip(),))
        raise ActionRefusedError(
            f"unknown app {name!r}; {self._suggest(name)} Add it with "
            "AndroidEnv(apps={'My App': 'com.example.app'}) or pass its package name."
        )

    def _suggest(self, name: str) -> str:
        key = _normalize_name(name)
        close = difflib.get_close_matches(key, list(self._display), n=5, cutoff=0.6)
        close += [k for k in self._display if key and (key in k or k in key) and k not in close]
        if not close:
            return "no similar app name is known."
        return "did you mean: " + ", ".join(self._display[k] for k in close[:6]) + "?"


# ---------------------------------------------------------------------------------------
# the environment
# ---------------------------------------------------------------------------------------


class AndroidEnv(Environment):
    """A phone or emulator reached through `adb`.

    `adb_server` is (host, port) of the adb server (default: adb's own, 127.0.0.1:5037 or
    $ADB_SERVER_SOCKET). `keyboard` picks how text is typed: "adb_keyboard" needs ADB
    Keyboard installed, "input_text" types ASCII only, "auto" uses ADB Keyboard when
    present. `tap_duration` (seconds) makes taps a press of that length instead of
    `input tap`. `timeout` bounds every adb call. After each action the environment waits
    (at most `settle_timeout` seconds; 0 = not at all) until two screenshots in a row look
    the same, after a fixed `settle_delay` if one is given.

    Not supported (UnsupportedActionError, never a silent no-op): `drag` (phone models
    answer with `swipe`, which is executed as a finger swipe) and mouse-only actions.
    Key chords (`Key(keys=["ctrl", "a"])`) need Android 13+ (`input keycombination`); the
    API level is read once with `getprop` and older phones get a clear error.
    """

    platform: ClassVar[Literal["mobile"]] = "mobile"

    def __init__(
        self,
        serial: str | None = None,
        *,
        adb_path: str | None = None,
        adb_server: tuple[str, int] | None = None,
        apps: dict[str, str] | None = None,
        keyboard: KeyboardMode = "auto",
        tap_duration: float | None = None,
        timeout: float = 15.0,
        settle_delay: float = 0.0,
        ime_switch_delay: float = 0.3,
        settle_timeout: float = 3.0,
    ) -> None:
        super().__init__()
        if not (settle_delay >= 0 and settle_timeout >= 0):
            raise EnvError("settle_delay and settle_timeout must be >= 0 seconds")
        if keyboard not in ("auto", "adb_keyboard", "input_text"):
            raise EnvError(f"keyboard must be 'auto', 'adb_keyboard' or 'input_text', got {keyboard!r}")
        self.client = AdbClient(adb_path, server=adb_server, timeout=timeout)
        self.serial = self.client.select_device(serial)
        self.device = AdbDevice(self.client, self.serial)
        self.apps = AppTable(apps)
        self.keyboard: KeyboardMode = keyboard
        self.tap_duration = tap_duration
        self.settle_delay = settle_delay
        self.settle_timeout = settle_timeout
        self.ime_switch_delay = ime_switch_delay
        self._has_adb_keyboard: bool | None = None
        self._sdk_level: int | None | Literal["unread"] = "unread"
        self._settled: StillFrame | None = None  # the frame the last settle wait ended on
        logger.info("AndroidEnv on device %s", self.serial)

    # -- observation ----------------------------------------------------------------
    def _capture(self) -> Observation:
        window = self._ensure_usable()
        size = parse_wm_size(self.device.check("wm size"))
        rotation = window.rotation
        if rotation is None:
            out, _ = self.device.shell(f"dumpsys input | grep -E '{INPUT_GREP}'")
            rotation = parse_rotation(out)
        settled, self._settled = self._settled, None
        # The settle wait after the last action ended on a still frame a moment ago: reuse
        # it (a screencap costs a PNG encode on the phone and a transfer).
        image = settled.image if settled is not None and settled.fresh() else screencap(self.device)
        mapping = self._mapping(image.size, size, rotation)
        extra: dict[str, object] = {
            "serial": self.serial,
            "physical_size": size.physical,
            "override_size": size.override,
            "rotation": rotation,
            "package": window.package,
            "activity": window.activity,
        }
        if is_black(image):
            extra["black_screen"] = True
            extra["hint"] = (
                "the screenshot is entirely black: the app likely sets FLAG_SECURE "
                "(payment, banking, DRM) or the display is off; a human may need to take over"
            )
            logger.warning("screenshot of %s is all black (FLAG_SECURE or screen off?)", self.serial)
        app = self.apps.name_of(window.package) if window.package else None
        return Observation(
            screenshot=image, mapping=mapping, platform="mobile",
            app=app or window.package, extra=extra,
        )

    @staticmethod
    def _mapping(shot: tuple[int, int], size: DisplaySize, rotation: int | None) -> ScreenMapping:
        """Screenshot pixels -> the display's input coordinates (physical, or the override)."""
        width, height = size.effective
        if rotation in (1, 3):
            width, height = height, width
        # The screenshot is authoritative about orientation when dumpsys is stale or silent.
        if shot[0] != shot[1] and (shot[0] > shot[1]) != (width > height):
            width, height = height, width
        return ScreenMapping(
            width=shot[0], height=shot[1], scale_x=width / shot[0], scale_y=height / shot[1],
        )

    def _window_state(self) -> WindowState:
        out, _ = self.device.shell(f"dumpsys window | grep -E '{WINDOW_GREP}'")
        return parse_window_state(out)

    def _ensure_usable(self) -> WindowState:
        """Wake the screen if needed; refuse to continue behind a secure lock screen."""
        power, _ = self.device.shell("dumpsys power | grep -E 'mWakefulness='")
        wakefulness = parse_wakefulness(power)
        woke = False
        if wakefulness is not None and wakefulness != "Awake":
            logger.info("screen is %s; waking it", wakefulness)
            self._keyevent("KEYCODE_WAKEUP")
            woke = True
        window = self._window_state()
        if window.keyguard_showing:
            if window.keyguard_secure is not False:
                raise EnvError(
                    f"the phone {self.serial} is locked"
                    f"{' with a PIN/pattern/password' if window.keyguard_secure else ''}: "
                    "unlock it by hand (the agent does not enter credentials), keep the screen "
                    "on (Developer options > Stay awake), then run again"
                )
            logger.info("dismissing the insecure lock screen")
            self.device.shell("wm dismiss-keyguard")
            window = self._window_state()
        elif woke:
            window = self._window_state()
        return window

    def execute(self, action: BaseAction, observation: Observation | None = None) -> ActionOutcome:
        self._settled = None  # whatever this action does, an earlier still frame is stale
        return super().execute(action, observation)

    # -- low-level input ------------------------------------------------------------
    def _point(self, target: Target, observation: Observation) -> tuple[int, int]:
        x, y = observation.env_point(target)
        m = observation.mapping
        return (
            int(min(max(x, 0), m.env_width - 1)),
            int(min(max(y, 0), m.env_height - 1)),
        )

    def _input(self, *args: object) -> None:
        out = self.device.check(["input", *[str(a) for a in args]])
        # `input` prints usage or an exception and still exits 0 on some builds.
        if "Exception" in out or out.lstrip().startswith(("Usage:", "Error:")):
            raise ActionError(f"`input {' '.join(map(str, args))}` failed: {out.strip()[:300]}")

    def _keyevent(self, *codes: str) -> None:
        self._input("keyevent", *codes)

    def _tap(self, x: int, y: int) -> None:
        if self.tap_duration:
            self._input("swipe", x, y, x, y, int(self.tap_duration * 1000))
        else:
            self._input("tap", x, y)

    def _settle(self) -> str:
        """Wait for a still screen; a note for the outcome if it never got still."""
        if self.settle_delay > 0:
            time.sleep(self.settle_delay)
        if self.settle_timeout > 0:
            self._settled = wait_until_still(lambda: screencap(self.device), self.settle_timeout)
            if self._settled is None:
                return f"the screen was still changing after {self.settle_timeout:g}s"
        return ""

    def _done(
        self, action: BaseAction, points: list[tuple[int, int]], detail: str = ""
    ) -> ActionOutcome:
        started = time.monotonic()
        note = self._settle()
        detail = "; ".join(part for part in (detail, note) if part)
        return ActionOutcome(action=action, env_points=[(float(x), float(y)) for x, y in points],
                             detail=detail, settle_s=time.monotonic() - started)

    # -- actions --------------------------------------------------------------------
    def _do_click(self, action: Click, observation: Observation) -> ActionOutcome:
        x, y = self._point(action.target, observation)
        self._tap(x, y)
        return self._done(action, [(x, y)])

    def _do_double_click(self, action: DoubleClick, observation: Observation) -> ActionOutcome:
        x, y = self._point(action.target, observation)
        # Both taps in one shell call: two adb round trips can exceed the double-tap timeout.
        out = self.device.check(f"input tap {x} {y}; input tap {x} {y}")
        if "Exception" in out:
            raise ActionError(f"double tap at ({x}, {y}) failed: {out.strip()[:300]}")
        return self._done(action, [(x, y), (x, y)])

    def _do_long_press(self, action: LongPress, observation: Observation) -> ActionOutcome:
        x, y = self._point(action.target, observation)
        self._input("swipe", x, y, x, y, int(action.duration * 1000))
        return self._done(action, [(x, y)])

    def _do_swipe(self, action: Swipe, observation: Observation) -> ActionOutcome:
        x1, y1 = self._point(action.start, observation)
        x2, y2 = self._point(action.end, observation)
        self._input("swipe", x1, y1, x2, y2, int(action.duration * 1000))
        return self._done(action, [(x1, y1), (x2, y2)])

    def _do_scroll(self, action: Scroll, observation: Observation) -> ActionOutcome:
        # Content moves opposite to the finger: to see what is below, the finger goes up.
        m = observation.mapping
        if action.target is not None:
            cx, cy = self._point(action.target, observation)
        else:
            cx, cy = int(m.env_width / 2), int(m.env_height / 2)
        fraction = min(0.8, 0.1 * action.amount)
        dx = dy = 0
        if action.direction in ("up", "down"):
            dy = int(m.env_height * fraction / 2) * (1 if action.direction == "up" else -1)
        else:
            dx = int(m.env_width * fraction / 2) * (1 if action.direction == "left" else -1)

        def clamp(v: int, limit: float) -> int:
            return int(min(max(v, limit * 0.02), limit * 0.98))

        x1, y1 = clamp(cx - dx, m.env_width), clamp(cy - dy, m.env_height)
        x2, y2 = clamp(cx + dx, m.env_width), clamp(cy + dy, m.env_height)
        self._input("swipe", x1, y1, x2, y2, 500)
        return self._done(action, [(x1, y1), (x2, y2)], detail=f"finger {x1},{y1} -> {x2},{y2}")

    def _do_navigate_back(self, action: NavigateBack, observation: Observation) -> ActionOutcome:
        self._keyevent("KEYCODE_BACK")
        return self._done(action, [])

    def _do_navigate_home(self, action: NavigateHome, observation: Observation) -> ActionOutcome:
        self._keyevent("KEYCODE_HOME")
        return self._done(action, [])

    def sdk_level(self) -> int | None:
        """The device's Android API level (`ro.build.version.sdk`), read once; None if unknown."""
        if self._sdk_level == "unread":
            out, _ = self.device.shell("getprop ro.build.version.sdk")
            text = out.strip()
            self._sdk_level = int(text) if text.isdigit() else None
            if self._sdk_level is None:
                logger.warning("could not read the API level of %s (got %r)", self.serial, text[:80])
        return self._sdk_level

    def _do_key(self, action: Key, observation: Observation) -> ActionOutcome:
        codes = [android_keycode(k) for k in action.keys]
        if len(codes) == 1:
            self._keyevent(codes[0])
        else:
            # Chords need `input keycombination`; older `input` prints usage (or nothing).
            sdk = self.sdk_level()
            if sdk is not None and sdk < KEYCOMBINATION_MIN_SDK:
                raise UnsupportedActionError(
                    f"pressing keys together ({' + '.join(action.keys)}) needs Android 13 (API "
                    f"{KEYCOMBINATION_MIN_SDK}) or newer; {self.serial} runs API {sdk}. Press "
                    "one key at a time, or use taps (e.g. long-press a text field to select "
                    "and copy) instead"
                )
            self._input("keycombination", *codes)
        return self._done(action, [], detail=" ".join(codes))

    def _do_wait(self, action: Wait, observation: Observation) -> ActionOutcome:
        time.sleep(action.seconds)
        return ActionOutcome(action=action)

    def _do_open_app(self, action: OpenApp, observation: Observation) -> ActionOutcome:
        entry = self.apps.lookup(action.name)
        failures: list[str] = []
        for index, package in enumerate(entry.packages):
            activity = entry.activity if index == 0 else None
            if activity:
                component = f"{package}/{activity}"
                out, code = self.device.shell(["am", "start", "-n", component])
                if code == 0 and "Error" not in out:
                    return self._done(action, [], detail=f"am start -n {component}")
                failures.append(f"{component}: {out.strip().splitlines()[-1] if out.strip() else code}")
            out, code = self.device.shell(
                ["monkey", "-p", package, "-c", "android.intent.category.LAUNCHER", "1"]
            )
            if code == 0 and "No activities found" not in out and "aborted" not in out:
                return self._done(action, [], detail=f"launched {package}")
            failures.append(f"{package}: not installed or has no launcher activity")
        raise ActionError(
            f"could not open {action.name!r}: " + "; ".join(failures)
            + ". Install the app or map the name to the right package with apps={...}"
        )

    # -- typing ---------------------------------------------------------------------
    def _uses_adb_keyboard(self) -> bool:
        if self.keyboard == "input_text":
            return False
        if self._has_adb_keyboard is None:
            out, _ = self.device.shell("ime list -a -s")
            self._has_adb_keyboard = ADB_KEYBOARD_IME in parse_ime_list(out)
        if self.keyboard == "adb_keyboard" and not self._has_adb_keyboard:
            raise EnvError(
                "keyboard='adb_keyboard' but ADB Keyboard is not installed on the phone: install "
                "ADBKeyboard.apk (github.com/senzhk/ADBKeyBoard) with `adb install`, or use "
                "keyboard='auto'"
            )
        return self._has_adb_keyboard

    def _do_type(self, action: TypeText, observation: Observation) -> ActionOutcome:
        points: list[tuple[int, int]] = []
        if action.target is not None:
            x, y = self._point(action.target, observation)
            self._tap(x, y)
            points.append((x, y))
        if self._uses_adb_keyboard():
            self._type_with_adb_keyboard(action.text, clear=action.clear)
            how = "ADB Keyboard"
        else:
            self._type_with_input_text(action.text, clear=action.clear)
            how = "input text"
        if action.enter:
            self._keyevent("KEYCODE_ENTER")
        return self._done(action, points, detail=f"typed {len(action.text)} chars via {how}")

    def _type_with_adb_keyboard(self, text: str, *, clear: bool) -> None:
        previous = self.device.check("settings get secure default_input_method").strip()
        switched = previous != ADB_KEYBOARD_IME
        if switched:
            self.device.check(f"ime enable {ADB_KEYBOARD_IME}; ime set {ADB_KEYBOARD_IME}")
            time.sleep(self.ime_switch_delay)  # the IME binds to the focused field
        try:
            if clear:
                self.device.check("am broadcast -a ADB_CLEAR_TEXT")
            if text:
                encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
                out = self.device.check(["am", "broadcast", "-a", "ADB_INPUT_B64", "--es", "msg", encoded])
                if "Broadcast completed" not in out:
                    raise ActionError(f"ADB Keyboard did not accept the text: {out.strip()[:300]}")
        finally:
            if switched and previous and previous != "null":
                self.device.shell(["ime", "set", previous])

    def _type_with_input_text(self, text: str, *, clear: bool) -> None:
        bad = sorted({c for c in text if not (c == "\n" or 32 <= ord(c) < 127)})
        if bad:
            raise ActionRefusedError(
                f"`input text` can only type printable ASCII; cannot type {''.join(bad)!r}. "
                "Install ADB Keyboard (github.com/senzhk/ADBKeyBoard) on the phone and use "
                "keyboard='auto' to type any text"
            )
        if "%s" in text:
            raise ActionRefusedError(
                "`input text` turns '%s' into a space, so this text cannot be typed exactly; "
                "install ADB Keyboard to type it"
            )
        if clear:
            self._keyevent("KEYCODE_MOVE_END", *["KEYCODE_DEL"] * CLEAR_KEYSTROKES)
        for index, line in enumerate(text.split("\n")):
            if index:
                self._keyevent("KEYCODE_ENTER")
            if line:
                # `input text` reads %s as a space; the argument is shell-quoted as a whole.
                self._input("text", line.replace(" ", "%s"))
