"""What one agent step came to, as a value.

The agent's gate (loop guard, policy, confirmation) and its execution phase each return an
`Outcome`; `Agent._apply` is the one place an outcome changes the run state: the step
record's `outcome` / `detail`, the notes for the model's next prompt, the counters, the
history, and whether the run ends (and how). Nothing else decides the run's end.

    Proceed        the gate let the action through; executing it gives the real outcome
    Executed       the environment did it ("executed"), or would have ("dry_run"), or the
                   model's own bookkeeping was recorded (an agent-side action, e.g. Note)
    HandedBack     a human took over and handed back ("take_over")
    Finished       the model said done / infeasible / gave its answer ("terminal")
    Refused        the policy or the environment would not run it ("refused")
    ActionFailed   the environment tried and failed ("action_error")
    Denied         a sensitive action nobody approved ("denied")
    LoopNudge      the same action on an unchanged screen, not executed ("loop_nudge")
    LoopStopped    ... and again after the nudge: the run ends as "loop" ("stopped")
    Unparseable    no answer parsed after the re-asks: the run ends ("parse_error")
    Stopped        stopped from outside, or a take-over nobody can take ("stopped")
    Errored        the backend, the environment or a bug failed the step ("error")

`kind` is the value the step record's `outcome` field gets (see trace.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

# "unparseable": the model's answers never parsed (a model failure, not the environment's
# or the backend's, which end the run as "error").
RunStatus = Literal[
    "success", "answered", "infeasible", "max_steps", "stopped", "loop", "error", "refused",
    "unparseable",
]
FINISHED_STATUSES = frozenset({"success", "answered", "infeasible"})


class RunEnd(NamedTuple):
    """How a run ends: its status, the model's answer and why, when it failed."""

    status: RunStatus
    answer: str | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Base of the family; `detail` is the human-readable note the step record keeps."""

    kind: ClassVar[str]
    # Refused, failed and denied actions count towards MAX_CONSECUTIVE_FAILURES.
    counts_as_failure: ClassVar[bool] = False
    detail: str = ""
    note: str | None = None  # what the model is told in its next prompt

    def ends(self) -> RunEnd | None:
        """How the run ends because of this outcome alone (limits aside), or None."""
        return None


@dataclass(frozen=True, kw_only=True)
class Proceed(Outcome):
    kind = "proceed"  # never recorded: the execution phase replaces it


@dataclass(frozen=True, kw_only=True)
class Executed(Outcome):
    dry_run: bool = False
    env_action: bool = True  # False: an agent-side action, nothing reached the environment

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "dry_run" if self.dry_run else "executed"


@dataclass(frozen=True, kw_only=True)
class HandedBack(Outcome):
    kind = "take_over"


@dataclass(frozen=True, kw_only=True)
class Finished(Outcome):
    kind = "terminal"
    status: Literal["success", "answered", "infeasible"]
    answer: str | None = None

    def ends(self) -> RunEnd:
        return RunEnd(self.status, answer=self.answer)


@dataclass(frozen=True, kw_only=True)
class NotExecuted(Outcome):
    """An action that did not run; the model is told why (`note`) in its next prompt."""

    counts_as_failure = True
    note: str


@dataclass(frozen=True, kw_only=True)
class Refused(NotExecuted):
    kind = "refused"


@dataclass(frozen=True, kw_only=True)
class ActionFailed(NotExecuted):
    kind = "action_error"


@dataclass(frozen=True, kw_only=True)
class Denied(NotExecuted):
    kind = "denied"


@dataclass(frozen=True, kw_only=True)
class LoopNudge(Outcome):
    kind = "loop_nudge"
    note: str


@dataclass(frozen=True, kw_only=True)
class LoopStopped(Outcome):
    kind = "stopped"

    def ends(self) -> RunEnd:
        return RunEnd("loop")


@dataclass(frozen=True, kw_only=True)
class Unparseable(Outcome):
    kind = "parse_error"
    error: str

    def ends(self) -> RunEnd:
        return RunEnd("unparseable", error=self.error)


@dataclass(frozen=True, kw_only=True)
class Stopped(Outcome):
    kind = "stopped"
    answer: str | None = None

    def ends(self) -> RunEnd:
        return RunEnd("stopped", answer=self.answer)


@dataclass(frozen=True, kw_only=True)
class Errored(Outcome):
    kind = "error"
    error: str  # "ExceptionType: message", kept in the record's `error` field

    @classmethod
    def of(cls, exc: BaseException) -> Errored:
        return cls(error=f"{type(exc).__name__}: {exc}")

    def ends(self) -> RunEnd:
        return RunEnd("error", error=self.error)
