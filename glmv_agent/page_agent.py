"""Natural-language commands on your own playwright page: `PageAgent` and `AsyncPageAgent`.

    from playwright.sync_api import sync_playwright
    from glmv_agent import PageAgent

    with sync_playwright() as p:
        page = p.chromium.launch().new_page()
        page.goto("https://example.com/signup")
        agent = PageAgent(page, "http://127.0.0.1:8000/v1", model_name="glm-4.1v")
        agent.act("Sign up with the name Ada and the email ada@example.com")
        agent.click("the blue Continue button")
        plan = agent.query("Which plan is selected?")
        agent.assert_that("the page says the account was created")

Your script keeps the page: the agent never closes it, its context or its browser.

How each command talks to the model. Every command is an ordinary task for the family's
trained web prompt (for GLM-4.1V / GLM-4.5V the WebVoyager-style prompt with set-of-marks
labels and the `Click [N]` / `Type [N]; [text]` / `ANSWER; <content>...</content>`
actions); no other prompt format is invented:

* `act(instruction)`: the instruction is the task; the agent loop runs until the model
  answers (or a limit is hit).
* `click(description)`: the task "Click the element described as: ...". Inside one run
  the policy allows only a click (anything else is refused, the model told and asked
  again, up to `click_attempts`); the first executed click ends the run as a success, so
  its trace shows the click as executed. A sensitive click needs `confirm`, as in
  `Agent`; a denial ends the command with `ActionRefusedError`.
* `query(question)` / `extract`: the task asks the model to answer from the page as it is,
  with the ANSWER action the prompt already defines. Nothing can run: the policy allows no
  page action, so an attempt to act is refused, the model is told why and asked again.
* `assert_that(statement)` / `check`: a query whose answer must start with yes or no.

`AsyncPageAgent` is the same for `playwright.async_api` pages: the page is driven by the
async web environment on your event loop, while the (blocking) agent loop runs in a worker
thread and hands each page operation back to your loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Callable, TypeVar

from .actions import BaseAction, TypeText
from .agent import Agent, RunResult
from .backends import make_backend
from .backends.base import Backend, BackendProtocol
from .dialects import uses_element_labels
from .envs.base import ActionHandler, ActionOutcome, Environment, Observation
from .errors import ActionRefusedError, ConfigError, EnvError, TaskFailedError
from .policy import Policy

logger = logging.getLogger("glmv_agent")

T = TypeVar("T")

# Run statuses that mean the command did what was asked.
SUCCESS_STATUSES = frozenset({"success", "answered"})

# Task texts of the commands. They are tasks in the user's words, sent through the
# family's own web prompt, which already defines the ANSWER action they ask for.
CLICK_TASK = "Click the element described as: {description}"
QUERY_TASK = (
    "Answer this question from the web page as it is now, without clicking, typing or "
    "scrolling, and give the answer with ANSWER: {question}"
)
ASSERT_TASK = (
    'Check whether this statement is true of the web page as it is now, without clicking, '
    'typing or scrolling: "{statement}". Give your verdict with ANSWER: start the content '
    'with "yes" if the statement is true or "no" if it is false, then a short reason.'
)

_VERDICT = re.compile(r"^\W*(yes|no|true|false)\b", re.I)


def verdict(answer: str) -> bool | None:
    """True for an answer starting with yes/true, False for no/false, None otherwise."""
    match = _VERDICT.match(answer or "")
    if match is None:
        return None
    return match.group(1).lower() in ("yes", "true")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "command"


def _reasoning(result: RunResult) -> str:
    """The model's explanation and thinking of the last step, for error messages."""
    for record in reversed(result.steps):
        step = record.step or {}
        parts = [step.get("explanation"), step.get("thinking")]
        text = " | ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
        if text:
            return text
    return ""


class _Commands:
    """The commands, written once against a blocking `Environment` (sync or bridged)."""

    def __init__(
        self, env: Environment, model: BackendProtocol | str | Path, *, family: str,
        max_steps: int, trace_dir: str | Path | None, model_name: str | None,
        backend_options: dict[str, Any] | None, query_attempts: int, click_attempts: int,
        agent_options: dict[str, Any],
    ) -> None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
        for name, value in (("query_attempts", query_attempts), ("click_attempts", click_attempts)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        for reserved in ("env", "dry_run", "trace", "platform", "max_actions",
                         "stop_on_denial"):
            if reserved in agent_options:
                hint = ("pass trace_dir= to keep traces" if reserved == "trace"
                        else "each command decides it (queries never act)")
                raise ConfigError(f"PageAgent sets {reserved!r} itself: {hint}")
        policy = agent_options.pop("policy", None) or Policy()
        allowed_domains = agent_options.pop("allowed_domains", None)
        if allowed_domains is not None:
            policy = dataclasses.replace(policy, allowed_domains=list(allowed_domains))
        self.env = env
        self.family = family
        self.max_steps = max_steps
        self.query_attempts = query_attempts
        self.click_attempts = click_attempts
        self.policy = policy
        self.agent_options = agent_options
        self.trace_dir = Path(trace_dir) if trace_dir is not None else None
        self._owns_backend = not isinstance(model, BackendProtocol)  # the user's stays open
        # One backend for every command: a local checkpoint is loaded once.
        self.backend = make_backend(model, model_name=model_name, **(backend_options or {}))
        self._count = 0
        self.current: Agent | None = None
        self.last_result: RunResult | None = None

    # -- one agent per command ---------------------------------------------------------
    def _agent(self, kind: str, task: str, *, max_steps: int, dry_run: bool = False,
               allowed_actions: set[str] | None = None, **options: Any) -> Agent:
        self._count += 1
        policy = self.policy
        if allowed_actions is not None:
            base = policy.allowed_actions
            allowed = allowed_actions if base is None else allowed_actions & base
            policy = dataclasses.replace(policy, allowed_actions=set(allowed))
        trace: dict[str, Any] = {"trace": False}
        if self.trace_dir is not None:
            directory = self.trace_dir / f"{self._count:03d}-{kind}-{_slug(task)}"
            trace = {"trace": True, "trace_dir": directory}
        agent = Agent(self.backend, self.env, family=self.family, platform="web",
                      max_steps=max_steps, dry_run=dry_run, policy=policy,
                      **trace, **options, **self.agent_options)
        self.current = agent
        return agent

    def _finish(self, agent: Agent) -> RunResult:
        assert agent.result is not None
        self.current = None
        self.last_result = agent.result
        return agent.result

    # -- commands ------------------------------------------------------------------------
    def act(self, instruction: str, raise_on_failure: bool = True) -> RunResult:
        _check_text(instruction, "instruction")
        agent = self._agent("act", instruction, max_steps=self.max_steps)
        result = agent.run(instruction)
        self._finish(agent)
        if raise_on_failure and result.status not in SUCCESS_STATUSES:
            raise TaskFailedError(
                f"act({instruction!r}) did not succeed: the run ended with status "
                f"{result.status!r}{_detail(result)}", result=result,
            )
        return result

    def click(self, description: str) -> None:
        _check_text(description, "description")
        task = CLICK_TASK.format(description=description.strip())
        # The click runs inside the run, so its trace says what happened: the policy
        # refuses anything but a click (the model is told and asked again), the first
        # executed click ends the run as a success, and a user's denial ends it at once.
        agent = self._agent("click", task, max_steps=self.click_attempts,
                            allowed_actions={"click"}, max_actions=1, stop_on_denial=True)
        result = agent.run(task)
        self._finish(agent)
        clicked = next((r for r in result.steps if r.outcome == "executed"), None)
        if clicked is not None:
            logger.info("clicked %s for %r", (clicked.action or {}).get("target"), description)
            return
        denied = next((r for r in result.steps if r.outcome == "denied"), None)
        if denied is not None:
            raise ActionRefusedError(
                f"click({description!r}): the click is {denied.detail}; nothing was clicked"
            )
        raise TaskFailedError(
            f"click({description!r}): the model did not choose a click it was allowed "
            f"to make (run status {result.status!r}{_detail(result)}); nothing was "
            "clicked", result=result,
        )

    def query(self, question: str) -> str:
        _check_text(question, "question")
        result = self._ask("query", QUERY_TASK.format(question=question.strip()))
        if result.status not in SUCCESS_STATUSES or result.answer is None:
            raise TaskFailedError(
                f"query({question!r}): the model gave no answer (run status "
                f"{result.status!r}{_detail(result)})", result=result,
            )
        return result.answer

    def assert_that(self, statement: str) -> None:
        _check_text(statement, "statement")
        result = self._ask("assert", ASSERT_TASK.format(statement=statement.strip()))
        answer = result.answer if result.status in SUCCESS_STATUSES else None
        if answer is None:
            raise TaskFailedError(
                f"assert_that({statement!r}): the model gave no verdict (run status "
                f"{result.status!r}{_detail(result)})", result=result,
            )
        holds = verdict(answer)
        if holds:
            return
        reasoning = _reasoning(result)
        what = "is false" if holds is False else "could not be confirmed (no clear yes/no)"
        raise AssertionError(
            f"{statement!r} {what} on this page; the model answered {answer!r}"
            + (f"; its reasoning: {reasoning}" if reasoning else "")
        )

    def _ask(self, kind: str, task: str) -> RunResult:
        """A question run: no page action is allowed or executed (dry run)."""
        agent = self._agent(kind, task, max_steps=self.query_attempts, dry_run=True,
                            allowed_actions=set())
        agent.run(task)
        return self._finish(agent)

    def close(self) -> None:
        if self._owns_backend:
            self.backend.close()


def _check_text(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def _detail(result: RunResult) -> str:
    parts = []
    if result.error:
        parts.append(result.error)
    elif result.steps and result.steps[-1].detail:
        parts.append(result.steps[-1].detail)
    if result.trace_dir:
        parts.append(f"trace: {result.trace_dir}")
    return f": {'; '.join(parts)}" if parts else ""


class _PageAgentBase:
    """The constructor and plumbing `PageAgent` and `AsyncPageAgent` share."""

    def __init__(
        self, page: Any, model: BackendProtocol | str | Path, *, family: str = "glm-4.1v",
        set_of_marks: bool | None = None, max_steps: int = 15,
        trace_dir: str | Path | None = None, model_name: str | None = None,
        backend_options: dict[str, Any] | None = None, query_attempts: int = 2,
        click_attempts: int = 2, env_options: dict[str, Any] | None = None,
        **agent_options: Any,
    ) -> None:
        if set_of_marks is None:
            set_of_marks = uses_element_labels(family)
        self.page = page
        env = self._attach(page, set_of_marks, env_options or {})
        try:
            if uses_element_labels(family):  # refuse now, not at the first command
                env.enable_element_labels()
            self._commands = _Commands(
                env, model, family=family, max_steps=max_steps, trace_dir=trace_dir,
                model_name=model_name, backend_options=backend_options,
                query_attempts=query_attempts, click_attempts=click_attempts,
                agent_options=dict(agent_options),
            )
        except BaseException:
            self._detach_after_error()
            raise

    def _attach(self, page: Any, set_of_marks: bool, env_options: dict[str, Any]) -> Environment:
        """The blocking environment the commands drive on `page`."""
        raise NotImplementedError

    def _detach_after_error(self) -> None:
        """Undo `_attach` when the constructor fails (nothing by default)."""

    @property
    def backend(self) -> Backend:
        return self._commands.backend

    @property
    def last_result(self) -> RunResult | None:
        """The run of the last command (steps, answer, trace directory)."""
        return self._commands.last_result

    def stop(self) -> None:
        """Stop the running command at its next step (from another thread)."""
        if self._commands.current is not None:
            self._commands.current.stop()


class PageAgent(_PageAgentBase):
    """Natural-language commands on a sync playwright `Page` you own.

    `model` is a `Backend` (or any `BackendProtocol` object), an OpenAI-compatible URL (with
    `model_name=`), a checkpoint directory or a replay file, as for `Agent`. `set_of_marks`
    defaults to what the family's web prompt needs (labels for GLM-4.1V / GLM-4.5V).
    `trace_dir`, when given, keeps one trace per command in numbered subdirectories. Other
    keyword arguments go to `Agent` (`settle_time`, `confirm`, `secrets`,
    `max_parse_retries`, generation parameters, `allowed_domains`, `policy`, ...).
    """

    def _attach(self, page: Any, set_of_marks: bool, env_options: dict[str, Any]) -> Environment:
        from .envs.web import WebEnv

        self.env = WebEnv(page, set_of_marks=set_of_marks, **env_options)
        return self.env

    def _detach_after_error(self) -> None:
        self.env.close()

    def act(self, instruction: str, *, raise_on_failure: bool = True) -> RunResult:
        """Carry out `instruction` on the page; TaskFailedError unless it succeeds."""
        return self._commands.act(instruction, raise_on_failure)

    def click(self, description: str) -> None:
        """Click the element `description` names (the model picks it; only a click runs)."""
        self._commands.click(description)

    def query(self, question: str) -> str:
        """The model's answer to `question` about the page; the page is not touched."""
        return self._commands.query(question)

    extract = query

    def assert_that(self, statement: str) -> None:
        """AssertionError (with the model's reasoning) unless `statement` holds."""
        self._commands.assert_that(statement)

    check = assert_that

    def close(self) -> None:
        """Detach from the page (left open) and close a backend this agent created."""
        self.env.close()
        self._commands.close()

    def __enter__(self) -> PageAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LoopBridgeEnv(Environment):
    """A blocking `Environment` over an `AsyncWebEnv`: each call runs on the user's loop.

    Used from the worker thread that runs the agent loop; playwright's async objects are
    only ever touched on their own event loop.
    """

    platform = "web"

    def __init__(self, async_env: Any) -> None:
        super().__init__()
        self.async_env = async_env
        self.loop: asyncio.AbstractEventLoop | None = None

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self.loop is None or self.loop.is_closed():
            raise EnvError("the event loop of this AsyncPageAgent is gone; create a new one")
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:
            raise EnvError("the page operation was cancelled on the event loop") from exc

    def _capture(self) -> Observation:
        return self._call(self.async_env.observe)

    def execute(self, action: BaseAction, observation: Observation | None = None) -> ActionOutcome:
        return self._call(lambda: self.async_env.execute(action, observation))

    def supported_actions(self) -> set[str]:
        return self.async_env.supported_actions()

    def types_into_password(self, action: TypeText, observation: Observation) -> bool:
        return self._call(lambda: self.async_env.types_into_password(action, observation))

    def enable_element_labels(self) -> bool:
        return self.async_env.enable_element_labels()

    def register_handler(self, action_type: str, handler: ActionHandler) -> None:
        self.async_env.register_handler(action_type, handler)


class AsyncPageAgent(_PageAgentBase):
    """`PageAgent` for a `playwright.async_api` page: the same commands, awaited."""

    def _attach(self, page: Any, set_of_marks: bool, env_options: dict[str, Any]) -> Environment:
        from .envs.web import AsyncWebEnv

        self.async_env = AsyncWebEnv(page, set_of_marks=set_of_marks, **env_options)
        self._bridge = _LoopBridgeEnv(self.async_env)
        self._lock: asyncio.Lock | None = None
        return self._bridge

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        if self._bridge.loop is not None and self._bridge.loop is not loop \
                and not self._bridge.loop.is_closed():
            raise ConfigError("an AsyncPageAgent must be used on the event loop of its page")
        self._bridge.loop = loop
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one command at a time: they share the page and history
            try:
                return await asyncio.to_thread(fn, *args)
            except asyncio.CancelledError:
                self.stop()  # the worker ends at its next step boundary
                raise

    async def act(self, instruction: str, *, raise_on_failure: bool = True) -> RunResult:
        return await self._run(self._commands.act, instruction, raise_on_failure)

    async def click(self, description: str) -> None:
        await self._run(self._commands.click, description)

    async def query(self, question: str) -> str:
        return await self._run(self._commands.query, question)

    extract = query

    async def assert_that(self, statement: str) -> None:
        await self._run(self._commands.assert_that, statement)

    check = assert_that

    async def close(self) -> None:
        """Detach from the page (left open) and close a backend this agent created."""
        await self.async_env.close()
        self._commands.close()

    async def __aenter__(self) -> AsyncPageAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["PageAgent", "AsyncPageAgent", "verdict", "SUCCESS_STATUSES"]
