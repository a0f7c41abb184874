"""Trajectories on disk: crash-safe, replayable, readable by `report.py`.

A trace directory holds:

* `run.json` -- one `RunInfo` object, rewritten atomically at start and at the end:
  `task`, `model`, `family`, `platform`, `started_at`, `ended_at` (unix seconds, null while
  running), `status` ("running" until the run ends, then a `RunResult` status), `answer`,
  `steps` (count), `version` (glmv_agent version), `options` (agent settings).
* `steps.jsonl` -- one `StepRecord` JSON object per line, appended, flushed and fsynced
  as each step ends. The writing happens on a background thread (PNG encoding is slow),
  in order: a step's line is written only after its screenshot files are on disk, and the
  agent waits for the previous step's line before it asks the model again, so a crash or
  SIGKILL loses at most the step in progress. Fields:
    - `index` (1-based), `started_at`, `ended_at` (unix seconds)
    - `screenshot`, `marked_screenshot`: PNG file names in the directory (`step-0001.png`)
    - `observation`: `{"size": [w, h], "url", "title", "app", "mapping": {...}}`
    - `prompt`: the messages sent, as `[{"role", "text", "images": [file names]}]`
      (text parts joined with newlines; images referenced by file name or "<image>")
    - `response`: the raw model text that was used (null if none)
    - `attempts`: failed parse attempts `[{"response", "error", "expected"}]`
    - `retries`: how many times the model was re-asked (= len(attempts) unless aborted)
    - `step`: the parsed step `{"thinking", "memory", "explanation", "action", "extra",
      "raw"}` or null
    - `action`: the action dict as the model gave it (secret placeholders kept)
    - `pixel_points`: the screenshot pixels the action's targets fall on `[[px, py], ...]`
    - `env_points`: where it landed in environment coordinates `[[x, y], ...]`
    - `outcome`: one of `executed`, `dry_run`, `terminal`, `take_over`, `denied`,
      `refused`, `loop_nudge`, `parse_error`, `action_error`, `error`, `stopped`
    - `detail`: a human-readable note on the outcome; `sensitive`: why confirmation was
      asked (null if not); `confirmed`: the answer (null if not asked)
    - `timings`: seconds per phase: `observe`, `prompt` (building and masking the
      messages), `model` (all calls of the step), `model_ttft` / `model_thinking_end`
      (time to the first text / to `</think>` of the last call, when the backend
      streams), `model_prefill` / `model_cached_tokens` (the in-process engine's prompt
      time, and how many prompt tokens its prefix cache served: a count, not seconds; of
      the last call), `parse`, `policy` (loop, policy and sensitivity checks), `execute` (the
      action itself), `settle` (waiting for the screen to be ready afterwards, and any
      fixed `settle_time`), `record` (handing screenshots to the trace writer), `total`
    - `error`: error message if the step failed
    - `observation_text`: url / app / element list given to the dialect as history
* `step-NNNN.png` (and `step-NNNN-marked.png` in set-of-marks mode): the screenshots.
* `steps.jsonl.torn-N` (only after a crash and a resume): the bytes of a step record the
  crash cut off, moved out of `steps.jsonl` by `quarantine_torn_tail` so that new steps
  start on a line of their own; kept so nothing that was written is lost.

Every string is masked (`***`) for the secrets the agent was given before it is written.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from .actions import action_from_dict
from .dialects.base import HistoryItem, Step
from .errors import ConfigError
from .messages import Message

RUN_FILE = "run.json"
STEPS_FILE = "steps.jsonl"

Outcome = str  # see the module docstring for the values


class RunInfo(BaseModel):
    task: str
    model: str = ""
    family: str = ""
    platform: str = ""
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    status: str = "running"
    answer: str | None = None
    error: str | None = None  # why the run ended, when it ended on an error
    steps: int = 0
    version: str = ""
    options: dict[str, Any] = Field(default_factory=dict)


class Attempt(BaseModel):
    response: str
    error: str
    expected: str = ""


class StepRecord(BaseModel):
    index: int
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    screenshot: str | None = None
    marked_screenshot: str | None = None
    observation: dict[str, Any] = Field(default_factory=dict)
    observation_text: str | None = None
    prompt: list[dict[str, Any]] = Field(default_factory=list)
    response: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    retries: int = 0
    step: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    pixel_points: list[tuple[int, int]] = Field(default_factory=list)
    env_points: list[tuple[float, float]] = Field(default_factory=list)
    outcome: Outcome = "error"
    detail: str = ""
    sensitive: str | None = None
    confirmed: bool | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    # The agent's bookkeeping after this step, so `Agent.resume_run` continues exactly:
    # notes not yet shown to the model, loop detection, consecutive failures, actions
    # (`RunState.bookkeeping()`; `RunState.from_trace` reads it back).
    resume_state: dict[str, Any] = Field(default_factory=dict)

    def parsed_step(self) -> Step | None:
        """The parsed Step rebuilt from the record (None if the model never parsed)."""
        return None if self.step is None else step_from_dict(self.step)


def step_from_dict(data: dict[str, Any]) -> Step:
    """A Step rebuilt from `Step.model_dump(mode="json")` (its action through the registry)."""
    data = dict(data)
    action = action_from_dict(data.pop("action"))
    return Step(action=action, **data)


def screenshot_name(index: int, marked: bool = False) -> str:
    return f"step-{index:04d}{'-marked' if marked else ''}.png"


def prompt_summary(messages: list[Message], image_names: dict[int, str]) -> list[dict[str, Any]]:
    """Text parts of the messages, with images referenced by file name."""
    summary: list[dict[str, Any]] = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            summary.append({"role": msg["role"], "text": content, "images": []})
            continue
        texts = [p["text"] for p in content if p.get("type") == "text"]
        images = [
            image_names.get(id(p["image"]), "<image>") for p in content if p.get("type") == "image"
        ]
        summary.append({"role": msg["role"], "text": "\n".join(texts), "images": images})
    return summary


class TraceWriter:
    """Writes one run's trace, in order, crash-safe; with `background=True` (as the Agent
    uses it) on a worker thread.

    In the background, `save_screenshot` and `record` return at once; a worker thread
    encodes the PNGs and appends the step lines in the order they were handed over (a
    screenshot file is complete, written to a temporary name and renamed, before the step
    that refers to it is written). `wait_for_steps` blocks until every handed-over step is on disk; `finish`
    and `flush` drain everything, and so does interpreter exit. A write that fails (disk
    full) raises ConfigError at the next call. By default everything is written before
    the call returns.
    """

    def __init__(self, directory: str | Path, mask: Callable[[Any], Any] | None = None,
                 *, background: bool = False) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create trace directory {self.dir}: {exc}") from exc
        self._mask = mask or (lambda obj: obj)
        self.info: RunInfo | None = None
        self._jobs: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] | None = None
        self._error: BaseException | None = None
        self._steps_handed = self._steps_written = 0
        self._written = threading.Condition()
        if background:
            self._jobs = queue.Queue()
            threading.Thread(target=self._work, name=f"glmv-trace-{self.dir.name}",
                             daemon=True).start()
            _LIVE_WRITERS.add(self)

    def start(self, info: RunInfo) -> None:
        self.info = info
        self._submit(self._write_run, self._mask(info.model_dump(mode="json")))

    def finish(self, status: str, answer: str | None, steps: int,
               error: str | None = None) -> None:
        if self.info is None:
            return
        self.info.status = status
        self.info.answer = answer
        self.info.error = error
        self.info.steps = steps
        self.info.ended_at = time.time()
        self._submit(self._write_run, self._mask(self.info.model_dump(mode="json")))
        self.close()

    def close(self) -> None:
        """Drain the queue and stop the worker; later writes happen in the caller."""
        jobs = self._jobs
        if jobs is not None:
            jobs.join()
            self._jobs = None
            jobs.put(None)  # ends the worker
        self._raise_error()

    def save_screenshot(self, image: Image.Image, name: str, png: bytes | None = None) -> str:
        """Write `image` as `name`; `png`, when given, is that image already encoded."""
        self._submit(self._write_png, image, png, name)
        return name

    def record(self, record: StepRecord) -> None:
        """Append one step durably (flush + fsync), after the screenshots handed over
        before it. The record is copied now: later changes to it are not written."""
        data = self._mask(record.model_dump(mode="json"))
        with self._written:
            self._steps_handed += 1
        run = None
        if self.info is not None:
            self.info.steps = record.index
            run = self._mask(self.info.model_dump(mode="json"))
        self._submit(self._write_step, data, run)

    def wait_for_steps(self) -> None:
        """Block until every step handed to `record` is on disk (screenshots may lag)."""
        with self._written:
            while self._steps_written < self._steps_handed and self._error is None:
                self._written.wait(0.5)
        self._raise_error()

    def flush(self) -> None:
        """Block until everything handed over is on disk."""
        if self._jobs is not None:
            self._jobs.join()
        self._raise_error()

    # -- the writing, on the worker (or in the caller without a background thread) ------
    def _submit(self, job: Callable[..., None], *args: Any) -> None:
        self._raise_error()
        if self._jobs is None:
            self._run(job, args)
            self._raise_error()
        else:
            self._jobs.put((job, args))

    def _work(self) -> None:
        jobs = self._jobs
        assert jobs is not None
        while (item := jobs.get()) is not None:
            try:
                self._run(*item)
            finally:
                jobs.task_done()

    def _run(self, job: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._error is not None:
            return  # after a failed write nothing more is written: the order would break
        try:
            job(*args)
        except Exception as exc:
            with self._written:
                self._error = exc
                self._written.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise ConfigError(
                f"cannot write the trace in {self.dir}: {self._error}; free disk space, pass "
                "another trace_dir, or trace=False"
            ) from self._error

    def _write_png(self, image: Image.Image, png: bytes | None, name: str) -> None:
        tmp = self.dir / (name + ".tmp")
        if png is not None:
            tmp.write_bytes(png)
        else:
            image.save(tmp, format="PNG", compress_level=1)  # fast; these are screenshots
        os.replace(tmp, self.dir / name)  # never a half-written PNG under the real name

    def _write_step(self, data: dict[str, Any], run: dict[str, Any] | None) -> None:
        line = json.dumps(data, ensure_ascii=False)
        with open(self.dir / STEPS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if run is not None:
            self._write_run(run)
        with self._written:
            self._steps_written += 1
            self._written.notify_all()

    def _write_run(self, data: dict[str, Any]) -> None:
        tmp = self.dir / (RUN_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / RUN_FILE)


# Writers with a background thread, flushed when the interpreter exits (their worker
# threads are daemons, so that a forgotten writer cannot keep a process alive).
_LIVE_WRITERS: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@atexit.register
def _flush_live_writers() -> None:
    for writer in list(_LIVE_WRITERS):
        try:
            writer.flush()
        except Exception:  # nothing left to report it to
            pass


def quarantine_torn_tail(directory: str | Path) -> Path | None:
    """Make `steps.jsonl` end with a complete line before anything is appended to it.

    A SIGKILL during `TraceWriter.record` can leave the last line cut off; appending the
    next step to it would corrupt both. The incomplete bytes are moved into a side file
    (`steps.jsonl.torn-N`, returned) and the file is cut back to its last complete line. A
    last record that is whole but lacks only its newline gets the newline instead.
    """
    path = Path(directory) / STEPS_FILE
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    try:
        StepRecord.model_validate_json(tail)
        whole = True
    except ValidationError:
        whole = False
    if whole:
        with open(path, "ab") as fh:
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return None
    n = 1
    while (side := path.with_name(f"{STEPS_FILE}.torn-{n}")).exists():
        n += 1
    with open(side, "wb") as fh:  # the bytes are safe on disk before the file is cut
        fh.write(tail)
        fh.flush()
        os.fsync(fh.fileno())
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return side


class TraceReader:
    """Loads a trace directory written by `TraceWriter`."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        if not (self.dir / RUN_FILE).is_file():
            raise ConfigError(
                f"{self.dir} is not a trace directory: {RUN_FILE} is missing "
                "(pass the directory an Agent run wrote, e.g. traces/<timestamp>-<task>)"
            )
        # Line number of a torn last step record skipped by `records()` (crash mid-write).
        self.torn_line: int | None = None

    @property
    def info(self) -> RunInfo:
        try:
            return RunInfo.model_validate_json((self.dir / RUN_FILE).read_text("utf-8"))
        except (ValidationError, OSError) as exc:
            raise ConfigError(f"{self.dir / RUN_FILE} is unreadable: {exc}") from exc

    def records(self) -> list[StepRecord]:
        """Every complete step record; a torn last line (crash mid-write) is skipped."""
        path = self.dir / STEPS_FILE
        if not path.is_file():
            return []
        records: list[StepRecord] = []
        # Bytes, split on newlines: a torn last line may end inside a UTF-8 character.
        lines = path.read_bytes().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(StepRecord.model_validate_json(line))
            except ValidationError as exc:
                if n == len(lines):  # the write in progress when the process died
                    self.torn_line = n
                    break
                raise ConfigError(f"{path} line {n} is not a step record: {exc}") from exc
        return records

    def screenshot(self, record: StepRecord) -> Image.Image | None:
        if record.screenshot is None or not (self.dir / record.screenshot).is_file():
            return None
        with Image.open(self.dir / record.screenshot) as img:
            return img.convert("RGB")

    def responses(self) -> list[str]:
        """Every model answer in order, failed parse attempts included (for replay)."""
        out: list[str] = []
        for record in self.records():
            out.extend(a.response for a in record.attempts)
            if record.response is not None:
                out.append(record.response)
        return out

    def history(self) -> list[HistoryItem]:
        """The dialect history: steps that acted on the environment, and attempts that
        were refused, denied or failed (`executed=False`)."""
        items: list[HistoryItem] = []
        for record in self.records():
            step = record.parsed_step()
            if step is None or record.outcome not in HISTORY_OUTCOMES | UNEXECUTED_OUTCOMES:
                continue
            items.append(HistoryItem(
                step=step, screenshot=self.screenshot(record),
                observation_text=record.observation_text,
                observation=history_observation(record.outcome, record.detail),
                executed=record.outcome in HISTORY_OUTCOMES,
            ))
        return items


# Steps whose action reached (or would have reached) the environment.
HISTORY_OUTCOMES = frozenset({"executed", "dry_run", "take_over"})
# Attempts the model made that did not run; kept in the history with their outcome.
UNEXECUTED_OUTCOMES = frozenset({"refused", "denied", "action_error"})


def history_observation(outcome: str, detail: str) -> str:
    """What the model is told happened after its action (the web prompt's Observation)."""
    if outcome in ("executed", "dry_run"):
        return "Success"
    if outcome == "take_over":
        return "A human took over, then handed back"
    if outcome == "action_error":
        return f"Failed: {detail.removeprefix('failed: ')}"
    return f"Not executed: {detail.removeprefix('refused: ')}"
