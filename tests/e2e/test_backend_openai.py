"""OpenAIBackend against a real HTTP server on 127.0.0.1 (http.server in a thread).

The server implements /v1/chat/completions (JSON and SSE) and /v1/models with scripted
answers and failure modes; it records every request so the exact body can be checked.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from glmv_agent.backends.openai import OpenAIBackend, image_data_url, retry_delay
from glmv_agent.errors import BackendError, InputError
from glmv_agent.messages import image, message
from scripted_openai import ScriptedServer, chunk, completion, server  # noqa: F401 - server: fixture


@pytest.fixture
def backend(server: ScriptedServer) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(server.url, "glm-4.5v", api_key="k-123", backoff=0.01, max_retries=2,
                      timeout=5)
    yield b
    b.close()


def screenshot() -> Image.Image:
    img = Image.new("RGB", (8, 6), "white")
    img.putpixel((3, 2), (255, 0, 0))
    return img


MESSAGES = [message("system", "You are a GUI agent."),
            message("user", image(screenshot()), "Click the red dot.")]


def test_request_body_and_answer(server: ScriptedServer, backend: OpenAIBackend) -> None:
    box = "<|begin_of_box|>[375,416]<|end_of_box|>"
    server.script.append(("json", 200, completion(f"<answer>{box}</answer>")))
    text = backend.complete(MESSAGES, max_new_tokens=128, temperature=0.0, top_p=0.9, top_k=2,
                            repetition_penalty=1.1, stop=["</answer>"], enable_thinking=False)
    assert text == f"<answer>{box}</answer>"
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer k-123"
    body = req["body"]
    assert body["model"] == "glm-4.5v" and body["stream"] is False
    assert body["skip_special_tokens"] is False
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"],
            body["repetition_penalty"], body["stop"]) == (128, 0.0, 0.9, 2, 1.1, ["</answer>"])
    assert body["messages"][0] == {"role": "system", "content": "You are a GUI agent."}
    parts = body["messages"][1]["content"]
    assert parts[1] == {"type": "text", "text": "Click the red dot."}
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (8, 6) and decoded.convert("RGB").getpixel((3, 2)) == (255, 0, 0)


def test_defaults_not_sent_and_extra_body(server: ScriptedServer) -> None:
    b = OpenAIBackend(server.url, "m", extra_body={"min_p": 0.05}, image_format="jpeg")
    server.script.append(("json", 200, completion("ok")))
    assert b.complete(MESSAGES, extra={"seed": 7}) == "ok"
    body = server.requests[0]["body"]
    assert "temperature" not in body and "chat_template_kwargs" not in body
    assert body["min_p"] == 0.05 and body["seed"] == 7
    assert body["messages"][1]["content"][0]["image_url"]["url"].startswith(
        "data:image/jpeg;base64,")
    b.close()


def test_reasoning_content_is_rewrapped(server: ScriptedServer, backend: OpenAIBackend) -> None:
    server.script.append(("json", 200, completion("<answer>DONE()</answer>", "It is done.")))
    assert backend.complete(MESSAGES) == "<think>It is done.</think><answer>DONE()</answer>"


def test_streaming_with_reasoning(server: ScriptedServer, backend: OpenAIBackend) -> None:
    server.script.append(("sse", [chunk(role="assistant"), chunk(reasoning_content="Look "),
                                  chunk(reasoning_content="there."), chunk(content="<answer>"),
                                  chunk(content="WAIT()</answer>")]))
    deltas = list(backend.stream(MESSAGES, enable_thinking=True))
    assert "".join(deltas) == "<think>Look there.</think><answer>WAIT()</answer>"
    assert len(deltas) > 2
    assert server.requests[0]["body"]["stream"] is True
    server.script.append(("sse", [chunk(content="plain "), chunk(content="text")]))
    assert "".join(backend.stream(MESSAGES)) == "plain text"


def test_retries_on_5xx_429_and_dropped_connections(server: ScriptedServer,
                                                    backend: OpenAIBackend) -> None:
    server.script += [("json", 503, {"error": {"message": "busy"}}),
                      ("json", 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
                      ("json", 200, completion("third time"))]
    assert backend.complete(MESSAGES) == "third time"
    assert len(server.requests) == 3
    server.script += [("drop",), ("json", 200, completion("after drop"))]
    assert backend.complete(MESSAGES) == "after drop"
    server.script += [("drop",), ("sse", [chunk(content="streamed")])]
    assert "".join(backend.stream(MESSAGES)) == "streamed"


def test_gives_up_after_max_retries(server: ScriptedServer, backend: OpenAIBackend) -> None:
    server.script += [("json", 500, {"error": {"message": "boom"}})] * 3
    with pytest.raises(BackendError, match="kept failing.*boom"):
        backend.complete(MESSAGES)
    assert len(server.requests) == 3  # one try + max_retries=2


def test_auth_error_names_env_vars(server: ScriptedServer, monkeypatch) -> None:
    monkeypatch.delenv("GLMV_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = OpenAIBackend(server.url, "m")
    server.script.append(("json", 401, {"error": {"message": "invalid key"}}))
    with pytest.raises(BackendError, match="GLMV_API_KEY.*OPENAI_API_KEY") as err:
        b.complete(MESSAGES)
    assert "was not set" in str(err.value) and "invalid key" in str(err.value)
    assert "Authorization" not in server.requests[0]["headers"]
    assert len(server.requests) == 1  # auth errors are not retried
    monkeypatch.setenv("GLMV_API_KEY", "from-env")
    b2 = OpenAIBackend(server.url, "m")
    server.script.append(("json", 200, completion("ok")))
    b2.complete(MESSAGES)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer from-env"


def test_model_not_found_lists_models(server: ScriptedServer) -> None:
    b = OpenAIBackend(server.url, "glm-9000")
    server.script.append(("json", 404, {"error": {"message": "The model `glm-9000` does not "
                                                             "exist."}}))
    with pytest.raises(BackendError, match=r"'glm-9000' is not served.*\['glm-4.5v'\]"):
        b.complete(MESSAGES)
    server.models = None
    server.script.append(("json", 404, {"error": {"message": "not found"}}))
    with pytest.raises(BackendError, match="ends with /v1"):
        b.complete(MESSAGES)


def test_bad_request_and_garbage(server: ScriptedServer, backend: OpenAIBackend) -> None:
    server.script.append(("json", 400, {"error": {"message": "prompt too long"}}))
    with pytest.raises(BackendError, match="prompt too long"):
        backend.complete(MESSAGES)
    server.script.append(("json", 200, {"unexpected": True}))
    with pytest.raises(BackendError, match="not a chat completion"):
        backend.complete(MESSAGES)


def test_unreachable_server() -> None:
    srv = ScriptedServer()  # bound, then closed: nothing listens on that port any more
    url = srv.url
    srv.server_close()
    b = OpenAIBackend(url, "m", max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="cannot reach.*glmv-agent serve"):
        b.complete(MESSAGES)
    with pytest.raises(BackendError, match="cannot reach"):
        list(b.stream(MESSAGES))


def test_timeout(server: ScriptedServer) -> None:
    b = OpenAIBackend(server.url, "m", timeout=0.3, max_retries=0)
    server.script.append(("hang",))
    with pytest.raises(BackendError, match="did not answer within 0.3s"):
        b.complete(MESSAGES)


def test_input_errors(backend: OpenAIBackend, tmp_path) -> None:
    with pytest.raises(InputError):
        backend.complete([])
    with pytest.raises(InputError, match="only hold text"):
        backend.to_openai_messages([message("assistant", image(screenshot()))])
    with pytest.raises(InputError, match="cannot read image"):
        image_data_url(str(tmp_path / "missing.png"))
    with pytest.raises(InputError, match="not a readable image"):
        image_data_url(b"not an image")
    with pytest.raises(InputError, match="PIL image"):
        image_data_url(3.5)
    path = tmp_path / "s.png"
    screenshot().save(path)
    assert image_data_url(path).startswith("data:image/png;base64,")
    with pytest.raises(BackendError, match="http"):
        OpenAIBackend("127.0.0.1:8000", "m")


def test_retry_delay() -> None:
    assert retry_delay(0, 1.0, 30) == 1.0
    assert retry_delay(3, 1.0, 30) == 8.0
    assert retry_delay(10, 1.0, 30) == 30
    assert retry_delay(0, 1.0, 30, "2") == 2.0
    assert retry_delay(0, 1.0, 30, "120") == 30
    assert retry_delay(0, 1.0, 30, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_delay(1, 1.0, 30, "soon") == 2.0  # unparseable: exponential backoff


def _sent_images(request: dict) -> list[Image.Image]:
    parts = request["body"]["messages"][-1]["content"]
    return [Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1])))
            for p in parts if p["type"] == "image_url"]


def test_each_image_is_encoded_once_across_steps(server: ScriptedServer,
                                                  backend: OpenAIBackend) -> None:
    """An agent re-sends its history screenshots every step: each is encoded once, and
    what the server receives is still exactly each step's images."""
    shots = []
    for i in range(4):
        shot = screenshot()
        shot.putpixel((i, 0), (0, 0, 255))  # each step's screen differs
        shots.append(shot)
    for step in range(1, 5):
        server.script.append(("json", 200, completion("ok")))
        history = shots[max(0, step - 3):step]  # up to 3 images, the newest last
        backend.complete([message("user", *[image(s) for s in history], "go on")])
        sent = _sent_images(server.requests[-1])
        assert [s.convert("RGB").tobytes() for s in sent] == [s.tobytes() for s in history]
    assert backend.image_urls.encoded == 4  # 1 + 2 + 3 + 3 images sent, 4 distinct

    # An image changed in place is encoded again: the key is its content, not its identity.
    shots[3].putpixel((7, 5), (0, 255, 0))
    server.script.append(("json", 200, completion("ok")))
    backend.complete([message("user", image(shots[3]), "again")])
    assert backend.image_urls.encoded == 5
    (sent,) = _sent_images(server.requests[-1])
    assert sent.convert("RGB").getpixel((7, 5)) == (0, 255, 0)

    # Bounded: the least recently used encodings are dropped.
    backend.image_urls.size = 2
    for i in range(3):
        backend.to_openai_messages([message("user", image(Image.new("RGB", (4, 4), (i, 0, 0))))])
    assert len(backend.image_urls._urls) == 2
