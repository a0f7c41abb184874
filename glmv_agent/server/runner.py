"""Running the app under uvicorn: the listening socket, timeouts, and JSON protocol errors.

The socket is bound before the weights are loaded (`bind_socket`), so a taken port is a
one-line error in a second, not a traceback after minutes of loading; uvicorn then serves
on that very socket. uvicorn has a keep-alive timeout but none for a request that never
finishes its headers, and answers malformed requests in plain text; `GuardedH11Protocol`
adds a header timeout (408) and answers protocol errors (bad request line, bad
Content-Length, too many connections) in the same JSON shape as every other error.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError
from .config import ServerConfig

log = logging.getLogger("glmv_agent.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn, or ConfigError saying why the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"--host {host!r} is not an address or a name this machine can resolve") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers, not live listeners
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use: stop the other server or pick "
                              "another port with --port") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on port {port} (ports below 1024 need root); "
                              "pick another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _json_error(status: int, phrase: str, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": status, "status": phrase}}).encode()
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and JSON protocol errors.

    The timer runs whenever the connection has no request in progress (new connection, or
    idle after a response): a client must deliver a complete request line and headers
    within `header_timeout_s`, whatever uvicorn's keep-alive timer does. A connection that
    sent part of a request gets a 408; an idle one is just closed (an unsolicited response
    on a keep-alive connection could be read as the answer to the client's next request)."""

    header_timeout_s = 10.0
    max_connections = 128

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._partial_head = False
        if len(self.connections) > self.max_connections:  # uvicorn's own limit answers in plain text
            transport.write(_json_error(503, "Service Unavailable", "too many open connections; retry later"))
            transport.close()
            return
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_request() and not self.transport.is_closing():
            if self._partial_head:
                self.transport.write(_json_error(408, "Request Timeout", "the request line and headers did "
                                                 f"not arrive within {self.header_timeout_s:g} s"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._in_request():
            self._arm_head_timer()
            self._partial_head = True
        super().data_received(data)
        if self._in_request():
            self._disarm_head_timer()
            self._partial_head = False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_request():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_json_error(400, "Bad Request", f"malformed HTTP request: {msg}"))
        self.transport.close()


def uvicorn_server(app: Any, config: ServerConfig, *, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn Server for `app` with this config's timeouts (call `.run(sockets=[sock])`)."""
    protocol = type("GuardedH11", (GuardedH11Protocol,), {"header_timeout_s": config.header_timeout_s,
                                                          "max_connections": config.max_connections})
    settings = uvicorn.Config(app, http=protocol, timeout_keep_alive=config.keep_alive_s,
                              log_level=log_level, server_header=False)
    return uvicorn.Server(settings)
