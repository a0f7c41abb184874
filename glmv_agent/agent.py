"""The agent loop: observe, prompt, ask the model, parse, check, execute, record, repeat.

    agent = Agent("http://127.0.0.1:8000/v1", env, model_name="glm-4.5v", family="glm-4.5v")
    result = agent.run("Open the settings and turn on dark mode")

`run` blocks until the model finishes or a limit is hit; `iter_run` yields each
`StepRecord` as it ends; `start` + `step` drive it one step at a time. `pause`, `unpause`
and `stop` may be called from another thread. Every step is on disk (see `trace.py`)
before the next one starts, and `resume_run(trace_dir)` continues an interrupted run.

Bad model output is never executed: an unparseable answer is re-asked
(`max_parse_retries`), an action outside the screen or the policy is refused and the model
told, a sensitive action waits for `confirm`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from .actions import Answer, BaseAction, Done, TakeOver, TypeText
from .backends import make_backend
from .backends.base import BackendProtocol, GenerationParams
from .dialects.base import Dialect, HistoryItem, Step
from .dialects.elements import elements_text
from .envs.base import Environment, Observation, Platform, same_screen, screen_thumbnail
from .errors import (
    ActionError, ActionRefusedError, BackendError, ConfigError, GlmvAgentError, ParseError,
    StoppedError,
)
from .messages import Message, inert_text
from .policy import Policy
from .secrets import SecretVault, activate, deactivate
from .trace import Attempt, RunInfo, StepRecord, TraceReader, TraceWriter, prompt_summary
from .trace import HISTORY_OUTCOMES, UNEXECUTED_OUTCOMES, history_observation, screenshot_name
from .trace import quarantine_torn_tail

logger = logging.getLogger("glmv_agent")

# "unparseable": the model's answers never parsed (a model failure, not the environment's
# or the backend's, which end the run as "error").
RunStatus = Literal[
    "success", "answered", "infeasible", "max_steps", "stopped", "loop", "error", "refused",
    "unparseable",
]
ConfirmCallback = Callable[[BaseAction, Step], bool]
TakeOverCallback = Callable[[str], None]

# Consecutive refused / denied / failed actions before the run ends as "refused".
MAX_CONSECUTIVE_FAILURES = 3
FINISHED_STATUSES = frozenset({"success", "answered", "infeasible"})


class RunResult(BaseModel):
    """How a run ended, with every step record and where the trace is."""

    status: RunStatus
    answer: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    trace_dir: str | None = None
    error: str | None = None
    timings: dict[str, Any] = Field(default_factory=dict)  # total, model, steps: [...]


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
    `stop_on_denial=True` a denial ends the run as "refused".

    Secrets: `secrets={"name": "value"}` lets the model type `{{name}}`; the value is put
    in only at execution and masked in prompts, answers, logs and traces. Screenshots are
    NOT masked: once a secret is typed into a field that shows its text (anything but a
    password field), later screenshots show it to the model and the trace PNGs keep it.
    Type secrets into password fields only, or pass `trace=False` where that matters.
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
        # A copy: the caller's Policy may be shared with other agents.
        self.policy = dataclasses.replace(policy) if policy is not None else Policy()
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
        self._task: str | None = None
        self._records: list[StepRecord] = []
        self._history: list[HistoryItem] = []
        self._notes: list[str] = []
        self._image_names: dict[int, str] = {}
        self._image_refs: list[Image.Image] = []  # keep ids in _image_names valid
        self._writer: TraceWriter | None = None
        self._status: RunStatus | None = None
        self._answer: str | None = None
        self._error: str | None = None
        self._result: RunResult | None = None
        self._failures = 0
        self._actions = 0
        self._last_key: str | None = None
        self._last_thumb: np.ndarray | None = None
        self._last_screenshot: str | None = None  # the file `_last_thumb` was made from
        self._repeats = 0
        self._nudged = False
        self._started = 0.0
        self._model_time = 0.0
        self._stop_requested.clear()

    def start(self, task: str) -> None:
        """Begin a new task; then call `step()` until `finished`."""
        if not isinstance(task, str) or not task.strip():
            raise ConfigError("task must be a non-empty string describing what to do")
        self.reset()
        self._task = task
        if self.trace:
            directory = self.trace_dir or _default_trace_dir(task)
            if (directory / "steps.jsonl").exists():
                raise ConfigError(
                    f"{directory} already holds a trace; pass another trace_dir or use "
                    "Agent.resume_run() to continue it"
                )
            self._writer = TraceWriter(directory, mask=self.vault.mask_obj, background=True)
            self._writer.start(self._run_info(task))
        self._begin()

    def step(self) -> StepRecord:
        """Run one step and return its record (written to the trace before returning)."""
        if self._task is None:
            raise ConfigError("call start(task) before step()")
        if self._status is not None:
            raise ConfigError(
                f"this run already ended with status {self._status!r}; call start(task) "
                "for a new one"
            )
        index = (self._records[-1].index if self._records else 0) + 1
        record = StepRecord(index=index)
        began = time.monotonic()
        deadline = began + self.step_timeout if self.step_timeout else None
        crash: BaseException | None = None
        try:
            self._wait_if_paused()
            self._run_step(record, deadline)
        except StoppedError as exc:
            record.outcome, record.detail = "stopped", str(exc)
            self._finish("stopped")
        except GlmvAgentError as exc:
            record.outcome, record.error = "error", f"{type(exc).__name__}: {exc}"
            self._finish("error", error=record.error)
        except KeyboardInterrupt as exc:  # Ctrl+C: record it, end the run, re-raise
            record.outcome, record.detail = "stopped", "interrupted (KeyboardInterrupt)"
            self._finish("stopped")
            crash = exc
        except Exception as exc:  # a bug or an unexpected library error: trace it, re-raise
            record.outcome, record.error = "error", f"{type(exc).__name__}: {exc}"
            self._finish("error", error=record.error)
            crash = exc
        record.timings["total"] = time.monotonic() - began
        record.ended_at = time.time()
        record.detail = self.vault.mask(record.detail)
        record.resume_state = self._resume_state()
        self._records.append(record)
        if self._writer is not None:
            self._writer.record(record)
        logger.info("step %d: %s %s", index, record.outcome,
                    (record.action or {}).get("type", ""))
        if self._status is None and len(self._records) >= self.max_steps:
            self._finish("max_steps")
        if self._status is not None:
            self._close_run()
        if crash is not None:
            raise crash
        return record

    def iter_run(self, task: str) -> Iterator[StepRecord]:
        """Start `task` and yield each step record as it ends; `result` is set at the end."""
        self.start(task)
        yield from self._remaining_steps()

    def __iter__(self) -> Iterator[StepRecord]:
        if self._task is None:
            raise ConfigError("call start(task) before iterating over the agent")
        return self._remaining_steps()

    def run(self, task: str) -> RunResult:
        """Run `task` to the end and return how it went."""
        for _ in self.iter_run(task):
            pass
        assert self._result is not None
        return self._result

    def resume_run(self, trace_dir: str | Path) -> RunResult:
        """Continue an interrupted run from its trace: same task, history rebuilt, new steps
        appended to the same trace directory."""
        reader = TraceReader(trace_dir)
        info = reader.info
        if info.status in FINISHED_STATUSES:
            raise ConfigError(
                f"the run in {trace_dir} already ended with status {info.status!r}; "
                "there is nothing to resume"
            )
        self.reset()
        self._task = info.task
        self._records = reader.records()
        self._history = reader.history()
        self._register_history_images()
        if self._records:
            self._restore_state(self._records[-1].resume_state, reader)
        if self.trace:
            torn = quarantine_torn_tail(trace_dir)
            if torn is not None:
                logger.warning("the last step record in %s was cut off by a crash; its bytes "
                               "were moved to %s", trace_dir, torn.name)
            self._writer = TraceWriter(trace_dir, mask=self.vault.mask_obj, background=True)
            info.status, info.ended_at, info.error = "running", None, None
            self._writer.start(info)
        self._begin()
        for _ in self._remaining_steps():
            pass
        assert self._result is not None
        return self._result

    def resume(self, trace_dir: str | Path | None = None) -> RunResult | None:
        """Without an argument: lift a `pause()`. With a trace directory: `resume_run`."""
        if trace_dir is None:
            self.unpause()
            return None
        return self.resume_run(trace_dir)

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
        return self._status is not None

    @property
    def result(self) -> RunResult | None:
        return self._result

    @property
    def history(self) -> list[HistoryItem]:
        return list(self._history)

    @property
    def records(self) -> list[StepRecord]:
        return list(self._records)

    def close(self) -> None:
        """Close the backend (the environment belongs to the caller)."""
        self.backend.close()

    # -- the step ----------------------------------------------------------------------------
    def _run_step(self, record: StepRecord, deadline: float | None) -> None:
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
        dialog = observation.extra.get("dialog")
        if isinstance(dialog, dict):  # a page dialog the web env dismissed since the last step
            self._notes.append(
                f"After your last action the page showed a {dialog.get('type', 'JavaScript')} "
                f"dialog {dialog.get('message', '')!r}, which was dismissed (Cancel)."
            )

        t = time.monotonic()
        history = self._history
        if not self.dialect.shows_unexecuted():
            history = [item for item in history if item.executed]
        messages = self.dialect.build_messages(self._task_text(), observation, history)
        messages = self._with_notes(messages)
        record.timings["prompt"] = time.monotonic() - t
        if self._writer is not None:
            # The last step is on disk before the model is asked again (crash safety);
            # by now the writer is long done with it, so this rarely waits.
            self._writer.wait_for_steps()
        step = self._ask(messages, record, deadline)
        self._notes = []  # shown to the model (kept if the call failed: resume shows them)
        if step is None:
            record.outcome = "parse_error"
            record.detail = f"no usable answer after {record.retries + 1} attempts"
            self._finish("unparseable", error=f"unparseable model output: {record.error}")
            return
        self._act(step, observation, record, deadline)
        if record.outcome in HISTORY_OUTCOMES | UNEXECUTED_OUTCOMES:
            self._history.append(HistoryItem(
                step=step, screenshot=observation.model_image(),
                observation_text=record.observation_text,
                observation=history_observation(record.outcome, record.detail),
                executed=record.outcome in HISTORY_OUTCOMES,
            ))
        if record.outcome in ("executed", "dry_run") and not step.action.agent_side:
            if self.max_actions is not None and self._actions >= self.max_actions:
                self._finish("success")
            if not self.dry_run and self.settle_time:
                t = time.monotonic()
                self._stop_requested.wait(self.settle_time)
                record.timings["settle"] = (record.timings.get("settle", 0.0)
                                            + time.monotonic() - t)

    def _act(self, step: Step, observation: Observation, record: StepRecord,
             deadline: float | None) -> None:
        """Check and carry out the parsed action; the outcome is left in `record`."""
        action = step.action
        record.step = step.model_dump(mode="json")
        record.action = action.to_dict()
        record.pixel_points = observation.target_pixels(action)
        if self._stop_requested.is_set():
            raise StoppedError("stopped before executing the model's action")

        if isinstance(action, (Done, Answer, TakeOver)):
            self._agent_action(action, record, observation, step)
            return
        if action.agent_side:
            # Bookkeeping the model does for itself (e.g. AutoGLM's Note): nothing to
            # execute, but it belongs to the history like any executed step.
            record.outcome, record.detail = "executed", "recorded (no environment action)"
            return
        t = time.monotonic()
        try:
            if self._is_loop(action, observation, record):
                return
            self.policy.check(action, observation, self.env.supported_actions())
            # The field the action types into, not the one focused at the screenshot: a
            # TypeText with a target clicks there first.
            into_password = (self.policy.confirm_password_fields and isinstance(action, TypeText)
                             and self.env.types_into_password(action, observation))
            record.sensitive = self.policy.sensitivity(action, step, observation,
                                                       password_field=into_password)
        except ActionError as exc:
            self._reject(record, "refused", f"refused: {exc}",
                         f"Your action {action.type!r} was not executed: {exc}")
            return
        finally:
            record.timings["policy"] = time.monotonic() - t
        # Checked before asking the human: time spent confirming is not the model's fault.
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError(
                f"step {record.index} took longer than step_timeout={self.step_timeout}s "
                "before its action could run; nothing was executed (raise step_timeout)"
            )
        if record.sensitive and not self.dry_run and not self._confirmed(action, step, record):
            return
        self._execute(action, observation, record)
        if record.outcome in ("executed", "dry_run"):
            self._failures = 0
            self._actions += 1

    def _ask(self, messages: list[Message], record: StepRecord,
             deadline: float | None) -> Step | None:
        """Ask the model, re-asking on unparseable answers; None if it never parsed."""
        current = messages
        record.timings["model"] = record.timings["parse"] = 0.0
        for attempt in range(self.max_parse_retries + 1):
            t = time.monotonic()
            sent = self.vault.mask_messages(current)
            if attempt == 0:
                record.prompt = prompt_summary(sent, self._image_names)
            record.timings["prompt"] = record.timings.get("prompt", 0.0) + time.monotonic() - t
            t = time.monotonic()
            text = self._call_model(sent, deadline, record.timings)
            record.timings["model"] += time.monotonic() - t
            self._record_prefill(record.timings)
            t = time.monotonic()
            try:
                step = self.dialect.parse(text)
            except ParseError as exc:
                record.timings["parse"] += time.monotonic() - t
                logger.warning("step %d: unparseable answer (%s)", record.index, exc)
                record.attempts.append(Attempt(response=text, error=str(exc),
                                               expected=exc.expected))
                record.error = str(exc)
                if attempt < self.max_parse_retries:
                    record.retries = attempt + 1
                    current = self.dialect.retry_messages(messages, text, exc.expected or str(exc))
                continue
            record.timings["parse"] += time.monotonic() - t
            record.response = text
            record.error = None
            return step
        return None

    def _record_prefill(self, timings: dict[str, float]) -> None:
        """The in-process engine's prefill seconds and prompt tokens served from its prefix
        cache (`model_prefill`, `model_cached_tokens`), of the last call."""
        result = getattr(self.backend, "last_result", None)
        if result is not None and hasattr(result, "prefill_seconds"):
            timings["model_prefill"] = float(result.prefill_seconds)
            timings["model_cached_tokens"] = int(getattr(result, "cached_tokens", 0))

    def _call_model(self, messages: list[Message], deadline: float | None,
                    timings: dict[str, float]) -> str:
        timeout = self.model_timeout
        if deadline is not None:
            left = max(0.001, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        started = time.monotonic()
        try:
            if timeout is None:
                text = self._generate(messages, timings)
            else:
                text = _call_with_timeout(lambda: self._generate(messages, timings), timeout)
        finally:
            self._model_time += time.monotonic() - started
        if not isinstance(text, str):
            raise BackendError(
                f"{type(self.backend).__name__}.complete returned {type(text).__name__}, not str"
            )
        return text

    def _generate(self, messages: list[Message], timings: dict[str, float]) -> str:
        """The model's answer; streamed through `on_text` as it is generated, if set, and
        then the time to the first text (`model_ttft`) and to the end of the thinking
        (`model_thinking_end`) are recorded, of the last attempt when re-asked. (Not
        streamed otherwise: some OpenAI-compatible servers do not stream.)"""
        stream = getattr(self.backend, "stream", None)
        if self.on_text is None or stream is None:
            return self.backend.complete(messages, **self.generation)
        started = time.monotonic()
        parts: list[str] = []
        tail: str | None = ""  # the end of the text so far: "</think>" may arrive split over deltas
        for delta in stream(messages, **self.generation):
            if not delta:
                continue
            if not parts:
                timings["model_ttft"] = time.monotonic() - started
            parts.append(delta)
            if tail is not None:
                if "</think>" in tail + delta:
                    timings["model_thinking_end"] = time.monotonic() - started
                    tail = None
                else:
                    tail = (tail + delta)[-len("</think>"):]
            self.on_text(self.vault.mask(delta))
        return "".join(parts)

    def _agent_action(self, action: BaseAction, record: StepRecord, observation: Observation,
                      step: Step) -> None:
        if isinstance(action, Done):
            record.outcome = "terminal"
            self._finish("success" if action.success else "infeasible", answer=action.message)
        elif isinstance(action, Answer):
            record.outcome = "terminal"
            self._finish("answered", answer=action.text)
        elif isinstance(action, TakeOver):
            if self.on_take_over is None:
                record.outcome = "stopped"
                record.detail = ("the model asked a human to take over, but no on_take_over "
                                 "callback was given")
                self._finish("stopped", answer=action.message or None)
                return
            logger.info("handing over to the human: %s", action.message)
            self.on_take_over(self.vault.mask(action.message))
            record.outcome = "take_over"
            record.detail = "the human finished and handed back"

    def _is_loop(self, action: BaseAction, observation: Observation, record: StepRecord) -> bool:
        """Detect the same action on an unchanged screen; nudge once, then end the run."""
        if not self.loop_limit:
            return False
        key = json.dumps(action.model_dump(mode="json", exclude={"reason"}), sort_keys=True)
        thumb = screen_thumbnail(observation.screenshot)
        self._last_screenshot = record.screenshot
        if key == self._last_key and self._last_thumb is not None and same_screen(
            thumb, self._last_thumb
        ):
            self._repeats += 1
        else:
            self._repeats, self._nudged = 1, False
        self._last_key, self._last_thumb = key, thumb
        if self._repeats < self.loop_limit:
            return False
        if self._nudged:
            record.outcome = "stopped"
            record.detail = (f"the model repeated {action.type!r} {self._repeats} times on an "
                             "unchanged screen, even after being told")
            self._finish("loop")
            return True
        self._nudged = True
        record.outcome = "loop_nudge"
        record.detail = f"{action.type!r} repeated {self._repeats} times; not executed"
        self._notes.append(
            f"You have chosen the same action ({action.type}) {self._repeats} times and the "
            "screen did not change, so it is not working. Try a different action, or finish "
            "the task as infeasible if it cannot be done."
        )
        return True

    def _confirmed(self, action: BaseAction, step: Step, record: StepRecord) -> bool:
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
            return True
        self._reject(
            record, "denied", why,
            f"The user did not allow your action {action.type!r} ({record.sensitive}). Do not "
            "repeat it; find another way or finish the task.",
        )
        if self.stop_on_denial:
            self._finish("refused", error=f"step {record.index}: {why}")
        return False

    def _execute(self, action: BaseAction, observation: Observation, record: StepRecord) -> None:
        real = self.vault.reveal(action)  # the only place a secret value exists
        t = time.monotonic()
        settle = 0.0
        try:
            if self.dry_run:
                record.env_points = [observation.env_point(tg) for tg in action.targets()]
                record.outcome, record.detail = "dry_run", "not executed (dry run)"
            else:
                outcome = self.env.execute(real, observation)
                settle = getattr(outcome, "settle_s", 0.0)
                record.env_points = list(outcome.env_points)
                record.outcome, record.detail = "executed", outcome.detail
        except ActionRefusedError as exc:
            self._reject(record, "refused", f"refused: {exc}",
                         f"Your action {action.type!r} was not executed: {exc}")
        except ActionError as exc:
            self._reject(record, "action_error", f"failed: {exc}",
                         f"Your action {action.type!r} failed: {exc}")
        # The environment's wait for a ready screen is its own phase, not the action's.
        record.timings["execute"] = time.monotonic() - t - settle
        record.timings["settle"] = settle

    def _reject(self, record: StepRecord, outcome: str, detail: str, note: str) -> None:
        record.outcome, record.detail = outcome, detail
        self._notes.append(note)
        self._failures += 1
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            self._finish("refused", error=f"{self._failures} actions in a row were not "
                                          f"executed; last: {detail}")

    # -- helpers -----------------------------------------------------------------------------
    def _begin(self) -> None:
        self._started = time.monotonic()
        self._stop_requested.clear()
        activate(self.vault)  # every glmv_agent.* log record is masked while the run lasts
        logger.info("task: %s", self._task)

    def _remaining_steps(self) -> Iterator[StepRecord]:
        while self._status is None:
            if self._stop_requested.is_set():
                self._finish("stopped")
                self._close_run()
                break
            yield self.step()

    def _wait_if_paused(self) -> None:
        while not self._pause_released.wait(0.05):
            pass
        if self._stop_requested.is_set():
            raise StoppedError("stopped from outside (Agent.stop())")

    def _task_text(self) -> str:
        assert self._task is not None
        missing = [n for n in self.vault.names if "{{" + n + "}}" not in self._task]
        if not missing:
            return self._task
        hints = ", ".join("{{" + n + "}}" for n in missing)
        return f"{self._task}\n(To type a secret, type its placeholder exactly: {hints})"

    def _with_notes(self, messages: list[Message]) -> list[Message]:
        """Append pending notes (refusals, denials, loop nudges) to the last user message."""
        if not self._notes:
            return messages
        # Notes quote page text (a dialog's message) and errors: inert, like all echoed text.
        note = inert_text("\n".join(f"Note: {n}" for n in self._notes))
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

    def _resume_state(self) -> dict[str, Any]:
        return {"notes": list(self._notes), "failures": self._failures,
                "actions": self._actions, "loop_key": self._last_key,
                "loop_screenshot": self._last_screenshot, "repeats": self._repeats,
                "nudged": self._nudged}

    def _restore_state(self, state: dict[str, Any], reader: TraceReader) -> None:
        """Continue where the trace left off (traces written before this field: fresh)."""
        self._notes = list(state.get("notes", []))
        self._failures = int(state.get("failures", 0))
        self._actions = int(state.get("actions", 0))
        self._repeats = int(state.get("repeats", 0))
        self._nudged = bool(state.get("nudged", False))
        self._last_key = state.get("loop_key")
        self._last_screenshot = state.get("loop_screenshot")
        shot = None
        if self._last_screenshot:
            shot = reader.screenshot(StepRecord(index=0, screenshot=self._last_screenshot))
        self._last_thumb = screen_thumbnail(shot) if shot is not None else None
        if self._last_thumb is None:
            self._last_key, self._repeats = None, 0  # cannot compare screens: start over

    def _register_history_images(self) -> None:
        """Let prompts of resumed runs name the history screenshots loaded from disk."""
        acted = [r for r in self._records if r.step is not None
                 and r.outcome in HISTORY_OUTCOMES | UNEXECUTED_OUTCOMES]
        for item, record in zip(self._history, acted):
            if item.screenshot is not None and record.screenshot:
                self._image_names[id(item.screenshot)] = record.screenshot
                self._image_refs.append(item.screenshot)

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

    def _finish(self, status: RunStatus, answer: str | None = None,
                error: str | None = None) -> None:
        """Mark the run as ended; `_close_run` writes it out once the step is recorded."""
        if self._status is not None:
            return
        self._status, self._answer = status, self.vault.mask(answer) if answer else answer
        self._error = self.vault.mask(error) if error else error

    def _close_run(self) -> None:
        assert self._status is not None
        if self._writer is not None:
            self._writer.finish(self._status, self._answer, len(self._records), self._error)
        self._result = RunResult(
            status=self._status, answer=self._answer, steps=self._masked_records(),
            trace_dir=str(self._writer.dir) if self._writer else None, error=self._error,
            timings={"total": time.monotonic() - self._started, "model": self._model_time,
                     "steps": [r.timings.get("total", 0.0) for r in self._records]},
        )
        level = logging.INFO if self._status in FINISHED_STATUSES else logging.WARNING
        logger.log(level, "run ended: %s%s", self._status,
                   f" ({self._error})" if self._error else "")
        deactivate(self.vault)

    def _masked_records(self) -> list[StepRecord]:
        """The step records as the trace has them: secrets masked in every field (the
        observed URL of a GET form, page dialogs, typed text...)."""
        if not self.vault:
            return list(self._records)
        return [StepRecord.model_validate(self.vault.mask_obj(r.model_dump(mode="json")))
                for r in self._records]


def _needs_element_labels(dialect: Dialect) -> bool:
    """Whether the dialect's prompt points at set-of-marks labels (the GLM-V web prompts)."""
    from .dialects import uses_element_labels

    if dialect.platform != "web":
        return False
    try:
        return uses_element_labels(dialect.family)
    except ConfigError:  # a custom dialect that is not registered: it declares nothing
        return False


def _call_with_timeout(fn: Callable[[], str], timeout: float) -> str:
    """Run `fn` in a worker thread; BackendError if it has not returned within `timeout`.

    A backend call cannot be interrupted safely, so the worker is abandoned (daemon) and
    its late answer discarded.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="glmv-model-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise BackendError(
            f"the model did not answer within {timeout:.1f}s; raise model_timeout / "
            "step_timeout, or check that the server is not overloaded"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _default_trace_dir(task: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40] or "task"
    base = Path("traces") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
