"""`glmv-agent mcp`: the agent as MCP tools, driven by the official `mcp` client.

The server runs as a real subprocess (`python -m glmv_agent.cli mcp`), over stdio and over
streamable HTTP on 127.0.0.1, and drives a real Chromium on pages from tests/support/web_pages/
served on 127.0.0.1. The model answers are SCRIPTED (a replay file given as `--model`), in
GLM-4.1V-9B-Thinking's documented web format, since the 9B weights cannot run here; they
are consumed in order by every tool call of one server. Everything else is real: the
protocol, the browser, set-of-marks labels, the prompt, parsing, policy and the actions.

Set-of-marks labels of the pages used: links.html [0] "Next page"; form.html [4] Send;
buttons.html [1] Three (CSS box 500,200 120x40).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mcp")
pytest.importorskip("playwright")

from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from PIL import Image  # noqa: E402

from glmv_agent.envs._xvfb import VirtualDisplay  # noqa: E402
from glmv_agent.envs.web import default_executable_path  # noqa: E402

from web_server import PageServer, serve_pages  # noqa: E402
from xvfb import TkApp, require_x_tools  # noqa: E402

if default_executable_path() is None:
    pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)", allow_module_level=True)

CLI = [sys.executable, "-m", "glmv_agent.cli"]
TOOLS = {"run_task", "open_session", "act", "query", "assert_that", "locate", "screenshot",
         "list_sessions", "close_session"}


def answer(thought: str, action: str) -> str:
    """One scripted answer in the GLM-4.1V web format."""
    return (f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n"
            "Memory_Updated: {}</answer>")


def final(text: str) -> str:
    return answer("Done.", f"ANSWER; <content>{text}</content>")


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    srv = serve_pages()
    yield srv
    srv.stop()


def server_args(tmp_path: Path, responses: list[str], *extra: str) -> list[str]:
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps(responses), "utf-8")
    return ["mcp", "--model", str(replay), "--trace-dir", str(tmp_path / "traces"), *extra]


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None, text_of(result)
    return result.structured_content


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    return await session.call_tool(tool, arguments)


def run_stdio(args: list[str], script: Any, env: dict[str, str] | None = None) -> Any:
    """Start the server over stdio, run `script(session)` against it, stop it."""
    async def main() -> Any:
        params = StdioServerParameters(command=CLI[0], args=[*CLI[1:], *args],
                                       env={"PYTHONUNBUFFERED": "1", **(env or {})})
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await script(session)

    return asyncio.run(asyncio.wait_for(main(), timeout=240))


def descendants(pid: int) -> list[int]:
    """Process ids below `pid` (from /proc), children first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def chromium_pids_of(marker: str) -> list[int]:
    """The Chromium processes started by the MCP server whose command line has `marker`."""
    servers = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()
               and marker in _cmdline(int(e.name)) and "glmv_agent.cli" in _cmdline(int(e.name))]
    return [p for s in servers for p in descendants(s) if "chrom" in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_stdio_tools_drive_a_real_browser(tmp_path: Path, pages: PageServer) -> None:
    responses = [
        # run_task on links.html: follow the link, then answer
        answer("The link to the next page is [0].", "Click [0]"),
        final("opened the second page"),
        # session on buttons.html: locate, query, a false assertion, a true one
        answer("The Three button is [1].", "Click [1]"),
        final("three buttons: One, Two, Three"),
        final("no, there is no Four button"),
        final("yes, a button says Three"),
        # act in a session on form.html: sending is sensitive, denied by default
        answer("The Send button is [4].", "Click [4]"),
        final("the form was not sent: the click was denied"),
    ]
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def script(session: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["tools"] = {t.name for t in (await session.list_tools()).tools}
        out["task"] = await session.call_tool(
            "run_task", {"task": "Open the next page", "env": "web",
                         "url": pages.url("links.html")}, progress_callback=on_progress)
        opened = await call(session, "open_session", env="web", url=pages.url("buttons.html"))
        sid = structured(opened)["session_id"]
        out["locate"] = await call(session, "locate", session_id=sid,
                                   description="the Three button")
        out["query"] = await call(session, "query", session_id=sid,
                                  question="Which buttons are there?")
        out["false"] = await call(session, "assert_that", session_id=sid,
                                  statement="there is a button labelled Four")
        out["true"] = await call(session, "assert_that", session_id=sid,
                                 statement="there is a button labelled Three")
        out["shot"] = await call(session, "screenshot", session_id=sid)
        out["listed"] = await call(session, "list_sessions")
        out["closed"] = await call(session, "close_session", session_id=sid)
        out["after_close"] = await call(session, "screenshot", session_id=sid)
        form = structured(await call(session, "open_session",
                                     url=pages.url("form.html")))["session_id"]
        out["act"] = await call(session, "act", session_id=form, instruction="Send the form")
        await call(session, "close_session", session_id=form)
        return out

    out = run_stdio(server_args(tmp_path, responses), script)

    assert TOOLS <= out["tools"]
    # run_task: the real link was followed; one progress notification per step.
    task = structured(out["task"])
    assert task["status"] == "answered" and task["answer"] == "opened the second page"
    assert task["steps"][0].startswith("1. click") and task["steps"][0].endswith("executed")
    trace = Path(task["trace_dir"])
    assert trace.is_relative_to(tmp_path / "traces") and (trace / "steps.jsonl").is_file()
    records = [json.loads(line) for line in (trace / "steps.jsonl").read_text().splitlines()]
    assert records[-1]["observation"]["url"] == pages.url("page2.html")
    assert [(value, total) for value, total, _ in progress] == [(1, 30), (2, 30)]
    assert progress[0][2] == task["steps"][0]
    # locate: the centre of the real Three button, nothing clicked.
    where = structured(out["locate"])
    assert where["element"] == 1
    assert abs(where["screen_x"] - 560) <= 1 and abs(where["screen_y"] - 220) <= 1
    assert (where["x"], where["y"]) == (round(where["screen_x"]), round(where["screen_y"]))
    assert text_of(out["query"]) == "three buttons: One, Two, Three"
    assert out["false"].is_error and "is false" in text_of(out["false"])
    assert "no, there is no Four button" in text_of(out["false"])
    assert not out["true"].is_error and text_of(out["true"]).startswith("yes")
    # screenshot: a real PNG of the 1280x720 viewport.
    (image,) = [b for b in out["shot"].content if b.type == "image"]
    assert image.mime_type == "image/png"
    picture = Image.open(io.BytesIO(base64.b64decode(image.data)))
    assert picture.size == (1280, 720)
    listed = structured(out["listed"])["result"]
    assert [(s["env"], s["url"]) for s in listed] == [("web", pages.url("buttons.html"))]
    assert not out["closed"].is_error
    assert out["after_close"].is_error and "unknown session" in text_of(out["after_close"])
    # The sensitive action was denied (the default policy) and the model told.
    acted = structured(out["act"])
    assert acted["status"] == "answered"
    assert "denied" in acted["steps"][0] and acted["url"] == pages.url("form.html")


def test_errors_are_tool_errors_and_the_server_lives_on(tmp_path: Path,
                                                        pages: PageServer) -> None:
    args = server_args(tmp_path, [])

    async def script(session: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["bad_env"] = await call(session, "run_task", task="x", env="tv")
        out["empty"] = await call(session, "run_task", task="  ", env="web")
        out["url_desktop"] = await call(session, "open_session", env="desktop", url="http://x")
        out["unknown"] = await call(session, "query", session_id="s99", question="what?")
        opened = await call(session, "open_session", url=pages.url("buttons.html"))
        sid = structured(opened)["session_id"]
        out["no_model"] = await call(session, "query", session_id=sid, question="what?")
        # The browser goes away under the session.
        for pid in chromium_pids_of(str(tmp_path)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out["gone"] = await call(session, "screenshot", session_id=sid)
        out["close_gone"] = await call(session, "close_session", session_id=sid)
        out["alive"] = await call(session, "list_sessions")
        return out

    out = run_stdio(args, script)
    for name in ("bad_env", "empty", "url_desktop", "unknown", "no_model", "gone"):
        assert out[name].is_error, name
    assert "Input should be 'web', 'desktop' or 'android'" in text_of(out["bad_env"])
    assert "task must be a non-empty string" in text_of(out["empty"])
    assert "url is for web sessions only" in text_of(out["url_desktop"])
    assert "unknown session 's99'" in text_of(out["unknown"])
    # The replay file is empty: the model failing is the tool's error, not the server's.
    assert "no responses left" in text_of(out["no_model"])
    assert "closed or crashed" in text_of(out["gone"]) and "open_session" in text_of(out["gone"])
    assert not out["close_gone"].is_error
    assert structured(out["alive"])["result"] == []


def test_cancelled_requests_stop_their_runs(tmp_path: Path, pages: PageServer) -> None:
    # A model that never finishes: two different clicks in turn (no loop to detect).
    # Far more steps than fit in the client's patience, however fast a step is.
    endless = [answer("Try One.", "Click [0]"), answer("Try Two.", "Click [2]")] * 1000

    async def give_up(session: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
        try:
            await session.call_tool(tool, arguments, read_timeout_seconds=4)
        except Exception as exc:  # the client gives up and cancels the request
            return repr(exc)
        return "finished"

    async def script(session: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["task"] = await give_up(session, "run_task", {"task": "Press the buttons",
                                                          "url": pages.url("buttons.html"),
                                                          "max_steps": 2000})
        deadline = time.monotonic() + 30
        while chromium_pids_of(str(tmp_path)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        out["browsers_left"] = chromium_pids_of(str(tmp_path))
        sid = structured(await call(session, "open_session",
                                    url=pages.url("buttons.html")))["session_id"]
        out["act"] = await give_up(session, "act", {"session_id": sid,
                                                    "instruction": "Press the buttons",
                                                    "max_steps": 2000})
        # The session's thread is free again once the stopped command has ended.
        out["shot"] = await call(session, "screenshot", session_id=sid)
        await call(session, "close_session", session_id=sid)
        return out

    out = run_stdio(server_args(tmp_path, endless), script)
    assert out["task"] != "finished" and out["act"] != "finished"
    assert out["browsers_left"] == []
    assert not out["shot"].is_error
    traces = tmp_path / "traces"
    (task_trace,) = [d for d in traces.iterdir() if not d.name.startswith("mcp-")]
    (act_trace,) = (traces / "mcp-s1").iterdir()
    for trace in (task_trace, act_trace):
        run = json.loads((trace / "run.json").read_text("utf-8"))
        assert run["status"] == "stopped" and 1 <= run["steps"] < 2000, (trace, run)


def pc_reply(thought: str, call: str) -> str:
    """One scripted answer in the GLM-4.1V PC format."""
    return f"<think>{thought}</think><answer>{thought}\n{call}\nMemory: []</answer>"


def grid(app: TkApp, widget: str) -> str:
    """The 0-1000 point of a widget's centre, as the model would give it."""
    (px, py), (width, height) = app.centre_pixel(widget), app.screen
    return f"[{round((px + 0.5) / width * 1000)},{round((py + 0.5) / height * 1000)}]"


def test_desktop_session_on_a_real_x_display(tmp_path: Path) -> None:
    require_x_tools()
    with VirtualDisplay(1024, 768) as display:
        app = TkApp(display.name)
        try:
            responses = [
                pc_reply("Press pad A.", f"left_click(start_box='{grid(app, 'pad_a')}')"),
                pc_reply("Pad A was pressed.", "DONE()"),
                pc_reply("Pad B is at the bottom right.",
                         f"left_click(start_box='{grid(app, 'pad_b')}')"),
                "<think>Three coloured pads.</think><answer>Three coloured pads.</answer>",
                "<answer>no, nothing is red</answer>",
            ]

            async def script(session: ClientSession) -> dict[str, Any]:
                opened = structured(await call(session, "open_session", env="desktop"))
                sid = opened["session_id"]
                out = {"second": await call(session, "open_session", env="desktop")}
                out["act"] = await call(session, "act", session_id=sid, instruction="Press pad A")
                out["locate"] = await call(session, "locate", session_id=sid, description="pad B")
                out["query"] = await call(session, "query", session_id=sid,
                                          question="What is shown?")
                out["assert"] = await call(session, "assert_that", session_id=sid,
                                           statement="a red pad is shown")
                out["shot"] = await call(session, "screenshot", session_id=sid)
                await call(session, "close_session", session_id=sid)
                return out

            app.mark()
            out = run_stdio(server_args(tmp_path, responses), script,
                            env={"DISPLAY": display.name})
            pressed = app.wait_for(lambda e: e["event"] == "press", timeout=10)
            later = [e for e in app.events_since_mark() if e["event"] == "press"]
        finally:
            app.close()
    # One desktop at a time; the click landed on the real pad A, the locate clicked nothing.
    assert out["second"].is_error and "already open" in text_of(out["second"])
    assert structured(out["act"])["status"] == "success" and pressed["widget"] == "pad_a"
    assert later == []
    where = structured(out["locate"])
    x, y, w, h = app.widgets["pad_b"]
    assert x <= where["screen_x"] < x + w and y <= where["screen_y"] < y + h
    assert where["element"] is None
    # Questions about the desktop are plain visual questions: the answer text comes back.
    assert text_of(out["query"]) == "Three coloured pads."
    assert out["assert"].is_error and "is false" in text_of(out["assert"])
    (image,) = [b for b in out["shot"].content if b.type == "image"]
    assert Image.open(io.BytesIO(base64.b64decode(image.data))).size == (1024, 768)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_streamable_http_with_confirm_allow(tmp_path: Path, pages: PageServer) -> None:
    responses = [
        answer("The Send button is [4].", "Click [4]"),
        final("sent the form"),
    ]
    port = free_port()
    process = subprocess.Popen(
        [*CLI, *server_args(tmp_path, responses, "--port", str(port), "--confirm", "allow")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    async def main() -> Any:
        url = f"http://127.0.0.1:{port}/mcp"
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await session.call_tool("run_task", {
                    "task": "Send the form", "url": pages.url("form.html")})

    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/mcp" in banner
        deadline = time.time() + 60
        while True:  # the banner comes before uvicorn listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline
                time.sleep(0.2)
        result = asyncio.run(asyncio.wait_for(main(), timeout=120))
        # A web page the user visits cannot drive it (DNS rebinding, cross-site requests).
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "page", "version": "0"}}}
        accept = {"Accept": "application/json, text/event-stream"}
        url = f"http://127.0.0.1:{port}/mcp"
        foreign_origin = httpx.post(url, json=initialize, timeout=10,
                                    headers={**accept, "Origin": "http://attacker.example"})
        foreign_host = httpx.post(url, json=initialize, timeout=10,
                                  headers={**accept, "Host": "attacker.example"})
    finally:
        process.terminate()
        process.wait(30)
    assert foreign_origin.status_code == 403 and foreign_host.status_code == 421
    task = structured(result)
    assert task["status"] == "answered"
    # Sending is sensitive; --confirm allow let the click run.
    assert task["steps"][0].startswith("1. click") and task["steps"][0].endswith("executed")


def test_help_names_the_tools_and_options() -> None:
    result = subprocess.run([*CLI, "mcp", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: glmv-agent mcp" in result.stdout
    for option in ("--port", "--model", "--base-url", "--confirm {deny,allow}", "--viewport"):
        assert option in result.stdout


def test_a_setup_error_over_stdio_goes_to_stderr(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "mcp", "--model", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""  # stdout is the protocol stream
    assert "error: cannot use" in result.stderr and "missing" in result.stderr


def test_port_in_use_is_a_clear_error_before_the_model_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "mcp", "--model", str(tmp_path / "missing-checkpoint"), "--port", str(port)],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stdout
