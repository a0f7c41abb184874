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
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .actions import BaseAction
from .backends import make_backend
from .envs.base import ActionOutcome, Environment, Observation
from .errors import EnvError, GlmvAgentError

ConfirmPolicy = Literal["ask", "allow", "deny"]

QUESTION_PREFIX = "?"


class AnnouncingEnv(Environment):
    """Wraps an environment: announce each action and mark its target before doing it."""

    def __init__(self, inner: Environment, announce: Callable[[str], None], *,
                 delay: float = 1.0, marker: Callable[[float, float, float, str], None] | None = None
                 ) -> None:
        super().__init__()
        self.inner = inner
        # The instance mirrors the wrapped env's platform.
        self.platform = inner.platform  # type: ignore[misc]
        self.announce = announce
        self.delay = delay
        self.marker = marker

    def _capture(self) -> Observation:
        return self.inner.observe()

    def supported_actions(self) -> set[str]:
        return self.inner.supported_actions()

    def execute(self, action: BaseAction, observation: Observation | None = None) -> ActionOutcome:
        from .report import describe_action

        observation = observation or self.last_observation or self.observe()
        self.announce(f"about to: {describe_action(action.to_dict())}")
        targets = action.targets()
        if targets and self.marker is not None and self.delay > 0:
            x, y = self.inner.resolve(targets[0], observation)
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
                 hotkeys: bool = True) -> None:
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
        self.env = AnnouncingEnv(env, output, delay=announce_delay, marker=marker)
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
        self.results: list[Any] = []
        self._worker: threading.Thread | None = None
        # Questions from the worker (confirmations, take-over) answered by the prompt loop.
        self._questions: queue.Queue[tuple[str, queue.Queue[str]]] = queue.Queue()

    # -- one task --------------------------------------------------------------------
    def ask(self, question: str) -> str:
        """Answer a question about the current screen; nothing is executed."""
        from .dialects._syntax import split_response
        from .messages import image, message

        screenshot = self.env.observe().screenshot
        raw = self.backend.complete([message("user", image(screenshot), question)])
        _thinking, answer = split_response(raw)
        for marker in ("<|begin_of_box|>", "<|end_of_box|>"):
            answer = answer.replace(marker, "")
        answer = answer.strip()
        self.output(f"answer: {answer}")
        return answer

    def run_task(self, task: str) -> Any:
        """Run one task (blocking) and return its RunResult."""
        from .agent import Agent
        from .cli import print_record

        run_dir = self.trace_root / f"assistant-{len(self.results) + 1:03d}"
        agent = Agent(
            self.backend, self.env, family=self.family, max_steps=self.max_steps,
            dry_run=self.dry_run, confirm=self._confirm, on_take_over=self._take_over,
            trace_dir=run_dir, **self.agent_kwargs,
        )
        self.agent = agent
        try:
            for record in agent.iter_run(task):
                print_record(record, show_thinking=False, output=self.output)
        finally:
            self.agent = None
        result = agent.result
        assert result is not None  # iter_run always ends with a result
        self.results.append(result)
        if result.answer:
            self.output(f"answer: {result.answer}")
        self.output(f"[{result.status}] {len(result.steps)} step(s); trace {result.trace_dir}")
        return result

    def start_task(self, task: str, *, question: bool = False) -> threading.Thread:
        """Run a task in the background; returns its thread."""
        if self.busy:
            raise GlmvAgentError("a task is already running: stop it first")

        def work() -> None:
            try:
                if question:
                    self.ask(task)
                else:
                    self.run_task(task)
            except GlmvAgentError as exc:
                self.output(f"error: {exc}")

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
        if self.agent is not None:
            self.agent.stop()
            self.output("stopping after the current step")

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
        if self.on_take_over is not None and self.confirm_policy != "ask":
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
