"""AndroidEnv without a phone.

No phone or emulator exists on this machine. Two substitutes are used instead:

* (a) the parsers run on fixtures of adb output (tests/support/data/adb), hand-reconstructed from
  the documented formats of Android 12-14 devices, not captured from a device;
* (b) the REAL adb client binary (/usr/bin/adb, 29.0.6) talks the adb host protocol to
  tests/support/fake_adb_server.py on 127.0.0.1, so every command line the env builds goes through
  the real client's argument handling, transport selection, shell v2 framing and exit-code
  passing, and arrives at the fake phone exactly as a real adbd would receive it.

What the phone would then do with those commands is not verified here.
"""

from __future__ import annotations

import base64
import io
import shutil
import time

import pytest
from PIL import Image

from glmv_agent.actions import (
    Click, DoubleClick, Drag, Key, LongPress, NavigateBack, NavigateHome, OpenApp, Scroll, Swipe,
    Target, TypeText, Wait,
)
from glmv_agent.envs.adb import (
    AdbClient, decode_screencap, is_black, parse_devices, parse_ime_list, parse_rotation,
    parse_wakefulness, parse_window_state, parse_wm_size,
)
from glmv_agent.envs import base
from glmv_agent.envs.android import AndroidEnv, AppTable, android_keycode
from glmv_agent.errors import ActionError, ActionRefusedError, EnvError, UnsupportedActionError

from fake_adb_server import FakeAdbServer, FakeDevice
from phones import OBSERVE_CMDS, SERIAL, WINDOW_GREP_CMD, fixture, make_phone, png

pytestmark = pytest.mark.skipif(shutil.which("adb") is None, reason="needs the adb client binary")


@pytest.fixture()
def server():
    with FakeAdbServer([make_phone()]) as srv:
        yield srv


def open_env(srv: FakeAdbServer, serial: str | None = None, **kw) -> AndroidEnv:
    kw.setdefault("ime_switch_delay", 0)
    return AndroidEnv(serial, adb_server=("127.0.0.1", srv.port), **kw)


def commands_of(env: AndroidEnv, srv: FakeAdbServer, action) -> list[str]:
    """The shell commands the phone receives for one action (after a fresh observe),
    without the screenshots taken afterwards to see the screen settle."""
    obs = env.observe()
    phone = srv.device(env.serial)
    before = len(phone.commands)
    env.execute(action, obs)
    commands = phone.commands[before:]
    while commands and commands[-1] == "screencap -p":
        commands.pop()
    return commands


def test_actions_wait_for_a_still_screen_not_a_fixed_time(server):
    """After an action the phone's screen is captured until two frames match (a still
    fake screen: two captures); settle_timeout=0 turns that off."""
    env = open_env(server)
    phone = server.device(SERIAL)
    obs = env.observe()
    before = len(phone.commands)
    outcome = env.execute(Click(target=Target.at(0.5, 0.5)), obs)
    assert phone.commands[before:] == ["input tap 540 1200", "screencap -p", "screencap -p"]
    assert outcome.settle_s > 0 and "still changing" not in outcome.detail
    env = open_env(server, settle_timeout=0)
    before = len(phone.commands)
    assert env.execute(Click(target=Target.at(0.5, 0.5)), obs).settle_s >= 0
    assert phone.commands[before:] == ["input tap 540 1200"]


def test_observe_right_after_an_action_reuses_the_settled_frame(server):
    """The settle wait ended on a still frame a moment ago: the next observation uses it
    (no third screencap), but only once, only fresh, and never across another action."""
    env = open_env(server)
    phone = server.device(SERIAL)
    obs = env.observe()
    env.execute(Click(target=Target.at(0.5, 0.5)), obs)
    before = len(phone.commands)
    reused = env.observe()
    assert phone.commands[before:] == OBSERVE_CMDS[:-1]  # window facts, no screencap
    assert reused.size == (1080, 2400) and reused.mapping.scale_x == 1.0
    assert env.observe() is not reused and phone.commands[-1] == "screencap -p"  # used once

    env.execute(Click(target=Target.at(0.5, 0.5)), obs)
    time.sleep(base.SETTLED_FRAME_MAX_AGE + 0.05)  # e.g. the agent's fixed settle_time
    before = len(phone.commands)
    env.observe()
    assert phone.commands[before:] == OBSERVE_CMDS  # too old: a fresh screenshot

    env.execute(Click(target=Target.at(0.5, 0.5)), obs)
    phone.set("input keyevent KEYCODE_ENTER", "Exception: broken input\n")  # it fails...
    with pytest.raises(ActionError):
        env.execute(Key(keys=["enter"]), obs)
    before = len(phone.commands)
    env.observe()  # ... after doing who knows what: the earlier still frame is stale
    assert phone.commands[before:] == OBSERVE_CMDS


# -- (a) parsers on fixtures -----------------------------------------------------------


def test_parse_devices_long_listing():
    devices = parse_devices(fixture("devices_l.txt"))
    assert [(d.serial, d.state) for d in devices] == [
        ("1A2B3C4D5E6F", "device"), ("emulator-5554", "device"),
        ("R58M42ABCDE", "unauthorized"), ("192.168.1.20:5555", "offline"),
    ]
    assert devices[0].details["model"] == "Pixel_6"
    assert devices[1].details["transport_id"] == "1"


def test_parse_wm_size_with_and_without_override():
    plain = parse_wm_size(fixture("wm_size.txt"))
    assert plain.physical == (1080, 2400) and plain.override is None
    assert plain.effective == (1080, 2400)
    override = parse_wm_size(fixture("wm_size_override.txt"))
    assert override.physical == (1440, 3088) and override.effective == (1080, 2316)
    with pytest.raises(EnvError, match="screen size"):
        parse_wm_size("cmd: Can't find service: window\n")


def test_parse_window_state_unlocked_android14():
    state = parse_window_state(fixture("dumpsys_window_android14.txt"))
    assert state.package == "com.android.settings"
    assert state.activity == "com.android.settings.Settings"
    assert state.rotation == 0
    assert state.keyguard_showing is False and state.keyguard_secure is True


def test_parse_window_state_secure_lock_screen_android12():
    state = parse_window_state(fixture("dumpsys_window_locked_android12.txt"))
    assert state.keyguard_showing is True and state.keyguard_secure is True
    # mCurrentFocus is the notification shade (no component): fall back to mFocusedApp,
    # expanding the relative activity name.
    assert state.package == "com.sec.android.app.launcher"
    assert state.activity == "com.sec.android.app.launcher.activities.LauncherActivity"


def test_parse_rotation_from_dumpsys_input():
    assert parse_rotation(fixture("dumpsys_input_android12.txt")) == 1
    assert parse_rotation(fixture("dumpsys_input_android14.txt")) == 3
    assert parse_rotation(fixture("dumpsys_window_landscape_android13.txt")) is None
    assert parse_rotation("    mCurrentRotation=ROTATION_270\n") == 3


def test_parse_power_and_ime_list():
    assert parse_wakefulness(fixture("dumpsys_power_awake.txt")) == "Awake"
    assert parse_wakefulness(fixture("dumpsys_power_asleep.txt")) == "Asleep"
    assert "com.android.adbkeyboard/.AdbIME" in parse_ime_list(fixture("ime_list_adbkeyboard.txt"))
    assert "com.android.adbkeyboard/.AdbIME" not in parse_ime_list(fixture("ime_list_plain.txt"))


def test_decode_screencap_validates_png():
    data = png(40, 80)
    assert decode_screencap(data).size == (40, 80)
    # Linker warnings printed before the image are skipped.
    assert decode_screencap(b"WARNING: linker: libfoo.so unused DT entry\n" + data).size == (40, 80)
    with pytest.raises(EnvError, match="empty screenshot.*FLAG_SECURE"):
        decode_screencap(b"")
    with pytest.raises(EnvError, match="truncated or corrupt"):
        decode_screencap(data[: len(data) // 2])
    with pytest.raises(EnvError, match="did not return a PNG"):
        decode_screencap(b"/system/bin/sh: screencap: inaccessible or not found\n")
    assert is_black(Image.new("RGB", (4, 4)))
    assert not is_black(decode_screencap(data))


def test_android_keycodes():
    assert android_keycode("enter") == "KEYCODE_ENTER"
    assert android_keycode("Volume Up") == "KEYCODE_VOLUME_UP"
    assert android_keycode("app switch") == "KEYCODE_APP_SWITCH"
    assert android_keycode("backspace") == "KEYCODE_DEL"
    assert android_keycode("a") == "KEYCODE_A"
    assert android_keycode("KEYCODE_TAB") == "KEYCODE_TAB"
    assert android_keycode("66") == "66"
    with pytest.raises(UnsupportedActionError, match="unknown Android key 'hyperdrive'"):
        android_keycode("hyperdrive")


# Every app the GLM-4.1V AndroidWorld prompt lists (glm-4.1v agent instructions).
ANDROID_WORLD_APPS = [
    "Google Chrome", "Google Chat", "Settings", "YouTube", "Google Play", "Gmail", "Google Maps",
    "Google Photos", "Google Calendar", "Camera", "Audio Recorder", "Google Drive", "Google Keep",
    "Grubhub", "Tripadvisor", "Starbucks", "Google Docs", "Google Sheets", "Google Slides",
    "Clock", "Google Search", "Contacts", "Facebook", "WhatsApp", "Instagram", "Twitter",
    "Snapchat", "Telegram", "LinkedIn", "Spotify", "Netflix", "Amazon Shopping", "TikTok",
    "Discord", "Reddit", "Pinterest", "Android World", "Files", "Markor", "Clipper", "Messages",
    "Simple SMS Messenger", "Dialer", "Simple Calendar Pro", "Simple Gallery Pro", "Miniwob",
    "Simple Draw Pro", "Pro Expense", "Broccoli", "CAA", "OsmAnd", "Tasks",
    "Open Tracks Sports Tracker", "Joplin", "VLC", "Retro Music",
]


def test_app_table_names():
    table = AppTable()
    for name in ANDROID_WORLD_APPS:
        assert table.lookup(name).packages, name
    assert table.lookup("微信").packages == ("com.tencent.mm",)
    assert table.lookup("wechat").packages == ("com.tencent.mm",)
    assert table.lookup("google-chrome").packages[0] == "com.android.chrome"
    assert table.lookup("设置").activity == ".Settings"
    assert table.lookup("高德地图").packages == ("com.autonavi.minimap",)
    assert table.lookup("com.example.notes").packages == ("com.example.notes",)
    assert table.name_of("com.android.settings") == "Settings"
    with pytest.raises(ActionRefusedError, match="did you mean: .*Google Chrome"):
        table.lookup("Google Chrom")
    custom = AppTable({"Notes": "org.example.notes/.Main"})
    assert custom.lookup("notes").packages == ("org.example.notes",)
    assert custom.lookup("notes").activity == ".Main"
    with pytest.raises(EnvError, match="not a package name"):
        AppTable({"Bad": "not a package"})


# -- (b) the real adb client against the fake adb server --------------------------------


def test_real_client_protocol_requests(server):
    env = open_env(server)
    env.execute(NavigateHome())
    # adb 29 asks the version, the device's features (to choose shell v2), then switches
    # the socket to the device with host:tport:serial and opens a shell v2 raw service.
    assert "host:devices-l" in server.requests
    assert f"host-serial:{SERIAL}:features" in server.requests
    assert f"host:tport:serial:{SERIAL}" in server.requests
    assert "shell,v2,TERM=xterm,raw:input keyevent KEYCODE_HOME" in server.requests
    assert "exec:screencap -p" in server.requests


def test_observe_decodes_screenshot_and_reads_state(server):
    env = open_env(server)
    phone = server.device(SERIAL)
    obs = env.observe()
    assert phone.commands == OBSERVE_CMDS
    assert obs.size == (1080, 2400) and obs.platform == "mobile"
    assert obs.screenshot.getpixel((0, 0)) == (255, 255, 255)
    assert obs.screenshot.getpixel((5, 5)) == (30, 120, 200)
    assert (obs.mapping.scale_x, obs.mapping.scale_y) == (1.0, 1.0)
    assert obs.app == "Settings"
    assert obs.extra["package"] == "com.android.settings"
    assert obs.extra["rotation"] == 0 and obs.extra["physical_size"] == (1080, 2400)
    assert "black_screen" not in obs.extra


def test_screenshot_smaller_than_input_space_is_scaled(server):
    # A screencap at 720x1600 while `input` takes 1080x2400 pixels: taps are scaled by 1.5.
    server.device(SERIAL).screencap_png = png(720, 1600)
    env = open_env(server)
    assert commands_of(env, server, Click(target=Target.at(0.5, 0.5))) == ["input tap 540 1200"]


def test_landscape_rotation_from_dumpsys_input(server):
    phone = server.device(SERIAL)
    phone.set("dumpsys window", fixture("dumpsys_window_landscape_android13.txt"))
    phone.screencap_png = png(2400, 1080)
    env = open_env(server)
    obs = env.observe()
    assert "dumpsys input | grep -E 'SurfaceOrientation|orientation='" in phone.commands
    assert obs.extra["rotation"] == 3 and obs.app == "YouTube"
    assert (obs.mapping.env_width, obs.mapping.env_height) == (2400, 1080)
    assert commands_of(env, server, Click(target=Target.at(0.9, 0.1))) == ["input tap 2160 108"]


def test_override_size_maps_to_override_pixels(server):
    phone = server.device(SERIAL)
    phone.set("wm size", fixture("wm_size_override.txt"))
    phone.screencap_png = png(1080, 2316)
    env = open_env(server)
    obs = env.observe()
    assert obs.extra["override_size"] == (1080, 2316)
    assert (obs.mapping.env_width, obs.mapping.env_height) == (1080, 2316)


def test_touch_actions_send_exact_input_commands(server):
    env = open_env(server)
    assert commands_of(env, server, Click(target=Target.at(0.25, 0.5))) == ["input tap 270 1200"]
    assert commands_of(env, server, DoubleClick(target=Target.at(0.5, 0.25))) == [
        "input tap 540 600; input tap 540 600"
    ]
    assert commands_of(env, server, LongPress(target=Target.at(0.1, 0.9), duration=1.5)) == [
        "input swipe 108 2160 108 2160 1500"
    ]
    swipe = Swipe(start=Target.at(0.5, 0.8), end=Target.at(0.5, 0.2), duration=0.3)
    assert commands_of(env, server, swipe) == ["input swipe 540 1920 540 480 300"]
    # Scrolling down brings lower content into view: the finger moves up.
    assert commands_of(env, server, Scroll(direction="down", amount=5)) == [
        "input swipe 540 1800 540 600 500"
    ]
    assert commands_of(env, server, Scroll(direction="right", amount=2)) == [
        "input swipe 648 1200 432 1200 500"
    ]
    pressed = open_env(server, tap_duration=0.2)
    assert commands_of(pressed, server, Click(target=Target.at(0.0, 0.0))) == [
        "input swipe 0 0 0 0 200"
    ]


def test_keys_back_home(server):
    env = open_env(server)
    assert commands_of(env, server, NavigateBack()) == ["input keyevent KEYCODE_BACK"]
    assert commands_of(env, server, NavigateHome()) == ["input keyevent KEYCODE_HOME"]
    assert commands_of(env, server, Key(keys=["Enter"])) == ["input keyevent KEYCODE_ENTER"]
    assert commands_of(env, server, Key(keys=["volume_down"])) == ["input keyevent KEYCODE_VOLUME_DOWN"]
    # The first chord reads the API level (once); Android 14 has `input keycombination`.
    assert commands_of(env, server, Key(keys=["ctrl", "a"])) == [
        "getprop ro.build.version.sdk", "input keycombination KEYCODE_CTRL_LEFT KEYCODE_A"
    ]
    assert commands_of(env, server, Key(keys=["ctrl", "c"])) == [
        "input keycombination KEYCODE_CTRL_LEFT KEYCODE_C"
    ]
    assert env.sdk_level() == 34
    before = len(server.device(SERIAL).commands)
    with pytest.raises(UnsupportedActionError):
        env.execute(Key(keys=["warp"]))
    assert len(server.device(SERIAL).commands) == before


def test_key_chord_on_android_12_is_a_clear_error_not_a_silent_no_op():
    with FakeAdbServer([make_phone(sdk=31)]) as srv:
        env = open_env(srv)
        obs = env.observe()
        before = len(srv.device(SERIAL).commands)
        with pytest.raises(UnsupportedActionError, match="Android 13.*API 31"):
            env.execute(Key(keys=["ctrl", "a"]), obs)
        assert srv.device(SERIAL).commands[before:] == ["getprop ro.build.version.sdk"]
        # Single keys still work on old phones.
        assert commands_of(env, srv, Key(keys=["enter"])) == ["input keyevent KEYCODE_ENTER"]


def test_drag_is_unsupported_on_the_phone(server):
    env = open_env(server)
    with pytest.raises(UnsupportedActionError, match="swipe"):
        env.execute(Drag(start=Target.at(0.1, 0.1), end=Target.at(0.5, 0.5)))


def test_type_with_input_text_escapes_for_the_phone_shell(server):
    env = open_env(server, keyboard="input_text")
    cmds = commands_of(env, server, TypeText(text="it's a $HOME & (test)", enter=True))
    assert cmds == [
        "input text 'it'\"'\"'s%sa%s$HOME%s&%s(test)'",
        "input keyevent KEYCODE_ENTER",
    ]
    cmds = commands_of(env, server, TypeText(text="ab\ncd", target=Target.at(0.5, 0.5), clear=True))
    assert cmds[0] == "input tap 540 1200"
    assert cmds[1] == "input keyevent KEYCODE_MOVE_END " + " ".join(["KEYCODE_DEL"] * 80)
    assert cmds[2:] == ["input text ab", "input keyevent KEYCODE_ENTER", "input text cd"]


def test_input_text_refuses_non_ascii_without_sending(server):
    env = open_env(server)  # auto: ADB Keyboard is not installed on this phone
    obs = env.observe()
    phone = server.device(SERIAL)
    before = len(phone.commands)
    with pytest.raises(ActionRefusedError, match="ADB Keyboard"):
        env.execute(TypeText(text="你好"), obs)
    assert phone.commands[before:] == ["ime list -a -s"]


def test_type_with_adb_keyboard_restores_the_users_ime(server):
    phone = server.device(SERIAL)
    phone.set("ime list -a -s", fixture("ime_list_adbkeyboard.txt"))
    env = open_env(server)
    text = "你好, world 'x' $y"
    cmds = commands_of(env, server, TypeText(text=text, clear=True, enter=True))
    encoded = base64.b64encode(text.encode()).decode()
    assert cmds == [
        "ime list -a -s",
        "settings get secure default_input_method",
        "ime enable com.android.adbkeyboard/.AdbIME; ime set com.android.adbkeyboard/.AdbIME",
        "am broadcast -a ADB_CLEAR_TEXT",
        f"am broadcast -a ADB_INPUT_B64 --es msg {encoded}",
        "ime set com.google.android.inputmethod.latin/com.android.inputmethod.latin.LatinIME",
        "input keyevent KEYCODE_ENTER",
    ]
    sent = cmds[4].rsplit(" ", 1)[1]
    assert base64.b64decode(sent).decode() == text
    # The IME check is cached: a second type does not list IMEs again.
    assert "ime list -a -s" not in commands_of(env, server, TypeText(text="x"))


def test_open_app_by_name(server):
    env = open_env(server)
    assert commands_of(env, server, OpenApp(name="微信")) == [
        "monkey -p com.tencent.mm -c android.intent.category.LAUNCHER 1"
    ]
    assert commands_of(env, server, OpenApp(name="settings")) == [
        "am start -n com.android.settings/.Settings"
    ]
    # '$' in an activity name is quoted for the phone's shell.
    assert commands_of(env, server, OpenApp(name="Discord")) == [
        "am start -n 'com.discord/com.discord.app.AppActivity$Main'"
    ]
    # Google Clock missing: its activity fails, its launcher too, then AOSP DeskClock works.
    assert commands_of(env, server, OpenApp(name="Clock")) == [
        "am start -n com.google.android.deskclock/com.android.deskclock.DeskClock",
        "monkey -p com.google.android.deskclock -c android.intent.category.LAUNCHER 1",
        "monkey -p com.android.deskclock -c android.intent.category.LAUNCHER 1",
    ]


def test_open_app_unknown_or_missing(server):
    env = open_env(server)
    obs = env.observe()
    phone = server.device(SERIAL)
    before = len(phone.commands)
    with pytest.raises(ActionRefusedError, match="unknown app 'Brocoli'.*Broccoli"):
        env.execute(OpenApp(name="Brocoli"), obs)
    assert len(phone.commands) == before
    with pytest.raises(ActionError, match="could not open 'Pinterest'.*not installed"):
        env.execute(OpenApp(name="Pinterest"), obs)


def test_wait_and_unsupported(server):
    env = open_env(server)
    env.execute(Wait(seconds=0))
    assert "wait" in env.supported_actions() and "open_app" in env.supported_actions()
    from glmv_agent.actions import Hover

    with pytest.raises(UnsupportedActionError, match="cannot execute 'hover'"):
        env.execute(Hover(target=Target.at(0.5, 0.5)))


def test_wakes_a_sleeping_screen(server):
    phone = server.device(SERIAL)
    phone.set("dumpsys power", fixture("dumpsys_power_asleep.txt"))
    env = open_env(server)
    env.observe()
    assert phone.commands[:3] == [
        "dumpsys power | grep -E 'mWakefulness='",
        "input keyevent KEYCODE_WAKEUP",
        WINDOW_GREP_CMD,
    ]


def test_secure_lock_screen_is_an_error(server):
    server.device(SERIAL).set("dumpsys window", fixture("dumpsys_window_locked_android12.txt"))
    env = open_env(server)
    with pytest.raises(EnvError, match="locked with a PIN/pattern/password: unlock it"):
        env.observe()
    assert "screencap -p" not in server.device(SERIAL).commands


def test_black_screenshot_is_flagged(server):
    server.device(SERIAL).screencap_png = png(1080, 2400, (0, 0, 0))
    phone = server.device(SERIAL)
    image = Image.new("RGB", (1080, 2400))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    phone.screencap_png = buf.getvalue()
    obs = open_env(server).observe()
    assert obs.extra["black_screen"] is True and "FLAG_SECURE" in obs.extra["hint"]


def test_empty_screenshot_is_an_error(server):
    server.device(SERIAL).screencap_png = b""
    with pytest.raises(EnvError, match="empty screenshot"):
        open_env(server).observe()


def test_device_selection_errors():
    with FakeAdbServer([]) as srv:
        with pytest.raises(EnvError, match="no Android device connected"):
            open_env(srv)
    with FakeAdbServer([make_phone(), make_phone("emulator-5554", transport_id=2)]) as srv:
        with pytest.raises(EnvError, match=r"2 devices are connected \(1A2B3C4D5E6F .*emulator-5554"):
            open_env(srv)
        assert open_env(srv, "emulator-5554").serial == "emulator-5554"
        with pytest.raises(EnvError, match="'nope' is not connected; connected: 1A2B"):
            open_env(srv, "nope")
    with FakeAdbServer([FakeDevice("R58M42ABCDE", state="unauthorized")]) as srv:
        with pytest.raises(EnvError, match="unauthorized.*Allow USB debugging"):
            open_env(srv)
    with FakeAdbServer([FakeDevice("192.168.1.20:5555", state="offline")]) as srv:
        with pytest.raises(EnvError, match="offline: reconnect"):
            open_env(srv)


def test_device_lost_mid_run(server):
    env = open_env(server)
    env.observe()
    server.devices.clear()
    with pytest.raises(EnvError, match=f"device '{SERIAL}' not found: it was disconnected"):
        env.execute(Click(target=Target.at(0.5, 0.5)))


def test_unauthorized_after_connect(server):
    env = open_env(server)
    server.device(SERIAL).state = "unauthorized"
    with pytest.raises(EnvError, match="RSA key prompt"):
        env.observe()


def test_missing_adb_binary():
    with pytest.raises(EnvError, match="apt install adb"):
        AndroidEnv(adb_path="/nonexistent/adb")
    with pytest.raises(EnvError, match="not found"):
        AdbClient("definitely-not-adb-xyz")


def test_command_timeout(server):
    def slow(command: str):
        if command.startswith("input"):
            time.sleep(3)
        return None

    server.device(SERIAL).handlers.insert(0, slow)
    env = open_env(server, timeout=1)
    with pytest.raises(EnvError, match="timed out after 1s: .*input tap"):
        env.execute(Click(target=Target.at(0.5, 0.5)))


def test_failing_remote_command_exit_code_is_reported(server):
    server.device(SERIAL).handlers.insert(
        0, lambda c: (b"", 137) if c.startswith("input tap") else None
    )
    env = open_env(server)
    with pytest.raises(EnvError, match="exit code 137"):
        env.execute(Click(target=Target.at(0.5, 0.5)))


# -- end to end: Agent + ReplayBackend + AutoGLM-Phone dialect + AndroidEnv --------------


def test_agent_runs_autoglm_phone_task_against_fake_adb(server, tmp_path):
    from glmv_agent.agent import Agent
    from glmv_agent.backends.replay import ReplayBackend

    phone = server.device(SERIAL)
    wechat_window = fixture("dumpsys_window_android14.txt").replace(
        "com.android.settings/com.android.settings.Settings", "com.tencent.mm/com.tencent.mm.ui.LauncherUI"
    ).replace("com.android.settings/.Settings", "com.tencent.mm/.ui.LauncherUI")

    def launcher(command: str):
        # The fake phone's foreground app follows the launch, as a real one would.
        if command.startswith("monkey -p com.tencent.mm "):
            phone.set("dumpsys window", wechat_window)
        return None

    phone.handlers.insert(0, launcher)
    phone.set("ime list -a -s", fixture("ime_list_adbkeyboard.txt"))
    backend = ReplayBackend([
        '<think>先打开微信</think><answer>do(action="Launch", app="微信")</answer>',
        '<think>点搜索框</think><answer>do(action="Tap", element=[500,100])</answer>',
        '<think>输入</think><answer>do(action="Type", text="你好")</answer>',
        '<think>返回</think><answer>do(action="Back")</answer>',
        '<think>完成</think><answer>finish(message="已发送")</answer>',
    ])
    env = open_env(server)
    agent = Agent(backend, env, family="autoglm-phone", trace_dir=tmp_path / "trace",
                  settle_time=0, max_steps=10)
    result = agent.run("在微信里搜索你好")
    assert result.status == "success", result.error
    assert result.answer == "已发送"
    actions = [c for c in phone.commands if c.startswith(("monkey", "input", "am broadcast -a ADB_INPUT"))]
    encoded = base64.b64encode("你好".encode()).decode()
    # [500, 100] on the 0-999 grid of a 1080x2400 screenshot lands on pixel (540, 240).
    assert actions[:2] == [
        "monkey -p com.tencent.mm -c android.intent.category.LAUNCHER 1", "input tap 540 240",
    ]
    assert actions[2:] == [f"am broadcast -a ADB_INPUT_B64 --es msg {encoded}", "input keyevent KEYCODE_BACK"]
    # The model was told which app is in front: Settings first, WeChat after the launch.
    first, second = backend.messages[0], backend.messages[1]
    assert "Settings" in str(first[-1]["content"]) and "微信" in str(second[-1]["content"])
    assert (tmp_path / "trace" / "steps.jsonl").exists()
