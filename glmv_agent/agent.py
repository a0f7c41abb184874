"""The agent loop: observe, prompt, ask the model, gate, execute, apply, record, repeat.

    agent = Agent("http://127.0.0.1:8000/v1", env, model_name="glm-4.5v", family="glm-4.5v")
    result = agent.run("Open the settings and turn on dark mode")

`run` blocks until the model finishes or a limit is hit; `iter_run` yields each
`StepRecord` as it ends; `start` + `step` drive it one step at a time. `pause`, `unpause`
and `stop` may be called from another thread.

`Agent.step` reads top to bottom: observe the environment; build the dialect's messages
(with the notes the model has not seen yet); ask the model (`model_call.py`: mask, call,
stream, parse, re-ask, time out); gate the action (loop guard, policy, confirmation) into
an `Outcome` value (`outcome.py`); execute it if the gate let it through; apply the
outcome to the `RunState` (`run_state.py`; `_apply` is the only place that decides the
run's end); record the step. Data flows one way: no phase reaches back into another.

Every step is on disk (see `trace.py`) before the next one starts, and
`resume_run(trace_dir)` continues an interrupted run. `agent.state.to_dict()` is the whole
run as JSON-safe data (secrets masked); `resume_run(RunState.from_dict(dump))` continues
it, in another Agent or process.

Bad model output is never executed: an unparseable answer is re-asked
(`max_parse_retries`), an action outside the screen or the policy is refused and the model
told, a sensitive action waits for `confirm`.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Callable, NamedTuple

from PIL import Image
from pydantic import BaseModel, Field

from .actions import Answer, BaseAction, Done, TakeOver, TypeText
from .backends import make_backend
from .backends.base import BackendProtocol, GenerationParams
from .dialects.base import Dialect, HistoryItem, Step
from .dialects.elements import elements_text
from .envs.base import Environment, Observation, Platform
from .errors import (
    ActionError, ActionRefusedError, BackendError, ConfigError, GlmvAgentError, StoppedError,
)
from .messages import Message, inert_text
from .model_call import ModelCall
from .outcome import (
    FINISHED_STATUSES, ActionFailed, Denied, Errored, Executed, Finished, HandedBack, LoopNudge,
    LoopStopped, Outcome, Proceed, Refused, RunEnd, RunStatus, Stopped, Unparseable,
)
from .policy import Policy
from .run_state import RunState
from .secrets import SecretVault, activate, deactivate
from .trace import RUN_FILE, STEPS_FILE, RunInfo, StepRecord, TraceReader, TraceWriter
from .trace import HISTORY_OUTCOMES, UNEXECUTED_OUTCOMES, history_observation, screenshot_name
from .trace import quarantine_torn_tail

logger = logging.getLogger("glmv_agent")

__all__ = ["Agent", "RunResult", "RunStatus", "FINISHED_STATUSES", "MAX_CONSECUTIVE_FAILURES",
           "ConfirmCallback", "TakeOverCallback"]

ConfirmCallback = Callable[[BaseAction, Step], bool]
TakeOverCallback = Callable[[str], None]

# Consecutive refused / denied / failed actions before the run ends as "refused".
MAX_CONSECUTIVE_FAILURES = 3


class RunResult(BaseModel):
    """How a run ended, with every step record and where the trace is."""

    status: RunStatus
    answer: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    trace_dir: str | None = None
    error: str | None = None
    timings: dict[str, Any] = Field(default_factory=dict)  # total, model, steps: [...]


class _Answered(NamedTuple):
    """The model's parsed answer and the observation it answered (for the history)."""

    step: Step
    observation: Observation


class Agent:
    """Runs one model family on one environment until the task is done.

    `model` is a `Backend` (or any object with `complete(messages, **params) -> str`, see
    `BackendProtocol`), an OpenAI-compatible URL (with `model_name=`), a checkpoint
    directory or a replay file. Limits: `max_steps` (model answers), `max_actions`
    (executed actions; the run ends as "success" after that many, e.g. 1 for "do exactly
    one thing"), `step_timeout` / `model_timeout` (seconds), `max_parse_retries`,
    `loop_limit` (the same action on an unchanged screen). After an action the environment
    waits until its screen is ready (web: page stable; desktop/phone: frames unchanged);
    `settle_time` adds a fixed wait on top, for apps that change after looking still.
    Every step record's `timings` has the phases (observe, prompt, model with
    model_ttft / model_thinking_end when the backend streams, parse, policy, execute,
    settle, record, total). A sensitive action is executed
    only if `confirm(action, step)` returns True; without `confirm` it is denied, and with
    `stop_on_denial=True` a denial ends the run as "refused". `policy` is copied (deeply):
    the caller's `Policy` is never changed, and may be shared with other agents.

    Secrets: `secrets={"name": "value"}` lets the model type `{{name}}`; the value is put
    in only at execution and masked in prompts, answers, logs, traces and state dumps.
    Screenshots are NOT masked: once a secret is typed into a field that shows its text
    (anything but a password field), later screenshots show it to the model and the trace
    PNGs (and the history screenshots of a state dump) keep it. Type secrets into password
    fields only, or pass `trace=False` where that matters.
    """

    def __init__(
        self,
        model: BackendProtocol | str | Path,
        env: Environment,
        family: str = "glm-4.1v",
        platform: Platform | None = None,
        *,
        model_name: str | None = None,
        backend_options: dict[str, Any] | None = None,
        dialect: Dialect | None = None,
        max_steps: int = 30,
        max_actions: int | None = None,
        stop_on_denial: bool = False,
        step_timeout: float | None = None,
        model_timeout: float | None = None,
        max_parse_retries: int = 2,
        loop_limit: int | None = 3,
        settle_time: float | None = None,
        confirm: ConfirmCallback | None = None,
        on_take_over: TakeOverCallback | None = None,
        on_text: Callable[[str], None] | None = None,
        dry_run: bool = False,
        secrets: dict[str, str] | None = None,
        trace_dir: str | Path | None = None,
        trace: bool = True,
        generation: GenerationParams | dict[str, Any] | None = None,
        policy: Policy | None = None,
        allowed_domains: list[str] | None = None,
        max_text_length: int | None = None,
        **generation_kwargs: Any,
    ) -> None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
        if max_actions is not None and max_actions < 1:
            raise ConfigError(f"max_actions must be at least 1 or None, got {max_actions}")
        if max_parse_retries < 0:
            raise ConfigError(f"max_parse_retries must be >= 0, got {max_parse_retries}")
        for name, value in (("step_timeout", step_timeout), ("model_timeout", model_timeout)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive seconds or None, got {value}")
        if settle_time is not None and not settle_time >= 0:
            raise ConfigError(f"settle_time must be >= 0 seconds or None, got {settle_time}")
        self.env = env
        self.family = family
        self.platform: Platform = platform or env.platform
        self.backend = make_backend(model, model_name=model_name, **(backend_options or {}))
        if dialect is None:
            from .dialects import get_dialect  # the dialect modules load prompt files

            dialect = get_dialect(family, self.platform)
        self.dialect = dialect
        self.family = dialect.family
        # A prompt that names elements by set-of-marks label is useless without them: turn
        # the environment's labels on, or refuse (ConfigError) if it was told to keep them off.
        self._needs_labels = _needs_element_labels(dialect)
        if self._needs_labels:
            env.enable_element_labels()
        self.max_steps = max_steps
        self.max_actions = max_actions
        self.stop_on_denial = stop_on_denial
        self.step_timeout = step_timeout
        self.model_timeout = model_timeout
        self.max_parse_retries = max_parse_retries
        self.loop_limit = loop_limit
        self.settle_time = settle_time
        self.confirm = confirm
        self.on_take_over = on_take_over
        self.on_text = on_text
        self.dry_run = dry_run
        self.vault = SecretVault(secrets)
        self.trace_dir = Path(trace_dir) if trace_dir is not None else None
        self.trace = trace
        # A deep copy: the caller's Policy (its lists and sets too) may be shared with
        # other agents, and the options below must not reach it.
        self.policy = copy.deepcopy(policy) if policy is not None else Policy()
        if allowed_domains is not None:
            self.policy.allowed_domains = list(allowed_domains)
        if max_text_length is not None:
            self.policy.max_text_length = max_text_length
        self.generation = self._generation_params(generation, generation_kwargs)

        self._pause_released = threading.Event()
        self._pause_released.set()
        self._stop_requested = threading.Event()
        self.reset()

    # -- configuration helpers -------------------------------------------------------------
    def _generation_params(
        self, generation: GenerationParams | dict[str, Any] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Dialect defaults overridden by the user's settings, unset values left out."""
        known = {f.name for f in dataclass_fields(GenerationParams)}
        if isinstance(generation, GenerationParams):
            user = {f.name: getattr(generation, f.name) for f in dataclass_fields(generation)}
        else:
            user = dict(generation or {})
        user.update(kwargs)
        unknown = sorted(set(user) - known)
        if unknown:
            raise ConfigError(
                f"unknown Agent option(s) {unknown}; generation parameters are {sorted(known)}"
            )
        params = dict(self.dialect.generation_defaults())
        extra = {**params.get("extra", {}), **(user.pop("extra", None) or {})}
        params.update({k: v for k, v in user.items() if v is not None and v != [] and v != {}})
        if extra:
            params["extra"] = extra  # e.g. AutoGLM's frequency_penalty survives a user's extra
        return params

    # -- public API ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current task and history (the environment is left as it is)."""
        self._state: RunState | None = None
        self._image_names: dict[int, str] = {}
        self._image_refs: list[Image.Image] = []  # keep ids in _image_names valid
        self._writer: TraceWriter | None = None
        self._result: RunResult | None = None
        self._started = 0.0
        self._model_time = 0.0
        self._stop_requested.clear()

    def start(self, task: str) -> None:
        """Begin a new task; then call `step()` until `finished`."""
        if not isinstance(task, str) or not task.strip():
            raise ConfigError("task must be a non-empty string describing what to do")
        self.reset()
        self._state = RunState(task=task, mask=self.vault.mask_obj)
        if self.trace:
            directory = self.trace_dir or _default_trace_dir(task)
            if (directory / STEPS_FILE).exists():
                raise ConfigError(
                    f"{directory} already holds a trace; pass another trace_dir or use "
                    "Agent.resume_run() to continue it"
                )
            self._open_trace(directory, self._run_info(task))
        self._begin()

    def step(self) -> StepRecord:
        """Run one step and return its record (written to the trace before returning):
        observe -> messages -> ask the model -> gate -> execute -> apply -> record."""
        state = self._state
        if state is None:
            raise ConfigError("call start(task) before step()")
        if state.ended:
            raise ConfigError(
                f"this run already ended with status {state.status!r}; call start(task) "
                "for a new one"
            )
        record = StepRecord(index=state.next_index)
        began = time.monotonic()
        deadline = began + self.step_timeout if self.step_timeout else None
        answered: _Answered | None = None
        crash: BaseException | None = None
        unseen = state.notes  # notes the model has yet to be told (kept if it is not asked)
        try:
            self._wait_if_paused()
            observation = self._observe(record)
            unseen = [*unseen, *_observation_notes(observation)]
            messages = self._messages(observation, unseen, record)
            step = self._ask(messages, record, deadline)
            unseen = []  # it answered a prompt that showed them
            if step is None:
                outcome: Outcome = Unparseable(
                    detail=f"no usable answer after {record.retries + 1} attempts",
                    error=f"unparseable model output: {record.error}",
                )
            else:
                answered = _Answered(step, observation)
                outcome = self._gate(step, observation, record, deadline)
                if isinstance(outcome, Proceed):
                    outcome = self._execute(step.action, observation, record)
        except StoppedError as exc:
            outcome = Stopped(detail=str(exc))
        except GlmvAgentError as exc:
            outcome = Errored.of(exc)
        except KeyboardInterrupt as exc:  # Ctrl+C: record it, end the run, re-raise
            outcome, crash = Stopped(detail="interrupted (KeyboardInterrupt)"), exc
        except Exception as exc:  # a bug or an unexpected library error: trace it, re-raise
            outcome, crash = Errored.of(exc), exc
        self._apply(outcome, record, answered, unseen)
        self._record(record, began)
        if crash is not None:
            raise crash
        return record

    def iter_run(self, task: str) -> Iterator[StepRecord]:
        """Start `task` and yield each step record as it ends; `result` is set at the end."""
        self.start(task)
        yield from self._remaining_steps()

    def __iter__(self) -> Iterator[StepRecord]:
        if self._state is None:
            raise ConfigError("call start(task) before iterating over the agent")
        return self._remaining_steps()

    def run(self, task: str) -> RunResult:
        """Run `task` to the end and return how it went."""
        for _ in self.iter_run(task):
            pass
        assert self._result is not None
        return self._result

    def resume_run(self, source: str | Path | RunState | dict[str, Any]) -> RunResult:
        """Continue an interrupted run to its end, with this agent's model and environment.

        `source` is the run's trace directory (same task, history rebuilt from the records
        and screenshots, new steps appended there), or a `RunState` / its `to_dict()` dump:
        its steps are appended to the trace it names (or this agent's `trace_dir`, or a new
        directory) when this agent traces. A `RunState` is taken over: it becomes this
        agent's `state` and goes on changing. A run that finished cannot be resumed; one
        that ended on an error, a stop or a limit goes on.
        """
        if isinstance(source, dict):
            source = RunState.from_dict(source)
        if isinstance(source, RunState):
            state, where = source, "this run state"
        else:
            state, where = RunState.from_trace(TraceReader(source)), f"the run in {source}"
        if state.status in FINISHED_STATUSES:
            raise ConfigError(
                f"{where} already ended with status {state.status!r}; "
                "there is nothing to resume"
            )
        trace: tuple[Path, bool] | None = None  # (directory, append to the trace there)
        if self.trace:
            trace = self._trace_of(state) if isinstance(source, RunState) else (Path(source), True)
        self.reset()
        state.reopen()
        state.mask = self.vault.mask_obj
        self._state = state
        self._register_history_images()
        if trace is not None and trace[1]:
            self._continue_trace(trace[0])
        elif trace is not None:
            self._open_trace(trace[0], self._run_info(state.task))
        self._begin()
        for _ in self._remaining_steps():
            pass
        assert self._result is not None
        return self._result

    def resume(self, source: str | Path | RunState | dict[str, Any] | None = None
               ) -> RunResult | None:
        """Without an argument: lift a `pause()`. With a trace directory or a run state:
        `resume_run`."""
        if source is None:
            self.unpause()
            return None
        return self.resume_run(source)

    def pause(self) -> None:
        """Hold the run before its next step until `unpause()` / `resume()` / `stop()`."""
        self._pause_released.clear()

    def unpause(self) -> None:
        self._pause_released.set()

    @property
    def paused(self) -> bool:
        return not self._pause_released.is_set()

    def stop(self) -> None:
        """End the run at the next step boundary (or right away if paused)."""
        self._stop_requested.set()
        self._pause_released.set()

    @property
    def finished(self) -> bool:
        return self._state is not None and self._state.ended

    @property
    def result(self) -> RunResult | None:
        return self._result

    @property
    def state(self) -> RunState | None:
        """The run between steps (None before `start`); `state.to_dict()` dumps it. The
        trace on disk is complete up to the state's last step when this returns, so that a
        run resumed from the dump can go on in it."""
        if self._writer is not None:
            self._writer.flush()
        return self._state

    @property
    def history(self) -> list[HistoryItem]:
        return list(self._state.history) if self._state else []

    @property
    def records(self) -> list[StepRecord]:
        return list(self._state.records) if self._state else []

    def close(self) -> None:
        """Close the backend (the environment belongs to the caller)."""
        self.backend.close()

    # -- the step, phase by phase ------------------------------------------------------------
    def _observe(self, record: StepRecord) -> Observation:
        t = time.monotonic()
        observation = self.env.observe()
        record.timings["observe"] = time.monotonic() - t
        if self._needs_labels and observation.elements is None:
            raise ConfigError(
                f"the {self.family} web prompt names elements by set-of-marks labels, but "
                f"{type(self.env).__name__} gave no element list (observation.elements is "
                "None); use an environment that labels elements, e.g. WebEnv"
            )
        t = time.monotonic()
        self._record_observation(record, observation)
        record.timings["record"] = time.monotonic() - t
        return observation

    def _messages(self, observation: Observation, notes: list[str],
                  record: StepRecord) -> list[Message]:
        """The dialect's messages for this observation, with `notes` for the model."""
        t = time.monotonic()
        history = self._require_state().history
        if not self.dialect.shows_unexecuted():
            history = [item for item in history if item.executed]
        messages = self.dialect.build_messages(self._task_text(), observation, history)
        messages = _with_notes(messages, notes)
        record.timings["prompt"] = time.monotonic() - t
        if self._writer is not None:
            # The last step is on disk before the model is asked again (crash safety);
            # by now the writer is long done with it, so this rarely waits.
            self._writer.wait_for_steps()
        return messages

    def _ask(self, messages: list[Message], record: StepRecord,
             deadline: float | None) -> Step | None:
        """The model's parsed answer (None if it never parsed); see `model_call.py`."""
        call = ModelCall(self.backend, self.dialect, self.vault, self.generation,
                         max_parse_retries=self.max_parse_retries,
                         model_timeout=self.model_timeout, on_text=self.on_text)
        try:
            return call.ask(messages, record, deadline, self._image_names)
        finally:
            self._model_time += call.seconds

    def _gate(self, step: Step, observation: Observation, record: StepRecord,
              deadline: float | None) -> Outcome:
        """Whether the model's action may run: Proceed, or why not (loop guard, policy,
        confirmation), or how the run ends (the model finished, a stop). The record first
        notes what the model chose (its step, action and the pixels it aims at)."""
        action = step.action
        record.step = step.model_dump(mode="json")
        record.action = action.to_dict()
        record.pixel_points = observation.target_pixels(action)
        if self._stop_requested.is_set():
            return Stopped(detail="stopped before executing the model's action")
        if isinstance(action, Done):
            return Finished(status="success" if action.success else "infeasible",
                            answer=action.message)
        if isinstance(action, Answer):
            return Finished(status="answered", answer=action.text)
        if isinstance(action, TakeOver) and self.on_take_over is None:
            return Stopped(detail="the model asked a human to take over, but no on_take_over "
                                  "callback was given", answer=action.message or None)
        if isinstance(action, TakeOver) or action.agent_side:
            return Proceed()  # nothing reaches the environment: nothing to check
        t = time.monotonic()
        try:
            refusal = self._check(step, observation, record)
        finally:
            record.timings["policy"] = time.monotonic() - t
        if refusal is not None:
            return refusal
        # Checked before asking the human: time spent confirming is not the model's fault.
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError(
                f"step {record.index} took longer than step_timeout={self.step_timeout}s "
                "before its action could run; nothing was executed (raise step_timeout)"
            )
        if record.sensitive and not self.dry_run:
            return self._confirmation(action, step, record)
        return Proceed()

    def _check(self, step: Step, observation: Observation,
               record: StepRecord) -> Outcome | None:
        """The loop guard and the policy; None if the action passes both (its
        sensitivity is then in `record.sensitive`)."""
        action = step.action
        loop = self._require_state().loop
        if self.loop_limit and loop.see(action, observation.screenshot,
                                        record.screenshot) >= self.loop_limit:
            if loop.nudged:
                return LoopStopped(detail=f"the model repeated {action.type!r} {loop.repeats} "
                                          "times on an unchanged screen, even after being told")
            return LoopNudge(
                detail=f"{action.type!r} repeated {loop.repeats} times; not executed",
                note=f"You have chosen the same action ({action.type}) {loop.repeats} times "
                     "and the screen did not change, so it is not working. Try a different "
                     "action, or finish the task as infeasible if it cannot be done.",
            )
        try:
            self.policy.check(action, observation, self.env.supported_actions())
            # The field the action types into, not the one focused at the screenshot: a
            # TypeText with a target clicks there first.
            into_password = (self.policy.confirm_password_fields and isinstance(action, TypeText)
                             and self.env.types_into_password(action, observation))
            record.sensitive = self.policy.sensitivity(action, step, observation,
                                                       password_field=into_password)
        except ActionError as exc:
            return Refused(detail=f"refused: {exc}",
                           note=f"Your action {action.type!r} was not executed: {exc}")
        return None

    def _confirmation(self, action: BaseAction, step: Step, record: StepRecord) -> Outcome:
        """Ask `confirm` about a sensitive action: Proceed if approved, else Denied."""
        if self.confirm is None:
            # Safe default: nobody can approve it, so it does not happen.
            logger.warning("sensitive action %s denied (%s): no confirm callback was given; "
                           "pass confirm=... to approve such actions", action.type,
                           record.sensitive)
            record.confirmed = False
            why = (f"denied: it is sensitive ({record.sensitive}) and no confirm callback "
                   "was given to approve it (pass confirm=...)")
        else:
            record.confirmed = bool(self.confirm(action, step))
            why = f"the user did not allow it ({record.sensitive})"
        if record.confirmed:
            return Proceed()
        return Denied(detail=why, note=f"The user did not allow your action {action.type!r} "
                                       f"({record.sensitive}). Do not repeat it; find another "
                                       "way or finish the task.")

    def _execute(self, action: BaseAction, observation: Observation,
                 record: StepRecord) -> Outcome:
        """Carry out an action the gate let through."""
        if isinstance(action, TakeOver):
            logger.info("handing over to the human: %s", action.message)
            self.on_take_over(self.vault.mask(action.message))  # type: ignore[misc]
            return HandedBack(detail="the human finished and handed back")
        if action.agent_side:
            # Bookkeeping the model does for itself (e.g. AutoGLM's Note): nothing to
            # execute, but it belongs to the history like any executed step.
            return Executed(detail="recorded (no environment action)", env_action=False)
        real = self.vault.reveal(action)  # the only place a secret value exists
        t = time.monotonic()
        settle = 0.0
        outcome: Outcome
        try:
            if self.dry_run:
                record.env_points = [observation.env_point(tg) for tg in action.targets()]
                outcome = Executed(detail="not executed (dry run)", dry_run=True)
            else:
                done = self.env.execute(real, observation)
                settle = getattr(done, "settle_s", 0.0)
                record.env_points = list(done.env_points)
                outcome = Executed(detail=done.detail)
        except ActionRefusedError as exc:
            outcome = Refused(detail=f"refused: {exc}",
                              note=f"Your action {action.type!r} was not executed: {exc}")
        except ActionError as exc:
            outcome = ActionFailed(detail=f"failed: {exc}",
                                   note=f"Your action {action.type!r} failed: {exc}")
        # The environment's wait for a ready screen is its own phase, not the action's.
        record.timings["execute"] = time.monotonic() - t - settle
        record.timings["settle"] = settle
        if isinstance(outcome, Executed) and not self.dry_run and self.settle_time:
            t = time.monotonic()
            self._stop_requested.wait(self.settle_time)
            record.timings["settle"] += time.monotonic() - t
        return outcome

    def _apply(self, outcome: Outcome, record: StepRecord | None = None,
               answered: _Answered | None = None, unseen: list[str] | None = None) -> None:
        """The one place an outcome changes the run state: the record's outcome, the notes
        for the next prompt (`unseen`, those the model was not shown this step, and the
        outcome's), the counters, the history, and whether (and how) the run ends; of
        several reasons to end, the first listed here stands."""
        state = self._require_state()
        ends: list[RunEnd] = []
        if record is not None:
            record.outcome = outcome.kind
            if isinstance(outcome, Errored):
                record.error = outcome.error
            else:
                record.detail = outcome.detail
        state.notes = [*(state.notes if unseen is None else unseen),
                       *([outcome.note] if outcome.note else [])]
        if isinstance(outcome, LoopNudge):
            state.loop.nudged = True
        if isinstance(outcome, Executed) and outcome.env_action:
            state.failures = 0
            state.actions += 1
            if self.max_actions is not None and state.actions >= self.max_actions:
                ends.append(RunEnd("success"))
        if outcome.counts_as_failure:
            state.failures += 1
            if state.failures >= MAX_CONSECUTIVE_FAILURES:
                ends.append(RunEnd("refused", error=f"{state.failures} actions in a row were "
                                                    f"not executed; last: {outcome.detail}"))
        if isinstance(outcome, Denied) and self.stop_on_denial and record is not None:
            ends.append(RunEnd("refused", error=f"step {record.index}: {outcome.detail}"))
        if (end := outcome.ends()) is not None:
            ends.append(end)
        if answered is not None and outcome.kind in HISTORY_OUTCOMES | UNEXECUTED_OUTCOMES:
            state.history.append(HistoryItem(
                step=answered.step, screenshot=answered.observation.model_image(),
                observation_text=record.observation_text if record else None,
                observation=history_observation(outcome.kind, outcome.detail),
                executed=outcome.kind in HISTORY_OUTCOMES,
            ))
        if record is not None and len(state.records) + 1 >= self.max_steps:
            ends.append(RunEnd("max_steps"))
        for end in ends:
            state.end(end)

    def _record(self, record: StepRecord, began: float) -> None:
        """Finish the step record, keep it, hand it to the trace; close an ended run."""
        state = self._require_state()
        record.timings["total"] = time.monotonic() - began
        record.ended_at = time.time()
        record.detail = self.vault.mask(record.detail)
        record.resume_state = state.bookkeeping()
        state.records.append(record)
        if self._writer is not None:
            self._writer.record(record)
        logger.info("step %d: %s %s", record.index, record.outcome,
                    (record.action or {}).get("type", ""))
        if state.ended:
            self._close_run()

    # -- helpers -----------------------------------------------------------------------------
    def _require_state(self) -> RunState:
        assert self._state is not None, "no run in progress"
        return self._state

    def _begin(self) -> None:
        self._started = time.monotonic()
        self._stop_requested.clear()
        activate(self.vault)  # every glmv_agent.* log record is masked while the run lasts
        logger.info("task: %s", self._require_state().task)

    def _remaining_steps(self) -> Iterator[StepRecord]:
        state = self._require_state()
        while not state.ended:
            if self._stop_requested.is_set():
                self._apply(Stopped())
                self._close_run()
                break
            yield self.step()

    def _wait_if_paused(self) -> None:
        while not self._pause_released.wait(0.05):
            pass
        if self._stop_requested.is_set():
            raise StoppedError("stopped from outside (Agent.stop())")

    def _task_text(self) -> str:
        task = self._require_state().task
        missing = [n for n in self.vault.names if "{{" + n + "}}" not in task]
        if not missing:
            return task
        hints = ", ".join("{{" + n + "}}" for n in missing)
        return f"{task}\n(To type a secret, type its placeholder exactly: {hints})"

    def _record_observation(self, record: StepRecord, observation: Observation) -> None:
        m = observation.mapping
        record.observation = {
            "size": list(observation.size), "url": observation.url, "title": observation.title,
            "app": observation.app,
            "mapping": {"width": m.width, "height": m.height, "origin_x": m.origin_x,
                        "origin_y": m.origin_y, "scale_x": m.scale_x, "scale_y": m.scale_y},
        }
        record.observation_text = elements_text(observation) or observation.url or observation.app
        record.screenshot = self._register_image(observation.screenshot,
                                                 screenshot_name(record.index),
                                                 observation.screenshot_png)
        if observation.marked_screenshot is not None:
            record.marked_screenshot = self._register_image(
                observation.marked_screenshot, screenshot_name(record.index, marked=True)
            )

    def _register_image(self, image: Image.Image, name: str, png: bytes | None = None) -> str:
        if self._writer is not None:
            self._writer.save_screenshot(image, name, png)
        self._image_names[id(image)] = name
        self._image_refs.append(image)
        return name

    def _register_history_images(self) -> None:
        """Let prompts of resumed runs name the history screenshots loaded from disk."""
        state = self._require_state()
        acted = [r for r in state.records if r.step is not None
                 and r.outcome in HISTORY_OUTCOMES | UNEXECUTED_OUTCOMES]
        for item, record in zip(state.history, acted):
            if item.screenshot is not None and record.screenshot:
                self._image_names[id(item.screenshot)] = record.screenshot
                self._image_refs.append(item.screenshot)

    def _open_trace(self, directory: Path, info: RunInfo) -> None:
        self._writer = TraceWriter(directory, mask=self.vault.mask_obj, background=True)
        self._writer.start(info)
        self._require_state().trace_dir = str(self._writer.dir)

    def _continue_trace(self, directory: Path) -> None:
        """Append the resumed run's steps to its trace in `directory`."""
        info = TraceReader(directory).info
        torn = quarantine_torn_tail(directory)
        if torn is not None:
            logger.warning("the last step record in %s was cut off by a crash; its bytes "
                           "were moved to %s", directory, torn.name)
        info.status, info.ended_at, info.error = "running", None, None
        self._open_trace(directory, info)

    def _trace_of(self, state: RunState) -> tuple[Path, bool]:
        """Where a run resumed from a state dump is traced: this agent's `trace_dir`, or the
        trace the state came from, or a new directory; and whether a trace there is
        appended to (it must hold this run up to the state's last step) or begun (from
        the state's next step)."""
        named = self.trace_dir or (Path(state.trace_dir) if state.trace_dir else None)
        if named is None:
            return _default_trace_dir(state.task), False
        if not (named / RUN_FILE).is_file():
            return named, False
        reader = TraceReader(named)
        records = reader.records()
        last = records[-1].index if records else 0
        if reader.info.task != state.task or last != state.next_index - 1:
            raise ConfigError(
                f"{named} holds a trace of {last} steps of the task {reader.info.task!r}, but "
                f"the run state is after step {state.next_index - 1} of {state.task!r}; resume "
                f"from the trace (resume_run({str(named)!r})) or pass another trace_dir"
            )
        return named, True

    def _run_info(self, task: str) -> RunInfo:
        from . import __version__

        return RunInfo(
            task=task, model=":".join(part for part in (
                getattr(self.backend, "name", type(self.backend).__name__),
                getattr(self.backend, "model", "")) if part),
            family=self.family, platform=self.platform, version=__version__,
            options={"max_steps": self.max_steps, "max_actions": self.max_actions,
                     "stop_on_denial": self.stop_on_denial, "dry_run": self.dry_run,
                     "max_parse_retries": self.max_parse_retries, "loop_limit": self.loop_limit,
                     "settle_time": self.settle_time, "generation": self.generation,
                     "secrets": self.vault.names},
        )

    def _close_run(self) -> None:
        state = self._require_state()
        assert state.status is not None
        if self._writer is not None:
            self._writer.finish(state.status, state.answer, len(state.records), state.error)
        self._result = RunResult(
            status=state.status, answer=state.answer, steps=self._masked_records(),
            trace_dir=str(self._writer.dir) if self._writer else None, error=state.error,
            timings={"total": time.monotonic() - self._started, "model": self._model_time,
                     "steps": [r.timings.get("total", 0.0) for r in state.records]},
        )
        level = logging.INFO if state.status in FINISHED_STATUSES else logging.WARNING
        logger.log(level, "run ended: %s%s", state.status,
                   f" ({state.error})" if state.error else "")
        deactivate(self.vault)

    def _masked_records(self) -> list[StepRecord]:
        """The step records as the trace has them: secrets masked in every field (the
        observed URL of a GET form, page dialogs, typed text...)."""
        records = self._require_state().records
        if not self.vault:
            return list(records)
        return [StepRecord.model_validate(self.vault.mask_obj(r.model_dump(mode="json")))
                for r in records]


def _observation_notes(observation: Observation) -> list[str]:
    """What the model must be told about the observation: a page dialog the web env
    dismissed since the last step."""
    dialog = observation.extra.get("dialog")
    if not isinstance(dialog, dict):
        return []
    return [f"After your last action the page showed a {dialog.get('type', 'JavaScript')} "
            f"dialog {dialog.get('message', '')!r}, which was dismissed (Cancel)."]


def _with_notes(messages: list[Message], notes: list[str]) -> list[Message]:
    """Append the pending notes (refusals, denials, loop nudges, page dialogs) to the last
    user message."""
    if not notes:
        return messages
    # Notes quote page text (a dialog's message) and errors: inert, like all echoed text.
    note = inert_text("\n".join(f"Note: {n}" for n in notes))
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i]["role"] != "user":
            continue
        content = out[i]["content"]
        if isinstance(content, str):
            out[i] = {**out[i], "content": f"{content}\n\n{note}"}
        else:
            out[i] = {**out[i], "content": [*content, {"type": "text", "text": note}]}
        return out
    return [*out, {"role": "user", "content": note}]


def _needs_element_labels(dialect: Dialect) -> bool:
    """Whether the dialect's prompt points at set-of-marks labels (the GLM-V web prompts)."""
    from .dialects import uses_element_labels

    if dialect.platform != "web":
        return False
    try:
        return uses_element_labels(dialect.family)
    except ConfigError:  # a custom dialect that is not registered: it declares nothing
        return False


def _default_trace_dir(task: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40] or "task"
    base = Path("traces") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
