"""Failure injection through the public surfaces, with real things breaking.

Each test breaks something real -- a Chromium page that closes itself or a browser process
killed mid-run, an HTTP model server on 127.0.0.1 that dies or turns to 500s, safetensors
shards cut short, corrupt and decompression-bomb PNGs, a model that answers garbage,
Ctrl+C to a `glmv-agent run` subprocess, a torn trace -- and asserts the exact outcome: the
error type and what its message names, the RunResult status, the CLI exit code and output,
and that the trace on disk still holds every step done so far. Nothing is mocked: the
"model" is scripted (ReplayBackend, or a real HTTP server answering in the OpenAI format),
which stands in for 9B weights that cannot run here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from glmv_agent.agent import Agent
from glmv_agent.backends.base import Backend
from glmv_agent.backends.openai import OpenAIBackend
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.errors import BackendError, CheckpointError, ConfigError, InputError, ParseError

from scripted_env import FormEnv, norm
from paths import ROOT

CLI = [sys.executable, "-m", "glmv_agent.cli"]


# ----------------------------------------------------------------------------- helpers


def pc_click(x: float, y: float) -> str:
    """A GLM-4.1V PC answer clicking (x, y) on its 0-1000 grid (text, so any number goes)."""
    return f"<think>click</think><answer>Action: left_click(start_box='[{x},{y}]')</answer>"


PC_DONE = "<think>done</think><answer>Action: DONE()</answer>"


def read_trace(trace_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run = json.loads((trace_dir / "run.json").read_text("utf-8"))
    lines = (trace_dir / "steps.jsonl").read_text("utf-8").splitlines()
    return run, [json.loads(line) for line in lines if line.strip()]


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def good_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


BAD_IMAGES = {
    "truncated": good_png()[:60],
    "zero-byte": b"",
    "corrupt": b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8,
    "bomb": png_with_size(100_000, 100_000),
}


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT)


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live process below `pid` (a /proc scan, no psutil)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":  # a zombie is dead, only not yet reaped
            continue
        parents[int(entry.name)] = int(fields[1])
        commands[int(entry.name)] = cmd
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2:].split()[0] != "Z"


# ----------------------------------------------------------------------------- web pages

CLICK_LOG_PAGE = """<!doctype html><html><head><title>click log</title><style>
html, body { margin: 0; width: 100%; height: 100%; }
#close { position: absolute; left: 0; top: 0; width: 200px; height: 100px; }
</style></head><body>
<button id="close" onclick="setTimeout(() => window.close(), 50)">close me</button>
<script>
window.__clicks = [];
document.addEventListener('mousedown', e => window.__clicks.push([e.clientX, e.clientY]));
</script></body></html>"""


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        body = CLICK_LOG_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/clicks.html"
    httpd.shutdown()
    httpd.server_close()


def launch_web(url: str, viewport: tuple[int, int] = (800, 600)) -> Any:
    pytest.importorskip("playwright")
    from glmv_agent.envs.web import WebEnv, default_executable_path

    if default_executable_path() is None:
        pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)")
    return WebEnv.launch(url, viewport=viewport)


# ----------------------------------------------------------------------------- model server


class ModelServer:
    """A real OpenAI-compatible chat-completions server on 127.0.0.1 following a script.

    Each request takes the next entry: a string is answered as the model's text, 500 is an
    internal error, "die" shuts the server down without answering, "block" holds the
    request until the test releases it. When the script runs out the last entry repeats.
    """

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.requests = 0
        self.arrived = threading.Event()  # set when a "block" request is being held
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                entry = outer.script[min(outer.requests, len(outer.script) - 1)]
                outer.requests += 1
                if entry == "die":
                    outer.close_soon()
                    self.close_connection = True
                    return
                if entry == "block":
                    outer.arrived.set()
                    outer.release.wait(60)
                    entry = PC_DONE
                if entry == 500:
                    self._reply(500, {"error": {"message": "engine crashed", "code": 500}})
                    return
                self._reply(200, {
                    "id": "x", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": entry}}],
                })

            def _reply(self, status: int, data: dict[str, Any]) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Retry-After", "0")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was interrupted while waiting (Ctrl+C test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self._closed = False

    def close_soon(self) -> None:
        # shutdown() waits for serve_forever, so it cannot run on a handler thread.
        threading.Thread(target=self.close, daemon=True).start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.release.set()
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def model_server() -> Iterator[Any]:
    servers: list[ModelServer] = []

    def make(script: list[Any]) -> ModelServer:
        servers.append(ModelServer(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def dead_url() -> str:
    """A 127.0.0.1 URL nothing listens on (a port bound, then released)."""
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    return f"http://127.0.0.1:{port}/v1"


# ============================================================================ the browser


class CloseTabBackend(Backend):
    """A scripted model while whose second answer the user closes the browser tab.

    (Playwright's sync API is single-threaded, so the "user" acts inside the model call,
    i.e. between step 1's action and step 2's; a page's own `window.close()` is ignored by
    Chromium once the tab has history, as any navigated tab has.)
    """

    name = "close-tab"

    def __init__(self, env: Any, answers: list[str]) -> None:
        self.env, self.answers, self.calls = env, answers, 0

    def complete(self, messages: Any, **params: Any) -> str:
        self.calls += 1
        if self.calls == 2:
            self.env.page.close()
        return self.answers[self.calls - 1]


def test_tab_closed_by_the_user_mid_run_ends_with_env_error(page_url: str,
                                                            tmp_path: Path) -> None:
    env = launch_web(page_url)
    try:
        backend = CloseTabBackend(env, [pc_click(500, 500), pc_click(600, 600), PC_DONE])
        agent = Agent(backend, env, family="glm-4.1v", platform="pc", settle_time=0,
                      trace_dir=tmp_path / "trace")
        result = agent.run("click twice")
    finally:
        env.close()
    assert result.status == "error"
    assert "EnvError" in result.error and "closed" in result.error and "WebEnv" in result.error
    assert [s.outcome for s in result.steps] == ["executed", "error"]
    assert backend.calls == 2  # the run ended there: no third model call
    run, steps = read_trace(tmp_path / "trace")
    assert run["status"] == "error" and run["steps"] == 2
    assert "EnvError" in run["error"]
    assert steps[0]["outcome"] == "executed" and steps[0]["action"]["type"] == "click"
    assert steps[1]["outcome"] == "error" and "closed" in steps[1]["error"]
    assert steps[1]["action"]["type"] == "click"  # parsed, recorded, but could not run
    assert (tmp_path / "trace" / steps[0]["screenshot"]).is_file()


class KillBrowserBackend(Backend):
    """A scripted model during whose second call the user's browser dies (SIGKILL)."""

    name = "kill-browser"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls = 0
        self.killed: list[int] = []

    def complete(self, messages: Any, **params: Any) -> str:
        self.calls += 1
        if self.calls == 2:
            for pid, cmd in descendants(os.getpid()).items():
                if "chrom" in cmd and "--type=" not in cmd:  # the browser, not its helpers
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
        return self.answers[self.calls - 1]


def test_browser_killed_between_steps_nothing_runs_after(page_url: str, tmp_path: Path) -> None:
    env = launch_web(page_url)
    backend = KillBrowserBackend([pc_click(700, 700), pc_click(800, 800), PC_DONE])
    try:
        agent = Agent(backend, env, family="glm-4.1v", platform="pc", settle_time=0,
                      trace_dir=tmp_path / "trace")
        result = agent.run("click twice")
    finally:
        env.close()
    assert backend.killed, "no Chromium process found to kill"
    assert result.status == "error"
    assert "EnvError" in result.error and "WebEnv" in result.error
    assert [s.outcome for s in result.steps] == ["executed", "error"]
    run, steps = read_trace(tmp_path / "trace")
    assert run["status"] == "error" and len(steps) == 2
    assert steps[1]["action"]["type"] == "click" and steps[1]["outcome"] == "error"


# ============================================================================ the model server


def test_server_answers_once_then_dies(model_server: Any, tmp_path: Path) -> None:
    x, y = norm("plus")
    server = model_server([pc_click(x * 1000, y * 1000), "die"])
    env = FormEnv()
    agent = Agent(server.url, env, family="glm-4.1v", model_name="m", settle_time=0,
                  backend_options={"max_retries": 2, "backoff": 0.01},
                  trace_dir=tmp_path / "trace")
    result = agent.run("press plus")
    assert env.state.counter == 1  # step 1 really ran
    assert result.status == "error"
    assert "BackendError" in result.error and server.url in result.error
    assert "after 2 retries" in result.error
    run, steps = read_trace(tmp_path / "trace")
    assert run["status"] == "error" and [s["outcome"] for s in steps] == ["executed", "error"]
    assert steps[0]["response"].startswith("<think>click")


def test_server_turns_to_500s_retries_then_backend_error(model_server: Any, tmp_path: Path) -> None:
    x, y = norm("plus")
    server = model_server([pc_click(x * 1000, y * 1000), 500])
    backend = OpenAIBackend(server.url, "m", max_retries=3, backoff=0.01)
    assert backend.complete([{"role": "user", "content": "hi"}]).startswith("<think>click")
    with pytest.raises(BackendError) as info:  # then 1 try + 3 retries, all HTTP 500
        backend.complete([{"role": "user", "content": "hi"}])
    assert server.requests == 1 + 4
    assert "HTTP 500" in str(info.value) and "engine crashed" in str(info.value)
    assert "after 3 retries" in str(info.value) and server.url in str(info.value)

    server.requests = 0
    env = FormEnv()
    agent = Agent(OpenAIBackend(server.url, "m", max_retries=1, backoff=0.01), env,
                  family="glm-4.1v", settle_time=0, trace_dir=tmp_path / "trace")
    result = agent.run("press plus")
    assert env.state.counter == 1 and result.status == "error"
    assert "HTTP 500" in result.error
    run, steps = read_trace(tmp_path / "trace")
    assert run["status"] == "error" and steps[0]["outcome"] == "executed"


def test_cli_run_with_dead_server_exits_3_naming_the_url(page_url: str, tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    url = dead_url()
    proc = run_cli("run", "do it", "--env", "web", "--url", page_url, "--base-url", url,
                   "--model-name", "m", "--trace-dir", str(tmp_path / "trace"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert url in proc.stdout and "cannot reach the model server" in proc.stdout
    assert "status: error" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    run, steps = read_trace(tmp_path / "trace")
    assert run["status"] == "error" and len(steps) == 1


# ============================================================================ checkpoints


def broken_copy(source: Path, target: Path, how: str) -> Path:
    shutil.copytree(source, target)
    shards = sorted(target.glob("model-*.safetensors"))
    if how == "truncated":
        data = shards[-1].read_bytes()
        shards[-1].write_bytes(data[: len(data) // 2])
    elif how == "zero":
        shards[-1].write_bytes(b"")
    elif how == "missing_shard":
        shards[-1].unlink()
    elif how == "wrong_type":
        config = json.loads((target / "config.json").read_text())
        config["model_type"] = "llama"
        (target / "config.json").write_text(json.dumps(config))
    elif how == "bad_json":
        (target / "config.json").write_text('{"model_type": "glm4v",')
    return target


@pytest.mark.parametrize("how, error, names", [
    ("truncated", CheckpointError, "model-00002-of-00002.safetensors"),
    ("zero", CheckpointError, "model-00002-of-00002.safetensors"),
    ("missing_shard", CheckpointError, "model.safetensors.index.json"),
    ("wrong_type", ConfigError, "config.json"),
    ("bad_json", ConfigError, "config.json"),
])
def test_engine_load_broken_checkpoint(tiny_checkpoint: Path, tmp_path: Path, how: str,
                                       error: type, names: str) -> None:
    from glmv_agent.glm4v.engine import load

    path = broken_copy(tiny_checkpoint, tmp_path / how, how)
    with pytest.raises(error) as info:
        load(path, device="cpu")
    assert names in str(info.value) and str(path) in str(info.value)


def test_engine_load_missing_directory(tmp_path: Path) -> None:
    from glmv_agent.glm4v.engine import load

    with pytest.raises(CheckpointError, match="no config.json.*model/README.md"):
        load(tmp_path / "nowhere", device="cpu")


def test_cli_broken_checkpoints_exit_cleanly(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # The documented codes: 2 bad usage or configuration, 3 an environment/backend failure
    # (a checkpoint that cannot be loaded is the latter).
    truncated = broken_copy(tiny_checkpoint, tmp_path / "truncated", "truncated")
    proc = run_cli("serve", "--model", str(truncated), "--port", "0")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "model-00002-of-00002.safetensors" in proc.stdout and "truncated" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr

    proc = run_cli("serve", "--model", str(tmp_path / "missing"), "--port", "0")
    assert proc.returncode == 3 and str(tmp_path / "missing") in proc.stdout
    assert "no config.json" in proc.stdout and "Traceback" not in proc.stderr

    wrong = broken_copy(tiny_checkpoint, tmp_path / "wrong", "wrong_type")
    proc = run_cli("serve", "--model", str(wrong), "--port", "0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(wrong / "config.json") in proc.stdout and "'llama'" in proc.stdout


def test_cli_run_with_truncated_shard(tiny_checkpoint: Path, page_url: str,
                                      tmp_path: Path) -> None:
    truncated = broken_copy(tiny_checkpoint, tmp_path / "truncated", "truncated")
    proc = run_cli("run", "x", "--env", "web", "--url", page_url, "--model", str(truncated),
                   "--trace-dir", str(tmp_path / "trace"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert str(truncated / "model-00002-of-00002.safetensors") in proc.stdout
    assert "re-download" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


# ============================================================================ images


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> Any:
    from glmv_agent.glm4v.engine import load

    return load(tiny_checkpoint, device="cpu")


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_engine_chat_rejects_bad_images(engine: Any, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.png"
    path.write_bytes(BAD_IMAGES[kind])
    for source in (path, BAD_IMAGES[kind]):
        messages = [{"role": "user", "content": [{"type": "image", "image": source},
                                                 {"type": "text", "text": "what is this?"}]}]
        with pytest.raises(InputError) as info:
            engine.chat(messages, max_new_tokens=2)
        text = str(info.value)
        assert ("too large" in text) if kind == "bomb" else ("cannot decode" in text)
        if isinstance(source, Path):
            assert str(path) in text
    # The engine is still usable afterwards.
    good = [{"role": "user", "content": [{"type": "image", "image": Image.open(io.BytesIO(good_png()))},
                                         {"type": "text", "text": "what is this?"}]}]
    assert isinstance(engine.chat(good, max_new_tokens=2), str)


def test_server_rejects_bad_images_and_keeps_serving(tiny_checkpoint: Path) -> None:
    proc = subprocess.Popen([*CLI, "serve", "--model", str(tiny_checkpoint), "--port", "0",
                             "--model-name", "x",
                             "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line, "server exited before serving"
        base = line.split(" at ")[1].split()[0]
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the pipe

        def ask(image_bytes: bytes) -> httpx.Response:
            url = "data:image/png;base64," + base64.b64encode(image_bytes).decode()
            body = {"model": "x", "max_tokens": 2, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "what is this?"}]}]}
            return httpx.post(f"{base}/chat/completions", json=body, timeout=60)

        for kind, data in sorted(BAD_IMAGES.items()):
            response = ask(data)
            assert 400 <= response.status_code < 500, (kind, response.text)
            message = response.json()["error"]["message"]
            assert "image" in message, (kind, message)
        response = ask(good_png())
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["role"] == "assistant"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0


# ============================================================================ model output


GARBAGE = [
    "",
    "I think I should click somewhere",
    "<answer>Action: left_click(start_box='[nan,nan]')</answer>",
    "<answer>Action: left_click(start_box=</answer>",
    "\x00\x01\x02 " * 50,
]


def test_garbage_forever_is_reasked_a_bounded_number_of_times(page_url: str,
                                                               tmp_path: Path) -> None:
    env = launch_web(page_url)
    backend = ReplayBackend(GARBAGE * 20)
    try:
        agent = Agent(backend, env, family="glm-4.1v", platform="pc", max_parse_retries=2,
                      settle_time=0, trace_dir=tmp_path / "trace")
        result = agent.run("click the button")
        clicks = env.page.evaluate("window.__clicks")
    finally:
        env.close()
    assert clicks == []  # nothing was executed on the real page
    assert result.status == "unparseable" and "unparseable model output" in result.error
    assert len(backend.calls) == 3  # one try + max_parse_retries re-asks, then it stops
    (step,) = result.steps
    assert step.outcome == "parse_error" and step.action is None and len(step.attempts) == 3
    run, steps = read_trace(tmp_path / "trace")
    assert run["status"] == "unparseable"
    assert [a["response"] for a in steps[0]["attempts"]] == GARBAGE[:3]


def test_out_of_range_coordinates_never_click_off_screen(page_url: str, tmp_path: Path) -> None:
    width, height = 800, 600
    answers = [
        pc_click(1500, 2000),                       # beyond the grid: clamped to the edge
        pc_click(-5, -300),                         # negative: clamped to 0
        pc_click(99999999999999999999999, 500),     # gigantic integer: clamped
        "<answer>Action: left_click(start_box='[nan,300]')</answer>",  # refused: re-asked
        "<answer>Action: left_click(start_box='[1e999,300]')</answer>",
        pc_click(500, 500),
        PC_DONE,
    ]
    env = launch_web(page_url, viewport=(width, height))
    try:
        agent = Agent(ReplayBackend(answers), env, family="glm-4.1v", platform="pc",
                      settle_time=0, loop_limit=None, max_parse_retries=2,
                      trace_dir=tmp_path / "trace")
        result = agent.run("click around")
        clicks = env.page.evaluate("window.__clicks")
    finally:
        env.close()
    assert result.status == "success", result.error
    assert len(clicks) == 4
    for x, y in clicks:
        assert 0 <= x < width and 0 <= y < height
    assert clicks[0] == [width - 1, height - 1] and clicks[1] == [0, 0]
    assert clicks[3] == [400, 300]
    parse_step = result.steps[3]
    assert [a.response for a in parse_step.attempts] == answers[3:5]
    assert all("coordinates" in a.error for a in parse_step.attempts)


@pytest.mark.parametrize("family, platform, answer", [
    ("glm-4.1v", "pc", "<answer>Action: left_click(start_box='[inf,-inf]')</answer>"),
    ("glm-4.5v", "pc", "<answer>Action: left_drag(start_box='[1,2]', end_box='[x,y]')</answer>"),
    ("glm-4.1v", "mobile", '<answer>{"action_type": "click", "box_2d": [[NaN,1,2,3]]}</answer>'),
    ("autoglm-phone", "mobile", '<answer>do(action="Tap", element=[1e400, 3])</answer>'),
    ("autoglm-phone", "mobile", '<answer>do(action="Tap", element=["a", {}])</answer>'),
])
def test_nonsense_numbers_are_parse_errors(family: str, platform: str, answer: str) -> None:
    from glmv_agent.dialects import get_dialect

    with pytest.raises(ParseError) as info:
        get_dialect(family, platform).parse(answer)
    assert info.value.text == answer and info.value.expected


# ============================================================================ Ctrl+C


def test_ctrl_c_during_cli_run(model_server: Any, page_url: str, tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    scroll = ("<think>scroll</think><answer>Thought: look further down.\n"
              "Action: Scroll [WINDOW]; [down]\nMemory_Updated: {}</answer>")
    server = model_server([scroll, "block"])  # the CLI's web prompt: GLM-4.1V web answers
    trace = tmp_path / "trace"
    proc = subprocess.Popen(
        [*CLI, "run", "click", "--env", "web", "--url", page_url, "--family", "glm-4.1v",
         "--base-url", server.url, "--model-name", "m", "--trace-dir", str(trace)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        # A shell runs background jobs (`cmd &`) with SIGINT ignored, and Python then keeps
        # ignoring it: give the CLI the terminal's default, as a user's Ctrl+C finds it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert server.arrived.wait(90), "the second model call never came"
        browsers = {pid: cmd for pid, cmd in descendants(proc.pid).items() if "chrom" in cmd}
        assert browsers, "no Chromium below the CLI process"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert proc.returncode == 130, out
    assert "status: stopped" in out and "Traceback" not in out
    run, steps = read_trace(trace)
    assert run["status"] == "stopped"
    assert [s["outcome"] for s in steps] == ["executed", "stopped"]
    assert steps[0]["action"]["type"] == "scroll"
    assert "KeyboardInterrupt" in steps[1]["detail"]
    assert (trace / steps[0]["screenshot"]).is_file()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in browsers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in browsers if alive(pid)], "Chromium left running after Ctrl+C"


# ============================================================================ torn traces


def test_report_on_torn_trace_with_missing_screenshot(tmp_path: Path) -> None:
    x, y = norm("plus")
    trace = tmp_path / "trace"
    agent = Agent(ReplayBackend([pc_click(x * 1000, y * 1000)] * 2 + [PC_DONE]), FormEnv(),
                  family="glm-4.1v", settle_time=0, loop_limit=None, trace_dir=trace)
    assert agent.run("press plus twice").status == "success"
    (trace / "step-0002.png").unlink()
    with open(trace / "steps.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"index": 4, "outcome": "exec')  # the process died mid-write
    proc = run_cli("report", str(trace))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (trace / "report.html").read_text("utf-8")
    for index in (1, 2, 3):
        assert f'id="step-{index}"' in html
    assert 'id="step-4"' not in html
    assert html.count("no screenshot") == 1  # step 2's, deleted
    assert "incomplete last line" in html


def test_report_on_a_directory_that_is_not_a_trace(tmp_path: Path) -> None:
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2
    assert "run.json is missing" in proc.stdout and "Traceback" not in proc.stderr


# ============================================================================ PageAgent


def test_page_agent_on_a_closed_page_and_a_dead_server(page_url: str, tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from glmv_agent import PageAgent
    from glmv_agent.envs.web import CHROMIUM_ARGS, default_executable_path
    from glmv_agent.errors import TaskFailedError

    if default_executable_path() is None:
        pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)")
    url = dead_url()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=default_executable_path(),
                                    args=list(CHROMIUM_ARGS))
        page = browser.new_page()
        page.goto(page_url)
        agent = PageAgent(page, url, model_name="m", trace_dir=tmp_path / "traces",
                          backend_options={"max_retries": 1, "backoff": 0.01})
        with pytest.raises(TaskFailedError) as info:
            agent.act("click the button")
        assert "'error'" in str(info.value) and url in str(info.value)
        assert info.value.result.status == "error"
        assert page.evaluate("window.__clicks") == []
        agent.close()

        # The user closes their page; the next command says so instead of acting.
        replay = ReplayBackend(["<answer>Thought: t\nAction: Click [0]\nMemory_Updated: {}"
                                "</answer>"] * 3)
        agent = PageAgent(page, replay)
        page.close()
        with pytest.raises(TaskFailedError) as info:
            agent.act("click the button")
        assert "closed" in str(info.value) and info.value.result.status == "error"
        assert replay.calls == []  # nothing was asked, nothing executed
        browser.close()
