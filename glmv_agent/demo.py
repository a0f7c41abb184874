"""`glmv-agent demo`: the whole loop on a bundled web app, in a real headless browser.

The app (`data/demo/index.html`, a tiny bookstore) is served on 127.0.0.1. With a real
model (`--model` / `--base-url`) the agent solves the task itself. Without one, the
model's answers come from a recording (`data/demo/replay-<family>.json`): real
GLM-format answers replayed in order, clearly announced as a replay, while everything
else (browser, set-of-marks, parsing, execution, trace, report) runs for real.
"""

from __future__ import annotations

import functools
import json
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ConfigError

DEMO_TASK = "Find the price of the book Dune by Frank Herbert at Pagebound Books."
REPLAY_FAMILIES = ("glm-4.1v",)


def demo_dir() -> Path:
    return Path(str(resources.files("glmv_agent") / "data" / "demo"))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args: Any) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` on a free 127.0.0.1 port for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def replay_answers(family: str) -> list[str]:
    if family not in REPLAY_FAMILIES:
        raise ConfigError(
            f"the demo has recorded answers for {', '.join(REPLAY_FAMILIES)} only; pass "
            f"--family glm-4.1v, or give a real model with --model / --base-url"
        )
    path = demo_dir() / f"replay-{family}.json"
    return json.loads(path.read_text("utf-8"))


def run_demo(model: Any = None, *, family: str = "glm-4.1v", headless: bool = True,
             trace_dir: str | Path | None = None, output: Callable[[str], None] = print,
             **agent_kwargs: Any) -> tuple[Any, Path]:
    """Run the demo task; returns (RunResult, path of the HTML report)."""
    from .agent import Agent
    from .backends.replay import ReplayBackend
    from .envs.web import WebEnv
    from .report import render_report

    if model is None:
        model = ReplayBackend(replay_answers(family))
        output("No --model or --base-url given: replaying RECORDED model answers "
               f"({family} format). Browser, parsing, actions and trace are real.")
    with serve_directory(demo_dir()) as url:
        env = WebEnv.launch(url=url + "index.html", headless=headless, set_of_marks=True,
                            allowed_domains=["127.0.0.1"])
        try:
            agent = Agent(model, env, family=family, max_steps=8,
                          trace_dir=trace_dir, **agent_kwargs)
            output(f"task: {DEMO_TASK}")
            from .console import print_record  # the same live progress lines as `run`

            for record in agent.iter_run(DEMO_TASK):
                print_record(record, show_thinking=True, output=output)
            result = agent.result
        finally:
            env.close()
    assert result is not None and result.trace_dir is not None
    return result, render_report(result.trace_dir)
