"""Test helper program: the assistant window with a scripted model, remote-controlled.

    python tests/support/window_driver.py '<json options>'

Tk must own the main thread of its process, so tests run the window here and talk to it
with one JSON object per line: commands on stdin, answers on stdout. Options: display,
geometry, answers (model replies replayed in order), trace_root, agent_kwargs, max_steps,
recording_seconds, images_dir (where the screenshots the model received are saved).

Commands: {"cmd": "snapshot"} (what the window shows), {"cmd": "point", "name": ...} (the
screen centre of a button, a dialog button or "entry"), {"cmd": "set", "name": "task" |
"seconds", "value": ...}, {"cmd": "sent"} (save the media the model received, return its
parts), {"cmd": "results"}, {"cmd": "opened"} (URLs the Report button opened),
{"cmd": "take_over", "message": ...} (answers "asked", then {"event": "continued"} once the
dialog's Continue was pressed), {"cmd": "close"}.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from glmv_agent.assistant_window import open_window
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.envs.desktop import DesktopEnv


def main() -> int:
    options = json.loads(sys.argv[1])
    backend = ReplayBackend(options["answers"])
    opened: list[str] = []
    window = open_window(
        backend, display=options["display"], geometry=options["geometry"],
        open_url=opened.append, hotkeys=False, family="glm-4.1v", show_marker=False,
        announce_delay=0.0, env=DesktopEnv(display=options["display"], pause=0.02),
        trace_root=options["trace_root"], agent_kwargs=options.get("agent_kwargs", {"settle_time": 0}),
        max_steps=options.get("max_steps", 30))
    images_dir = Path(options["images_dir"])
    lock = threading.Lock()

    def reply(answer: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()

    def sent() -> list[dict[str, Any]]:
        images_dir.mkdir(parents=True, exist_ok=True)
        parts: list[dict[str, Any]] = []
        for number, conversation in enumerate(backend.messages):
            for message in conversation:
                content = message["content"]
                for index, part in enumerate(content if isinstance(content, list) else []):
                    if part["type"] == "image":
                        path = images_dir / f"call{number}-part{index}.png"
                        part["image"].save(path)
                        parts.append({"call": number, "type": "image", "path": str(path)})
                    elif part["type"] == "video":
                        parts.append({"call": number, "type": "video", "path": part["video"],
                                      "fps": part.get("fps")})
                    else:
                        parts.append({"call": number, "type": "text", "text": part["text"]})
        return parts

    def point(name: str) -> list[int]:
        if name == "entry":
            entry = window.task_entry
            return [entry.winfo_rootx() + 20, entry.winfo_rooty() + entry.winfo_height() // 2]
        return list(window.button_centre(name))

    def setting(name: str, value: str) -> None:
        (window.task_var if name == "task" else window.seconds_var).set(value)

    def results() -> list[dict[str, Any]]:
        assert window.assistant is not None
        return [{"status": r.status, "outcomes": [s.outcome for s in r.steps],
                 "details": [s.detail for s in r.steps]} for r in window.assistant.results]

    def serve() -> None:
        for line in sys.stdin:
            request = json.loads(line)
            command = request["cmd"]
            if command == "close":
                window.post(window.close)
                return
            if command == "snapshot":
                result: Any = window.snapshot()
            elif command == "point":
                result = window.call(lambda: point(request["name"]), None, 10)
            elif command == "set":
                result = window.call(lambda: setting(request["name"], request["value"]), None, 10)
            elif command == "sent":
                result = sent()
            elif command == "results":
                result = window.call(results, [], 10)
            elif command == "opened":
                result = list(opened)
            elif command == "take_over":  # as the agent's worker thread would call it
                def ask_and_report(message: str = request["message"]) -> None:
                    window.take_over(message)
                    reply({"event": "continued"})
                threading.Thread(target=ask_and_report, daemon=True).start()
                result = "asked"
            else:
                result = {"error": f"unknown command {command}"}
            reply({"result": result})
        window.post(window.close)  # stdin closed: the test is gone

    threading.Thread(target=serve, daemon=True).start()
    reply({"event": "ready"})
    return window.run()


if __name__ == "__main__":
    sys.exit(main())
