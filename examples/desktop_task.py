"""Operate the desktop with `Agent` + `DesktopEnv` (screenshots via mss, input via pyautogui).

Shows: the PC prompt of GLM-4.1V / GLM-4.5V (`left_click(start_box='[x,y]')`, coordinates
on a 0-1000 / 0-999 grid) mapped to real screen pixels, HiDPI included, and a
confirmation prompt before sensitive actions (sending, buying, deleting, passwords).

It moves your real mouse and keyboard: try it in a virtual display first, e.g.

    Xvfb :99 -screen 0 1280x800x24 &  DISPLAY=:99 xterm &
    DISPLAY=:99 python examples/desktop_task.py --base-url http://127.0.0.1:8000/v1 \\
        --model-name glm-4.1v --task "Type hello in the terminal"

or with the in-process engine: `--model /models/GLM-4.1V-9B-Thinking`. Moving the mouse
into a screen corner aborts (pyautogui fail-safe).
"""

from __future__ import annotations

import argparse
import sys

from _common import add_model_args, model_from_args

from glmv_agent import Agent


def confirm_on_terminal(action, step) -> bool:  # type: ignore[no-untyped-def]
    reply = input(f"The model wants to {action.type} ({step.explanation or ''}). Allow? [y/N] ")
    return reply.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, replay=False)
    parser.add_argument("--task", required=True, help="what to do on the desktop")
    parser.add_argument("--family", default="glm-4.1v",
                        help="glm-4.1v or glm-4.5v / glm-4.6v (default: %(default)s)")
    parser.add_argument("--monitor", type=int, default=1, help="mss monitor index, 1 = primary")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true", help="plan only, do not touch input")
    args = parser.parse_args(argv)
    model = model_from_args(parser, args)

    from glmv_agent import DesktopEnv  # imports pyautogui: needs a display

    with DesktopEnv(monitor=args.monitor) as env:
        agent = Agent(model, env, family=args.family, max_steps=args.max_steps,
                      dry_run=args.dry_run, confirm=confirm_on_terminal)
        for record in agent.iter_run(args.task):
            print(f"step {record.index}: {(record.action or {}).get('type', '-')} "
                  f"at {record.pixel_points} -> {record.outcome}", flush=True)
        result = agent.result
    assert result is not None
    print(f"status: {result.status}; answer: {result.answer}; trace: {result.trace_dir}")
    return 0 if result.status in ("success", "answered") else 1


if __name__ == "__main__":
    sys.exit(main())
