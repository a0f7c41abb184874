"""The OpenAI-compatible server, exercised with the official `openai` client.

The server runs on 127.0.0.1 over the real in-process engine loaded from a tiny random
checkpoint (real safetensors, real tokenizer, real chat template); its answers are
compared with the engine called directly, so the HTTP layer must not change them.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from glmv_agent.backends.openai import OpenAIBackend
from glmv_agent.glm4v.engine import Glm4vEngine, load
from glmv_agent.server import GlmvHTTPServer, make_server

MODEL = "tiny-glm4v"


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> Glm4vEngine:
    return load(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def server(engine: Glm4vEngine) -> Iterator[GlmvHTTPServer]:
    srv = make_server(engine, host="127.0.0.1", port=0, model_name=MODEL, max_queue=4)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def base_url(server: GlmvHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def _png_data_url(size: tuple[int, int] = (64, 48), color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_health_and_models(client: openai.OpenAI, base_url: str) -> None:
    health = httpx.get(base_url.replace("/v1", "/health")).json()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion_matches_engine(client: openai.OpenAI, engine: Glm4vEngine) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=12,
        temperature=0, extra_body={"skip_special_tokens": False},
    )
    direct = engine.generate([{"role": "user", "content": "Hello there"}], max_new_tokens=12,
                             temperature=0)
    choice = reply.choices[0]
    assert choice.message.content == direct.text
    assert choice.finish_reason == ("length" if direct.finish_reason == "length" else "stop")
    assert reply.usage.completion_tokens == direct.completion_tokens
    assert reply.usage.prompt_tokens == direct.prompt_tokens > 0


def test_image_input_changes_prompt(client: openai.OpenAI, engine: Glm4vEngine) -> None:
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _png_data_url()}},
        {"type": "text", "text": "What is this?"},
    ]}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8,
                                           temperature=0)
    text_only = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is this?"}], max_tokens=8,
        temperature=0)
    # The image adds its placeholder tokens to the prompt the engine saw.
    assert reply.usage.prompt_tokens > text_only.usage.prompt_tokens
    direct = engine.generate([{"role": "user", "content": [
        {"type": "image", "image": Image.new("RGB", (64, 48), "red")},
        {"type": "text", "text": "What is this?"},
    ]}], max_new_tokens=8, temperature=0, keep_special_tokens=False)
    assert reply.choices[0].message.content == direct.text


def test_streaming_joins_to_full_text(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count with me"}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16,
                                          temperature=0).choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    pieces, finishes, usage = [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(pieces) == full
    assert len(finishes) == 1
    assert usage is not None and usage.completion_tokens > 0


def test_our_openai_backend_talks_to_our_server(base_url: str, engine: Glm4vEngine) -> None:
    backend = OpenAIBackend(base_url, MODEL, max_retries=0)
    image = Image.new("RGB", (40, 40), "blue")
    messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "Describe"}]}]
    text = backend.complete(messages, max_new_tokens=10, temperature=0)
    # The backend asks for skip_special_tokens=false, so the text equals the engine's own.
    assert text == engine.chat(messages, max_new_tokens=10, temperature=0)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": MODEL, "messages": []}, 400, "non-empty list"),
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400,
         "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}, 400,
         "base64"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                + base64.b64encode(b"not a png").decode()}}]}]},
         400, "could not be decoded"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]}, 400, "local paths"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3}, 400, "n=1"),
    ],
)
def test_bad_requests_get_4xx(client: openai.OpenAI, body: dict, status: int, fragment: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.post("/chat/completions", body=body, cast_to=httpx.Response)
    assert info.value.status_code == status
    assert fragment in info.value.response.json()["error"]["message"]


def test_malformed_json_and_oversized_body(base_url: str, server: GlmvHTTPServer) -> None:
    bad = httpx.post(f"{base_url}/chat/completions", content=b"{not json",
                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    limit = server.config.max_body_bytes
    server.config.max_body_bytes = 1000
    try:
        big = httpx.post(f"{base_url}/chat/completions",
                         content=json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}))
        assert big.status_code == 413
    finally:
        server.config.max_body_bytes = limit


def test_huge_image_is_refused(client: openai.OpenAI) -> None:
    buffer = io.BytesIO()
    Image.new("1", (10000, 6000)).save(buffer, format="PNG")  # 60 MP, tiny file
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}])
    assert info.value.status_code == 413


def test_concurrent_requests_are_queued(base_url: str, engine: Glm4vEngine) -> None:
    expected = engine.chat([{"role": "user", "content": "parallel"}], max_new_tokens=6,
                           temperature=0, keep_special_tokens=False)
    results: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "parallel"}], max_tokens=6,
                temperature=0)
            results.append(reply.choices[0].message.content)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    assert results == [expected] * 4


def test_queue_limit_answers_503(base_url: str, server: GlmvHTTPServer,
                                 engine: Glm4vEngine) -> None:
    """With the engine busy and the queue full, a new request is refused, not piled up."""
    limit = server.config.max_queue
    server.config.max_queue = 1
    engine._lock.acquire()  # the engine is busy with someone else's generation
    waiting: list[httpx.Response] = []
    first = threading.Thread(target=lambda: waiting.append(httpx.post(
        f"{base_url}/chat/completions", timeout=120,
        json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 2})))
    try:
        first.start()
        for _ in range(200):  # until the first request holds the only queue slot
            if server.waiting == 1:
                break
            threading.Event().wait(0.05)
        assert server.waiting == 1
        reply = httpx.post(f"{base_url}/chat/completions",
                           json={"messages": [{"role": "user", "content": "x"}]})
        assert reply.status_code == 503 and "busy" in reply.json()["error"]["message"]
    finally:
        engine._lock.release()
        first.join(120)
        server.config.max_queue = limit
    assert waiting and waiting[0].status_code == 200  # the queued one was served
