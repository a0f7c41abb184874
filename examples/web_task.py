"""Run one task on a web page with `Agent` + `WebEnv` (a headless Chromium we launch).

Shows: the basic loop on the web. `WebEnv.launch` starts Chromium and numbers the page's
interactive elements (set-of-marks) as GLM-4.1V's web prompt expects; the agent observes,
asks the model, executes its `Click [N]` / `Type [N]; [text]` actions and stops when the
model answers. Every step is written to a trace directory.

Run it here, without weights (scripted answers on the bundled Pagebound Books demo app):

    python examples/web_task.py --replay

With a real model:

    python examples/web_task.py --base-url http://127.0.0.1:8000/v1 --model-name glm-4.1v \\
        --url https://example.com --task "What is the page's heading?"
    python examples/web_task.py --model /models/GLM-4.1V-9B-Thinking   # in-process engine
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from _common import add_model_args, model_from_args

from glmv_agent import Agent, WebEnv
from glmv_agent.demo import DEMO_TASK, demo_dir, replay_answers, serve_directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--url", help="page to start on (default: the bundled demo bookstore)")
    parser.add_argument("--task", default=None,
                        help=f"what to do (default with the demo app: {DEMO_TASK!r})")
    parser.add_argument("--family", default="glm-4.1v", help="model family (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--trace-dir", type=Path, default=None)
    parser.add_argument("--headed", action="store_true", help="show the browser window")
    args = parser.parse_args(argv)
    if args.replay and (args.url or args.task):
        parser.error("--replay plays the demo app's scripted answers; drop --url/--task")
    model = model_from_args(parser, args, scripted=replay_answers("glm-4.1v"))

    with ExitStack() as stack:
        url = args.url
        if url is None:  # the bundled demo app, served on 127.0.0.1
            url = stack.enter_context(serve_directory(demo_dir())) + "index.html"
        task = args.task or DEMO_TASK
        env = stack.enter_context(WebEnv.launch(url, headless=not args.headed, set_of_marks=True))
        agent = Agent(model, env, family=args.family, max_steps=args.max_steps,
                      trace_dir=args.trace_dir)
        print(f"task: {task}")
        for record in agent.iter_run(task):
            action = record.action or {}
            target = (action.get("target") or {}).get("element")
            where = f" [{target}]" if target is not None else ""
            print(f"step {record.index}: {action.get('type', '-')}{where} -> {record.outcome}",
                  flush=True)
        result = agent.result
        assert result is not None
        print(f"page: {env.page.url}")
    print(f"status: {result.status}")
    print(f"answer: {result.answer}")
    print(f"trace: {result.trace_dir}")
    return 0 if result.status in ("success", "answered") else 1


if __name__ == "__main__":
    sys.exit(main())
