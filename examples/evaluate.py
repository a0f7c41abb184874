"""Evaluate a model on a list of web tasks: each on a fresh browser, one summary table.

Shows: batch runs with `Agent` + `WebEnv`, one clean environment per task, and a summary
(task, status, steps, seconds, answer, whether the answer matched) printed as a table
and written to `summary.json` and `summary.csv`, next to one trace per task.

Tasks file: JSON list or JSONL, one object per task:

    {"task": "Find the price of Dune", "url": "https://...", "max_steps": 10,
     "expected": "$9.99",           # optional: the answer must contain this text
     "replay": ["<answer>...</answer>", ...]}   # optional: scripted answers for --replay

A `url` of "{demo}" means the bundled Pagebound Books demo app (served on 127.0.0.1).
Without --tasks, three built-in tasks on the demo app are used.

Run it here, without weights (scripted answers, real browser):

    python examples/evaluate.py --replay --out-dir /tmp/eval

With a real model:

    python examples/evaluate.py --tasks my_tasks.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --model-name glm-4.1v --out-dir eval-results
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import add_model_args, model_from_args

from glmv_agent import Agent, WebEnv
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.demo import demo_dir, replay_answers, serve_directory
from glmv_agent.errors import GlmvAgentError


def scripted(thought: str, action: str) -> str:
    return (f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n"
            "Memory_Updated: {}</answer>")


DEMO_TASKS: list[dict[str, Any]] = [
    {"task": "Find the price of the book Dune by Frank Herbert at Pagebound Books.",
     "url": "{demo}", "expected": "$9.99", "replay": replay_answers("glm-4.1v")},
    {"task": "Who wrote Neuromancer? Use the Pagebound Books catalogue.", "url": "{demo}",
     "expected": "William Gibson",
     "replay": [scripted("I search the catalogue for Neuromancer.", "Type [0]; [Neuromancer]"),
                scripted("The result says Neuromancer by William Gibson, 1984.",
                         "ANSWER; <content>William Gibson</content>")]},
    {"task": "Find the price of Hyperion.", "url": "{demo}", "expected": "$11.25",
     "max_steps": 2,  # too few steps on purpose: this one ends as max_steps
     "replay": [scripted("I search for Hyperion.", "Type [0]; [Hyperion]"),
                scripted("Hyperion is in the results as [2].", "Click [2]")]},
]


def load_tasks(path: Path) -> list[dict[str, Any]]:
    text = path.read_text("utf-8")
    items = json.loads(text) if text.lstrip().startswith("[") else [
        json.loads(line) for line in text.splitlines() if line.strip()]
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("task"), str) or not item.get("url"):
            raise SystemExit(f"{path}: task {i} needs a 'task' string and a 'url'")
    return items


def run_task(item: dict[str, Any], model: Any, args: argparse.Namespace, demo_url: str,
             trace_dir: Path) -> dict[str, Any]:
    url = item["url"].replace("{demo}", demo_url)
    if args.replay:
        if "replay" not in item:
            raise SystemExit(f"--replay: task {item['task']!r} has no 'replay' answers")
        model = ReplayBackend(item["replay"])
    started = time.monotonic()
    row: dict[str, Any] = {"task": item["task"], "status": "error", "steps": 0, "answer": None}
    try:
        with WebEnv.launch(url, set_of_marks=True) as env:  # a fresh browser per task
            agent = Agent(model, env, family=args.family, trace_dir=trace_dir,
                          max_steps=int(item.get("max_steps", args.max_steps)))
            result = agent.run(item["task"])
        row.update(status=result.status, steps=len(result.steps), answer=result.answer,
                   trace=result.trace_dir, error=result.error)
    except GlmvAgentError as exc:  # one broken task must not end the evaluation
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = round(time.monotonic() - started, 2)
    expected = item.get("expected")
    row["correct"] = None if expected is None else bool(
        row["answer"] and expected.lower() in row["answer"].lower())
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ["#", "task", "status", "steps", "seconds", "answer", "correct"]
    table = [[str(i + 1), r["task"][:48], r["status"], str(r["steps"]), f"{r['seconds']:.1f}",
              str(r["answer"])[:30], {True: "yes", False: "no", None: "-"}[r["correct"]]]
             for i, r in enumerate(rows)]
    widths = [max(len(h), *(len(row[c]) for row in table)) for c, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--tasks", type=Path, help="JSON/JSONL tasks file (default: demo tasks)")
    parser.add_argument("--family", default="glm-4.1v")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--out-dir", type=Path, default=Path("eval-results"))
    args = parser.parse_args(argv)
    tasks = load_tasks(args.tasks) if args.tasks else DEMO_TASKS
    model = model_from_args(parser, args, scripted=[])
    args.out_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    with ExitStack() as stack:
        demo_url = ""
        if any("{demo}" in t["url"] for t in tasks):
            demo_url = stack.enter_context(serve_directory(demo_dir())) + "index.html"
        for i, item in enumerate(tasks):
            row = run_task(item, model, args, demo_url, args.out_dir / f"trace-{i + 1:03d}")
            print(f"[{i + 1}/{len(tasks)}] {row['status']}: {item['task']}", flush=True)
            rows.append(row)

    print()
    print_table(rows)
    done = sum(r["status"] in ("success", "answered") for r in rows)
    graded = [r for r in rows if r["correct"] is not None]
    print(f"\nfinished {done}/{len(rows)}; correct {sum(bool(r['correct']) for r in graded)}"
          f"/{len(graded)} graded")
    (args.out_dir / "summary.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False),
                                               encoding="utf-8")
    with open(args.out_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "status", "steps", "seconds", "answer",
                                               "correct", "error", "trace"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"summary: {args.out_dir / 'summary.json'}, {args.out_dir / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
