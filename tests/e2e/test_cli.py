"""The `glmv-agent` command line, run as real subprocesses.

`demo` drives the bundled web app in Debian's Chromium with recorded GLM-4.1V answers;
its HTML report is then opened in headless Chromium and checked for every step and
screenshot. `serve` is started as a subprocess over a tiny random checkpoint and queried
over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "glmv_agent.cli"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    trace = tmp_path_factory.mktemp("demo") / "trace"
    return cli("demo", "--trace-dir", str(trace)), trace


@pytest.mark.parametrize("command", ["", "run", "serve", "assistant", "report", "doctor", "demo"])
def test_help_everywhere(command: str) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: glmv-agent" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "required" in result.stderr


def test_demo_runs_the_whole_loop(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, trace = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RECORDED model answers" in result.stdout  # the replay is clearly labelled
    assert "answer: $9.99" in result.stdout
    records = [json.loads(line) for line in (trace / "steps.jsonl").read_text().splitlines()]
    assert [r["action"]["type"] for r in records] == ["type", "click", "answer"]
    assert records[1]["observation"]["url"].endswith("#/search/Dune")
    assert records[2]["observation"]["url"].endswith("#/book/dune")
    assert json.loads((trace / "run.json").read_text())["status"] == "answered"


def test_report_shows_every_step_and_image(demo_run: tuple[subprocess.CompletedProcess[str], Path],
                                           tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, trace = demo_run
    output = tmp_path / "report.html"
    result = cli("report", str(trace), "-o", str(output))
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == str(output)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.route("**/*", lambda route: route.abort()
                   if not route.request.url.startswith(("file:", "data:")) else route.continue_())
        page.goto(output.as_uri())
        steps = page.locator("section.step")
        assert steps.count() == 3
        # Every screenshot is inlined and actually decodes in the browser.
        widths = page.eval_on_selector_all("section.step .shot img",
                                           "els => els.map(e => e.naturalWidth)")
        assert widths == [1280, 1280, 1280]
        # Shrunk to the page's width, each acted-on target also gets a 2x zoomed crop.
        zooms = page.eval_on_selector_all("section.step .zoom img",
                                          "els => els.map(e => e.naturalWidth)")
        assert zooms == [720, 720]
        assert page.locator("section.step svg circle.point").count() == 2  # type + click markers
        assert "$9.99" in page.locator(".answer").inner_text()
        assert "Dune" in page.locator("#step-1").inner_text()
        browser.close()


def test_report_of_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("report", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "not a trace directory" in result.stdout


def test_run_with_a_replay_file_on_a_local_page(tmp_path: Path) -> None:
    from glmv_agent.demo import demo_dir, replay_answers, serve_directory

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(replay_answers("glm-4.1v")))
    with serve_directory(demo_dir()) as url:
        result = cli("run", "Find the price of Dune", "--env", "web", "--url", url + "index.html",
                     "--model", str(answers), "--trace-dir",  # labels: on by default for glm-4.1v
                     str(tmp_path / "trace"), "--report", "--show-thinking")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status: answered" in result.stdout
    # The model's answers were streamed to the terminal, indented under the steps.
    assert "        | <think>I'm on the Pagebound Books homepage." in result.stdout
    assert "        | Action: Type [0]; [Dune]" in result.stdout
    assert (tmp_path / "trace" / "report.html").is_file()


def test_run_without_model_explains_what_to_pass() -> None:
    result = cli("run", "do something", "--env", "web")
    assert result.returncode == 2
    assert "--model PATH" in result.stdout and "--base-url" in result.stdout


def test_doctor_reports_an_unreachable_server() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("doctor", "--base-url", f"http://127.0.0.1:{port}/v1")
    assert result.returncode == 3
    assert "unreachable" in result.stdout and "fix:" in result.stdout
    assert "[ok  ] python" in result.stdout


def test_serve_subprocess_answers_over_http(tiny_checkpoint: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [*CLI, "serve", "--model", str(tiny_checkpoint), "--port", str(port), "--device", "cpu",
         "--dtype", "float32", "--model-name", "tiny"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.5)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, json={
            "model": "tiny", "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200
        body = reply.json()
        assert body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] >= 1
    finally:
        process.terminate()
        process.wait(30)


def test_doctor_loads_a_checkpoint(tiny_checkpoint: Path) -> None:
    result = cli("doctor", "--model", str(tiny_checkpoint), "--load")
    assert "[ok  ] weights" in result.stdout and "loaded" in result.stdout, result.stdout
    assert "[ok  ] torch" in result.stdout or "[warn] torch" in result.stdout
    assert result.returncode == 0, result.stdout  # warnings (no display, no phone) don't fail


def test_doctor_names_a_broken_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    result = cli("doctor", "--model", str(tmp_path))
    assert result.returncode == 3
    assert "[FAIL] weights" in result.stdout and "model_type" in result.stdout
