"""The OpenAI-compatible server, over real uvicorn on 127.0.0.1, with the official `openai` client.

The engine is the real in-process one on a tiny random checkpoint (real safetensors, real
tokenizer, a chat template that honours enable_thinking like GLM-4.5V's); answers are
compared with the engine called directly, so the HTTP layer, batching included, must not
change them. Concurrency is arranged with a "blocker" (a streamed request that would run
for minutes) that holds the engine while other requests queue, then disconnects.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from glmv_agent.backends.openai import OpenAIBackend
from glmv_agent.glm4v.engine import Glm4vEngine, load
from glmv_agent.server import ServerConfig
from glmv_agent.server.protocol import RequestError, json_object_text
from served import Served, png_data_url, running_server, user, wait_until

MODEL = "tiny-glm4v"
THINKING_OFF = "{%- if enable_thinking is defined and not enable_thinking -%}<think></think>{%- endif -%}\n"


# ----------------------------------------------------------------------------- harness


@contextmanager
def blocker(served: Served) -> Iterator[None]:
    """A streamed request that holds the engine (it would run for minutes) until the block
    exits; then its client disconnects, which must stop it."""
    stop = threading.Event()
    before = len(served.scheduler.batch_sizes)
    abandoned = served.scheduler.abandoned

    def run() -> None:
        body = {"messages": [{"role": "user", "content": "block"}], "max_tokens": 20000,
                "temperature": 0, "stream": True}
        with httpx.stream("POST", served.v1 + "/chat/completions", json=body, timeout=120) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: served.scheduler.running == 1 and len(served.scheduler.batch_sizes) > before,
               "the blocker did not start")
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
    # The streamed client went away: its 20000-token generation was stopped, not finished.
    wait_until(lambda: served.scheduler.abandoned == abandoned + 1, "the blocker's generation went on")


def post_in_threads(url: str, bodies: list[dict[str, Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """POST each body from its own thread; results[i] is the Response (or the exception)."""
    results: list[Any] = [None] * len(bodies)

    def post(i: int) -> None:
        try:
            results[i] = httpx.post(url + "/chat/completions", json=bodies[i], timeout=300)
        except Exception as exc:  # asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    return threads, results


def post_queued(served: Served, bodies: list[dict[str, Any]]) -> tuple[list[Any], int]:
    """POST `bodies` while a blocker holds the engine, so they all queue before any runs;
    returns their responses and how many batches had run before them."""
    with blocker(served):
        threads, results = post_in_threads(served.v1, bodies)
        wait_until(lambda: served.scheduler.waiting == len(bodies), "the requests did not queue")
        sizes_before = len(served.scheduler.batch_sizes)
    for thread in threads:
        thread.join(300)
    return results, sizes_before


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Glm4vEngine:
    """The tiny checkpoint with a template that renders `<think></think>` when thinking is off."""
    copy = tmp_path_factory.mktemp("tiny_thinking")
    for item in tiny_checkpoint.iterdir():
        (copy / item.name).symlink_to(item)
    (copy / "chat_template.jinja").unlink()
    template = (tiny_checkpoint / "chat_template.jinja").read_text() + THINKING_OFF
    (copy / "chat_template.jinja").write_text(template)
    return load(copy, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def served(engine: Glm4vEngine) -> Iterator[Served]:
    config = ServerConfig(model_name=MODEL, max_queue=8, max_batch=4, default_max_tokens=5)
    with running_server(engine, config) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.v1, api_key="unused", max_retries=0, timeout=120)


def solo(engine: Glm4vEngine, messages: list[dict[str, Any]], **options: Any) -> Any:
    """What the engine answers alone, with the server's defaults (special tokens skipped)."""
    options.setdefault("keep_special_tokens", False)
    return engine.generate(messages, temperature=0, **options)


# ----------------------------------------------------------------------------- basic routes


def test_health_models_and_model_by_id(client: openai.OpenAI, served: Served) -> None:
    health = httpx.get(served.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-9")
    assert "does not exist" in info.value.response.json()["error"]["message"]


def test_completion_matches_engine(client: openai.OpenAI, engine: Glm4vEngine) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=user("Hello there"), max_tokens=8,
                                           temperature=0, extra_body={"skip_special_tokens": False})
    direct = solo(engine, user("Hello there"), max_new_tokens=8, keep_special_tokens=True)
    choice = reply.choices[0]
    assert choice.message.content == direct.text
    assert choice.finish_reason == ("length" if direct.finish_reason == "length" else "stop")
    assert reply.usage.completion_tokens == direct.completion_tokens
    assert reply.usage.prompt_tokens == direct.prompt_tokens > 0


def test_image_input_matches_engine(client: openai.OpenAI, engine: Glm4vEngine) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url()}},
                                             {"type": "text", "text": "What is this?"}]}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    direct = solo(engine, [{"role": "user", "content": [
        {"type": "image", "image": Image.new("RGB", (64, 48), "red")},
        {"type": "text", "text": "What is this?"}]}], max_new_tokens=6)
    assert reply.choices[0].message.content == direct.text
    assert reply.usage.prompt_tokens == direct.prompt_tokens


def test_streaming_joins_to_full_text(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=user("Count with me"), max_tokens=8,
                                          temperature=0).choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=user("Count with me"), max_tokens=8,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
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
    assert usage is not None and usage.completion_tokens == 8


def test_our_openai_backend_talks_to_our_server(served: Served, engine: Glm4vEngine) -> None:
    backend = OpenAIBackend(served.v1, MODEL, max_retries=0)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (40, 40), "blue")},
                                             {"type": "text", "text": "Describe"}]}]
    # The backend asks for skip_special_tokens=false, so the text equals the engine's own.
    assert backend.complete(messages, max_new_tokens=6, temperature=0) == engine.chat(
        messages, max_new_tokens=6, temperature=0)


# ----------------------------------------------------------------------------- client fields


def test_thinking_field_maps_to_enable_thinking(client: openai.OpenAI, engine: Glm4vEngine) -> None:
    off = client.chat.completions.create(model=MODEL, messages=user("Think?"), max_tokens=4, temperature=0,
                                         extra_body={"thinking": {"type": "disabled"}})
    on = client.chat.completions.create(model=MODEL, messages=user("Think?"), max_tokens=4, temperature=0,
                                        extra_body={"thinking": {"type": "enabled"}})
    kwargs = client.chat.completions.create(model=MODEL, messages=user("Think?"), max_tokens=4, temperature=0,
                                            extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    direct_off = solo(engine, user("Think?"), max_new_tokens=4, enable_thinking=False)
    assert off.usage.prompt_tokens == direct_off.prompt_tokens == on.usage.prompt_tokens + 2  # <think></think>
    assert off.choices[0].message.content == direct_off.text == kwargs.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="disagree"):
        client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=2, extra_body={
            "thinking": {"type": "enabled"}, "chat_template_kwargs": {"enable_thinking": False}})


def test_developer_role_is_system(client: openai.OpenAI, engine: Glm4vEngine) -> None:
    reply = client.chat.completions.create(model=MODEL, max_tokens=5, temperature=0, messages=[
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    direct = solo(engine, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                  max_new_tokens=5)
    assert reply.choices[0].message.content == direct.text
    assert reply.usage.prompt_tokens == direct.prompt_tokens


def test_default_max_tokens_applies_when_none_is_sent(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=user("Go on"), temperature=0)
    assert reply.usage.completion_tokens == 5  # the served fixture's --default-max-tokens
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(("extra", "named"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"n": 2}, "n"),
    ({"logit_bias": {"12": 5}}, "logit_bias"),
    ({"tools": [{"type": "function"}], "logprobs": True}, "tools, logprobs"),
])
def test_fields_that_change_results_are_rejected_by_name(served: Served, extra: dict, named: str) -> None:
    reply = httpx.post(served.v1 + "/chat/completions",
                       json={"messages": user("x"), "max_tokens": 2, **extra})
    assert reply.status_code == 400
    assert f"unsupported field(s) {named}:" in reply.json()["error"]["message"]


def test_frequency_and_presence_penalties_reach_the_engine(client: openai.OpenAI, served: Served) -> None:
    """AutoGLM-Phone's official settings send frequency_penalty 0.2: served, not refused, and
    applied (a strong penalty changes the greedy answer of the tiny model)."""
    plain = client.chat.completions.create(model=MODEL, messages=user("Go on"), temperature=0,
                                           max_tokens=12)
    penalized = client.chat.completions.create(model=MODEL, messages=user("Go on"), temperature=0,
                                               max_tokens=12, frequency_penalty=2.0,
                                               presence_penalty=2.0)
    autoglm = client.chat.completions.create(model=MODEL, messages=user("Go on"), temperature=0,
                                             max_tokens=4, frequency_penalty=0.2, top_p=0.85)
    assert autoglm.choices[0].finish_reason == "length"
    assert penalized.choices[0].message.content != plain.choices[0].message.content
    for bad in (2.5, -3):
        reply = httpx.post(served.v1 + "/chat/completions",
                           json={"messages": user("x"), "max_tokens": 2, "frequency_penalty": bad})
        assert reply.status_code == 400 and "frequency_penalty" in reply.text


def test_harmless_fields_are_accepted(served: Served) -> None:
    reply = httpx.post(served.v1 + "/chat/completions", json={
        "messages": user("x"), "max_tokens": 2, "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
        "logprobs": False, "tools": [], "tool_choice": "none", "user": "u-1", "metadata": {"a": "b"},
        "store": False, "response_format": {"type": "text"}, "parallel_tool_calls": False})
    assert reply.status_code == 200, reply.text


def test_tool_messages_are_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="tool"):
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[
            {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "1", "content": "42"}])


def test_response_format_json_object_is_validated_and_json_schema_rejected(client: openai.OpenAI) -> None:
    # The tiny random model writes no JSON: validated, so the server says so instead of passing it on.
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=user("JSON please"), max_tokens=4,
                                       response_format={"type": "json_object"})
    assert info.value.status_code == 422 and "no JSON object" in info.value.response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=2, response_format={
            "type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}})
    with pytest.raises(openai.BadRequestError, match="cannot be streamed"):
        client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=2, stream=True,
                                       response_format={"type": "json_object"})


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": 1}', '{"a": 1}'),
    ('<think>maybe {"no": 1}</think><answer>{"action": "click", "x": [1, 2]}</answer>',
     '{"action": "click", "x": [1, 2]}'),
    ('Sure:\n```json\n{"ok": true, "n": {"m": null}}\n```', '{"ok": true, "n": {"m": null}}'),
    ('<|begin_of_box|>{"box": [1, 2, 3, 4]}<|end_of_box|> and {"other": 1}', '{"box": [1, 2, 3, 4]}'),
    ('bad {oops} then {"b": "c"}', '{"b": "c"}'),
])
def test_json_object_text_extracts_the_object(text: str, expected: str) -> None:
    assert json_object_text(text) == expected


@pytest.mark.parametrize("text", ["no json here", "[1, 2]", '{"cut": "off'])
def test_json_object_text_refuses_answers_without_an_object(text: str) -> None:
    with pytest.raises(RequestError) as info:
        json_object_text(text)
    assert info.value.status == 422


# ----------------------------------------------------------------------------- batching


def test_queued_requests_are_batched_and_equal_their_solo_answers(served: Served, engine: Glm4vEngine) -> None:
    image_chat = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url()}},
                                               {"type": "text", "text": "Describe"}]}]
    chats = [user("First question"), user("A much longer second question, with more words in it"),
             image_chat, user("Fourth")]
    engine_chats = [*chats[:2], [{"role": "user", "content": [
        {"type": "image", "image": Image.new("RGB", (64, 48), "red")}, {"type": "text", "text": "Describe"}]}],
        chats[3]]
    alone = [solo(engine, c, max_new_tokens=6) for c in engine_chats]
    expected = [(r.text, r.completion_tokens, r.prompt_tokens) for r in alone]
    bodies = [{"messages": c, "max_tokens": 6, "temperature": 0} for c in chats]
    results, sizes_before = post_queued(served, bodies)
    got = [(r.json()["choices"][0]["message"]["content"], r.json()["usage"]["completion_tokens"],
            r.json()["usage"]["prompt_tokens"]) for r in results]
    assert got == expected
    assert list(served.scheduler.batch_sizes)[sizes_before:] == [4]  # one batch of four


def test_different_settings_are_batched_apart_and_honoured(served: Served, engine: Glm4vEngine) -> None:
    plain = solo(engine, user("Settings"), max_new_tokens=8).text
    stop = plain[3:5]
    expected = [solo(engine, user("Settings"), max_new_tokens=8).text,
                solo(engine, user("Other"), max_new_tokens=8).text,
                solo(engine, user("Settings"), max_new_tokens=3).text,
                solo(engine, user("Settings"), max_new_tokens=8, stop=[stop]).text]
    assert expected[3] != expected[0]  # the stop string really cuts
    bodies = [{"messages": user("Settings"), "max_tokens": 8, "temperature": 0},
              {"messages": user("Other"), "max_tokens": 8, "temperature": 0, "seed": 5},  # greedy: seed irrelevant
              {"messages": user("Settings"), "max_tokens": 3, "temperature": 0},
              {"messages": user("Settings"), "max_tokens": 8, "temperature": 0, "stop": [stop]}]
    results, sizes_before = post_queued(served, bodies)
    assert [r.json()["choices"][0]["message"]["content"] for r in results] == expected
    assert sorted(list(served.scheduler.batch_sizes)[sizes_before:]) == [1, 1, 2]


def test_seeded_sampling_runs_alone_and_reproduces(served: Served) -> None:
    body = {"messages": user("Sample"), "max_tokens": 6, "temperature": 1.0, "seed": 42}
    results, sizes_before = post_queued(served, [body, body, {**body, "seed": 43}])
    texts = [r.json()["choices"][0]["message"]["content"] for r in results]
    assert texts[0] == texts[1] != texts[2]
    assert list(served.scheduler.batch_sizes)[sizes_before:] == [1, 1, 1]


def test_streamed_requests_are_batched_too(served: Served, engine: Glm4vEngine) -> None:
    expected = [solo(engine, user(q), max_new_tokens=6).text for q in ("One", "Two")]
    streams: list[list[str]] = [[], []]

    def read(i: int, question: str) -> None:
        body = {"messages": user(question), "max_tokens": 6, "temperature": 0, "stream": True}
        with openai.OpenAI(base_url=served.v1, api_key="x", max_retries=0) as c:
            for chunk in c.chat.completions.create(model=MODEL, **body):
                streams[i].extend(choice.delta.content or "" for choice in chunk.choices)

    with blocker(served):
        threads = [threading.Thread(target=read, args=(i, q), daemon=True) for i, q in enumerate(("One", "Two"))]
        for thread in threads:
            thread.start()
        wait_until(lambda: served.scheduler.waiting == 2, "the streams did not queue")
        sizes_before = len(served.scheduler.batch_sizes)
    for thread in threads:
        thread.join(300)
    assert ["".join(s) for s in streams] == expected
    assert list(served.scheduler.batch_sizes)[sizes_before:] == [2]


def test_requests_sent_together_to_an_idle_server_share_one_batch(engine: Glm4vEngine) -> None:
    """The idle engine waits for admitted requests still being preprocessed (the window is
    600 s here, so a wait for anything else would time the clients out), and a lone
    request does not wait at all."""
    config = ServerConfig(model_name=MODEL, max_batch=4, batch_wait_s=600)
    with running_server(engine, config) as idle:
        lone = httpx.post(idle.v1 + "/chat/completions", json={"messages": user("alone"), "max_tokens": 2},
                          timeout=60)
        assert lone.status_code == 200 and list(idle.scheduler.batch_sizes) == [1]
        # Four bodies that are all on their way in before the first one is complete.
        bodies = [json.dumps({"messages": user(q), "max_tokens": 3, "temperature": 0}).encode()
                  for q in ("a", "bb", "ccc", "dddd")]
        socks = [_raw_request(idle, body, send=len(body) - 1) for body in bodies]
        wait_until(lambda: idle.scheduler.arriving == 4, "the four requests did not arrive")
        for sock, body in zip(socks, bodies):
            sock.sendall(body[-1:])
        replies = [_read_response(sock) for sock in socks]
        assert all(reply.startswith(b"HTTP/1.1 200") for reply in replies), replies
        assert list(idle.scheduler.batch_sizes) == [1, 4]
        bad = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:image/png;base64,AAAA"}}]}], "max_tokens": 2}
        # One of two fails in preprocessing: the other must not wait for it.
        threads, results = post_in_threads(idle.v1, [bad, {"messages": user("ok"), "max_tokens": 2}])
        for thread in threads:
            thread.join(120)
        assert [r.status_code for r in results] == [400, 200]


# ----------------------------------------------------------------------------- admission and cancellation


def _raw_request(served: Served, body: bytes, send: int | None = None) -> socket.socket:
    """A chat request on a raw socket, of which the first `send` bytes of the body are sent."""
    port = int(served.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                 + body[:send])
    return sock


def _read_response(sock: socket.socket) -> bytes:
    with sock:
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_disconnected_non_streaming_client_cancels_its_generation(served: Served) -> None:
    abandoned = served.scheduler.abandoned
    sock = _raw_request(served, b'{"messages": [{"role": "user", "content": "long"}], "max_tokens": 20000}')
    wait_until(lambda: served.scheduler.running == 1, "the request did not start")
    sock.close()
    wait_until(lambda: served.scheduler.abandoned == abandoned + 1, "the generation was not stopped")
    wait_until(lambda: served.scheduler.admitted == 0 and served.scheduler.running == 0, "slot not released")


def test_disconnected_waiting_client_is_dropped_before_it_runs(served: Served) -> None:
    with blocker(served):
        sock = _raw_request(served, b'{"messages": [{"role": "user", "content": "w"}], "max_tokens": 3}')
        wait_until(lambda: served.scheduler.waiting == 1, "the request did not queue")
        sizes_before = len(served.scheduler.batch_sizes)
        sock.close()
        wait_until(lambda: served.scheduler.admitted == 1, "the waiting request kept its slot")
    wait_until(lambda: served.scheduler.running == 0 and served.scheduler.admitted == 0, "blocker not stopped")
    assert len(served.scheduler.batch_sizes) == sizes_before  # it never ran


def test_full_queue_answers_503_before_decoding_images(engine: Glm4vEngine) -> None:
    config = ServerConfig(model_name=MODEL, max_queue=1, max_batch=1)
    with running_server(engine, config) as small:
        with blocker(small):
            corrupt = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()
            reply = httpx.post(small.v1 + "/chat/completions", json={"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": corrupt}}]}], "max_tokens": 2})
            # 503, not "could not be decoded": the image was never looked at.
            assert reply.status_code == 503 and "busy" in reply.json()["error"]["message"]
        wait_until(lambda: small.scheduler.admitted == 0, "blocker slot not released")
        served_again = httpx.post(small.v1 + "/chat/completions", json={"messages": user("x"), "max_tokens": 2})
        assert served_again.status_code == 200
