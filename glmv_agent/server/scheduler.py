"""Admission and batching: concurrent requests decoded together by one engine.

Admission counts every request from the moment its body is valid until its answer is
sent; beyond `max_queue` the server answers 503 instead of piling up work (and images are
only decoded once admitted). Admitted, preprocessed requests wait in a FIFO queue. One
scheduler thread owns the engine: when it is free it takes the oldest waiting request and
every other waiting request with the *same generation settings* (sampling, stop strings,
max_tokens, thinking on/off), up to `max_batch`, and decodes them as one left-padded
batch ("batch what is queued when a batch starts"; requests arriving mid-batch wait for
the next one). When the engine is idle and other requests are still on their way in
(body being read, validated or preprocessed), it waits up to `batch_wait_s` after the
oldest one was queued for them to join (clients that send together get one batch, not
1 + 3); a lone request never waits. Grouping by identical settings keeps every request's own settings without
per-row options in the engine; greedy requests get the same tokens batched as alone.
Seeded sampling runs alone, since a batch shares one random generator.

Cancellation: a request whose client went away is dropped if still waiting; inside a
running batch it stops receiving text, and once every request of the batch has gone the
batch is stopped at its next token (the engine's `on_text` callback raises).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .protocol import RequestError

log = logging.getLogger("glmv_agent.server")


class _BatchAbandoned(Exception):
    """Raised from `on_text` when no one is waiting for the batch any more."""


@dataclass
class Ticket:
    """One request inside the scheduler, and the channel its events come back on.

    Events on `events` (an asyncio.Queue of the request's event loop): ("delta", text) when
    `stream` is set, then exactly one of ("done", GenerationResult), ("error", exception)."""

    messages: list[dict[str, Any]]
    options: dict[str, Any]  # engine generation options, normalized (see `group_key`)
    enable_thinking: bool | None
    key: Hashable
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    streamed: bool = False  # text already went out (it cannot be generated again)

    def cancel(self) -> None:
        self.cancelled.set()

    def send(self, kind: str, value: Any) -> None:
        """Hand an event to the request's event loop (called from the scheduler thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancel()


def group_key(config: Any, enable_thinking: bool | None, unique: object) -> tuple[Hashable, dict[str, Any]]:
    """The batching key of a GenerationConfig, and the options to generate with.

    Greedy decoding ignores temperature, top-p/k and seed, so they are reset before
    comparing (more requests can share a batch; the tokens are the same). Seeded sampling
    gets a key of its own (`unique`)."""
    if config.greedy:
        config = dataclasses.replace(config, do_sample=False, temperature=1.0, top_p=1.0, top_k=0, seed=None)
    options = dataclasses.asdict(config)
    key: tuple[Hashable, ...] = (config, enable_thinking)
    if not config.greedy and config.seed is not None:
        key += (unique,)
    return key, options


class Admission:
    """One admitted request's slot; `release()` may be called more than once."""

    def __init__(self, scheduler: BatchScheduler) -> None:
        self._scheduler: BatchScheduler | None = scheduler

    def release(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler._release()


class BatchScheduler:
    """The admission counter, the waiting queue and the thread that runs batches."""

    def __init__(self, engine: Any, *, max_queue: int, max_batch: int, batch_wait_s: float = 0.0) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.admitted = 0
        self.arriving = 0  # requests whose body is being read and validated (not admitted yet)
        self.batch_sizes: deque[int] = deque(maxlen=256)  # of recent batches (/health, tests)
        self.abandoned = 0  # batches stopped because every client had gone
        self._waiting: deque[Ticket] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._running_batch: list[Ticket] = []
        self._thread: threading.Thread | None = None

    # ---- admission -------------------------------------------------------------------

    @contextmanager
    def arrival(self) -> Iterator[None]:
        """Count a request from its first byte of body until it is admitted or refused."""
        with self._lock:
            self.arriving += 1
        try:
            yield
        finally:
            with self._lock:
                self.arriving -= 1
                self._lock.notify_all()

    def admit(self) -> Admission:
        """Take a slot or raise 503."""
        with self._lock:
            if self.admitted >= self.max_queue:
                raise RequestError(f"server busy: {self.admitted} requests already admitted; retry later",
                                   503, "server_busy")
            self.admitted += 1
        return Admission(self)

    def _release(self) -> None:
        with self._lock:
            self.admitted -= 1
            self._lock.notify_all()  # a request that will not be submitted: stop waiting for it

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Requests in the batch being generated."""
        return len(self._running_batch)

    # ---- queue -----------------------------------------------------------------------

    def submit(self, ticket: Ticket) -> None:
        with self._lock:
            if self._stopping:
                raise RequestError("server is shutting down", 503, "server_busy")
            self._waiting.append(ticket)
            self._lock.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="glmv-batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish: waiting requests fail with 503, a running batch is abandoned."""
        with self._lock:
            self._stopping = True
            for ticket in self._running_batch:
                ticket.cancel()
            while self._waiting:
                self._waiting.popleft().send("error", RequestError("server is shutting down", 503, "server_busy"))
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _gather(self) -> None:
        """Wait (briefly) for requests still on their way in to join (caller holds the lock)."""
        deadline = self._waiting[0].submitted + self.batch_wait_s
        while not self._stopping and self._waiting:
            key = self._waiting[0].key
            on_the_way = self.arriving + self.admitted - len(self._waiting)
            if on_the_way <= 0 or sum(t.key == key for t in self._waiting) >= self.max_batch:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._lock.wait(remaining)

    def _next_batch(self) -> list[Ticket]:
        """The oldest waiting request and those that share its settings (caller holds the lock)."""
        while self._waiting and self._waiting[0].cancelled.is_set():
            self._waiting.popleft()
        if not self._waiting:
            return []
        key = self._waiting[0].key
        batch = [t for t in self._waiting if t.key == key and not t.cancelled.is_set()][: self.max_batch]
        chosen = {id(t) for t in batch}
        self._waiting = deque(t for t in self._waiting if id(t) not in chosen and not t.cancelled.is_set())
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                self._gather()
                batch = self._next_batch()
                self._running_batch = batch
            if batch:
                self._generate(batch)
            with self._lock:
                self._running_batch = []

    def _generate(self, batch: list[Ticket]) -> None:
        """Run one batch; if it fails, run its requests alone so one bad request fails alone."""
        def on_text(row: int, delta: str) -> None:
            if all(t.cancelled.is_set() for t in batch):
                raise _BatchAbandoned
            ticket = batch[row]
            if ticket.stream and not ticket.cancelled.is_set():
                ticket.streamed = True
                ticket.send("delta", delta)

        self.batch_sizes.append(len(batch))
        try:
            results = self.engine.generate_batch([t.messages for t in batch],
                                                 enable_thinking=batch[0].enable_thinking,
                                                 on_text=on_text, **batch[0].options)
        except _BatchAbandoned:
            self.abandoned += 1
            log.info("batch of %d stopped: every client went away", len(batch))
            return
        except Exception as exc:  # reported to the clients of this batch, the server keeps serving
            if len(batch) > 1:
                log.warning("batch of %d failed (%s); running its requests alone", len(batch), exc)
                for ticket in batch:
                    if ticket.streamed:  # half an answer went out already: report, don't restart
                        ticket.send("error", exc)
                    elif not ticket.cancelled.is_set():
                        self._generate([ticket])
                return
            log.exception("generation failed")
            batch[0].send("error", exc)
            return
        for ticket, result in zip(batch, results):
            ticket.send("done", result)
