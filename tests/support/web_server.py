"""Serve `tests/support/web_pages/` on 127.0.0.1 from a background thread, for browser tests.

`serve_pages()` returns a running `PageServer`; `server.url("form.html")` gives a page's
address. `/redirect?to=<url>` answers with a 302 to `to`, for allow-list tests, and
`/slow?ms=<n>` answers after n milliseconds, for stability tests.
"""

from __future__ import annotations

import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from paths import PAGES


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.get("to", ["/"])[0])
            self.end_headers()
            return
        if parts.path == "/slow":
            time.sleep(int(query.get("ms", ["500"])[0]) / 1000)
            body = b"slow done"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # The browser drops connections it no longer needs (a page navigated away).
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class PageServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        handler = functools.partial(_Handler, directory=str(PAGES))
        self._httpd = _QuietServer((host, 0), handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.origin}/{path.lstrip('/')}"

    def start(self) -> PageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_pages(host: str = "127.0.0.1") -> PageServer:
    return PageServer(host).start()
