"""Run test code in a thread of its own, with its exceptions re-raised in the caller's."""

from __future__ import annotations

import threading
from typing import Any


def in_own_thread(work: Any) -> Any:
    """Run `work()` in a new thread: a sync playwright already owns the calling thread's event loop."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # re-raised in the test's thread below
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    if "error" in box:
        raise box["error"]
    assert "result" in box, "the scenario did not finish"
    return box["result"]
