"""The server against hostile or broken clients: API key, request forgery, malformed HTTP,
slow sockets, limits, and the start-up order. Real uvicorn on 127.0.0.1, real sockets.

Request forgery is tested with real HTTP servers on 127.0.0.1 that count every request
they get: each loopback/private spelling must be refused with zero hits. Redirects need a
host the server *may* fetch from; no public host is reachable here, so those tests give
the server a policy that treats one loopback alias (127.0.0.2) as public, and check that
its redirects to 127.0.0.1 (and every other spelling) are refused, again with zero hits.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest

from glmv_agent import cli
from glmv_agent.glm4v.engine import Glm4vEngine, load
from glmv_agent.server import ImagePolicy, ServerConfig
from served import Served, png_data_url, running_server, user, wait_until

MODEL = "tiny-glm4v"
KEY = "sekrit-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG = base64.b64decode(png_data_url((8, 8)).split(",", 1)[1])


# ----------------------------------------------------------------------------- image origins


class _Origin(BaseHTTPRequestHandler):
    """An image host that counts hits; /redirect?to=, /slow, /big, /chunked-big, /hop/N."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/redirect":
            self._redirect(query["to"][0])
        elif parts.path == "/loop":
            self._redirect("/loop")
        elif parts.path.startswith("/hop/"):
            n = int(parts.path.rsplit("/", 1)[1])
            self._redirect(f"/hop/{n - 1}" if n > 1 else "/ok.png")
        elif parts.path == "/slow":
            time.sleep(3)
            self._send(PNG)
        elif parts.path == "/big":
            self._send(b"\0" * 50_000)
        elif parts.path == "/chunked-big":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()  # no length: read until close
            self.wfile.write(b"\0" * 50_000)
            self.close_connection = True
        else:
            self._send(PNG)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _origin(host: str) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((host, 0), _Origin)
    server.daemon_threads = True
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def loopback_origin() -> Iterator[ThreadingHTTPServer]:
    """What must never be reached: a server on 127.0.0.1."""
    yield from _origin("127.0.0.1")


@pytest.fixture(scope="module")
def public_origin() -> Iterator[ThreadingHTTPServer]:
    """The stand-in for a public image host, on the loopback alias 127.0.0.2."""
    yield from _origin("127.0.0.2")


@pytest.fixture()
def hits(loopback_origin: ThreadingHTTPServer, public_origin: ThreadingHTTPServer) -> Iterator[None]:
    loopback_origin.hits.clear()  # type: ignore[attr-defined]
    public_origin.hits.clear()  # type: ignore[attr-defined]
    yield


# ----------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> Glm4vEngine:
    return load(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def locked(engine: Glm4vEngine) -> Iterator[Served]:
    """API key, no remote images, small limits and short timeouts."""
    config = ServerConfig(model_name=MODEL, api_key=KEY, context_length=64, default_max_tokens=60,
                          max_body_bytes=20_000, max_request_pixels=10_000, header_timeout_s=1.0,
                          body_timeout_s=1.0)
    with running_server(engine, config) as served:
        yield served


@pytest.fixture(scope="module")
def remote(engine: Glm4vEngine) -> Iterator[Served]:
    """--allow-remote-images with the real policy: public addresses only."""
    with running_server(engine, ServerConfig(model_name=MODEL, allow_remote_images=True)) as served:
        yield served


@pytest.fixture(scope="module")
def standin(engine: Glm4vEngine) -> Iterator[Served]:
    """--allow-remote-images where only 127.0.0.2 counts as public (the stand-in host)."""
    config = ServerConfig(model_name=MODEL, allow_remote_images=True)
    policy = ImagePolicy(allow_remote=True, max_image_bytes=5_000, fetch_timeout_s=1.0, max_redirects=3,
                         address_allowed=lambda ip: ip == ipaddress.ip_address("127.0.0.2"))
    with running_server(engine, config, policy) as served:
        yield served


def image_request(url: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "What is it?"}]}],
            "max_tokens": 2}


def chat(served: Served, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(served.v1 + "/chat/completions", content=content, timeout=60,
                      headers={"Content-Type": "application/json", **(headers or {})})


# ----------------------------------------------------------------------------- API key


def test_api_key_is_required_on_v1_and_health_stays_open(locked: Served) -> None:
    assert httpx.get(locked.url + "/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                    {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Basic {KEY}"}):
        for reply in (httpx.get(locked.v1 + "/models", headers=headers),
                      chat(locked, {"messages": user("x"), "max_tokens": 2}, headers)):
            assert reply.status_code == 401
            assert reply.headers["www-authenticate"] == "Bearer"
            assert "API key" in reply.json()["error"]["message"] and KEY not in reply.text
    assert httpx.get(locked.v1 + "/models", headers=AUTH).json()["data"][0]["id"] == MODEL
    assert chat(locked, {"messages": user("x"), "max_tokens": 2}, AUTH).status_code == 200


def test_openai_client_with_and_without_the_key(locked: Served) -> None:
    good = openai.OpenAI(base_url=locked.v1, api_key=KEY, max_retries=0)
    assert good.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=2).usage.completion_tokens
    bad = openai.OpenAI(base_url=locked.v1, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_cross_origin_text_plain_post_does_no_work(remote: Served, loopback_origin: ThreadingHTTPServer,
                                                   hits: None) -> None:
    """A web page can POST text/plain to localhost without a preflight; it gets a 415, nothing runs."""
    port = loopback_origin.server_address[1]
    reply = httpx.post(remote.v1 + "/chat/completions", content=json.dumps(image_request(
        f"http://127.0.0.1:{port}/a.png")), headers={"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert reply.status_code == 415 and "application/json" in reply.json()["error"]["message"]
    assert "access-control-allow-origin" not in reply.headers
    preflight = httpx.options(remote.v1 + "/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    assert loopback_origin.hits == []  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- request forgery


def test_remote_images_are_off_by_default(locked: Served, loopback_origin: ThreadingHTTPServer,
                                          hits: None) -> None:
    port = loopback_origin.server_address[1]
    reply = chat(locked, image_request(f"http://127.0.0.1:{port}/a.png"), AUTH)
    assert reply.status_code == 400 and "--allow-remote-images" in reply.json()["error"]["message"]
    assert loopback_origin.hits == []  # type: ignore[attr-defined]


LOOPBACK_SPELLINGS = [
    "http://localhost:{port}/a.png", "http://127.0.0.1:{port}/a.png", "http://2130706433:{port}/a.png",
    "http://0.0.0.0:{port}/a.png", "http://127.1:{port}/a.png", "http://0x7f000001:{port}/a.png",
    "http://0177.0.0.1:{port}/a.png", "http://127.0.0.1.:{port}/a.png", "http://LOCALHOST:{port}/a.png",
    "http://[::1]:{port}/a.png", "http://[::ffff:127.0.0.1]:{port}/a.png", "http://[::ffff:7f00:1]:{port}/a.png",
    "http://user@127.0.0.1:{port}/a.png", "http://user:pw@localhost:{port}/a.png",
    "http://evil.example@127.0.0.1:{port}/a.png", "https://127.0.0.1:{port}/a.png",
    "http://10.0.0.1:{port}/a.png", "http://192.168.1.1/a.png", "http://172.16.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/a.png", "http://[fd00::1]/a.png",
    "http://[fe80::1]/a.png", "http://224.0.0.1/a.png",
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_no_fetch_to_loopback_or_private_addresses(remote: Served, loopback_origin: ThreadingHTTPServer,
                                                   hits: None, spelling: str) -> None:
    reply = chat(remote, image_request(spelling.format(port=loopback_origin.server_address[1])))
    assert reply.status_code in (400, 403), reply.text
    message = reply.json()["error"]["message"]
    assert any(reason in message for reason in ("refused", "not a public address", "could not be resolved"))
    assert "Connection" not in message and "HTTP 200" not in message
    assert loopback_origin.hits == []  # type: ignore[attr-defined]


def test_a_public_host_is_fetched_and_its_redirects_followed(standin: Served,
                                                             public_origin: ThreadingHTTPServer, hits: None) -> None:
    port = public_origin.server_address[1]
    assert chat(standin, image_request(f"http://127.0.0.2:{port}/ok.png")).status_code == 200
    assert chat(standin, image_request(f"http://127.0.0.2:{port}/hop/3")).status_code == 200
    assert public_origin.hits == ["/ok.png", "/hop/3", "/hop/2", "/hop/1", "/ok.png"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{loop}/a.png", "http://localhost:{loop}/a.png", "http://2130706433:{loop}/a.png",
    "http://127.0.0.1:{public}/a.png", "http://[::ffff:127.0.0.1]:{loop}/a.png", "http://user@127.0.0.2:{public}/",
    "file:///etc/passwd", "gopher://127.0.0.1:{loop}/",
])
def test_redirects_to_loopback_are_refused(standin: Served, loopback_origin: ThreadingHTTPServer,
                                           public_origin: ThreadingHTTPServer, hits: None, target: str) -> None:
    to = target.format(loop=loopback_origin.server_address[1], public=public_origin.server_address[1])
    url = f"http://127.0.0.2:{public_origin.server_address[1]}/redirect?to={to}"
    reply = chat(standin, image_request(url))
    assert reply.status_code in (400, 403), reply.text
    assert loopback_origin.hits == []  # type: ignore[attr-defined]
    assert len(public_origin.hits) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("/loop", 400, "redirected more than 3 times"),
    ("/big", 413, "larger than"),
    ("/chunked-big", 413, "larger than"),
    ("/slow", 400, "took longer than 1 s"),
])
def test_remote_fetch_caps(standin: Served, public_origin: ThreadingHTTPServer, hits: None,
                           path: str, status: int, fragment: str) -> None:
    reply = chat(standin, image_request(f"http://127.0.0.2:{public_origin.server_address[1]}{path}"))
    assert reply.status_code == status and fragment in reply.json()["error"]["message"]


# ----------------------------------------------------------------------------- malformed requests


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("body", "fragment"), [
    ("[" * 15_000, "deeper"),
    (json.dumps({"messages": user("x"), "metadata": _nested(100)}), "deeper"),
    ({"messages": user("x"), "seed": 2**70}, "seed"),
    ('{"messages": [{"role": "user", "content": "x"}], "seed": 1e300}', "seed"),
    ('{"messages": [{"role": "user", "content": "x"}], "repetition_penalty": NaN}', "repetition_penalty"),
    ('{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}', "temperature"),
    ({"messages": user("x"), "repetition_penalty": 1e-300}, "repetition_penalty"),
    ({"messages": user("x"), "top_p": 0}, "top_p"),
    ({"messages": user("x"), "stream": True, "stream_options": "include_usage"}, "stream_options"),
    ({"messages": user("x"), "stream": True, "stream_options": [1]}, "stream_options"),
    ({"messages": user("x"), "stream": True, "stream_options": {"include_usage": "yes"}}, "include_usage"),
    ({"messages": user("x"), "stream_options": {"include_usage": True}}, "only allowed with stream"),
    ({"messages": user("x"), "stream": "false"}, "stream"),
    ({"messages": user("x"), "max_tokens": 0}, "max_tokens"),
    ({"messages": user("x"), "max_tokens": 1.5}, "max_tokens"),
    ({"messages": user("x"), "max_tokens": "5"}, "max_tokens"),
    ({"messages": user("x"), "max_tokens": True}, "max_tokens"),
    ({"messages": user("x"), "stop": [""]}, "stop"),
    ({"messages": []}, "non-empty"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"messages": "hello"}, "messages"),
    ({"model": "gpt-9", "messages": user("x")}, "does not exist"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_malformed_bodies_get_a_json_4xx(locked: Served, body: Any, fragment: str) -> None:
    reply = chat(locked, body, AUTH)
    assert 400 <= reply.status_code < 500, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert fragment in reply.json()["error"]["message"]


def test_tiny_temperature_means_greedy(locked: Served) -> None:
    tiny = chat(locked, {"messages": user("x"), "max_tokens": 4, "temperature": 1e-300}, AUTH)
    greedy = chat(locked, {"messages": user("x"), "max_tokens": 4, "temperature": 0}, AUTH)
    assert tiny.status_code == 200
    assert tiny.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


def _raw(served: Served, data: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or `wait` passes)."""
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def _json_response(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize(("data", "status"), [
    (b"PUT /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GARBAGE\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello on the plain port
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
])
def test_protocol_errors_are_json(locked: Served, data: bytes, status: int) -> None:
    authed = data.replace(b"Host: x\r\n", b"Host: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n")
    got, body = _json_response(_raw(locked, authed))
    assert got == status and body["error"]["code"] == status


def test_unfinished_headers_and_bodies_time_out_with_408(locked: Served) -> None:
    got, body = _json_response(_raw(locked, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"))
    assert got == 408 and "headers" in body["error"]["message"]
    partial = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"messages\": ")
    got, body = _json_response(_raw(locked, partial))
    assert got == 408 and "body" in body["error"]["message"]


def test_many_slow_sockets_are_all_closed(locked: Served) -> None:
    port = int(locked.url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(60)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /health HTTP/1.1\r\n" if i % 2 else b"")
        for sock in socks:
            while sock.recv(65536):  # the server closes every one of them
                pass
    finally:
        for sock in socks:
            sock.close()
    assert httpx.get(locked.url + "/health").status_code == 200  # and still serves


def test_connections_beyond_the_limit_get_a_json_503(engine: Glm4vEngine) -> None:
    with running_server(engine, ServerConfig(model_name=MODEL, max_connections=4)) as served:
        port = int(served.url.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            wait_until(lambda: _raw(served, b"").startswith(b"HTTP/1.1 503"), "no 503 beyond the limit")
            got, body = _json_response(_raw(served, b""))
            assert got == 503 and "too many open connections" in body["error"]["message"]
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: _answers(served.url + "/health"), "the server did not recover")


# ----------------------------------------------------------------------------- limits


def test_body_size_cap(locked: Served) -> None:
    big = json.dumps({"messages": user("x" * 30_000)})
    declared = chat(locked, big, AUTH)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 1000

    chunked = httpx.post(locked.v1 + "/chat/completions", content=chunks(),
                         headers={"Content-Type": "application/json", **AUTH})
    assert chunked.status_code == 413


def test_prompt_and_max_tokens_must_fit_the_context(locked: Served, engine: Glm4vEngine) -> None:
    text = " ".join(f"w{i}" for i in range(60))
    tokens = int(engine.prepare(user(text))["input_ids"].shape[1])
    assert tokens > 64 and len(text) < 64 * 16  # past the context, but not the cheap character test
    too_long = chat(locked, {"messages": user(text), "max_tokens": 2}, AUTH)
    assert too_long.status_code == 400 and f"prompt is {tokens} tokens" in too_long.json()["error"]["message"]
    huge = chat(locked, {"messages": user("z" * 5000), "max_tokens": 2}, AUTH)
    assert huge.status_code == 400 and "characters" in huge.json()["error"]["message"]

    prompt = int(engine.prepare(user("x"))["input_ids"].shape[1])
    over = chat(locked, {"messages": user("x"), "max_tokens": 64 - prompt + 1}, AUTH)
    assert over.status_code == 400 and f"only {64 - prompt} tokens remain" in over.json()["error"]["message"]
    # No max_tokens: the default (60) is clipped to what remains instead of refused.
    clipped = chat(locked, {"messages": user("x"), "temperature": 0}, AUTH).json()["usage"]
    assert clipped["prompt_tokens"] == prompt and clipped["total_tokens"] <= 64


def test_pixel_cap_per_request(locked: Served) -> None:
    small = png_data_url((80, 80))  # 6400 pixels; the cap is 10000 per request
    one = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": small}}]}],
           "max_tokens": 1}
    assert chat(locked, one, AUTH).status_code == 200
    two = {**one, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": small}}, {"type": "image_url", "image_url": {"url": small}}]}]}
    reply = chat(locked, two, AUTH)
    assert reply.status_code == 413 and "10000 pixels" in reply.json()["error"]["message"]


def test_undecodable_images_are_described_without_object_reprs(locked: Served) -> None:
    for raw in (b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        url = "data:image/png;base64," + base64.b64encode(raw).decode()
        body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        reply = chat(locked, body, AUTH)
        message = reply.json()["error"]["message"]
        assert reply.status_code == 400 and "could not be decoded" in message
        assert "BytesIO" not in message and " at 0x" not in message


def test_eps_is_not_decoded(locked: Served) -> None:
    """Pillow would hand EPS to Ghostscript; only screenshot formats are opened."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    url = "data:image/png;base64," + base64.b64encode(eps).decode()
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    reply = chat(locked, body, AUTH)
    assert reply.status_code == 400 and "not a PNG, JPEG" in reply.json()["error"]["message"]


# ----------------------------------------------------------------------------- start-up order


def test_taken_port_is_a_one_line_error_before_loading(tiny_checkpoint: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["serve", "--model", str(tiny_checkpoint), "--port", str(port)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_USAGE
    assert out.strip().splitlines() == [f"error: port {port} on 127.0.0.1 is already in use: stop the other "
                                        "server or pick another port with --port"]


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--max-queue", "0"], "--max-queue must be a positive integer"),
    (["--max-batch", "9"], "--max-batch (9) cannot exceed --max-queue (8)"),
    (["--default-max-tokens", "-1"], "--default-max-tokens must be a positive integer"),
    (["--api-key", " "], "API key must not be empty"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
])
def test_bad_options_fail_before_loading(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str],
                                         flags: list[str], fragment: str) -> None:
    code = cli.main(["serve", "--model", str(tiny_checkpoint), *flags])
    out = capsys.readouterr().out
    assert code == cli.EXIT_USAGE and fragment in out and "loading" not in out


def test_serve_command_end_to_end(tiny_checkpoint: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GLMV_SERVE_API_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "glmv_agent.cli", "serve", "--model", str(tiny_checkpoint), "--port", str(port),
         "--dtype", "float32", "--model-name", MODEL], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[1].startswith(f"serving '{MODEL}' at http://127.0.0.1:{port}/v1 (API key required"), lines
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url + "/health"), "the served port does not answer")
        assert httpx.get(url + "/v1/models").status_code == 401
        reply = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=60,
                           json={"messages": user("hi"), "max_tokens": 2})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2
    finally:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False
