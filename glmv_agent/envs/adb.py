"""A thin wrapper over the real `adb` client binary (subprocess), in three parts:

* connection: find the binary, talk to the adb server, list and pick devices, run shell
  commands, and turn adb's failures into `EnvError`s that say what to do;
* device state: parse what `wm size`, `dumpsys window`, `dumpsys input`, `dumpsys power` and
  `ime list` print (pure functions, tested on fixtures);
* screenshot: `exec-out screencap -p`, validated as a PNG.

Input commands (`input tap`, `input swipe`, ...) are built by `glmv_agent.envs.android`,
which is the only user of this module.

What was verified: the command lines and the host protocol against the real adb 29.0.6
client talking to a scripted fake adb server (tests/support/fake_adb_server.py), and the parsers
against hand-reconstructed outputs of Android 12-14 devices. Nothing here has been run
against a real phone or emulator in this project's tests.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from ..errors import EnvError

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADB_KEYBOARD_IME = "com.android.adbkeyboard/.AdbIME"
INSTALL_HINT = (
    "install the Android platform tools (Debian/Ubuntu: `apt install adb`; macOS: "
    "`brew install android-platform-tools`; or download platform-tools from "
    "developer.android.com) or pass adb_path= / set $GLMV_ADB"
)

# ---------------------------------------------------------------------------------------
# connection
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """One line of `adb devices -l`."""

    serial: str
    state: str
    details: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        model = self.details.get("model")
        return f"{self.serial} ({self.state}{', ' + model if model else ''})"


def parse_devices(text: str) -> list[DeviceInfo]:
    """Parse `adb devices` / `adb devices -l` output."""
    devices: list[DeviceInfo] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        details = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        devices.append(DeviceInfo(serial=parts[0], state=parts[1], details=details))
    return devices


def join_command(command: str | Sequence[str]) -> str:
    """One device-shell command line; a list is quoted word by word for the phone's sh."""
    if isinstance(command, str):
        return command
    return " ".join(shlex.quote(str(part)) for part in command)


def _adb_failure(stderr: str, serial: str | None) -> EnvError | None:
    """An EnvError for a failure of adb itself (not of the command run on the phone)."""
    text = stderr.strip()
    who = f"'{serial}'" if serial else "the phone"
    if "unauthorized" in text:
        return EnvError(
            f"device {who} is unauthorized: unlock the phone and accept the 'Allow USB "
            "debugging?' RSA key prompt (tick 'Always allow'), then retry; if no prompt "
            "shows, revoke USB debugging authorizations in Developer options and reconnect"
        )
    if "device offline" in text or re.search(r"device '.*' offline", text):
        return EnvError(
            f"device {who} is offline: reconnect the USB cable (or `adb reconnect`), make "
            "sure the phone is awake, then retry"
        )
    match = re.search(r"device '([^']*)' not found", text)
    if match:
        return EnvError(
            f"device '{match.group(1)}' not found: it was disconnected or never connected. "
            "Check the cable / `adb connect host:port`, and `adb devices -l`"
        )
    if "no devices/emulators found" in text:
        return EnvError(
            "no Android device connected: plug a phone in with USB debugging enabled (or "
            "`adb connect host:port` for wireless debugging / an emulator), then retry"
        )
    if "more than one device" in text:
        return EnvError("more than one device is connected: pass serial= to pick one")
    if "cannot connect to daemon" in text or "failed to connect" in text:
        return EnvError(
            f"cannot reach the adb server ({text.splitlines()[-1] if text else 'no reply'}): "
            "start it with `adb start-server` or check adb_server= / $ADB_SERVER_SOCKET"
        )
    if text.startswith("error:") or text.startswith("adb: error:"):
        return EnvError(f"adb failed: {text}")
    return None


class AdbClient:
    """Runs the `adb` binary against one adb server.

    `server` is (host, port) of the adb server; it is passed as $ADB_SERVER_SOCKET so that
    a single client never mixes servers. Without it adb's own default (127.0.0.1:5037, or
    the caller's $ADB_SERVER_SOCKET) is used.
    """

    def __init__(
        self,
        adb_path: str | None = None,
        *,
        server: tuple[str, int] | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.adb_path = self._find_binary(adb_path)
        self.server = server
        self.timeout = timeout
        self._env = dict(os.environ)
        if server is not None:
            host, port = server
            self._env["ADB_SERVER_SOCKET"] = f"tcp:{host}:{int(port)}"

    @staticmethod
    def _find_binary(adb_path: str | None) -> str:
        candidate = adb_path or os.environ.get("GLMV_ADB") or "adb"
        found = shutil.which(candidate)
        if found is None:
            raise EnvError(f"the adb binary {candidate!r} was not found: {INSTALL_HINT}")
        return found

    def run(
        self,
        args: Sequence[str],
        *,
        serial: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `adb [-s serial] args...`; adb's own failures become EnvError.

        A non-zero exit code of the command on the phone is returned, not raised: with the
        shell v2 protocol adb passes it through, and callers decide what it means.
        """
        argv = [self.adb_path, *(["-s", serial] if serial else []), *args]
        limit = self.timeout if timeout is None else timeout
        logger.debug("adb: %s", shlex.join(argv[1:]))
        try:
            proc = subprocess.run(
                argv, env=self._env, capture_output=True, stdin=subprocess.DEVNULL,
                timeout=limit, check=False,
            )
        except FileNotFoundError as exc:
            raise EnvError(f"the adb binary {self.adb_path!r} disappeared: {INSTALL_HINT}") from exc
        except subprocess.TimeoutExpired as exc:
            raise EnvError(
                f"adb command timed out after {limit:g}s: {shlex.join(argv[1:])}. The phone "
                "may be frozen or the connection stalled; check `adb devices`, or raise "
                "timeout="
            ) from exc
        if proc.returncode != 0:
            failure = _adb_failure(proc.stderr.decode(errors="replace"), serial)
            if failure is not None:
                raise failure
        return proc

    def devices(self) -> list[DeviceInfo]:
        proc = self.run(["devices", "-l"])
        return parse_devices(proc.stdout.decode(errors="replace"))

    def select_device(self, serial: str | None) -> str:
        """The serial to use: `serial` if it is connected and ready, else the only device."""
        devices = self.devices()
        if serial is not None:
            match = next((d for d in devices if d.serial == serial), None)
            if match is None:
                listed = ", ".join(d.describe() for d in devices) or "none"
                raise EnvError(f"device '{serial}' is not connected; connected: {listed}")
            self._check_state(match)
            return serial
        if not devices:
            raise EnvError(
                "no Android device connected: plug a phone in with USB debugging enabled (or "
                "`adb connect host:port`), then check `adb devices -l`"
            )
        if len(devices) > 1:
            listed = ", ".join(d.describe() for d in devices)
            raise EnvError(f"{len(devices)} devices are connected ({listed}); pass serial= to pick one")
        self._check_state(devices[0])
        return devices[0].serial

    @staticmethod
    def _check_state(device: DeviceInfo) -> None:
        if device.state == "device":
            return
        failure = _adb_failure(f"error: device {device.state}", device.serial)
        raise failure or EnvError(
            f"device '{device.serial}' is in state {device.state!r}, not ready for commands "
            "(recovery/bootloader/sideload?); boot it normally and retry"
        )


class AdbDevice:
    """Shell access to one device through an `AdbClient`."""

    def __init__(self, client: AdbClient, serial: str) -> None:
        self.client = client
        self.serial = serial

    def shell(self, command: str | Sequence[str], *, timeout: float | None = None) -> tuple[str, int]:
        """Run a command in the phone's shell; returns (stdout, exit code)."""
        line = join_command(command)
        proc = self.client.run(["shell", line], serial=self.serial, timeout=timeout)
        return proc.stdout.decode(errors="replace"), proc.returncode

    def check(self, command: str | Sequence[str], *, timeout: float | None = None) -> str:
        """Run a command that must succeed; a non-zero exit becomes an EnvError."""
        line = join_command(command)
        proc = self.client.run(["shell", line], serial=self.serial, timeout=timeout)
        out = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise EnvError(
                f"`{line}` failed on {self.serial} with exit code {proc.returncode}: "
                f"{(err or out).strip()[:500]}"
            )
        return out

    def exec_out(self, command: str | Sequence[str], *, timeout: float | None = None) -> bytes:
        """Binary-safe output of a command (`adb exec-out`: no pty, no newline mangling)."""
        proc = self.client.run(["exec-out", join_command(command)], serial=self.serial, timeout=timeout)
        return proc.stdout


# ---------------------------------------------------------------------------------------
# device state parsers (pure)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisplaySize:
    """`wm size`: the panel's physical size and the override set by `wm size WxH`."""

    physical: tuple[int, int]
    override: tuple[int, int] | None = None

    @property
    def effective(self) -> tuple[int, int]:
        """The size input coordinates use, in the natural (rotation 0) orientation."""
        return self.override or self.physical


def parse_wm_size(text: str) -> DisplaySize:
    physical = re.search(r"Physical size:\s*(\d+)x(\d+)", text)
    override = re.search(r"Override size:\s*(\d+)x(\d+)", text)
    if physical is None:
        raise EnvError(f"could not read the screen size from `wm size`: {text.strip()[:200]!r}")
    return DisplaySize(
        physical=(int(physical.group(1)), int(physical.group(2))),
        override=(int(override.group(1)), int(override.group(2))) if override else None,
    )


def parse_rotation(text: str) -> int | None:
    """Display rotation 0-3 (quarter turns) from `dumpsys window` or `dumpsys input`."""
    patterns = (
        r"\bmRotation=(\d)",                  # dumpsys window: DisplayRotation (Android 10+)
        r"\bmCurrentRotation=ROTATION_(\d+)",  # dumpsys window displays, some builds
        r"SurfaceOrientation:\s*(\d)",         # dumpsys input (Android <= 12)
        r"\borientation=(\d)\b",               # dumpsys input viewport (Android 13+)
    )
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            value = int(match.group(1))
            return value // 90 if value >= 90 else value % 4
    return None


@dataclass(frozen=True)
class WindowState:
    """What the env needs from `dumpsys window`: focus, rotation, lock screen."""

    package: str | None = None
    activity: str | None = None
    rotation: int | None = None
    keyguard_showing: bool = False
    keyguard_secure: bool | None = None


_COMPONENT = re.compile(r"\b(?:u\d+\s+)?([A-Za-z][\w.]*)/([\w.$]+)")


def parse_focus(text: str) -> tuple[str | None, str | None]:
    """(package, activity) in the foreground, from mCurrentFocus, then mFocusedApp,
    then topResumedActivity / mResumedActivity (`dumpsys activity activities`)."""
    for key in ("mCurrentFocus", "mFocusedApp", "topResumedActivity", "mResumedActivity"):
        for line in text.splitlines():
            if key not in line:
                continue
            match = _COMPONENT.search(line.split(key, 1)[1])
            if match:
                package, activity = match.group(1), match.group(2)
                if activity.startswith("."):
                    activity = package + activity
                return package, activity
    return None, None


def _flag(text: str, pattern: str) -> bool | None:
    match = re.search(pattern, text, re.MULTILINE)
    return None if match is None else match.group(1) == "true"


def parse_window_state(text: str) -> WindowState:
    package, activity = parse_focus(text)
    # Keyguard: KeyguardServiceDelegate's `showing=` and KeyguardStateMonitor's
    # `mIsShowing=` (Android 9+), or the older policy flags.
    showing = any(
        _flag(text, pattern)
        for pattern in (
            r"^\s*showing=(true|false)",
            r"\bmIsShowing=(true|false)",
            r"\bmShowingLockscreen=(true|false)",
            r"\bmDreamingLockscreen=(true|false)",
            r"\bisKeyguardShowing=(true|false)",
        )
    )
    secure = _flag(text, r"^\s*secure=(true|false)")
    if secure is None:
        secure = _flag(text, r"\bmSecure=(true|false)")
    return WindowState(
        package=package, activity=activity, rotation=parse_rotation(text),
        keyguard_showing=showing, keyguard_secure=secure,
    )


def parse_wakefulness(text: str) -> str | None:
    """`Awake`, `Asleep`, `Dozing` or `Dreaming`, from `dumpsys power`."""
    match = re.search(r"mWakefulness=(\w+)", text)
    return match.group(1) if match else None


def parse_ime_list(text: str) -> list[str]:
    """IME ids from `ime list -s` (one `package/.Service` per line)."""
    return [line.strip() for line in text.splitlines() if "/" in line and " " not in line.strip()]


# ---------------------------------------------------------------------------------------
# screenshot
# ---------------------------------------------------------------------------------------

_SCREENSHOT_HINT = (
    "the screen may be off or locked, the foreground app may block capture "
    "(FLAG_SECURE: banking/payment/DRM screens), or the connection dropped"
)


def decode_screencap(data: bytes) -> Image.Image:
    """A validated RGB image from `screencap -p` bytes, or an EnvError explaining why not."""
    if not data:
        raise EnvError(f"the phone returned an empty screenshot: {_SCREENSHOT_HINT}")
    start = data.find(PNG_SIGNATURE)
    if start < 0:
        preview = data[:120].decode(errors="replace").strip()
        raise EnvError(f"screencap did not return a PNG ({preview!r}): {_SCREENSHOT_HINT}")
    if start > 0:
        # Some builds print linker warnings before the image on stdout.
        logger.warning("screencap printed %d bytes before the PNG; ignoring them", start)
    try:
        image = Image.open(io.BytesIO(data[start:]))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise EnvError(
            f"the screenshot PNG is truncated or corrupt ({len(data)} bytes: {exc}): {_SCREENSHOT_HINT}"
        ) from exc
    return image.convert("RGB")


def is_black(image: Image.Image) -> bool:
    """True when every pixel is black: what a FLAG_SECURE window or an off panel gives."""
    return all(high == 0 for _, high in image.getextrema())


def screencap(device: AdbDevice, *, timeout: float | None = None) -> Image.Image:
    return decode_screencap(device.exec_out(["screencap", "-p"], timeout=timeout))
