"""Scripted phones for the fake adb server: a Pixel on Android 14 built from recorded adb output.

`make_phone()` answers the commands AndroidEnv sends with the fixtures in data/adb/
(dumpsys, wm size, ime list, am/monkey results); `png()` makes its screenshot.
"""

from __future__ import annotations

import io

from PIL import Image

import paths
from fake_adb_server import FakeDevice

DATA = paths.DATA / "adb"
SERIAL = "1A2B3C4D5E6F"
WINDOW_GREP_CMD = (
    "dumpsys window | grep -E 'mCurrentFocus|mFocusedApp|mRotation=|mCurrentRotation|showing="
    "|secure=|mIsShowing|mShowingLockscreen|mDreamingLockscreen|isKeyguardShowing'"
)
OBSERVE_CMDS = ["dumpsys power | grep -E 'mWakefulness='", WINDOW_GREP_CMD, "wm size", "screencap -p"]


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def png(width: int, height: int, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    image.putpixel((0, 0), (255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def make_phone(serial: str = SERIAL, *, width: int = 1080, height: int = 2400, **kw) -> FakeDevice:
    """A scripted Pixel on Android 14: awake, unlocked, Settings in front."""
    phone = FakeDevice(serial, screencap_png=png(width, height), **kw)
    phone.set("dumpsys power", fixture("dumpsys_power_awake.txt"))
    phone.set("dumpsys window", fixture("dumpsys_window_android14.txt"))
    phone.set("dumpsys input", fixture("dumpsys_input_android14.txt"))
    phone.set("wm size", fixture("wm_size.txt"))
    phone.set("ime list -a -s", fixture("ime_list_plain.txt"))
    phone.set(
        "settings get secure default_input_method",
        "com.google.android.inputmethod.latin/com.android.inputmethod.latin.LatinIME\n",
    )

    def scripted(command: str) -> tuple[bytes, int] | None:
        if command.startswith("am broadcast"):
            return fixture("broadcast_ok.txt").encode(), 0
        if command.startswith("monkey -p com.tencent.mm ") or command.startswith(
            "monkey -p com.android.deskclock "
        ):
            return fixture("monkey_ok.txt").encode(), 0
        if command.startswith("monkey"):
            return fixture("monkey_missing.txt").encode(), 0
        if command.startswith(("am start -n com.google.android.deskclock/", "am start -n com.pinterest/")):
            return fixture("am_start_missing.txt").encode(), 0
        if command.startswith("am start"):
            return fixture("am_start_ok.txt").encode(), 0
        return None

    phone.handlers.append(scripted)
    return phone
