"""See what Midscene.js sends: a stand-in model endpoint that records every request.

    python examples/midscene/record_requests.py --out /tmp/midscene-requests --port 8765
    MIDSCENE_MODEL_BASE_URL=http://127.0.0.1:8765/v1 npx tsx examples/midscene/demo.ts

It listens on 127.0.0.1, speaks just enough of the OpenAI chat-completions API, saves each
request body as `NN-<kind>.json` (kind: locate, query, assert, plan) with every screenshot
moved to its own `screenshot-N.jpg` and referenced as `data:image/jpeg;base64,@screenshot-N.jpg`,
and answers with a canned reply in the format Midscene expects for that kind, so the demo
runs to its end. No model is involved. tests/support/data/midscene/ was captured this way from
Midscene.js 1.13.1; tests/e2e/test_midscene_requests.py replays it against `glmv-agent serve`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Canned answers, in the formats of Midscene's prompts (a 0-1000 bounding box for GLM-V).
LOCATE_REPLY = '{"bbox": [40, 80, 200, 120]}'
QUERY_REPLY = '<observation>One item.</observation><data-json>["Buy milk"]</data-json>'
ASSERT_REPLY = '<observation>It is there.</observation><data-json>{"StatementIsTruthy": true}</data-json>'
PLAN_STEP_REPLY = (
    "<planning>Tap the text box first.</planning>\n<log>Tap the text box</log>\n"
    "<action-type>Tap</action-type>\n<action-param-json>\n"
    '{"locate": {"prompt": "the new to-do text box", "bbox": [40, 80, 200, 120]}}\n'
    "</action-param-json>"
)
PLAN_DONE_REPLY = '<planning>Done.</planning>\n<complete success="true">Done</complete>'


def classify(body: dict[str, Any]) -> tuple[str, str]:
    """(kind, canned reply) for one chat-completion request from Midscene."""
    messages = body.get("messages") or [{}]
    system = messages[0].get("content") if messages[0].get("role") == "system" else ""
    system = system if isinstance(system, str) else json.dumps(system)
    if "helps identify UI elements" in system:
        return "locate", LOCATE_REPLY
    if "DATA_DEMAND" in system:
        if "whether the following statement is true" in json.dumps(messages[-1]):
            return "assert", ASSERT_REPLY
        return "query", QUERY_REPLY
    if any(m.get("role") == "assistant" for m in messages):
        return "plan", PLAN_DONE_REPLY
    return "plan", PLAN_STEP_REPLY


class Recorder:
    """Saves request bodies into `out`, each distinct screenshot once."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count(1)
        self._images: dict[str, str] = {}
        self._lock = threading.Lock()

    def save(self, body: dict[str, Any], kind: str) -> Path:
        with self._lock:
            for message in body.get("messages", []):
                for part in message.get("content") if isinstance(message.get("content"), list) else []:
                    if part.get("type") == "image_url":
                        part["image_url"]["url"] = self._image_ref(part["image_url"]["url"])
            path = self.out / f"{next(self._count):02d}-{kind}.json"
            path.write_text(json.dumps(body, indent=1, ensure_ascii=False), "utf-8")
            return path

    def _image_ref(self, url: str) -> str:
        head, _, data = url.partition(",")
        if not head.startswith("data:image/") or not head.endswith(";base64"):
            return url  # a remote URL: kept as it is
        raw = base64.b64decode(data)
        digest = hashlib.sha256(raw).hexdigest()
        if digest not in self._images:
            name = f"screenshot-{len(self._images) + 1}.{head[len('data:image/'):-len(';base64')]}"
            (self.out / name.replace(".jpeg", ".jpg")).write_bytes(raw)
            self._images[digest] = name.replace(".jpeg", ".jpg")
        return f"{head},@{self._images[digest]}"


def make_server(recorder: Recorder, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            kind, text = classify(body)
            recorder.save(body, kind)
            reply = json.dumps({
                "id": "recorded", "object": "chat.completion", "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            print(f"recorded {self.path}", flush=True)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to save the requests")
    parser.add_argument("--port", type=int, default=8765, help="default: %(default)s")
    args = parser.parse_args()
    server = make_server(Recorder(args.out), args.port)
    print(f"recording at http://127.0.0.1:{server.server_address[1]}/v1 into {args.out}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
