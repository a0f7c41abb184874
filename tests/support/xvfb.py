"""Test helpers: a real Xvfb display and the real Tk app (tests/support/desktop_app.py) on it."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from glmv_agent.actions import Point, Target
from glmv_agent.envs._xvfb import VirtualDisplay, stop_process
from glmv_agent.geometry import pixel_to_normalized

APP = Path(__file__).with_name("desktop_app.py")

Event = dict[str, Any]


def require_x_tools() -> None:
    missing = [tool for tool in ("Xvfb", "xdotool", "xclip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"desktop tests need {', '.join(missing)} installed")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("desktop tests need python3-tk")


class TkApp:
    """The test application as a subprocess; collects its JSON events from stdout."""

    def __init__(self, display: str) -> None:
        env = {**os.environ, "DISPLAY": display}
        self.process = subprocess.Popen(
            [sys.executable, str(APP)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8",
        )
        self.events: list[Event] = []
        self._queue: queue.Queue[Event] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.cursor = 0
        self.ready = self.wait_for(lambda e: e["event"] == "ready", timeout=20)
        self.screen: tuple[int, int] = tuple(self.ready["screen"])  # type: ignore[assignment]
        self.widgets: dict[str, list[int]] = self.ready["widgets"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(json.loads(line))

    def _drain(self) -> None:
        while True:
            try:
                self.events.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def mark(self) -> None:
        """Only events after this point count for the next wait_for."""
        self._drain()
        self.cursor = len(self.events)

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """The first event from the cursor on that matches; fails the test after `timeout`."""
        deadline = time.monotonic() + timeout
        index = self.cursor
        while True:
            self._drain()
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if predicate(event):
                    self.cursor = index
                    return event
            if time.monotonic() > deadline:
                stderr = ""
                if self.process.poll() is not None and self.process.stderr is not None:
                    stderr = self.process.stderr.read()
                raise AssertionError(
                    f"no matching app event within {timeout}s; events since mark: "
                    f"{self.events[self.cursor:]}; app stderr: {stderr}"
                )
            time.sleep(0.02)

    def settle(self, quiet: float = 0.3) -> None:
        """Wait until the app has produced no events for `quiet` seconds (not asserted)."""
        last = -1
        while True:
            time.sleep(quiet)
            self._drain()
            if len(self.events) == last:
                return
            last = len(self.events)

    def events_since_mark(self) -> list[Event]:
        self._drain()
        return self.events[self.cursor:]

    def centre_pixel(self, name: str) -> tuple[int, int]:
        x, y, w, h = self.widgets[name]
        return x + w // 2, y + h // 2

    def target_at(self, px: int, py: int) -> Target:
        """The normalized target of screen pixel (px, py), as a model would give it."""
        point = pixel_to_normalized(px, py, *self.screen)
        return Target(point=Point(x=point.x, y=point.y))

    def target(self, name: str) -> Target:
        return self.target_at(*self.centre_pixel(name))

    def close(self) -> None:
        stop_process(self.process)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


# Fixtures for the modules that drive the assistant on a 1024x768 display with the Tk app
# (import them by name: `from xvfb import app, display`).
@pytest.fixture(scope="module")
def display() -> Iterator[VirtualDisplay]:
    require_x_tools()
    with VirtualDisplay(1024, 768) as virtual:
        yield virtual


@pytest.fixture
def app(display: VirtualDisplay) -> Iterator[TkApp]:
    application = TkApp(display.name)
    try:
        yield application
    finally:
        application.close()
