"""Asking the model for one step: mask, call, stream, parse, re-ask, time out.

    call = ModelCall(backend, dialect, vault, generation, max_parse_retries=2)
    step = call.ask(messages, record, deadline, image_names)   # a Step, or None

Every message is masked for the run's secrets before it leaves (`SecretVault`); the answer
is streamed through `on_text` (masked too) when the backend can stream; an answer the
dialect cannot parse is re-asked with the dialect's correction up to `max_parse_retries`
times; a call that outlives `model_timeout` or the step's deadline raises `BackendError`.
What happened lands in the step record: the prompt as sent, failed attempts, the answer
used, and the timings (`prompt`, `model`, `model_ttft`, `model_thinking_end`,
`model_prefill`, `model_cached_tokens`, `parse`; see trace.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .backends.base import BackendProtocol
from .dialects.base import Dialect, Step
from .errors import BackendError, ParseError
from .messages import Message
from .secrets import SecretVault
from .trace import Attempt, StepRecord, prompt_summary

logger = logging.getLogger("glmv_agent")


@dataclass
class ModelCall:
    """How the agent asks its model; `seconds` adds up every call, failed ones included."""

    backend: BackendProtocol
    dialect: Dialect
    vault: SecretVault
    generation: dict[str, Any]
    max_parse_retries: int = 2
    model_timeout: float | None = None
    on_text: Callable[[str], None] | None = None
    seconds: float = 0.0

    def ask(self, messages: list[Message], record: StepRecord, deadline: float | None,
            image_names: dict[int, str]) -> Step | None:
        """The parsed answer, re-asking on unparseable ones; None if it never parsed
        (`record.error` then says why the last one did not)."""
        current = messages
        record.timings["model"] = record.timings["parse"] = 0.0
        for attempt in range(self.max_parse_retries + 1):
            t = time.monotonic()
            sent = self.vault.mask_messages(current)
            if attempt == 0:
                record.prompt = prompt_summary(sent, image_names)
            record.timings["prompt"] = record.timings.get("prompt", 0.0) + time.monotonic() - t
            t = time.monotonic()
            text = self._call(sent, deadline, record.timings)
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

    def _call(self, messages: list[Message], deadline: float | None,
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
                text = call_with_timeout(lambda: self._generate(messages, timings), timeout)
        finally:
            self.seconds += time.monotonic() - started
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


def call_with_timeout(fn: Callable[[], str], timeout: float) -> str:
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
