"""Everything an agent run carries from one step to the next, as one serializable value.

    dump = agent.state.to_dict()                 # JSON-safe, the run's secrets masked
    Path("run.json").write_text(json.dumps(dump))
    ...                                          # later, in another process
    agent = Agent(model, env, ...)
    result = agent.resume_run(RunState.from_dict(json.loads(Path("run.json").read_text())))

A `RunState` holds the task, the step records so far, the history the dialect rebuilds the
conversation from (with its screenshots), the notes the model has not been shown yet
(refusals, denials, loop nudges, page dialogs), the loop guard's counters, the count of
consecutive failed actions and of executed ones, and, once the run has ended, its status,
answer and error. `Agent._apply` is the one place a step changes it (the notes, the
counters, the history, the end: the only caller of `end`); the gate's loop guard only
counts what it is shown (`LoopGuard.see`).

`to_dict()` masks every string with `mask` (the agent sets its `SecretVault`'s, so no
secret value is ever written out in clear; a placeholder `{{name}}` stays as it is);
screenshots are embedded as base64 PNG. The trace keeps the same bookkeeping in each step
record (`StepRecord.resume_state`, see `bookkeeping()`), and `from_trace` rebuilds a state
from a trace directory (history from the step records, screenshots from the PNGs there):
that is how `Agent.resume_run(trace_dir)` continues a crashed run.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image
from pydantic import ValidationError

from .actions import BaseAction
from .dialects.base import HistoryItem
from .envs.base import same_screen, screen_thumbnail
from .errors import ConfigError
from .outcome import RunEnd, RunStatus
from .trace import StepRecord, TraceReader, step_from_dict

FORMAT = 1  # of `to_dict()`; bumped when a field changes meaning


def _unmasked(obj: Any) -> Any:
    return obj


@dataclass
class LoopGuard:
    """The same action on an unchanged screen, counted over consecutive steps."""

    key: str | None = None  # the last action, as canonical JSON without its "reason"
    thumbnail: np.ndarray | None = None  # the screen it was chosen on (screen_thumbnail)
    screenshot: str | None = None  # that screenshot's file name, for resuming from a trace
    repeats: int = 0
    nudged: bool = False  # the model was told once; the next repeat ends the run

    def see(self, action: BaseAction, screen: Image.Image, screenshot: str | None) -> int:
        """Count `action` chosen on `screen`; how many times in a row it has been."""
        key = json.dumps(action.model_dump(mode="json", exclude={"reason"}), sort_keys=True)
        thumbnail = screen_thumbnail(screen)
        self.screenshot = screenshot
        if key == self.key and self.thumbnail is not None and same_screen(
            thumbnail, self.thumbnail
        ):
            self.repeats += 1
        else:
            self.repeats, self.nudged = 1, False
        self.key, self.thumbnail = key, thumbnail
        return self.repeats


@dataclass
class RunState:
    """One run between two steps; see the module docstring."""

    task: str
    records: list[StepRecord] = field(default_factory=list)
    history: list[HistoryItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the model's next prompt
    loop: LoopGuard = field(default_factory=LoopGuard)
    failures: int = 0  # refused / denied / failed actions in a row
    actions: int = 0  # environment actions executed (or dry-run)
    status: RunStatus | None = None  # None while the run goes on
    answer: str | None = None
    error: str | None = None
    trace_dir: str | None = None  # where the run's trace is written, if anywhere
    # Applied to every string `to_dict` writes and to the answer and error (not a field of
    # the dump: the agent sets its SecretVault's `mask_obj`).
    mask: Callable[[Any], Any] = field(default=_unmasked, repr=False, compare=False)

    @property
    def next_index(self) -> int:
        return (self.records[-1].index if self.records else 0) + 1

    @property
    def ended(self) -> bool:
        return self.status is not None

    def end(self, end: RunEnd) -> None:
        """End the run; the first end decided stands."""
        if self.status is None:
            self.status = end.status
            self.answer = self.mask(end.answer) if end.answer else end.answer
            self.error = self.mask(end.error) if end.error else end.error

    def reopen(self) -> None:
        """Go on after an interruption: an ended run that did not finish continues."""
        self.status = self.answer = self.error = None

    # -- serialization -----------------------------------------------------------------------
    def bookkeeping(self) -> dict[str, Any]:
        """What a step record keeps for resuming from the trace (which has the rest)."""
        return {"notes": list(self.notes), "failures": self.failures, "actions": self.actions,
                "loop_key": self.loop.key, "loop_screenshot": self.loop.screenshot,
                "repeats": self.loop.repeats, "nudged": self.loop.nudged}

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-safe data, every string masked (see the module doc)."""
        data = self.mask({
            "format": FORMAT, "task": self.task, "status": self.status, "answer": self.answer,
            "error": self.error, "trace_dir": self.trace_dir, **self.bookkeeping(),
            "records": [record.model_dump(mode="json") for record in self.records],
            "history": [item.model_dump(mode="json") for item in self.history],
        })
        # Images after masking: base64 text is not prose, masking could only corrupt it.
        for item, out in zip(self.history, data["history"]):
            out["screenshot"] = _png_text(item.screenshot)
        thumb = self.loop.thumbnail
        data["loop_thumbnail"] = None if thumb is None else {
            "shape": list(thumb.shape),
            "data": base64.b64encode(thumb.astype(np.uint8).tobytes()).decode("ascii"),
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """A state from `to_dict()`'s output (after a trip through JSON, for instance)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(
                f"not a run state dump of format {FORMAT} (got {found!r}); pass the dict "
                "Agent.state.to_dict() returned"
            )
        try:
            state = cls(
                task=str(data["task"]),
                records=[StepRecord.model_validate(r) for r in data.get("records", [])],
                history=[_history_item(item) for item in data.get("history", [])],
                status=data.get("status"), answer=data.get("answer"), error=data.get("error"),
                trace_dir=data.get("trace_dir"),
            )
            thumb = data.get("loop_thumbnail")
            thumbnail = None if thumb is None else np.frombuffer(
                base64.b64decode(thumb["data"]), dtype=np.uint8
            ).reshape(thumb["shape"]).astype(np.int16)
            state.restore_bookkeeping(data, thumbnail)
        except (KeyError, TypeError, ValueError, ValidationError, OSError) as exc:
            raise ConfigError(f"the run state dump is damaged: {type(exc).__name__}: {exc}") \
                from exc
        return state

    @classmethod
    def from_trace(cls, reader: TraceReader) -> RunState:
        """The state a trace directory's run was in after its last complete step."""
        info = reader.info
        records = reader.records()
        status: Any = None if info.status == "running" else info.status  # a RunStatus
        state = cls(task=info.task, records=records, history=reader.history(), status=status,
                    answer=info.answer, error=info.error, trace_dir=str(reader.dir))
        if records:
            name = records[-1].resume_state.get("loop_screenshot")
            shot = reader.screenshot(StepRecord(index=0, screenshot=name)) if name else None
            state.restore_bookkeeping(records[-1].resume_state,
                                      screen_thumbnail(shot) if shot is not None else None)
        return state

    def restore_bookkeeping(self, data: dict[str, Any], thumbnail: np.ndarray | None) -> None:
        """Take `bookkeeping()`'s fields back (missing ones, as in old traces: fresh)."""
        self.notes = [str(note) for note in data.get("notes", [])]
        self.failures = int(data.get("failures", 0))
        self.actions = int(data.get("actions", 0))
        self.loop = LoopGuard(key=data.get("loop_key"), thumbnail=thumbnail,
                              screenshot=data.get("loop_screenshot"),
                              repeats=int(data.get("repeats", 0)),
                              nudged=bool(data.get("nudged", False)))
        if thumbnail is None:
            self.loop.key, self.loop.repeats = None, 0  # cannot compare screens: start over


def _png_text(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _history_item(data: dict[str, Any]) -> HistoryItem:
    shot = data.get("screenshot")
    screenshot = None
    if shot is not None:
        with Image.open(io.BytesIO(base64.b64decode(shot))) as img:
            img.load()
            screenshot = img.copy()
    return HistoryItem(step=step_from_dict(data["step"]), screenshot=screenshot,
                       observation_text=data.get("observation_text"),
                       observation=data.get("observation"),
                       executed=bool(data.get("executed", True)))
