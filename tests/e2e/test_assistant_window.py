"""The assistant window on a real Xvfb display, driven with real xdotool input.

The model is scripted (ReplayBackend replays GLM-4.1V PC answers; no 9B model runs here);
the window, its buttons and dialogs, the desktop actions and the Tk test app they land in
are real. The window runs its Tk loop on a thread of the test process so a test can read
what it shows (`AssistantWindow.snapshot`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mss
import numpy as np
from PIL import Image

from glmv_agent.assistant_window import ACCENT
from glmv_agent.envs._xvfb import VirtualDisplay
from glmv_agent.envs.desktop import DesktopEnv
from paths import SUPPORT

try:
    from .xvfb import TkApp, app, display  # noqa: F401 - app and display are fixtures
except ImportError:
    from xvfb import TkApp, app, display  # type: ignore[no-redef]  # noqa: F401

# Bottom-right, clear of the test app's pads and entry (which the scripted answers use).
GEOMETRY = (440, 330, 580, 430)
PRESS_PAD = "left_click(start_box='[520,100]')"  # pad C: pressing it changes nothing else
DRIVER = SUPPORT / "window_driver.py"
ACCENT_RGB = np.array([int(ACCENT[i:i + 2], 16) for i in (1, 3, 5)])


def reply(thought: str, call: str) -> str:
    return f"<think>{thought}</think><answer>{thought}\n{call}\nMemory: []</answer>"


def grid(app: TkApp, px: int, py: int) -> str:
    width, height = app.screen
    return f"[{round((px + 0.5) / width * 1000)},{round((py + 0.5) / height * 1000)}]"


class RunningWindow:
    """tests/support/window_driver.py in a subprocess (Tk owns its main thread), remote-controlled."""

    def __init__(self, display: VirtualDisplay, answers: list[str], trace_root: Path,
                 agent_kwargs: dict[str, Any] | None = None, max_steps: int = 30) -> None:
        width, height, x, y = GEOMETRY
        self.display = display
        options = {"display": display.name, "geometry": f"{width}x{height}+{x}+{y}",
                   "answers": answers, "trace_root": str(trace_root),
                   "images_dir": str(trace_root / "sent"),
                   "agent_kwargs": agent_kwargs or {"settle_time": 0}, "max_steps": max_steps}
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER), json.dumps(options)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "DISPLAY": display.name})
        ready = self._read()
        assert ready == {"event": "ready"}, ready
        self.wait_for(lambda shown: shown.get("status", "").startswith("Type a task"))
        time.sleep(0.3)  # the first map and paint

    def _read(self) -> Any:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                _out, err = self.process.communicate(timeout=30)
                raise AssertionError(f"the window process ended: {err[-3000:]}")
            if line.startswith("{"):  # libraries may print their own lines
                return json.loads(line)

    def ask(self, cmd: str, **fields: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        return self._read()["result"]

    def __enter__(self) -> RunningWindow:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"cmd": "close"}) + "\n")
            self.process.stdin.flush()
            assert self.process.wait(30) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def wait_for(self, condition: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = self.ask("snapshot")
            if condition(shown):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"the window never showed what was expected; it shows {shown}")

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env={"DISPLAY": self.display.name, "PATH": "/usr/bin:/bin"},
                       check=True, timeout=20)

    def click(self, name: str) -> None:
        x, y = self.ask("point", name=name)
        assert x >= 0, f"no button {name!r}"
        self.xdotool("mousemove", str(x), str(y), "click", "1")

    def type_task(self, text: str) -> None:
        """Click into the task box and type, as a person would."""
        self.click("entry")
        self.xdotool("type", "--delay", "20", text)

    def sent_images(self) -> list[Image.Image]:
        return [Image.open(part["path"]) for part in self.ask("sent") if part["type"] == "image"]


def accent_pixels(image: Any) -> int:
    """Pixels of the window's accent strip colour in a PIL screenshot."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - ACCENT_RGB).sum(axis=2) < 30).sum())


def live_accent_pixels(display: VirtualDisplay) -> int:
    factory = getattr(mss, "MSS", None) or mss.mss
    with factory(display=display.name) as capture:
        shot = np.asarray(capture.grab(capture.monitors[1]))[:, :, :3][:, :, ::-1].astype(int)
    return int((np.abs(shot - ACCENT_RGB).sum(axis=2) < 30).sum())


def press_events(app: TkApp) -> int:
    return len([e for e in app.events_since_mark() if e["event"] == "press"])


def test_typed_task_runs_steps_appear_and_the_model_never_sees_the_window(
        display: VirtualDisplay, app: TkApp, tmp_path: Path) -> None:
    answers = [
        reply("Click the entry.", f"left_click(start_box='{grid(app, *app.centre_pixel('entry'))}')"),
        reply("Type the words.", "type(content='hello window')"),
        reply("Done.", "DONE()"),
    ]
    app.mark()
    with RunningWindow(display, answers, tmp_path) as running:
        assert live_accent_pixels(display) > 400  # the window is on screen...
        running.type_task("write hello window in the entry")
        running.xdotool("key", "Return")
        app.wait_for(lambda e: e["event"] == "entry" and e["value"] == "hello window")
        shown = running.wait_for(lambda s: s["status"].startswith("[success]"))
        assert [row["step"] for row in shown["steps"]] == ["1", "2", "3"]
        assert shown["steps"][0]["action"].startswith("click")
        assert shown["steps"][1]["action"].startswith("type")
        assert all(row["has_thumbnail"] for row in shown["steps"])
        assert "executed" in shown["steps"][0]["outcome"] and "model" in shown["steps"][0]["outcome"]
        sent = running.sent_images()
        assert sent and all(accent_pixels(image) == 0 for image in sent)  # ...but never in a shot
        assert live_accent_pixels(display) > 400  # and back on screen after each capture
    assert (tmp_path / "assistant-001" / "steps.jsonl").is_file()


def test_pause_holds_the_next_action_resume_continues_stop_ends(
        display: VirtualDisplay, app: TkApp, tmp_path: Path) -> None:
    answers = [reply("Keep pressing.", PRESS_PAD)] * 60
    # Paced steps and room for all 60: steps are fast now (the settled frame is the next
    # screenshot), and a run that reached max_steps before the pause click landed ended it.
    with RunningWindow(display, answers, tmp_path,
                       agent_kwargs={"settle_time": 0.3, "loop_limit": None},
                       max_steps=60) as running:
        app.mark()
        running.type_task("press the pad")
        running.click("run")
        app.wait_for(lambda e: e["event"] == "press")
        running.click("pause")
        running.wait_for(lambda s: s["pause_label"] == "Resume")
        time.sleep(0.5)  # an action already past the pause gate may still land
        held = press_events(app)
        time.sleep(1.5)
        assert press_events(app) == held  # nothing happens while paused
        running.click("pause")  # now labelled Resume
        deadline = time.monotonic() + 30
        while press_events(app) == held and time.monotonic() < deadline:
            time.sleep(0.1)
        assert press_events(app) > held
        running.click("stop")
        shown = running.wait_for(lambda s: s["status"].startswith("[stopped]"))
        assert len(shown["steps"]) < 60
        assert running.ask("results")[0]["status"] == "stopped"


def test_sensitive_action_asks_in_a_dialog_with_a_crop_and_deny_leaves_the_app_alone(
        display: VirtualDisplay, app: TkApp, tmp_path: Path) -> None:
    button = grid(app, *app.centre_pixel("pad_a"))
    answers = [
        reply("I will delete the account now.", f"left_click(start_box='{button}')"),
        reply("The user refused; stop.", "FAIL()"),
    ]
    app.mark()
    with RunningWindow(display, answers, tmp_path) as running:
        running.type_task("delete my account")
        running.click("run")
        running.wait_for(lambda s: s["dialog"] == "glmv-agent: Confirm action")
        assert running.ask("snapshot")["dialog_image"] == [240, 240]  # the crop around the target
        running.click("Deny")
        running.wait_for(lambda s: s["status"].startswith("[infeasible]"))
        assert running.ask("results")[0]["outcomes"] == ["denied", "terminal"]
    assert press_events(app) == 0


def test_an_action_on_the_window_is_refused(display: VirtualDisplay, app: TkApp,
                                            tmp_path: Path) -> None:
    width, height, x, y = GEOMETRY
    on_window = grid(app, x + width // 2, y + height // 2)
    answers = [reply("Click there.", f"left_click(start_box='{on_window}')"), reply("Done.", "DONE()")]
    with RunningWindow(display, answers, tmp_path) as running:
        running.type_task("click the middle")
        running.click("run")
        shown = running.wait_for(lambda s: s["status"].startswith("["))
        assert shown["steps"][0]["outcome"].startswith("refused")
        assert "assistant window" in running.ask("results")[0]["details"][0]


def test_ask_about_the_screen_shows_the_answer_and_report_opens(display: VirtualDisplay, app: TkApp,
                                                                tmp_path: Path) -> None:
    answers = ["<think>A form.</think><answer><|begin_of_box|>A test form<|end_of_box|></answer>",
               reply("Done.", "DONE()")]
    app.mark()
    with RunningWindow(display, answers, tmp_path) as running:
        running.type_task("what is on the screen")
        running.click("ask")
        running.wait_for(lambda s: s["status"] == "Answer: A test form")
        parts = running.ask("sent")
        assert [p["type"] for p in parts] == ["image", "text"]
        assert parts[1]["text"] == "what is on the screen"
        assert accent_pixels(Image.open(parts[0]["path"])) == 0
        running.ask("set", name="task", value="finish")
        running.click("run")
        running.wait_for(lambda s: s["status"].startswith("[success]"))
        running.click("report")
        running.wait_for(lambda s: s["status"].startswith("Report:"))
        opened = running.ask("opened")
    assert opened and opened[0].startswith("file://")
    assert opened[0].endswith("assistant-001/report.html")
    assert (tmp_path / "assistant-001" / "report.html").is_file()
    assert not [e for e in app.events_since_mark() if e["event"] in ("press", "entry")]


def test_ask_about_a_recording_sends_a_video_of_the_screen(display: VirtualDisplay, app: TkApp,
                                                           tmp_path: Path) -> None:
    import av

    with RunningWindow(display, ["<answer>Nothing moved.</answer>"], tmp_path) as running:
        running.ask("set", name="seconds", value="2")
        running.type_task("what changed")
        running.click("record")
        running.wait_for(lambda s: s["status"] == "Answer: Nothing moved.", timeout=60)
        part = running.ask("sent")[0]
    assert part["type"] == "video" and part["fps"] == 2.0
    with av.open(part["path"]) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].size == app.screen
    assert all(accent_pixels(frame) < 50 for frame in frames)  # the window was hidden


def test_recording_reaches_the_engine_as_video(display: VirtualDisplay, tiny_checkpoint: Path,
                                               tmp_path: Path) -> None:
    """The recorded clip goes through the in-process engine's real video path."""
    from glmv_agent.assistant import DesktopAssistant
    from glmv_agent.backends.local import LocalBackend

    backend = LocalBackend(tiny_checkpoint, device="cpu", dtype="float32", max_new_tokens=4)
    assistant = DesktopAssistant(backend, env=DesktopEnv(display=display.name), show_marker=False,
                                 trace_root=tmp_path, output=lambda line: None, hotkeys=False)
    answer = assistant.ask_recording("what happens?", seconds=1.0)
    assert isinstance(answer, str)
    assert (tmp_path / "recording-001.mp4").is_file()


def test_cli_opens_the_window_and_runs_a_typed_task(display: VirtualDisplay, app: TkApp,
                                                    tmp_path: Path) -> None:
    """`glmv-agent assistant` with a display opens the window (no --terminal)."""
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([reply("Press it.", PRESS_PAD), reply("Done.", "DONE()")]))
    env = {**os.environ, "DISPLAY": display.name}
    app.mark()
    process = subprocess.Popen(
        [sys.executable, "-m", "glmv_agent.cli", "assistant", "--model", str(replay),
         "--no-hotkeys", "--no-marker", "--announce-delay", "0", "--geometry", "440x330+580+430",
         "--trace-dir", str(tmp_path / "traces")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        xdotool = ["xdotool"]
        found = ""
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            found = subprocess.run([*xdotool, "search", "--name", "^glmv-agent$"], env=env,
                                   capture_output=True, text=True).stdout.strip()
            time.sleep(0.2)
        assert found, "no window titled glmv-agent appeared"
        time.sleep(0.5)
        subprocess.run([*xdotool, "mousemove", "700", "450", "click", "1", "type", "press the pad"],
                       env=env, check=True, timeout=20)
        subprocess.run([*xdotool, "key", "Return"], env=env, check=True, timeout=20)
        app.wait_for(lambda e: e["event"] == "press", timeout=60)
        steps = tmp_path / "traces" / "assistant-001" / "steps.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (steps.is_file() and
                                                   len(steps.read_text().splitlines()) >= 2):
            time.sleep(0.2)
        assert len(steps.read_text().splitlines()) == 2
        process.send_signal(signal.SIGINT)  # Ctrl+C in the terminal closes the window
        assert process.wait(30) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_terminal_flag_keeps_the_prompt(display: VirtualDisplay, tmp_path: Path) -> None:
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps(["<answer>Two pads</answer>"]))
    done = subprocess.run(
        [sys.executable, "-m", "glmv_agent.cli", "assistant", "--terminal", "--model", str(replay),
         "--no-hotkeys", "--trace-dir", str(tmp_path / "traces")],
        input="help\nquit\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "DISPLAY": display.name})
    assert done.returncode == 0, done.stderr
    assert "pause/resume/stop/quit" in done.stdout
    no_window = subprocess.run(["xdotool", "search", "--name", "^glmv-agent$"], capture_output=True,
                               text=True, env={**os.environ, "DISPLAY": display.name})
    assert no_window.stdout.strip() == ""


def test_take_over_request_waits_for_continue(display: VirtualDisplay, tmp_path: Path) -> None:
    with RunningWindow(display, [], tmp_path) as running:
        assert running.ask("take_over", message="Log in to the bank, then continue") == "asked"
        shown = running.wait_for(lambda s: s["dialog"] == "glmv-agent: Take over")
        assert shown["dialog_image"] is None
        running.click("Continue")
        assert running._read() == {"event": "continued"}
        running.wait_for(lambda s: s["dialog"] is None)
