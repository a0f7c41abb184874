"""Desktop assistant mode on a real Xvfb display with the real Tk test app.

Model answers are scripted GLM-4.1V PC answers replayed by ReplayBackend (no 9B model
runs here); the display, the marker window, the clicks and the typing are real.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mss
import numpy as np
import pytest

from glmv_agent.assistant import DesktopAssistant
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.envs._xvfb import VirtualDisplay
from glmv_agent.envs.desktop import DesktopEnv

try:
    from .xvfb import TkApp, app, display  # noqa: F401 - app and display are fixtures
except ImportError:
    from xvfb import TkApp, app, display  # type: ignore[no-redef]  # noqa: F401

MARKER_RED = np.array([232, 54, 45])
# Pad C of the Tk app sits at 45-60% x 5-15% of the screen: pressing it changes nothing else.
PRESS_PAD = "left_click(start_box='[520,100]')"


class Output:
    """Collects the assistant's output lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, fragment: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if fragment in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{fragment!r} never printed; output: {self.lines}")
                self._changed.wait(left)


def grid(app: TkApp, px: int, py: int) -> str:
    width, height = app.screen
    return f"[{round((px + 0.5) / width * 1000)},{round((py + 0.5) / height * 1000)}]"


def reply(thought: str, call: str) -> str:
    return f"<think>{thought}</think><answer>{thought}\n{call}\nMemory: []</answer>"


def endless_assistant(display: VirtualDisplay, output: Output, tmp_path: Path) -> DesktopAssistant:
    """An assistant whose model keeps pressing an inert pad until it is stopped."""
    return make_assistant(display, [reply("Keep pressing.", PRESS_PAD)] * 50, output, tmp_path,
                          agent_kwargs={"settle_time": 0.2, "loop_limit": None})


def make_assistant(display: VirtualDisplay, answers: list[str], output: Output, tmp_path: Path,
                   **kwargs) -> DesktopAssistant:
    env = DesktopEnv(display=display.name, pause=0.02)
    kwargs.setdefault("show_marker", False)
    kwargs.setdefault("announce_delay", 0.0)
    kwargs.setdefault("agent_kwargs", {"settle_time": 0})
    return DesktopAssistant(ReplayBackend(answers), env=env, family="glm-4.1v",
                            trace_root=tmp_path, output=output, **kwargs)


def red_pixels_near(display: VirtualDisplay, x: int, y: int, radius: int = 40) -> int:
    factory = getattr(mss, "MSS", None) or mss.mss
    with factory(display=display.name) as capture:
        shot = np.asarray(capture.grab({"left": x - radius, "top": y - radius,
                                        "width": 2 * radius, "height": 2 * radius}))[:, :, :3]
    rgb = shot[:, :, ::-1].astype(int)  # mss gives BGRA
    return int((np.abs(rgb - MARKER_RED).sum(axis=2) < 40).sum())


def test_marker_ring_appears_at_the_point_and_goes_away(display: VirtualDisplay) -> None:
    from glmv_agent.marker import flash

    env = {"DISPLAY": display.name, "PATH": "/usr/bin:/bin"}
    before = red_pixels_near(display, 500, 300)
    thread = threading.Thread(target=flash, args=(500, 300, 4.0, "click"), kwargs={"env": env})
    thread.start()
    seen = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and seen < 100 and thread.is_alive():
        seen = red_pixels_near(display, 500, 300)
        time.sleep(0.1)
    thread.join(20)
    assert before == 0 and seen >= 100  # a ring of red pixels was drawn around the point
    assert red_pixels_near(display, 500, 300) == 0  # and removed before flash() returned


def test_task_runs_in_background_with_announcements(display: VirtualDisplay, app: TkApp,
                                                    tmp_path: Path) -> None:
    output = Output()
    answers = [
        reply("Click the entry.", f"left_click(start_box='{grid(app, *app.centre_pixel('entry'))}')"),
        reply("Type the words.", "type(content='hello assistant')"),
        reply("Done.", "DONE()"),
    ]
    assistant = make_assistant(display, answers, output, tmp_path, show_marker=True,
                               announce_delay=0.3)
    app.mark()
    assert assistant.handle_line("write hello assistant in the entry")
    assert assistant.busy
    assistant.wait(120)
    assert output.wait_for("[success]")
    announced = [line for line in output.lines if line.startswith("about to:")]
    assert [line.split("(")[0] for line in announced] == ["about to: click", "about to: type"]
    app.wait_for(lambda e: e["event"] == "entry" and e["value"] == "hello assistant")
    assert assistant.results[0].status == "success"
    assert (tmp_path / "assistant-001" / "steps.jsonl").is_file()


def test_sensitive_action_is_asked_at_the_prompt(display: VirtualDisplay, app: TkApp,
                                                 tmp_path: Path) -> None:
    output = Output()
    button = grid(app, *app.centre_pixel("pad_a"))
    answers = [
        reply("I will delete the account now.", f"left_click(start_box='{button}')"),
        reply("The user refused; stop.", "FAIL()"),
    ]
    assistant = make_assistant(display, answers, output, tmp_path)
    app.mark()
    assistant.handle_line("delete my account")
    assert "allow?" in output.wait_for("allow?")
    assert assistant.handle_line("n")  # answered at the prompt, not taken as a new task
    assistant.wait(120)
    result = assistant.results[0]
    assert [r.outcome for r in result.steps] == ["denied", "terminal"]
    assert result.status == "infeasible"
    assert not [e for e in app.events_since_mark() if e["event"] == "press"]


def test_pause_and_stop_from_the_prompt(display: VirtualDisplay, tmp_path: Path) -> None:
    output = Output()
    assistant = endless_assistant(display, output, tmp_path)
    assistant.handle_line("press the pad forever")
    output.wait_for("step   1")
    assistant.handle_line("pause")
    assert output.wait_for("paused")
    assistant.handle_line("stop")
    assistant.wait(60)
    assert not assistant.busy
    assert assistant.results[0].status == "stopped"
    assert len(assistant.results[0].steps) < 50


def test_question_about_the_screen_does_not_act(display: VirtualDisplay, app: TkApp,
                                                tmp_path: Path) -> None:
    output = Output()
    backend_answer = "<think>The window shows a form.</think><answer><|begin_of_box|>A test form<|end_of_box|></answer>"
    assistant = make_assistant(display, [backend_answer], output, tmp_path)
    app.mark()
    assistant.handle_line("? what is on the screen")
    assistant.wait(60)
    assert "answer: A test form" in output.lines
    sent = assistant.backend.messages[0]
    parts = sent[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"] and parts[1]["text"] == "what is on the screen"
    assert parts[0]["image"].size == app.screen
    assert not [e for e in app.events_since_mark() if e["event"] in ("press", "entry")]


def test_busy_assistant_refuses_a_second_task(display: VirtualDisplay, tmp_path: Path) -> None:
    output = Output()
    assistant = endless_assistant(display, output, tmp_path)
    assistant.handle_line("first")
    output.wait_for("step   1")
    assistant.handle_line("second task")
    assert output.wait_for("busy")
    assert not assistant.handle_line("quit")  # quit stops the running task and waits
    assert assistant.results[0].status == "stopped"


def xdotool_key(display: VirtualDisplay, combo: str) -> None:
    import subprocess

    subprocess.run(["xdotool", "key", combo], env={"DISPLAY": display.name, "PATH": "/usr/bin:/bin"},
                   check=True, timeout=10)


def test_global_hotkeys_reach_the_listener(display: VirtualDisplay) -> None:
    from glmv_agent.hotkeys import HotkeyListener

    pressed: list[str] = []
    got = threading.Event()

    def on_hotkey(name: str) -> None:
        pressed.append(name)
        got.set()

    with HotkeyListener(on_hotkey, display=display.name):
        xdotool_key(display, "p")  # not a hotkey
        xdotool_key(display, "ctrl+alt+p")
        assert got.wait(10)
        got.clear()
        xdotool_key(display, "ctrl+alt+s")
        assert got.wait(10)
    assert pressed == ["pause", "stop"]


def test_hotkeys_pause_and_stop_a_running_task(display: VirtualDisplay, tmp_path: Path) -> None:
    from glmv_agent.hotkeys import HotkeyListener

    output = Output()
    assistant = endless_assistant(display, output, tmp_path)
    with HotkeyListener(assistant.on_hotkey, display=display.name):
        assistant.handle_line("press the pad forever")
        output.wait_for("step   1")
        xdotool_key(display, "ctrl+alt+p")
        output.wait_for("paused")
        assert assistant.agent is not None and assistant.agent.paused
        xdotool_key(display, "ctrl+alt+s")
        assistant.wait(60)
    assert assistant.results[0].status == "stopped"


def test_hotkeys_without_a_display_are_a_clear_error() -> None:
    from glmv_agent.errors import EnvError
    from glmv_agent.hotkeys import HotkeyListener

    with pytest.raises(EnvError, match="cannot grab hotkeys on :987"):
        HotkeyListener(lambda name: None, display=":987").start()


def test_repl_reads_lines_until_quit(display: VirtualDisplay, tmp_path: Path) -> None:
    output = Output()
    answer = "<answer>Two pads</answer>"
    assistant = make_assistant(display, [answer], output, tmp_path, hotkeys=False)
    lines = iter(["help", "? how many pads", "quit", "never read"])
    prompts: list[str] = []

    def read_line(prompt: str) -> str:
        prompts.append(prompt)
        return next(lines)

    assert assistant.repl(read_line) == 0
    assert prompts == ["> "] * 3
    assert any("pause/resume/stop/quit" in line for line in output.lines)
    assert "answer: Two pads" in output.lines
