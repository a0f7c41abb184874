"""Desktop assistant mode: a long-running session that takes one task after another.

    glmv-agent assistant --model model/GLM-4.1V-9B-Thinking

Type a task and press Enter; the assistant works on it in the background and, before each
action, says what it is about to do and flashes a marker where it will act, then waits
`announce_delay` seconds so you can intervene. While a task runs, type `pause`,
`resume` or `stop` (Ctrl+C stops too); on X11 the global hotkeys Ctrl+Alt+P
(pause/resume) and Ctrl+Alt+S (stop) work from any window. Sensitive actions (payments, deletion, sending,
passwords, or anything the model flags) are asked about at the prompt. A line starting
with `?` asks a question about the screen: the screenshot and the question go to the model
as a plain visual question (the chat format every GLM-V model answers), nothing is done
on the screen.

The model backend is created once and reused by every task (a local checkpoint is loaded
a single time).

This module is the assistant's logic only; its front ends are the terminal prompt
(`DesktopAssistant.repl`) and the always-on-top window (`glmv_agent.assistant_window`).
A front end learns what happens through `AssistantEvents` and answers the assistant's
questions (confirmations, take-overs) through the `confirm` / `on_take_over` callables.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from .actions import BaseAction, TypeText
from .backends import make_backend
from .envs.base import ActionOutcome, Environment, Observation
from .errors import ActionRefusedError, ConfigError, EnvError, GlmvAgentError, StoppedError

logger = logging.getLogger(__name__)

ConfirmPolicy = Literal["ask", "allow", "deny"]
# A screen rectangle (left, top, width, height) in the environment's coordinates.
Area = tuple[float, float, float, float]

QUESTION_PREFIX = "?"
# Screen recordings for "ask about a recording": frames per second and the longest clip.
RECORDING_FPS = 2.0
MAX_RECORDING_SECONDS = 120.0


class AssistantEvents:
    """What a front end is told; every method may be called from the task's worker thread.

    The defaults do nothing, so a front end overrides only what it shows.
    """

    def task_started(self, task: str, question: bool) -> None:
        """A task (or a question about the screen) began."""

    def announced(self, text: str, action: BaseAction, point: tuple[float, float] | None) -> None:
        """The assistant is about to execute `action` (at `point`, screen coordinates)."""

    def thinking(self, delta: str) -> None:
        """A piece of the model's answer, as it streams (backends that stream only)."""

    def step_finished(self, record: Any, observation: Observation | None) -> None:
        """A step ended; `record` is its `StepRecord`, `observation` what the model saw."""

    def answered(self, answer: str) -> None:
        """The model answered a question (or a task ended with an answer)."""

    def task_finished(self, result: Any) -> None:
        """A task ended; `result` is its `RunResult` (None for questions)."""

    def failed(self, message: str) -> None:
        """A task or question could not run (backend down, no display...)."""


def inside(point: tuple[float, float], area: Area) -> bool:
    left, top, width, height = area
    return left <= point[0] < left + width and top <= point[1] < top + height


class AnnouncingEnv(Environment):
    """Wraps an environment: announce each action and mark its target before doing it."""

    def __init__(self, inner: Environment, announce: Callable[[str], None], *,
                 delay: float = 1.0, marker: Callable[[float, float, float, str], None] | None = None,
                 events: AssistantEvents | None = None,
                 capture_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
                 keep_out: Callable[[], Area | None] = lambda: None,
                 hold: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.inner = inner
        # The instance mirrors the wrapped env's platform.
        self.platform = inner.platform  # type: ignore[misc]
        self.announce = announce
        self.delay = delay
        self.marker = marker
        self.events = events or AssistantEvents()
        # A front end's own window must never be seen by the model nor acted on: the guard
        # hides it while a screenshot is taken, `keep_out` says where it is otherwise.
        self.capture_guard = capture_guard
        self.keep_out = keep_out
        self.hold = hold  # blocks while the user has paused (pause acts before the action)

    def _capture(self) -> Observation:
        with self.capture_guard():
            return self.inner.observe()

    def record_frames(self, seconds: float, fps: float) -> list[Any]:
        """Screenshots taken `fps` times a second for `seconds` (front end hidden throughout)."""
        frames: list[Any] = []
        interval = 1.0 / fps
        with self.capture_guard():
            start = time.monotonic()
            for index in range(max(1, round(seconds * fps))):
                delay = start + index * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                frames.append(self.inner.observe().screenshot)
        return frames

    def supported_actions(self) -> set[str]:
        return self.inner.supported_actions()

    def types_into_password(self, action: TypeText, observation: Observation) -> bool:
        return self.inner.types_into_password(action, observation)

    def execute(self, action: BaseAction, observation: Observation | None = None) -> ActionOutcome:
        from .report import describe_action

        observation = observation or self.last_observation or self.observe()
        self.hold()
        targets = action.targets()
        points = [observation.env_point(target) for target in targets]
        area = self.keep_out()
        if area is not None and any(inside(point, area) for point in points):
            raise ActionRefusedError(
                "the target is on the glmv-agent assistant window, which is not part of the "
                "screen you are operating; act elsewhere")
        text = f"about to: {describe_action(action.to_dict())}"
        self.announce(text)
        self.events.announced(text, action, points[0] if points else None)
        if points and self.marker is not None and self.delay > 0:
            x, y = points[0]
            self.marker(x, y, self.delay, action.type.replace("_", " "))
        return self.inner.execute(action, observation)

    def close(self) -> None:
        self.inner.close()


class DesktopAssistant:
    """Runs tasks one after another on one environment with one model backend."""

    def __init__(self, model: Any, *, env: Environment | None = None, monitor: int = 1,
                 family: str = "glm-4.1v", max_steps: int = 30, confirm: ConfirmPolicy | Callable[..., bool] = "ask",
                 show_marker: bool = True, announce_delay: float = 1.0, dry_run: bool = False,
                 trace_root: str | Path | None = None, agent_kwargs: dict[str, Any] | None = None,
                 output: Callable[[str], None] = print,
                 on_take_over: Callable[[str], None] | None = None,
                 hotkeys: bool = True, events: AssistantEvents | None = None,
                 capture_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
                 keep_out: Callable[[], Area | None] = lambda: None) -> None:
        agent_kwargs = dict(agent_kwargs or {})
        self.backend = make_backend(model, model_name=agent_kwargs.pop("model_name", None),
                                    **agent_kwargs.pop("backend_options", None) or {})
        if env is None:
            from .envs.desktop import DesktopEnv

            env = DesktopEnv(monitor=monitor)
        marker = None
        if show_marker:
            from .marker import flash

            marker = flash
        self.events = events or AssistantEvents()
        self.env = AnnouncingEnv(env, output, delay=announce_delay, marker=marker,
                                 events=self.events, capture_guard=capture_guard,
                                 keep_out=keep_out, hold=self._hold_while_paused)
        self.family = family
        self.max_steps = max_steps
        self.confirm_policy = confirm
        self.dry_run = dry_run
        self.trace_root = Path(trace_root) if trace_root is not None else Path("traces")
        self.agent_kwargs = agent_kwargs
        self.output = output
        self.on_take_over = on_take_over
        self.hotkeys = hotkeys
        self.agent: Any = None  # the Agent of the task in progress
        self._stopping = threading.Event()  # stop() was asked during the current task
        self.results: list[Any] = []
        self._worker: threading.Thread | None = None
        # Questions from the worker (confirmations, take-over) answered by the prompt loop.
        self._questions: queue.Queue[tuple[str, queue.Queue[str]]] = queue.Queue()

    # -- one task --------------------------------------------------------------------
    def ask(self, question: str) -> str:
        """Answer a question about the current screen; nothing is executed."""
        from .messages import image, message

        screenshot = self.env.observe().screenshot
        return self._answer([message("user", image(screenshot), question)])

    def ask_recording(self, question: str, seconds: float, fps: float = RECORDING_FPS) -> str:
        """Record the screen for `seconds`, then ask `question` about the clip as a video.

        Needs a model that takes video (GLM-4.1V and later do); the clip is kept as
        `recording-NNN.mp4` under the trace root.
        """
        from .messages import message

        if not 0 < seconds <= MAX_RECORDING_SECONDS:
            raise ConfigError(f"a recording lasts between 0 and {MAX_RECORDING_SECONDS:.0f} s, "
                              f"got {seconds}")
        self.output(f"recording the screen for {seconds:g} s ...")
        frames = self.env.record_frames(seconds, fps)
        path = self._next_path("recording", ".mp4")
        write_video(frames, path, fps)
        self.output(f"recorded {len(frames)} frames to {path}")
        video = {"type": "video", "video": str(path), "fps": fps}
        return self._answer([message("user", video, question)])

    def _answer(self, messages: list[Any]) -> str:
        from .dialects._syntax import split_response

        _thinking, answer = split_response(self.backend.complete(messages))  # box markers go too
        self.output(f"answer: {answer}")
        self.events.answered(answer)
        return answer

    def run_task(self, task: str) -> Any:
        """Run one task (blocking) and return its RunResult."""
        from .agent import Agent
        from .console import print_record

        run_dir = self._next_path("assistant", "")
        kwargs = dict(self.agent_kwargs)
        kwargs.setdefault("on_text", self.events.thinking)
        agent = Agent(
            self.backend, self.env, family=self.family, max_steps=self.max_steps,
            dry_run=self.dry_run, confirm=self._confirm, on_take_over=self._take_over,
            trace_dir=run_dir, **kwargs,
        )
        self.agent = agent
        try:
            for record in agent.iter_run(task):
                print_record(record, show_thinking=False, output=self.output)
                self.events.step_finished(record, self.env.last_observation)
        finally:
            self.agent = None
        result = agent.result
        assert result is not None  # iter_run always ends with a result
        self.results.append(result)
        if result.answer:
            self.output(f"answer: {result.answer}")
            self.events.answered(result.answer)
        self.output(f"[{result.status}] {len(result.steps)} step(s); trace {result.trace_dir}")
        return result

    def report(self, result: Any | None = None) -> Path:
        """Render (or re-render) the HTML report of `result`, default the latest run."""
        from .report import render_report

        result = result or (self.results[-1] if self.results else None)
        if result is None or not result.trace_dir:
            raise GlmvAgentError("no run with a trace yet: run a task first")
        return render_report(result.trace_dir)

    def _next_path(self, prefix: str, suffix: str) -> Path:
        """The first free `<prefix>-NNN<suffix>` under the trace root."""
        self.trace_root.mkdir(parents=True, exist_ok=True)
        number = 1
        while (self.trace_root / f"{prefix}-{number:03d}{suffix}").exists():
            number += 1
        return self.trace_root / f"{prefix}-{number:03d}{suffix}"

    def start_task(self, task: str, *, question: bool = False,
                   recording_seconds: float | None = None) -> threading.Thread:
        """Run a task in the background; returns its thread.

        question=True asks about the screen instead; with `recording_seconds` the question
        is about a screen recording of that length.
        """
        if self.busy:
            raise GlmvAgentError("a task is already running: stop it first")

        self._stopping.clear()

        def work() -> None:
            self.events.task_started(task, question)
            result = None
            try:
                if recording_seconds is not None:
                    self.ask_recording(task, recording_seconds)
                elif question:
                    self.ask(task)
                else:
                    result = self.run_task(task)
            except GlmvAgentError as exc:
                self.output(f"error: {exc}")
                self.events.failed(str(exc))
            except Exception as exc:  # a bug: say so in the front end, keep the session alive
                logger.exception("assistant task failed")
                self.output(f"error: {type(exc).__name__}: {exc}")
                self.events.failed(f"{type(exc).__name__}: {exc}")
            finally:
                self.events.task_finished(result)

        self._worker = threading.Thread(target=work, name="glmv-assistant-task", daemon=True)
        self._worker.start()
        return self._worker

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def on_hotkey(self, name: str) -> None:
        """Ctrl+Alt+P toggles pause, Ctrl+Alt+S stops (see `glmv_agent.hotkeys`)."""
        if name == "stop":
            self.stop()
        elif name == "pause" and self.agent is not None:
            self.resume() if self.agent.paused else self.pause()

    def pause(self) -> None:
        if self.agent is not None:
            self.agent.pause()
            self.output("paused (type 'resume' or 'stop')")

    def resume(self) -> None:
        if self.agent is not None:
            self.agent.unpause()
            self.output("resumed")

    def stop(self) -> None:
        self._stopping.set()
        if self.agent is not None:
            self.agent.stop()
            self.output("stopping after the current step")

    def _hold_while_paused(self) -> None:
        """Called right before an action: wait while paused; a stop cancels the action."""
        agent = self.agent
        while agent is not None and agent.paused and not self._stopping.is_set():
            time.sleep(0.05)
        if self._stopping.is_set():
            raise StoppedError("stopped by the user before the action ran")

    def wait(self, timeout: float | None = None) -> None:
        if self._worker is not None:
            self._worker.join(timeout)

    # -- questions from the worker, answered at the prompt --------------------------------
    def _ask_user(self, prompt: str) -> str:
        reply: queue.Queue[str] = queue.Queue(maxsize=1)
        self._questions.put((prompt, reply))
        self.output(prompt)
        return reply.get()

    def _confirm(self, action: BaseAction, step: Any) -> bool:
        if callable(self.confirm_policy):
            return bool(self.confirm_policy(action, step))
        if self.confirm_policy != "ask":
            return self.confirm_policy == "allow"
        from .report import describe_action

        reason = action.reason or "sensitive action"
        answer = self._ask_user(f"? {reason}: {describe_action(action.to_dict())} -- allow? [y/N]")
        return answer.strip().lower() in ("y", "yes")

    def _take_over(self, message: str) -> None:
        if self.on_take_over is not None:
            self.on_take_over(message)
            return
        self._ask_user(f">> the model asks you to take over: {message} (press Enter when done)")

    def answer_pending(self, line: str) -> bool:
        """Deliver `line` to a waiting question; False if none was waiting."""
        try:
            _prompt, reply = self._questions.get_nowait()
        except queue.Empty:
            return False
        reply.put(line)
        return True

    # -- the interactive prompt -----------------------------------------------------------
    def handle_line(self, line: str) -> bool:
        """Act on one typed line; False means quit."""
        line = line.strip()
        if self.answer_pending(line):
            return True
        command = line.lower()
        if command in ("quit", "exit"):
            self.stop()
            self.wait()
            return False
        if command == "pause":
            self.pause()
        elif command == "resume":
            self.resume()
        elif command == "stop":
            self.stop()
        elif command in ("help", ""):
            self.output("type a task, '? question' about the screen, or pause/resume/stop/quit")
        elif self.busy:
            self.output("busy: a task is running (pause, resume, stop, or wait for it)")
        elif line.startswith(QUESTION_PREFIX):
            self.start_task(line[1:].strip(), question=True)
        else:
            self.start_task(line)
        return True

    def repl(self, read_line: Callable[[str], str] = input) -> int:
        """The interactive loop; returns the process exit code."""
        self.output("glmv-agent assistant: type a task, '? question', or pause/resume/stop/quit")
        listener = None
        if self.hotkeys:
            from .hotkeys import HotkeyListener

            try:
                listener = HotkeyListener(self.on_hotkey).start()
                self.output("hotkeys: Ctrl+Alt+P pause/resume, Ctrl+Alt+S stop")
            except EnvError as exc:
                self.output(f"hotkeys off: {exc}")
        try:
            while True:
                try:
                    line = read_line("> ")
                except EOFError:
                    self.wait()
                    return 0
                except KeyboardInterrupt:
                    if self.busy:
                        self.stop()
                        continue
                    return 0
                if not self.handle_line(line):
                    return 0
        finally:
            if listener is not None:
                listener.stop()
            self.env.close()


def write_video(frames: list[Any], path: Path, fps: float) -> None:
    """Encode PIL frames as an H.264 (or MPEG-4) mp4 with PyAV, sized for the codec."""
    try:
        import av
    except ImportError as exc:
        raise ConfigError("recording needs PyAV: pip install 'glmv-agent[video]'") from exc
    from fractions import Fraction

    width, height = frames[0].size
    width, height = width - width % 2, height - height % 2  # yuv420p needs even sizes
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            picture = frame.convert("RGB").crop((0, 0, width, height))
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
