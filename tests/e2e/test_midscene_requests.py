"""The requests Midscene.js sends for `MIDSCENE_MODEL_FAMILY=glm-v`, against `glmv-agent serve`.

tests/support/data/midscene/*.json are request bodies captured once from the real Midscene.js
1.13.1 (`@midscene/web`, PuppeteerAgent) running examples/midscene/demo.ts against a
recording endpoint on 127.0.0.1 (see tests/support/data/midscene/README.md): element locating
(aiInput/aiTap/aiLocate), aiQuery, aiAssert and two turns of aiAct planning. Their shape is
what matters: a system message, user content lists with `image_url` JPEG data URLs carrying
`detail: "high"`, assistant turns as content lists, `temperature: 0`, `stream: false`,
`thinking: {"type": "disabled"}`, `response_format: {"type": "json_object"}` for locating,
and no `max_tokens`. Node is not needed here: the bodies are replayed with httpx.

The server is the real `glmv-agent serve` (FastAPI + uvicorn) started as a subprocess on a
tiny random GLM-4.1V checkpoint, so the answers are noise; what is checked is that every
field is handled: 200 (or, for `json_object`, a 422 that says the answer held no JSON
object), the server's default max_tokens applied when none is sent, and `thinking` reaching
the chat template (the checkpoint's template is given GLM-4.5V's `<think></think>` switch
so the prompt length shows it).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import paths

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("torch")

DATA = paths.DATA / "midscene"
RECORDER = paths.ROOT / "examples" / "midscene" / "record_requests.py"
FIXTURES = ["locate", "query", "assert", "plan-turn1", "plan-turn2"]
DEFAULT_MAX_TOKENS = 8
# What the checkpoint's template adds after the assistant tag when thinking is off, as
# GLM-4.5V / GLM-4.6V templates do.
NO_THINK = "{%- if enable_thinking is defined and not enable_thinking -%}<think></think>{%- endif -%}"


def load_request(name: str) -> dict[str, Any]:
    """A captured body with its screenshots put back (`@file` -> that file's base64)."""
    body = json.loads((DATA / f"{name}.json").read_text("utf-8"))
    for message in body["messages"]:
        if isinstance(message["content"], list):
            for part in message["content"]:
                if part["type"] == "image_url":
                    head, ref = part["image_url"]["url"].split(",@", 1)
                    data = base64.b64encode((DATA / ref).read_bytes()).decode()
                    part["image_url"]["url"] = f"{head},{data}"
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from glmv_agent.glm4v.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("midscene_ckpt"),
                                       dtype="float32", shards=1)
    template = checkpoint / "chat_template.jinja"
    text = template.read_text("utf-8")
    prompt = "<|assistant|>{{ '\\n' }}\n{%- endif -%}"
    assert text.rstrip().endswith(prompt), "the tiny template changed; update NO_THINK"
    template.write_text(text.rstrip()[: -len("{%- endif -%}")] + NO_THINK + "\n{%- endif -%}\n",
                        "utf-8")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "glmv_agent.cli", "serve", "--model", str(checkpoint),
         "--port", str(port), "--model-name", "glm-4.1v", "--device", "cpu",
         "--dtype", "float32", "--default-max-tokens", str(DEFAULT_MAX_TOKENS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.time() > deadline:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"glmv-agent serve did not start:\n{output}")
            time.sleep(0.3)
        yield f"{base}/v1"
    finally:
        process.terminate()
        process.wait(30)


def post(base: str, body: dict[str, Any]) -> Any:
    # The headers of Midscene's OpenAI JS client; it always sends a bearer key, and a
    # server started without --api-key must not mind it.
    headers = {"Authorization": "Bearer not-needed-without-api-key",
               "User-Agent": "OpenAI/JS 6.3.0", "X-Stainless-Lang": "js"}
    return httpx.post(f"{base}/chat/completions", json=body, headers=headers, timeout=300)


def test_fixtures_are_what_midscene_sends_for_glm_v() -> None:
    for name in FIXTURES:
        body = load_request(name)
        assert body["model"] == "glm-4.1v" and body["temperature"] == 0
        assert body["stream"] is False and body["thinking"] == {"type": "disabled"}
        assert "max_tokens" not in body and "max_completion_tokens" not in body
        assert ("response_format" in body) == (name == "locate")
        assert body["messages"][0]["role"] == "system"
        images = [part for message in body["messages"] if isinstance(message["content"], list)
                  for part in message["content"] if part["type"] == "image_url"]
        assert images and all(p["image_url"]["detail"] == "high" for p in images)
        assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/") for p in images)
    roles = [m["role"] for m in load_request("plan-turn2")["messages"]]
    assert roles == ["system", "user", "user", "assistant", "user"]


@pytest.mark.parametrize("name", FIXTURES)
def test_server_answers_each_midscene_request(server: str, name: str) -> None:
    body = load_request(name)
    reply = post(server, body)
    if "response_format" in body and reply.status_code == 422:
        # json_object is enforced: the random model's answer held no JSON object, and the
        # server says so instead of passing the text on as if it were JSON.
        error = reply.json()["error"]
        assert error["param"] == "response_format", error
        assert "holds no JSON object" in error["message"]
        return
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "glm-4.1v"
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    if "response_format" in body:
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    # No max_tokens in the request: the server's --default-max-tokens bounds the answer.
    assert 1 <= answer["usage"]["completion_tokens"] <= DEFAULT_MAX_TOKENS
    assert choice["finish_reason"] in ("stop", "length")


def test_thinking_switch_reaches_the_chat_template(server: str) -> None:
    disabled = load_request("query")
    enabled = copy.deepcopy(disabled)
    enabled["thinking"] = {"type": "enabled"}  # MIDSCENE_MODEL_REASONING_ENABLED=true
    off, on = post(server, disabled), post(server, enabled)
    assert off.status_code == 200 and on.status_code == 200, (off.text, on.text)
    extra = off.json()["usage"]["prompt_tokens"] - on.json()["usage"]["prompt_tokens"]
    assert extra > 0, "thinking: disabled did not reach the template (<think></think>)"


def test_recorder_writes_the_fixture_format(tmp_path: Path) -> None:
    """The tool the fixtures were captured with gives back exactly a fixture."""
    spec = importlib.util.spec_from_file_location("record_requests", RECORDER)
    assert spec is not None and spec.loader is not None
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    server = recorder.make_server(recorder.Recorder(tmp_path), 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        replies = [post(base, load_request(name)).json() for name in ("locate", "plan-turn2")]
    finally:
        server.shutdown()
        server.server_close()
    assert replies[0]["choices"][0]["message"]["content"] == recorder.LOCATE_REPLY
    assert replies[1]["choices"][0]["message"]["content"] == recorder.PLAN_DONE_REPLY
    saved = json.loads((tmp_path / "01-locate.json").read_text("utf-8"))
    assert saved == json.loads((DATA / "locate.json").read_text("utf-8"))
    assert (tmp_path / "screenshot-1.jpg").read_bytes() == (DATA / "screenshot-1.jpg").read_bytes()
    assert (tmp_path / "02-plan.json").is_file()
