"""The scripts in examples/ run as a user would run them: subprocesses, real Chromium.

Examples that can run here use `--replay`: their model answers are SCRIPTED in GLM-4.1V's
web format (no 9B weights here), everything else (the demo app served on 127.0.0.1, the
browser, set-of-marks, parsing, actions, traces) is real, and the assertions check what
really happened in the page (URLs reached, files written). `remote_vllm.py` talks to a
real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, standing
in for vLLM. Desktop and phone examples need a display / a phone: compiled and `--help`.
"""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright")

from glmv_agent.envs.web import default_executable_path  # noqa: E402
import paths

EXAMPLES = paths.ROOT / "examples"
NEEDS_BROWSER = pytest.mark.skipif(default_executable_path() is None,
                                   reason="no Chromium binary (set $GLMV_CHROMIUM)")


def run_example(name: str, *args: str, cwd: Path | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
        timeout=timeout, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@NEEDS_BROWSER
def test_web_task_replay(tmp_path: Path) -> None:
    out = ok(run_example("web_task.py", "--replay", "--trace-dir", str(tmp_path / "trace")))
    assert "REPLAY" in out
    assert "step 1: type [0] -> executed" in out and "step 2: click [2] -> executed" in out
    assert "status: answered" in out and "answer: $9.99" in out
    assert "#/book/dune" in out  # the real page navigated to the book the click opened
    assert (tmp_path / "trace" / "steps.jsonl").is_file()


@NEEDS_BROWSER
def test_playwright_page_replay() -> None:
    out = ok(run_example("playwright_page.py", "--replay"))
    assert "act: answered in 2 steps" in out
    assert "click: now at http://127.0.0.1:" in out and "#/book/dune" in out
    assert "query: $9.99" in out and "assert_that: passed" in out
    # The user's own playwright call afterwards reads the real price from the open page.
    assert "page title: Pagebound Books; price element: $9.99" in out


@NEEDS_BROWSER
def test_playwright_async_replay() -> None:
    out = ok(run_example("playwright_async.py", "--replay"))
    assert "#/book/dune" in out and "query: $9.99" in out and "assert_that: passed" in out
    assert "price element: $9.99" in out
    assert "event loop stayed free: True" in out


@NEEDS_BROWSER
def test_custom_action_replay(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    out = ok(run_example("custom_action.py", "--replay", "--notes-dir", str(notes),
                         "--trace-dir", str(tmp_path / "trace")))
    assert "environment supports screenshot_note: True" in out
    assert "step 1: screenshot_note -> executed (saved note-1.png)" in out
    assert "status: answered; notes: note-1.txt, note-2.txt" in out
    assert sorted(p.name for p in notes.glob("*.png")) == ["note-1.png", "note-2.png"]
    second = (notes / "note-2.txt").read_text("utf-8")
    assert second.startswith("Search results for Dune") and "#/search/Dune" in second


@NEEDS_BROWSER
def test_evaluate_replay_with_a_tasks_file(tmp_path: Path) -> None:
    def answer(thought: str, action: str) -> str:
        return (f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n"
                "Memory_Updated: {}</answer>")

    tasks = [
        {"task": "Who wrote Foundation?", "url": "{demo}", "expected": "Asimov",
         "replay": [answer("Search it.", "Type [0]; [Foundation]"),
                    answer("Isaac Asimov, 1951.", "ANSWER; <content>Isaac Asimov</content>")]},
        {"task": "Open Hyperion", "url": "{demo}", "max_steps": 1, "expected": "$11.25",
         "replay": [answer("Search it.", "Type [0]; [Hyperion]")]},
    ]
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("\n".join(json.dumps(t) for t in tasks) + "\n", encoding="utf-8")
    out_dir = tmp_path / "eval"
    out = ok(run_example("evaluate.py", "--replay", "--tasks", str(tasks_file),
                         "--out-dir", str(out_dir)))
    assert "finished 1/2; correct 1/2 graded" in out
    assert "task" in out and "status" in out and "seconds" in out  # the table header
    rows = json.loads((out_dir / "summary.json").read_text("utf-8"))
    assert [(r["status"], r["steps"], r["answer"], r["correct"]) for r in rows] == [
        ("answered", 2, "Isaac Asimov", True), ("max_steps", 1, None, False)]
    csv_lines = (out_dir / "summary.csv").read_text("utf-8").splitlines()
    assert csv_lines[0].startswith("task,status,steps,seconds,answer") and len(csv_lines) == 3
    assert (out_dir / "trace-001" / "steps.jsonl").is_file()


class _ChatServer(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions like vLLM, with one scripted GLM-4.1V answer."""

    requests: list[dict[str, Any]] = []
    reply = ("<think>The heading reads Pagebound Books.</think><answer>Thought: The page "
             "heading is visible.\nAction: ANSWER; <content>Pagebound Books</content>\n"
             "Memory_Updated: {}</answer>")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body})
        data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": self.reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def chat_server() -> Iterator[str]:
    _ChatServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@NEEDS_BROWSER
def test_remote_vllm_against_a_local_openai_compatible_server(chat_server: str) -> None:
    from glmv_agent.demo import demo_dir, serve_directory

    with serve_directory(demo_dir()) as site:
        out = ok(run_example("remote_vllm.py", "--base-url", chat_server, "--model-name",
                             "glm-4.1v", "--url", site + "index.html",
                             "--task", "What is the heading of the page?"))
    assert "status: answered; answer: Pagebound Books" in out
    (request,) = _ChatServer.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["model"] == "glm-4.1v" and body["skip_special_tokens"] is False
    parts = body["messages"][-1]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/")
    assert "What is the heading of the page?" in parts[-1]["text"]


def test_every_example_compiles_and_explains_itself(tmp_path: Path) -> None:
    scripts = sorted(EXAMPLES.glob("*.py"))
    names = {p.name for p in scripts}
    assert {"web_task.py", "playwright_page.py", "playwright_async.py", "desktop_task.py",
            "phone_task.py", "custom_action.py", "remote_vllm.py", "evaluate.py"} <= names
    for script in scripts:
        py_compile.compile(str(script), cfile=str(tmp_path / (script.name + "c")), doraise=True)
        if script.name.startswith("_"):
            continue
        assert "python examples/" in script.read_text("utf-8"), f"{script.name}: how to run it"
    for name in ("desktop_task.py", "phone_task.py", "remote_vllm.py", "web_task.py"):
        out = ok(run_example(name, "--help", timeout=60))
        assert "--model" in out and "--base-url" in out and "--model-name" in out, name


def test_a_missing_model_option_is_a_usage_error() -> None:
    proc = run_example("web_task.py", timeout=60)
    assert proc.returncode == 2
    assert "give exactly one of --model PATH, --base-url URL" in proc.stderr
    proc = run_example("phone_task.py", "--task", "x", "--base-url", "http://127.0.0.1:9/v1",
                       timeout=60)
    assert proc.returncode == 2 and "--model-name" in proc.stderr
