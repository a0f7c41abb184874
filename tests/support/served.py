"""`glmv-agent serve`'s app under real uvicorn on 127.0.0.1, for the server tests.

`running_server(engine, config)` yields a `Served` (its URL, scheduler and config) and stops
uvicorn on exit; `png_data_url` and `user` build request parts.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image

from glmv_agent.server import ImagePolicy, ServerConfig, bind_socket, create_app, uvicorn_server
from glmv_agent.server.scheduler import BatchScheduler


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    scheduler: BatchScheduler
    config: ServerConfig

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@contextmanager
def running_server(engine: Any, config: ServerConfig, policy: ImagePolicy | None = None) -> Iterator[Served]:
    """create_app under real uvicorn in a thread, on a free 127.0.0.1 port."""
    sock = bind_socket("127.0.0.1", 0)
    app = create_app(engine, config, policy)
    server = uvicorn_server(app, config, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn did not start")
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.scheduler, config)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.02)


def png_data_url(size: tuple[int, int] = (64, 48), color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]
