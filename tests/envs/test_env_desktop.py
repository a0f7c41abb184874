"""DesktopEnv against a real Xvfb X server and a real Tk application (tests/support/desktop_app.py).

Every test that touches X runs at two resolutions. The app reports what it received
(which widget got which button at which root pixel, scroll views, entry text, key syms), so
the assertions check what a real application saw, not what we sent.

Multi-monitor and HiDPI cannot be reproduced here: Xvfb's Xinerama heads all sit at 0,0
and mss sees one RandR output, and X11 has no logical/physical split. Those mappings are
tested as pure functions at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from Xlib import X, Xatom
from Xlib.display import Display

from glmv_agent.actions import (
    Click, DoubleClick, Drag, Hover, Key, LongPress, MiddleClick, Point, RightClick, Scroll,
    Swipe, Target, TypeText, Wait,
)
from glmv_agent.envs import keys as keymap
from glmv_agent.envs import base
from glmv_agent.envs._xvfb import VirtualDisplay
from glmv_agent.envs.base import Observation
from glmv_agent.envs.desktop import DesktopEnv, monitor_mapping
from glmv_agent.errors import (
    ActionError, ActionRefusedError, ConfigError, EnvError, StoppedError, UnsupportedActionError,
)
from glmv_agent.geometry import ScreenMapping

from xvfb import TkApp, require_x_tools

UNICODE_TEXT = "héllo wörld — 中文输入 ñ € Ωμέγα 😀"
ALL_ASCII = "".join(chr(c) for c in range(32, 127))


@pytest.fixture(scope="module", params=[(1024, 768), (1920, 1080)], ids=["1024x768", "1920x1080"])
def display(request: pytest.FixtureRequest) -> Iterator[VirtualDisplay]:
    require_x_tools()
    width, height = request.param
    with VirtualDisplay(width, height) as virtual:
        yield virtual


@pytest.fixture(scope="module")
def env(display: VirtualDisplay) -> DesktopEnv:
    return DesktopEnv(display=display.name, pause=0.02, drag_duration=0.2)


@pytest.fixture
def app(display: VirtualDisplay, env: DesktopEnv) -> Iterator[TkApp]:
    application = TkApp(display.name)
    env.observe()
    try:
        yield application
    finally:
        application.close()


def xclip(display: str, *args: str, text: str | None = None) -> str:
    """Read or set the real X clipboard."""
    run_env = {**os.environ, "DISPLAY": display}
    if text is not None:
        subprocess.run(["xclip", "-selection", "clipboard", "-i", *args], input=text.encode(),
                       env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=5)
        return text
    result = subprocess.run(["xclip", "-selection", "clipboard", "-o"], env=run_env,
                            capture_output=True, timeout=5, check=True)
    return result.stdout.decode()


# -- capture -------------------------------------------------------------------------

def test_actions_wait_until_the_screen_is_still(env: DesktopEnv, app: TkApp) -> None:
    """The "slow" pad fades for 400 ms after a press: execute() returns once two frames
    in a row look the same, so the next screenshot shows where it ended."""
    obs = env.observe()
    outcome = env.execute(Click(target=app.target("slow")), obs)
    assert "still changing" not in outcome.detail and outcome.settle_s > 0
    assert env.observe().screenshot.getpixel(app.centre_pixel("slow")) == (10, 10, 10)
    app.wait_for(lambda e: e["event"] == "faded")


def test_observe_captures_the_real_screen(env: DesktopEnv, app: TkApp) -> None:
    observation = env.observe()
    assert observation.platform == "pc"
    assert observation.size == app.screen
    assert observation.mapping == ScreenMapping(width=app.screen[0], height=app.screen[1])
    image = observation.screenshot
    assert image.mode == "RGB"
    x, y, w, h = app.ready["swatch"]
    swatch = image.crop((x + 2, y + 2, x + w - 2, y + h - 2))
    assert swatch.getcolors() == [(swatch.width * swatch.height, (0x12, 0xAB, 0x34))]
    bx1, by1, bx2, by2 = app.ready["box"]
    assert image.getpixel(((bx1 + bx2) // 2, (by1 + by2) // 2)) == (0xD0, 0x20, 0x20)
    # Just outside the swatch the canvas is white.
    assert image.getpixel((x - 3, y + h // 2)) == (255, 255, 255)


def test_observation_names_the_focused_window(env: DesktopEnv, display: VirtualDisplay) -> None:
    # Xvfb runs no window manager, so nothing is focused until a client sets the input
    # focus, as a window manager would; xdotool's windowfocus does exactly that.
    app = TkApp(display.name)
    run_env = {**os.environ, "DISPLAY": display.name}
    try:
        found = subprocess.run(["xdotool", "search", "--name", "^GLM-V test app$"], env=run_env,
                               capture_output=True, text=True, timeout=10, check=True)
        window = found.stdout.split()[0]
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=run_env, timeout=10, check=True)
        assert env.observe().title == "GLM-V test app"
    finally:
        app.close()
    # The focused window is gone: no title, and no error either.
    assert env.observe().title != "GLM-V test app"


def test_focused_window_is_read_over_xlib_without_xdotool(
        env: DesktopEnv, display: VirtualDisplay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The title and program come from X properties over one kept connection, not from
    xdotool processes; focus on an unnamed child window names its top-level window."""
    app = TkApp(display.name)
    run_env = {**os.environ, "DISPLAY": display.name}
    try:
        found = subprocess.run(["xdotool", "search", "--name", "^GLM-V test app$"], env=run_env,
                               capture_output=True, text=True, timeout=10, check=True)
        top = int(found.stdout.split()[0])
        with contextlib.closing(Display(display.name)) as x:
            window = x.create_resource_object("window", top)
            (child, *_) = window.query_tree().children
            assert not child.get_wm_name()  # Tk's widget windows have no name
            # Tk sets no _NET_WM_PID; set it (to this process) as many toolkits do.
            window.change_property(x.intern_atom("_NET_WM_PID"), Xatom.CARDINAL, 32,
                                   [os.getpid()])
            x.sync()
        subprocess.run(["xdotool", "windowfocus", "--sync", str(child.id)], env=run_env,
                       timeout=10, check=True)
        monkeypatch.setenv("PATH", "/nonexistent")  # no xdotool (or any tool) to run
        observation = env.observe()
        assert observation.title == "GLM-V test app"
        with open(f"/proc/{os.getpid()}/comm", encoding="utf-8") as comm:
            assert observation.app == comm.read().strip()
    finally:
        monkeypatch.undo()
        app.close()
        with contextlib.closing(Display(display.name)) as x:  # focus back as Xvfb starts
            x.set_input_focus(X.PointerRoot, X.RevertToPointerRoot, X.CurrentTime)
            x.sync()


def test_observe_right_after_an_action_reuses_the_settled_frame(
        env: DesktopEnv, app: TkApp) -> None:
    """The settle wait ended on a still frame a moment ago: the next observation is that
    frame (once); later, or after another action, the screen is grabbed anew."""
    obs = env.observe()
    env.execute(Click(target=app.target("pad_a")), obs)
    assert env._settled is not None
    still = env._settled[0].image
    reused = env.observe()
    assert reused.screenshot is still and reused.size == app.screen
    assert reused.mapping == ScreenMapping(width=app.screen[0], height=app.screen[1])
    assert env.observe().screenshot is not still  # used once
    env.execute(Click(target=app.target("pad_a")), obs)
    still = env._settled[0].image
    time.sleep(base.SETTLED_FRAME_MAX_AGE + 0.05)  # e.g. the agent's fixed settle_time
    assert env.observe().screenshot is not still
    env.execute(Click(target=app.target("pad_a")), obs)
    env.execute(Wait(seconds=0), obs)  # an action after the settled frame: it is stale
    assert env._settled is None


def test_stop_process_kills_a_child_that_ignores_terminate() -> None:
    from glmv_agent.envs._xvfb import stop_process

    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    stop_process(stubborn, timeout=0.5)
    assert stubborn.returncode == -9  # SIGTERM ignored, so it was killed, and reaped
    stubborn.stdout.close()
    stop_process(stubborn)  # an exited process: nothing to do


def test_monitor_zero_is_the_whole_screen_and_a_missing_monitor_is_named(display: VirtualDisplay) -> None:
    assert DesktopEnv(0, display=display.name).observe().size == (display.width, display.height)
    with pytest.raises(EnvError, match="monitor 5 does not exist; available"):
        DesktopEnv(5, display=display.name).observe()


# -- mouse ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("action_type", "button", "widget"),
    [(Click, 1, "pad_a"), (RightClick, 3, "pad_b"), (MiddleClick, 2, "pad_c"), (Click, 1, "pad_b")],
)
def test_clicks_land_on_the_intended_widget(
    env: DesktopEnv, app: TkApp, action_type: type, button: int, widget: str,
) -> None:
    app.mark()
    outcome = env.execute(action_type(target=app.target(widget)))
    event = app.wait_for(lambda e: e["event"] == "press")
    assert (event["widget"], event["button"]) == (widget, button)
    assert (event["x"], event["y"]) == app.centre_pixel(widget)
    assert outcome.env_points == [app.centre_pixel(widget)]
    app.settle()
    assert [e for e in app.events_since_mark() if e["event"] == "press"] == []


def test_double_click(env: DesktopEnv, app: TkApp) -> None:
    app.mark()
    env.execute(DoubleClick(target=app.target("pad_c")))
    assert app.wait_for(lambda e: e["event"] == "double")["widget"] == "pad_c"


def test_hover_enters_the_widget(env: DesktopEnv, app: TkApp) -> None:
    env.execute(Hover(target=app.target("pad_a")))
    app.mark()
    env.execute(Hover(target=app.target("hover")))
    event = app.wait_for(lambda e: e["event"] == "enter")
    assert (event["x"], event["y"]) == app.centre_pixel("hover")


def test_drag_moves_the_canvas_box(env: DesktopEnv, app: TkApp) -> None:
    x1, y1, x2, y2 = app.ready["box"]
    start = ((x1 + x2) // 2, (y1 + y2) // 2)
    end = (start[0] + 150, start[1] + 90)
    app.mark()
    env.execute(Drag(start=app.target_at(*start), end=app.target_at(*end)))
    event = app.wait_for(lambda e: e["event"] == "dragged")
    assert event["box"] == [x1 + 150, y1 + 90, x2 + 150, y2 + 90]


def test_scroll_directions_and_amounts(env: DesktopEnv, app: TkApp) -> None:
    listbox, text = app.target("listbox"), app.target("text")
    env.execute(Scroll(direction="down", amount=3, target=listbox))
    down = app.wait_for(lambda e: e["event"] == "wheel" and e["counts"]["down"] == 3)
    assert down["counts"]["up"] == 0 and down["yfirst"] > 0  # later items came into view
    env.execute(Scroll(direction="up", amount=3, target=listbox))
    up = app.wait_for(lambda e: e["event"] == "wheel" and e["counts"]["up"] == 3)
    assert up["yfirst"] == 0
    env.execute(Scroll(direction="right", amount=2, target=text))
    right = app.wait_for(lambda e: e["event"] == "wheel" and e["counts"]["right"] == 2)
    assert right["xfirst"] > 0 and right["counts"]["left"] == 0
    env.execute(Scroll(direction="left", amount=2, target=text))
    left = app.wait_for(lambda e: e["event"] == "wheel" and e["counts"]["left"] == 2)
    assert left["xfirst"] == 0
    app.settle()
    assert all(e["counts"]["down"] == 3 for e in app.events_since_mark() if e["event"] == "wheel")


# -- keyboard ------------------------------------------------------------------------

def final_entry(app: TkApp, expected: str) -> str:
    """Wait for the entry to hold `expected`; return what it finally holds."""
    try:
        return app.wait_for(lambda e: e["event"] == "entry" and e["value"] == expected)["value"]
    except AssertionError:
        values = [e["value"] for e in app.events_since_mark() if e["event"] == "entry"]
        return values[-1] if values else ""


def test_ascii_is_typed_with_pyautogui(env: DesktopEnv, app: TkApp) -> None:
    text = ALL_ASCII.replace("<", "")
    app.mark()
    outcome = env.execute(TypeText(text=text, target=app.target("entry")))
    assert final_entry(app, text) == text
    assert outcome.detail.endswith("via pyautogui")


def test_all_ascii_arrives_intact_in_auto_mode(env: DesktopEnv, app: TkApp) -> None:
    # pyautogui sends '<' as '>' on X11, so auto mode routes such text to xdotool.
    app.mark()
    outcome = env.execute(TypeText(text=ALL_ASCII, target=app.target("entry")))
    assert final_entry(app, ALL_ASCII) == ALL_ASCII
    assert outcome.detail.endswith("via xdotool")


def test_pyautogui_mode_refuses_text_it_cannot_type(display: VirtualDisplay, app: TkApp) -> None:
    forced = DesktopEnv(display=display.name, typing="pyautogui")
    app.mark()
    with pytest.raises(UnsupportedActionError, match="cannot type"):
        forced.execute(TypeText(text="café", target=app.target("entry")))
    app.settle()
    assert app.events_since_mark() == []  # not even the click happened


@pytest.mark.parametrize("typing", ["auto", "xdotool", "clipboard"])
def test_unicode_arrives_intact(display: VirtualDisplay, app: TkApp, typing: str) -> None:
    env = DesktopEnv(display=display.name, typing=typing, pause=0.02)  # type: ignore[arg-type]
    xclip(display.name, text="what the user had copied")
    app.mark()
    outcome = env.execute(TypeText(text=UNICODE_TEXT, target=app.target("entry")))
    assert final_entry(app, UNICODE_TEXT) == UNICODE_TEXT
    assert outcome.detail.endswith("via clipboard" if typing == "auto" else f"via {typing}")
    assert xclip(display.name) == "what the user had copied"


def test_clear_replaces_and_enter_presses_return(env: DesktopEnv, app: TkApp) -> None:
    env.execute(TypeText(text="old text", target=app.target("entry")))
    final_entry(app, "old text")
    app.mark()
    env.execute(TypeText(text="new", target=app.target("entry"), clear=True, enter=True))
    assert final_entry(app, "new") == "new"
    assert app.wait_for(lambda e: e["event"] == "key" and e["keysym"] == "Return")


def test_ctrl_a_then_type_replaces_and_shift_makes_capitals(env: DesktopEnv, app: TkApp) -> None:
    env.execute(TypeText(text="abc", target=app.target("entry")))
    final_entry(app, "abc")
    app.mark()
    env.execute(Key(keys=["ctrl", "a"]))
    env.execute(TypeText(text="xyz"))
    assert final_entry(app, "xyz") == "xyz"
    env.execute(Key(keys=["shift", "h"]))
    env.execute(Key(keys=["Shift_L", "i"]))
    assert final_entry(app, "xyzHI") == "xyzHI"


@pytest.mark.parametrize(
    ("names", "keysym", "modifiers"),
    [
        (["enter"], "Return", 0), (["Escape"], "Escape", 0), (["pgdn"], "Next", 0),
        (["page up"], "Prior", 0), (["F5"], "F5", 0), (["arrowleft"], "Left", 0),
        (["home"], "Home", 0), (["ctrl", "shift", "k"], "K", 4 | 1), (["alt", "x"], "x", 8),
        (["ctrl", "<"], "less", 4 | 1),  # '<' is Shift+comma on the US keymap
    ],
)
def test_key_names_reach_the_app(
    env: DesktopEnv, app: TkApp, names: list[str], keysym: str, modifiers: int,
) -> None:
    env.execute(Click(target=app.target("entry")))
    app.mark()
    env.execute(Key(keys=names))
    event = app.wait_for(lambda e: e["event"] == "key" and e["keysym"] == keysym)
    assert event["state"] & (4 | 1 | 8) == modifiers


def test_unknown_key_is_refused_before_anything_is_pressed(env: DesktopEnv, app: TkApp) -> None:
    env.execute(Click(target=app.target("entry")))
    app.settle()
    app.mark()
    with pytest.raises(ActionError, match="unknown key name 'hyperdrive'"):
        env.execute(Key(keys=["ctrl", "hyperdrive"]))
    app.settle()
    assert app.events_since_mark() == []


# -- refusals and failures -----------------------------------------------------------

def test_points_outside_the_monitor_are_refused(env: DesktopEnv, app: TkApp) -> None:
    width, height = app.screen
    screenshot = env.observe().screenshot
    beside = Observation(screenshot=screenshot, platform="pc",
                         mapping=ScreenMapping(width=width, height=height, origin_x=width))
    stale = Observation(screenshot=screenshot, platform="pc",
                        mapping=ScreenMapping(width=width * 2, height=height * 2))
    app.mark()
    with pytest.raises(ActionRefusedError, match="outside monitor 1"):
        env.execute(Click(target=app.target("pad_a")), beside)
    with pytest.raises(ActionRefusedError, match="outside monitor 1"):
        env.execute(Click(target=Target.at(0.9, 0.9)), stale)
    with pytest.raises(ActionRefusedError):  # the end is off-screen: the drag never starts
        env.execute(Drag(start=Target.at(0.1, 0.1), end=Target.at(0.9, 0.9)), stale)
    app.settle()
    assert app.events_since_mark() == []


def test_mobile_actions_are_unsupported(env: DesktopEnv, app: TkApp) -> None:
    with pytest.raises(UnsupportedActionError, match="cannot execute 'swipe'"):
        env.execute(Swipe(start=Target.at(0.5, 0.8), end=Target.at(0.5, 0.2)))
    with pytest.raises(UnsupportedActionError, match="long_press"):
        env.execute(LongPress(target=app.target("pad_a")))


def test_wait_sleeps_and_reports(env: DesktopEnv) -> None:
    assert env.execute(Wait(seconds=0.05)).detail == "waited 0.05s"
    assert {"click", "double_click", "right_click", "middle_click", "hover", "drag", "scroll",
            "key", "type", "wait"} == env.supported_actions()


def test_own_corner_moves_do_not_trip_the_failsafe_but_a_human_does(
    env: DesktopEnv, app: TkApp, display: VirtualDisplay,
) -> None:
    env.execute(Hover(target=Target.at(0.0, 0.0)))  # nudged off the corner pixel
    app.mark()
    env.execute(Click(target=app.target("pad_a")))
    assert app.wait_for(lambda e: e["event"] == "press")["widget"] == "pad_a"
    # The user slams the mouse into the corner: the next action stops the run.
    xdotool = {"env": {**os.environ, "DISPLAY": display.name}, "check": True, "timeout": 5}
    subprocess.run(["xdotool", "mousemove", "0", "0"], **xdotool)
    app.mark()
    with pytest.raises(StoppedError, match="fail-safe"):
        env.execute(Click(target=app.target("pad_b")))
    app.settle()
    assert [e for e in app.events_since_mark() if e["event"] == "press"] == []
    subprocess.run(["xdotool", "mousemove", "200", "200"], **xdotool)  # the user moves away
    app.mark()
    env.execute(Click(target=app.target("pad_b")))
    assert app.wait_for(lambda e: e["event"] == "press")["widget"] == "pad_b"


def test_missing_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(EnvError, match="DISPLAY is not set.*Xvfb"):
        DesktopEnv().observe()
    unused = next(n for n in range(150, 250) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    with pytest.raises(EnvError, match="Is the X server running"):
        DesktopEnv(display=f":{unused}").observe()
    # A fresh process without DISPLAY: importing the SDK works, acting fails clearly.
    script = (
        "from glmv_agent.envs.desktop import DesktopEnv\n"
        "from glmv_agent.actions import Click, Target\n"
        "from glmv_agent.errors import EnvError\n"
        "try:\n    DesktopEnv().execute(Click(target=Target.at(0.5, 0.5)))\n"
        "except EnvError as exc:\n    print('EnvError:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("EnvError: no X display: DISPLAY is not set")


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="typing must be one of"):
        DesktopEnv(typing="telepathy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="monitor must be"):
        DesktopEnv(-1)
    with pytest.raises(ConfigError, match="HiDPI"):
        DesktopEnv(scale=0)


# -- pure mappings: HiDPI and multi-monitor ------------------------------------------

def test_retina_mac_maps_physical_pixels_to_points() -> None:
    # mss reports the monitor in points and captures 2x pixels; pyautogui works in points.
    mapping = monitor_mapping({"left": 0, "top": 0, "width": 1440, "height": 900}, (2880, 1800),
                              mss_primary_size=(1440, 900), input_primary_size=(1440, 900))
    assert (mapping.scale_x, mapping.scale_y) == (0.5, 0.5)
    assert mapping.to_env(Point(x=0.5, y=0.5)) == (720.25, 450.25)
    assert mapping.to_env(Point(x=1.0, y=1.0)) == (1439.75, 899.75)


def test_monitor_left_of_the_primary_has_a_negative_origin() -> None:
    monitor = {"left": -1920, "top": -200, "width": 1920, "height": 1080}
    mapping = monitor_mapping(monitor, (1920, 1080), mss_primary_size=(2560, 1440),
                              input_primary_size=(2560, 1440))
    assert (mapping.origin_x, mapping.origin_y) == (-1920, -200)
    assert mapping.to_env(Point(x=0.0, y=0.0)) == (-1919.5, -199.5)
    assert mapping.contains_env(-1.0, 0.0) and not mapping.contains_env(0.0, 0.0)


def test_windows_scaling_when_only_mss_is_dpi_aware() -> None:
    # 150 % scaling: mss sees 3840x2160 physical pixels, input is in 2560x1440 logical units;
    # a second monitor at physical x=3840 starts at logical x=2560.
    mapping = monitor_mapping({"left": 3840, "top": 0, "width": 3840, "height": 2160}, (3840, 2160),
                              mss_primary_size=(3840, 2160), input_primary_size=(2560, 1440))
    assert mapping.origin_x == 2560
    assert mapping.scale_x == pytest.approx(2 / 3)
    assert mapping.to_env(Point(x=1.0, y=1.0))[0] == pytest.approx(2560 + 3839.5 * 2 / 3)


def test_scale_override_sets_pixels_per_point() -> None:
    mapping = monitor_mapping({"left": 100, "top": 0, "width": 2000, "height": 1000}, (2000, 1000),
                              mss_primary_size=(2000, 1000), input_primary_size=(2000, 1000), hidpi=1.25)
    assert mapping.scale_x == mapping.scale_y == pytest.approx(0.8)
    assert mapping.origin_x == 100


# -- key tables ----------------------------------------------------------------------

def test_key_aliases_and_os_names() -> None:
    assert [keymap.canonical_key(k) for k in ("Return", "ESCAPE", "PgUp", "ctrl_l", "Super", " ")] == [
        "enter", "esc", "pageup", "ctrl", "win", "space"]
    assert keymap.parse_combo("ctrl+shift+T") == ["ctrl", "shift", "t"]
    assert keymap.parse_combo("ctrl++") == ["ctrl", "+"]
    assert keymap.parse_combo("ctrl+plus") == ["ctrl", "+"]
    assert keymap.pyautogui_key("win", "linux") == "win"
    assert keymap.pyautogui_key("cmd", "darwin") == "command"
    assert keymap.pyautogui_key("enter", "darwin") == "return"
    assert keymap.xdotool_key("pagedown") == "Next" and keymap.xdotool_key("<") == "less"
    with pytest.raises(ActionError, match="unknown key name"):
        keymap.canonical_key("warp")
    with pytest.raises(ActionError, match="empty key combination"):
        keymap.parse_combo("  ")


# -- end to end: the agent loop with real GLM-4.1V PC answers --------------------------

def test_agent_completes_a_task_in_the_tk_app(display: VirtualDisplay, env: DesktopEnv, app: TkApp,
                                              tmp_path) -> None:
    """Scripted answers in GLM-4.1V's PC format (0-1000 point grid), parsed by the real
    dialect, executed by DesktopEnv on the real app; the replay stands in for the 9B model."""
    from glmv_agent.agent import Agent
    from glmv_agent.backends.replay import ReplayBackend

    width, height = app.screen

    def grid(px: int, py: int) -> str:
        return f"[{round((px + 0.5) / width * 1000)},{round((py + 0.5) / height * 1000)}]"

    def reply(thought: str, call: str) -> str:
        return f"<think>{thought}</think><answer>{thought}\n{call}\nMemory: []</answer>"

    bx1, by1, bx2, by2 = app.ready["box"]
    box_centre = ((bx1 + bx2) // 2, (by1 + by2) // 2)
    answers = [
        reply("I click the text field first.", f"left_click(start_box='{grid(*app.centre_pixel('entry'))}', element_info='entry')"),
        reply("Now I type the greeting.", "type(content='Grüße aus 北京')"),
        reply("I drag the red box to the right.",
              f"left_drag(start_box='{grid(*box_centre)}', end_box='{grid(box_centre[0] + 200, box_centre[1] + 50)}')"),
        reply("I scroll the list down.", f"scroll(start_box='{grid(*app.centre_pixel('listbox'))}', direction='down', step=2)"),
        reply("Everything is done.", "DONE()"),
    ]
    app.mark()
    agent = Agent(ReplayBackend(answers), env, family="glm-4.1v", settle_time=0,
                  trace_dir=tmp_path / "trace")
    result = agent.run("Type a greeting, move the red box right and scroll the list")

    assert result.status == "success", result.error
    assert [record.action["type"] for record in result.steps] == ["click", "type", "drag", "scroll", "done"]
    assert [record.outcome for record in result.steps] == ["executed"] * 4 + ["terminal"]
    assert final_entry(app, "Grüße aus 北京") == "Grüße aus 北京"
    (sx, sy), (ex, ey) = result.steps[2].env_points
    dragged = app.wait_for(lambda e: e["event"] == "dragged")
    assert dragged["box"] == [bx1 + ex - sx, by1 + ey - sy, bx2 + ex - sx, by2 + ey - sy]
    assert app.wait_for(lambda e: e["event"] == "wheel" and e["counts"]["down"] == 2)["yfirst"] > 0
    lines = (tmp_path / "trace" / "steps.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
