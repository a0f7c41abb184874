"""Agent sessions for servers: one-shot tasks and persistent browser or desktop sessions.

    sessions = SessionManager(AgentSettings(backend=backend, open_env=open_env))
    session = await sessions.open("web", "https://example.com")
    result = await session.act("Log in as demo")
    answer = await session.query("Which plan is active?")
    await sessions.close(session.id)

This is what `glmv-agent mcp` exposes as tools; it knows nothing about MCP itself. Every
session owns one environment and one worker thread: playwright's sync API (and the
desktop's input libraries) must be used from the thread that started them, while a
server answers requests on an event loop. So each session call is queued to the session's
thread and awaited; calls to one session run one at a time, in order, and different
sessions run side by side.

The commands are the `PageAgent` commands (the same task texts, sent through the family's
trained prompt): `act` runs the agent loop; `query` / `assert_that` ask about the screen
without acting (on the web through the prompt's ANSWER action; on the desktop, whose
prompts have no answer action, as a plain visual question, like the desktop assistant's
`? question`); `locate` lets the model point at an element in a dry run, so nothing is
clicked. Sensitive actions are denied unless `allow_sensitive` is set: a server has nobody
at a terminal to ask.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from .actions import BaseAction
from .agent import Agent, RunResult
from .backends.base import Backend
from .dialects.base import Step
from .envs.base import Environment
from .errors import EnvError, InputError, TaskFailedError
from .page_agent import (  # _slug: the same trace-directory names as PageAgent commands
    ASSERT_TASK, CLICK_TASK, QUERY_TASK, SUCCESS_STATUSES, _slug, verdict,
)
from .policy import Policy
from .trace import StepRecord

logger = logging.getLogger("glmv_agent")

T = TypeVar("T")

# What a task can run on; sessions stay open on web and desktop only (a phone session
# would need a device picker first).
TASK_ENVS = ("web", "desktop", "android")
SESSION_ENVS = ("web", "desktop")
# Model answers a question or a locate may take (one re-ask after a refused action).
QUESTION_ATTEMPTS = 2

EnvFactory = Callable[[str, "str | None"], Environment]


@dataclass
class AgentSettings:
    """What every task and session of a server shares: the model and the agent options.

    `open_env(kind, url)` starts an environment ("web" with an optional start URL,
    "desktop", "android"); it is called on the session's own thread. Traces go under
    `trace_root` (default: `traces/`).
    """

    backend: Backend
    open_env: EnvFactory
    family: str = "glm-4.1v"
    max_steps: int = 30
    dry_run: bool = False
    allow_sensitive: bool = False
    trace_root: Path | None = None
    agent_options: dict[str, Any] = field(default_factory=dict)

    def confirm(self, action: BaseAction, step: Step) -> bool:
        """The confirmation policy: nobody can be asked, so it is the server's setting."""
        from .report import describe_action

        if not self.allow_sensitive:
            logger.warning("sensitive action denied (start the server with --confirm allow "
                           "to permit): %s", describe_action(action.to_dict()))
        return self.allow_sensitive

    def agent(self, env: Environment, *, trace_dir: Path | None,
              max_steps: int | None = None, **options: Any) -> Agent:
        """An Agent on `env` with these settings (`options` override them)."""
        kwargs: dict[str, Any] = dict(
            family=self.family, max_steps=self.max_steps if max_steps is None else max_steps,
            dry_run=self.dry_run,
            confirm=self.confirm, trace_dir=trace_dir, **self.agent_options,
        )
        kwargs.update(options)
        return Agent(self.backend, env, **kwargs)


def run_summary(result: RunResult) -> dict[str, Any]:
    """What a client needs of a run: how it ended, the answer, each step in one line."""
    return {
        "status": result.status,
        "answer": result.answer,
        "error": result.error,
        "trace_dir": result.trace_dir,
        "steps": [step_line(record) for record in result.steps],
    }


def step_line(record: StepRecord) -> str:
    """`3. click element [2]: executed` for one step record."""
    from .report import describe_action

    action = describe_action(record.action) if record.action else "(no action)"
    detail = f" ({record.detail})" if record.detail else ""
    return f"{record.index}. {action}: {record.outcome}{detail}"


def check_env_kind(kind: Any, allowed: tuple[str, ...]) -> str:
    if kind not in allowed:
        raise InputError(f"env must be one of {', '.join(allowed)}; got {kind!r}")
    return str(kind)


def check_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


class Worker:
    """One thread that runs everything touching one environment, in order."""

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def wind_down(self, agent: Agent | None, env: Environment | None) -> None:
        """After the work in flight: end `agent`'s run if it is unfinished, close `env`,
        end the thread. Nothing is awaited, so this holds even for a request that was
        cancelled mid-step."""
        self._pool.submit(_wind_down, agent, env)
        self.shutdown()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)


def _wind_down(agent: Agent | None, env: Environment | None) -> None:
    try:
        if agent is not None and not agent.finished:
            agent.stop()
            agent.step()  # ends the run as "stopped" before any model call; trace closed
    except Exception:
        logger.warning("ending the cancelled run failed", exc_info=True)
    try:
        if env is not None:
            env.close()
    except Exception:  # the run's result (or its error) matters more than the close
        logger.warning("closing the environment failed", exc_info=True)


class Session:
    """An open environment with the commands on it; create with `SessionManager.open`."""

    def __init__(self, session_id: str, kind: str, settings: AgentSettings) -> None:
        self.id = session_id
        self.kind = kind
        self.settings = settings
        self.env: Environment | None = None
        self.closed = False
        self._worker = Worker(f"glmv-session-{session_id}")
        self._commands = itertools.count(1)
        self._current: Agent | None = None  # the running command, to stop it on close

    # -- lifecycle (each on the session's thread) -------------------------------------
    async def start(self, url: str | None) -> None:
        try:
            self.env = await self._worker.call(self.settings.open_env, self.kind, url)
        except BaseException:
            self._worker.shutdown()
            self.closed = True
            raise

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._current is not None:
            self._current.stop()
        try:
            if self.env is not None:
                await self._worker.call(self.env.close)
        finally:
            self._worker.shutdown()

    @property
    def url(self) -> str | None:
        """The page address at the last observation (web sessions)."""
        observation = self.env.last_observation if self.env is not None else None
        return observation.url if observation is not None else None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise InputError(f"session {self.id!r} is closed; open a new one")
        try:
            return await self._worker.call(fn, *args)
        except asyncio.CancelledError:  # the request was cancelled: stop the command too
            if self._current is not None:
                self._current.stop()
            raise
        except EnvError as exc:  # the browser or screen went away: say what to do here
            raise EnvError(f"session {self.id!r}: {exc}; close_session it and open_session "
                           "a new one") from exc

    # -- commands ----------------------------------------------------------------------
    async def act(self, instruction: str, max_steps: int | None = None) -> RunResult:
        """Run the agent loop on `instruction` until the model finishes (or a limit)."""
        instruction = check_text(instruction, "instruction")
        return await self._call(self._run, "act", instruction, {"max_steps": max_steps})

    async def query(self, question: str) -> str:
        """The model's answer to `question` about the screen; nothing is touched."""
        question = check_text(question, "question")
        if self.kind == "web":
            return await self._call(self._answer, "query", QUERY_TASK.format(question=question))
        return await self._call(self._visual_answer, question)

    async def assert_that(self, statement: str) -> str:
        """The model's answer when `statement` holds; AssertionError when it does not."""
        statement = check_text(statement, "statement")
        if self.kind == "web":
            answer = await self._call(self._answer, "assert",
                                      ASSERT_TASK.format(statement=statement))
        else:
            answer = await self._call(self._visual_answer, _visual_assert(statement))
        holds = verdict(answer)
        if holds:
            return answer
        what = "is false" if holds is False else "could not be confirmed (no clear yes/no)"
        raise AssertionError(f"{statement!r} {what}; the model answered {answer!r}")

    async def locate(self, description: str) -> dict[str, Any]:
        """Where the element `description` names is: the model points at it, nothing runs."""
        description = check_text(description, "description")
        return await self._call(self._locate, description)

    async def screenshot(self) -> Image.Image:
        """The screen as the model sees it (with set-of-marks labels when they are on)."""
        observation = await self._call(self._observe)
        return observation.model_image()

    # -- on the session's thread ---------------------------------------------------------
    def _env(self) -> Environment:
        if self.env is None:
            raise EnvError(f"session {self.id!r} has no environment (it failed to start)")
        return self.env

    def _observe(self) -> Any:
        return self._env().observe()

    def _trace_dir(self, kind: str, task: str) -> Path:
        root = self.settings.trace_root or Path("traces")
        return root / f"mcp-{self.id}" / f"{next(self._commands):03d}-{kind}-{_slug(task)}"

    def _run(self, kind: str, task: str, options: dict[str, Any]) -> RunResult:
        agent = self.settings.agent(self._env(), trace_dir=self._trace_dir(kind, task),
                                    **options)
        self._current = agent
        try:
            return agent.run(task)
        finally:
            self._current = None

    def _answer(self, kind: str, task: str) -> str:
        """A question run on the web prompt: no page action is allowed or executed."""
        result = self._run(kind, task, {"max_steps": QUESTION_ATTEMPTS, "dry_run": True,
                                        "policy": Policy(allowed_actions=set())})
        if result.status not in SUCCESS_STATUSES or result.answer is None:
            raise TaskFailedError(f"{kind}: the model gave no answer{_why(result)}",
                                  result=result)
        return result.answer

    def _visual_answer(self, question: str) -> str:
        """A plain visual question about the current screen (the desktop has no ANSWER)."""
        from .dialects._syntax import split_response
        from .messages import image, message

        screenshot = self._env().observe().screenshot
        raw = self.settings.backend.complete([message("user", image(screenshot), question)])
        return split_response(raw)[1]  # thinking split off, box markers removed, stripped

    def _locate(self, description: str) -> dict[str, Any]:
        task = CLICK_TASK.format(description=description)
        # A dry-run click: the policy refuses anything else (the model is told and asked
        # again) and the first click ends the run, so its target is resolved, not clicked.
        result = self._run("locate", task, {
            "max_steps": QUESTION_ATTEMPTS, "dry_run": True, "max_actions": 1,
            "policy": Policy(allowed_actions={"click"}),
        })
        record = next((r for r in result.steps if r.outcome == "dry_run"), None)
        if record is None or not record.pixel_points or not record.env_points:
            raise TaskFailedError(
                f"locate({description!r}): the model did not point at an element"
                f"{_why(result)}", result=result,
            )
        (px, py), (ex, ey) = record.pixel_points[0], record.env_points[0]
        target = (record.action or {}).get("target") or {}
        return {
            "x": px, "y": py,  # in the screenshot's pixels
            "screen_x": round(ex, 1), "screen_y": round(ey, 1),  # where a click would land
            "element": target.get("element"),
            "trace_dir": result.trace_dir,
        }


def _why(result: RunResult) -> str:
    """` (run status 'error': ...; trace ...)` for an error message."""
    parts = [f"run status {result.status!r}" + (f": {result.error}" if result.error else "")]
    if result.trace_dir:
        parts.append(f"trace {result.trace_dir}")
    return f" ({'; '.join(parts)})"


def _visual_assert(statement: str) -> str:
    return (f'Is this statement true of the screen: "{statement}"? Start your answer with '
            '"yes" or "no", then give a short reason.')


class SessionManager:
    """The open sessions of a server, and one-shot tasks on a fresh environment."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._tasks = itertools.count(1)

    async def open(self, kind: str, url: str | None = None) -> Session:
        kind = check_env_kind(kind, SESSION_ENVS)
        if url is not None and kind != "web":
            raise InputError(f"url is for web sessions only (this one is {kind!r})")
        if kind == "desktop" and any(s.kind == "desktop" for s in self.sessions.values()):
            raise InputError("a desktop session is already open (there is one screen); "
                             "use it or close it first")
        session = Session(f"s{next(self._ids)}", kind, self.settings)
        self.sessions[session.id] = session  # listed while it starts: one desktop at a time
        try:
            await session.start(url)
        except BaseException:
            del self.sessions[session.id]
            raise
        return session

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            known = ", ".join(sorted(self.sessions)) or "none"
            raise InputError(f"unknown session {session_id!r} (open sessions: {known}); "
                             "open one with open_session")
        return session

    async def close(self, session_id: str) -> None:
        session = self.get(session_id)
        del self.sessions[session_id]
        await session.close()

    async def close_all(self) -> None:
        """Close every session; one that fails to close does not keep the others open."""
        for session_id in list(self.sessions):
            try:
                await self.close(session_id)
            except Exception:
                logger.warning("closing session %s failed", session_id, exc_info=True)

    async def run_task(self, task: str, kind: str, url: str | None = None,
                       max_steps: int | None = None,
                       on_step: Callable[[StepRecord, Agent], Any] | None = None
                       ) -> RunResult:
        """Run `task` on a fresh environment, closed afterwards. `on_step(record, agent)`
        is awaited after each step (progress reports)."""
        task = check_text(task, "task")
        kind = check_env_kind(kind, TASK_ENVS)
        if url is not None and kind != "web":
            raise InputError(f"url is for the web env only (this task runs on {kind!r})")
        if max_steps is not None and max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {max_steps}")
        worker = Worker("glmv-task")
        env: Environment | None = None
        agent: Agent | None = None
        try:
            env = await worker.call(self.settings.open_env, kind, url)
            agent = self.settings.agent(env, trace_dir=self._task_trace_dir(task),
                                        max_steps=max_steps)
            await worker.call(agent.start, task)
            while not agent.finished:
                record = await worker.call(agent.step)
                if on_step is not None:
                    await on_step(record, agent)
            assert agent.result is not None
            return agent.result
        finally:
            if agent is not None:
                agent.stop()  # a cancelled request: no new step starts
            worker.wind_down(agent, env)

    def _task_trace_dir(self, task: str) -> Path | None:
        if self.settings.trace_root is None:
            return None  # the agent's default, traces/<time>-<task>
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.settings.trace_root / f"{stamp}-{next(self._tasks):03d}-{_slug(task)}"


__all__ = ["AgentSettings", "Session", "SessionManager", "run_summary", "step_line",
           "TASK_ENVS", "SESSION_ENVS"]
