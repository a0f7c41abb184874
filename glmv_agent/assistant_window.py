"""The desktop assistant as a small always-on-top window (Tk, from the standard library).

    glmv-agent assistant --model model/GLM-4.1V-9B-Thinking        # opens the window
    glmv-agent assistant --terminal ...                            # the terminal prompt

The window is a front end only: `DesktopAssistant` (glmv_agent.assistant) does the work on
a worker thread and reports through `AssistantEvents`; this module shows those events and
answers the assistant's questions with dialogs. What it offers:

- a task box (focused) with Run, "Ask about the screen" (the box's text is the question)
  and "Ask about a recording" (records the screen for N seconds and asks about the clip);
- the steps as they happen: a thumbnail of what the model saw, the announced action, the
  outcome and per-step timings; the model's streamed answer in a collapsible pane;
- Pause / Resume / Stop (and the global hotkeys Ctrl+Alt+P / Ctrl+Alt+S), Report (the
  run's HTML report in the browser);
- a confirmation dialog for sensitive actions showing the action and a crop of the
  screen where it would land (Approve / Deny); a dialog for the model's take-over
  requests (Continue).

The window is never part of what the model sees or acts on: it is withdrawn while a
screenshot is taken, and an action whose target falls on it is refused.

Threading: Tk is used only from the thread that created the window (the main thread for
the CLI). Worker threads post callables to a queue the Tk loop drains every few ms;
calls that need an answer (a dialog, hiding the window) wait for it.
"""

from __future__ import annotations

import base64
import io
import queue
import signal
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from PIL import Image, ImageDraw

from .actions import BaseAction
from .assistant import Area, AssistantEvents, DesktopAssistant
from .envs.base import Observation
from .errors import EnvError, GlmvAgentError

TITLE = "glmv-agent"
DEFAULT_SIZE = (500, 560)
THUMBNAIL = (96, 54)
CROP_RADIUS = 120  # screen pixels around the target shown in the confirmation dialog
POLL_MS = 25
# After the window is withdrawn, the windows it covered need a moment to repaint.
HIDE_SETTLE_S = 0.15
MAX_THINKING_CHARS = 20_000
ACCENT = "#1f6feb"

T = TypeVar("T")


def png_data(image: Image.Image) -> str:
    """Base64 PNG, the form tk.PhotoImage(data=...) reads without extra libraries."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(screenshot: Image.Image) -> str:
    small = screenshot.convert("RGB")
    small.thumbnail(THUMBNAIL)
    return png_data(small)


def target_crop(screenshot: Image.Image, pixel: tuple[float, float] | None) -> Image.Image:
    """The screen around `pixel` with a red cross-hair on it (the whole screen, shrunk,
    when the action has no target)."""
    image = screenshot.convert("RGB")
    if pixel is None:
        image.thumbnail((2 * CROP_RADIUS, 2 * CROP_RADIUS))
        return image
    x, y = pixel
    left = int(max(0, min(x - CROP_RADIUS, image.width - 2 * CROP_RADIUS)))
    top = int(max(0, min(y - CROP_RADIUS, image.height - 2 * CROP_RADIUS)))
    crop = image.crop((left, top, left + 2 * CROP_RADIUS, top + 2 * CROP_RADIUS))
    draw = ImageDraw.Draw(crop)
    cx, cy = x - left, y - top
    draw.ellipse((cx - 14, cy - 14, cx + 14, cy + 14), outline=(232, 54, 45), width=3)
    draw.line((cx - 22, cy, cx + 22, cy), fill=(232, 54, 45), width=1)
    draw.line((cx, cy - 22, cx, cy + 22), fill=(232, 54, 45), width=1)
    return crop


def step_timing(timings: dict[str, float]) -> str:
    """'model 1.2s · act 0.3s' from a step record's timings."""
    parts = [f"{label} {timings[key]:.1f}s" for key, label in
             (("model", "model"), ("execute", "act")) if key in timings]
    return " · ".join(parts)


class AssistantWindow(AssistantEvents):
    """The window. Build it, then `attach` the assistant it drives (see `open_window`)."""

    def __init__(self, *, display: str | None = None, geometry: str | None = None,
                 open_url: Callable[[str], Any] = webbrowser.open, hotkeys: bool = True,
                 recording_seconds: float = 5.0) -> None:
        try:
            import tkinter as tk
            from tkinter import ttk
        except ImportError as exc:
            raise EnvError("the assistant window needs Tk: apt-get install python3-tk "
                           "(or run `glmv-agent assistant --terminal`)") from exc
        self.tk, self.ttk = tk, ttk
        try:
            self.root = tk.Tk(screenName=display, className="glmv-agent")
        except tk.TclError as exc:
            raise EnvError(f"cannot open the assistant window on display "
                           f"{display or '$DISPLAY'}: {exc}; start an X server or use "
                           "--terminal") from exc
        self.thread = threading.current_thread()
        self.open_url = open_url
        self.use_hotkeys = hotkeys
        self.assistant: DesktopAssistant | None = None
        self._calls: queue.Queue[Callable[[], None]] = queue.Queue()
        self._closed = threading.Event()
        self._area: Area | None = None
        self._images: list[Any] = []  # PhotoImages must stay referenced while shown
        self._pending_row: str | None = None
        self._dialog: Any = None
        self._listener: Any = None
        self._build(geometry, recording_seconds)

    # -- layout -------------------------------------------------------------------------
    def _build(self, geometry: str | None, recording_seconds: float) -> None:
        tk, ttk, root = self.tk, self.ttk, self.root
        root.title(TITLE)
        root.attributes("-topmost", True)
        width, height = DEFAULT_SIZE
        if geometry is None:  # bottom-right corner, clear of most applications' content
            x = root.winfo_screenwidth() - width - 12
            y = root.winfo_screenheight() - height - 48
            geometry = f"{width}x{height}+{max(0, x)}+{max(0, y)}"
        root.geometry(geometry)
        root.protocol("WM_DELETE_WINDOW", self.close)
        # Every widget's Configure event reaches the root's binding too: only the root's counts.
        root.bind("<Configure>",
                  lambda event: self._remember_area() if event.widget is root else None)

        header = tk.Frame(root, bg=ACCENT, height=6)
        header.pack(fill="x")
        top = ttk.Frame(root, padding=6)
        top.pack(fill="x")
        self.task_var = tk.StringVar()
        self.task_entry = ttk.Entry(top, textvariable=self.task_var)
        self.task_entry.pack(side="left", fill="x", expand=True)
        self.task_entry.bind("<Return>", lambda _event: self.run_clicked())
        self.buttons: dict[str, Any] = {}
        self.buttons["run"] = ttk.Button(top, text="Run", width=5, command=self.run_clicked)
        self.buttons["run"].pack(side="left", padx=(4, 0))

        asks = ttk.Frame(root, padding=(6, 0))
        asks.pack(fill="x")
        self.buttons["ask"] = ttk.Button(asks, text="Ask about the screen",
                                         command=self.ask_clicked)
        self.buttons["ask"].pack(side="left")
        self.buttons["record"] = ttk.Button(asks, text="Ask about a recording",
                                            command=self.record_clicked)
        self.buttons["record"].pack(side="left", padx=4)
        self.seconds_var = tk.StringVar(value=f"{recording_seconds:g}")
        ttk.Spinbox(asks, from_=1, to=120, width=4, textvariable=self.seconds_var).pack(side="left")
        ttk.Label(asks, text="s").pack(side="left")

        controls = ttk.Frame(root, padding=6)
        controls.pack(fill="x")
        for name, label, command in (("pause", "Pause", self.pause_clicked),
                                     ("stop", "Stop", self.stop_clicked),
                                     ("report", "Report", self.report_clicked)):
            self.buttons[name] = ttk.Button(controls, text=label, command=command)
            self.buttons[name].pack(side="left", padx=(0, 4))
        self.status_var = tk.StringVar(value="Type a task and press Run.")
        ttk.Label(root, textvariable=self.status_var, padding=(6, 0), wraplength=DEFAULT_SIZE[0] - 20
                  ).pack(fill="x")

        style = ttk.Style(root)
        style.configure("Steps.Treeview", rowheight=THUMBNAIL[1] + 6)
        self.steps = ttk.Treeview(root, columns=("action", "outcome"), style="Steps.Treeview",
                                  height=5)
        self.steps.heading("#0", text="step")
        self.steps.heading("action", text="action")
        self.steps.heading("outcome", text="outcome / time")
        self.steps.column("#0", width=THUMBNAIL[0] + 34, stretch=False)
        self.steps.column("action", width=190)
        self.steps.column("outcome", width=160)
        self.steps.pack(fill="both", expand=True, padx=6, pady=4)

        self.thinking_shown = tk.BooleanVar(value=False)
        ttk.Checkbutton(root, text="Show the model's thinking", variable=self.thinking_shown,
                        command=self._toggle_thinking).pack(anchor="w", padx=6)
        self.thinking_text = tk.Text(root, height=8, wrap="word", font=("DejaVu Sans Mono", 9))
        self._set_busy(False)
        self.task_entry.focus_force()
        self._remember_area()

    def _toggle_thinking(self) -> None:
        if self.thinking_shown.get():
            self.thinking_text.pack(fill="both", expand=False, padx=6, pady=(0, 6))
        else:
            self.thinking_text.pack_forget()

    def _remember_area(self) -> None:
        root = self.root
        if root.winfo_ismapped():
            self._area = (root.winfo_rootx(), root.winfo_rooty(),
                          root.winfo_width(), root.winfo_height())

    # -- wiring -------------------------------------------------------------------------
    def attach(self, assistant: DesktopAssistant) -> None:
        self.assistant = assistant

    def run(self) -> int:
        """The Tk main loop; returns the process exit code when the window closes."""
        if self.use_hotkeys and self.assistant is not None:
            from .hotkeys import HotkeyListener

            try:
                self._listener = HotkeyListener(self._hotkey).start()
            except EnvError as exc:
                self.status_var.set(f"hotkeys off: {exc}")
        if threading.current_thread() is threading.main_thread():
            # Ctrl+C in the terminal that started the window closes it cleanly.
            signal.signal(signal.SIGINT, lambda *_: self.post(self.close))
        self.root.after(POLL_MS, self._drain)
        try:
            self.root.mainloop()
        finally:
            self._closed.set()
        return 0

    def close(self) -> None:
        """Stop the task in progress, then close the window (and the environment)."""
        if self._closed.is_set():
            return
        self._closed.set()  # dialogs and hide requests waiting on the Tk loop give up
        if self._dialog is not None:
            self._dialog.choice.set(self._dialog.choices[-1])  # the safe answer: Deny
        if self._listener is not None:
            self._listener.stop()
        if self.assistant is not None:
            self.assistant.stop()
            self.assistant.wait(10)
            self.assistant.env.close()
        self.root.destroy()

    def _drain(self) -> None:
        # Scheduled first: a call that opens a dialog runs a nested Tk loop, which must
        # keep draining the queue.
        if not self._closed.is_set():
            self.root.after(POLL_MS, self._drain)
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            call()

    def post(self, call: Callable[[], None]) -> None:
        """Run `call` on the Tk thread soon (from any thread, signal handlers included)."""
        if not self._closed.is_set():
            self._calls.put(call)

    def call(self, function: Callable[[], T], default: T, timeout: float | None = None) -> T:
        """Run `function` on the Tk thread and wait for its result (`default` if the
        window closes first or `timeout` passes)."""
        if threading.current_thread() is self.thread:
            return function()
        done = threading.Event()
        box: list[T] = []

        def run() -> None:
            try:
                box.append(function())
            finally:
                done.set()

        self.post(run)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.05):
            if self._closed.is_set() or (deadline is not None and time.monotonic() > deadline):
                return default
        return box[0] if box else default

    # -- buttons ------------------------------------------------------------------------
    def _start(self, **options: Any) -> None:
        text = self.task_var.get().strip()
        if self.assistant is None or not text:
            self.status_var.set("Type a task (or a question) first.")
            return
        try:
            self.assistant.start_task(text, **options)
        except GlmvAgentError as exc:
            self.status_var.set(str(exc))

    def run_clicked(self) -> None:
        self._start()

    def ask_clicked(self) -> None:
        self._start(question=True)

    def record_clicked(self) -> None:
        try:
            seconds = float(self.seconds_var.get())
        except ValueError:
            self.status_var.set("The recording length must be a number of seconds.")
            return
        self._start(question=True, recording_seconds=seconds)

    def pause_clicked(self) -> None:
        agent = self.assistant.agent if self.assistant is not None else None
        if agent is None:
            return
        if agent.paused:
            self.assistant.resume()
        else:
            self.assistant.pause()
        self._show_paused(agent.paused)

    def _show_paused(self, paused: bool) -> None:
        self.buttons["pause"].configure(text="Resume" if paused else "Pause")
        self.status_var.set("Paused: nothing happens until you press Resume." if paused
                            else "Running.")

    def stop_clicked(self) -> None:
        if self.assistant is not None:
            self.assistant.stop()
            self.status_var.set("Stopping...")

    def report_clicked(self) -> None:
        if self.assistant is None:
            return
        try:
            path = self.assistant.report()
        except GlmvAgentError as exc:
            self.status_var.set(str(exc))
            return
        self.status_var.set(f"Report: {path}")
        self.open_url(path.resolve().as_uri())

    def _hotkey(self, name: str) -> None:
        """From the hotkey listener's thread."""
        if name == "stop":
            self.post(self.stop_clicked)
        elif name == "pause":
            self.post(self.pause_clicked)

    def _set_busy(self, busy: bool) -> None:
        for name in ("run", "ask", "record"):
            self.buttons[name].state(["disabled"] if busy else ["!disabled"])
        for name in ("pause", "stop"):
            self.buttons[name].state(["!disabled"] if busy else ["disabled"])
        self.buttons["pause"].configure(text="Pause")

    # -- the model must not see the window ---------------------------------------------
    @contextmanager
    def hidden(self) -> Iterator[None]:
        """Withdraw the window (and wait until it is off the screen) around a capture."""
        if self.call(self._withdraw, default=False, timeout=10):
            time.sleep(HIDE_SETTLE_S)
        try:
            yield
        finally:
            self.post(self._restore)

    def _withdraw(self) -> bool:
        self._remember_area()
        self.root.withdraw()
        self.root.update()  # `update` syncs with the X server: the window is really unmapped
        return True

    def _restore(self) -> None:
        self.root.deiconify()
        self.root.attributes("-topmost", True)

    def keep_out(self) -> Area | None:
        """Where the window is (screen coordinates), for refusing actions on it."""
        return None if self._closed.is_set() else self._area

    # -- questions from the assistant (worker thread) ----------------------------------
    def confirm(self, action: BaseAction, step: Any) -> bool:
        from .report import describe_action

        observation = self.assistant.env.last_observation if self.assistant else None
        crop = None
        if observation is not None:
            crop = png_data(target_crop(observation.screenshot, _target_pixel(action, observation)))
        reason = action.reason or "a sensitive action"
        text = f"The model wants to {describe_action(action.to_dict())}\n({reason})"
        return self.call(lambda: self._open_dialog("Confirm action", text, crop,
                                                   ("Approve", "Deny")) == "Approve",
                         default=False)

    def take_over(self, message: str) -> None:
        text = f"The model asks you to take over:\n{message}\n\nPress Continue when done."
        self.call(lambda: self._open_dialog("Take over", text, None, ("Continue",)), default=None)

    def _open_dialog(self, title: str, text: str, image: str | None,
                     choices: tuple[str, ...]) -> str | None:
        """A modal dialog over the window; returns the chosen button's label."""
        tk, ttk = self.tk, self.ttk
        dialog = tk.Toplevel(self.root)
        dialog.title(f"{TITLE}: {title}")
        dialog.attributes("-topmost", True)
        dialog.geometry(f"+{self.root.winfo_rootx()}+{self.root.winfo_rooty()}")
        ttk.Label(dialog, text=text, wraplength=DEFAULT_SIZE[0] - 20, padding=8).pack()
        dialog.image_size = None  # type: ignore[attr-defined]
        if image is not None:
            photo = tk.PhotoImage(data=image)
            self._images.append(photo)
            dialog.image_size = (photo.width(), photo.height())  # type: ignore[attr-defined]
            ttk.Label(dialog, image=photo).pack(padx=8)
        chosen = tk.StringVar(value="")
        row = ttk.Frame(dialog, padding=8)
        row.pack()
        dialog.buttons = {}  # type: ignore[attr-defined]
        for label in choices:
            button = ttk.Button(row, text=label, command=lambda value=label: chosen.set(value))
            button.pack(side="left", padx=4)
            dialog.buttons[label] = button  # type: ignore[attr-defined]
        dialog.protocol("WM_DELETE_WINDOW", lambda: chosen.set(choices[-1]))
        dialog.choice, dialog.choices = chosen, choices  # type: ignore[attr-defined]
        self._dialog = dialog
        dialog.wait_variable(chosen)  # runs the Tk loop (and our queue) until chosen
        self._dialog = None
        answer = chosen.get()
        if not self._closed.is_set():
            dialog.destroy()
        return answer

    # -- AssistantEvents (worker thread) -> the Tk thread -------------------------------
    def task_started(self, task: str, question: bool) -> None:
        def show() -> None:
            self._set_busy(True)
            if not question:
                self.steps.delete(*self.steps.get_children())
                self._images.clear()
                self._pending_row = None
            self.thinking_text.delete("1.0", "end")
            self.status_var.set(("Asking: " if question else "Working on: ") + task)
        self.post(show)

    def announced(self, text: str, action: BaseAction, point: tuple[float, float] | None) -> None:
        from .report import describe_action

        def show() -> None:
            self._pending_row = self.steps.insert(
                "", "end", text="next", values=(describe_action(action.to_dict()), "about to act"))
            self.steps.see(self._pending_row)
            self.status_var.set(text)
        self.post(show)

    def thinking(self, delta: str) -> None:
        def show() -> None:
            self.thinking_text.insert("end", delta)
            # Counted by Tk, not by copying the whole pane out on every streamed piece.
            excess = int(self.thinking_text.count("1.0", "end", "chars")[0]) - MAX_THINKING_CHARS
            if excess > 0:
                self.thinking_text.delete("1.0", f"1.0 + {excess} chars")
            self.thinking_text.see("end")
        self.post(show)

    def step_finished(self, record: Any, observation: Observation | None) -> None:
        from .report import describe_action

        image = thumbnail(observation.screenshot) if observation is not None else None
        action = describe_action(record.action) if record.action else "-"
        outcome = f"{record.outcome} · {step_timing(record.timings)}"

        def show() -> None:
            photo = None
            if image is not None:
                photo = self.tk.PhotoImage(data=image)
                self._images.append(photo)
            options: dict[str, Any] = {"text": f"{record.index}", "values": (action, outcome)}
            if photo is not None:
                options["image"] = photo
            if self._pending_row is not None:
                self.steps.item(self._pending_row, **options)
            else:
                self._pending_row = self.steps.insert("", "end", **options)
            self.steps.see(self._pending_row)
            self._pending_row = None
        self.post(show)

    def answered(self, answer: str) -> None:
        self.post(lambda: self.status_var.set(f"Answer: {answer}"))

    def failed(self, message: str) -> None:
        self.post(lambda: self.status_var.set(f"Error: {message}"))

    def task_finished(self, result: Any) -> None:
        """Also after questions and failures (result None): the buttons come back."""
        def show() -> None:
            self._set_busy(False)
            if result is not None:
                answer = f": {result.answer}" if result.answer else ""
                self.status_var.set(f"[{result.status}] {len(result.steps)} step(s){answer}")
        self.post(show)

    def output(self, line: str) -> None:
        """The assistant's text output (shown in the status line while a task runs)."""
        if line.startswith(("recording", "recorded", "stopping")):
            self.post(lambda: self.status_var.set(line))

    # -- for tests and tools: what the window shows -------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Status line, step rows and thinking text, read on the Tk thread."""
        def read() -> dict[str, Any]:
            rows = [{"step": self.steps.item(row, "text"),
                     "action": self.steps.item(row, "values")[0],
                     "outcome": self.steps.item(row, "values")[1],
                     "has_thumbnail": bool(self.steps.item(row, "image"))}
                    for row in self.steps.get_children()]
            return {"status": self.status_var.get(), "steps": rows,
                    "thinking": self.thinking_text.get("1.0", "end").strip(),
                    "pause_label": str(self.buttons["pause"].cget("text")),
                    "dialog": self._dialog.title() if self._dialog is not None else None,
                    "dialog_image": (list(self._dialog.image_size)
                                     if self._dialog is not None and self._dialog.image_size
                                     else None)}
        return self.call(read, default={}, timeout=10)

    def button_centre(self, name: str) -> tuple[int, int]:
        """Screen point of a window button (name in `buttons`) or of an open dialog's
        button (its label)."""
        def locate() -> tuple[int, int]:
            widget = self.buttons.get(name)
            if widget is None and self._dialog is not None:
                widget = self._dialog.buttons[name]
            if widget is None:
                raise KeyError(name)
            return (widget.winfo_rootx() + widget.winfo_width() // 2,
                    widget.winfo_rooty() + widget.winfo_height() // 2)
        return self.call(locate, default=(-1, -1), timeout=10)


def _target_pixel(action: BaseAction, observation: Observation) -> tuple[float, float] | None:
    points = observation.target_pixels(action)
    return points[0] if points else None


def open_window(model: Any, *, display: str | None = None, geometry: str | None = None,
                open_url: Callable[[str], Any] = webbrowser.open, hotkeys: bool = True,
                **assistant_options: Any) -> AssistantWindow:
    """The window wired to a new `DesktopAssistant` (call `.run()` to show it).

    assistant_options go to `DesktopAssistant` (env, family, max_steps, confirm,
    show_marker, announce_delay, dry_run, trace_root, agent_kwargs...). confirm="ask"
    (the default) asks in a dialog.
    """
    window = AssistantWindow(display=display, geometry=geometry, open_url=open_url,
                             hotkeys=hotkeys)
    confirm = assistant_options.pop("confirm", "ask")
    try:
        assistant = DesktopAssistant(
            model, events=window, capture_guard=window.hidden, keep_out=window.keep_out,
            confirm=window.confirm if confirm == "ask" else confirm,
            on_take_over=window.take_over, output=window.output, hotkeys=False,
            **assistant_options)
    except BaseException:
        window.root.destroy()
        raise
    window.attach(assistant)
    return window
