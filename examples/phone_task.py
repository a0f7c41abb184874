"""Operate an Android phone with AutoGLM-Phone-9B: `Agent` + `AndroidEnv` over adb.

Shows: the AutoGLM-Phone dialect (`do(action="Tap", element=[x,y])` / `finish(...)`, 0-999
grid, Chinese or English system prompt), app launching by name from the bundled app table,
and a take-over callback for steps only a human can do (log-in, captcha).

Needs a phone or emulator with USB debugging (`adb devices` lists it), and the model behind
an OpenAI-compatible server, e.g. vLLM:

    vllm serve zai-org/AutoGLM-Phone-9B --served-model-name autoglm-phone-9b \\
        --limit-mm-per-prompt '{"image": 10}' --max-model-len 25480
    python examples/phone_task.py --base-url http://127.0.0.1:8000/v1 \\
        --model-name autoglm-phone-9b --task "Open Settings and turn on dark mode" --lang en
"""

from __future__ import annotations

import argparse
import sys

from _common import add_model_args, model_from_args

from glmv_agent import Agent


def take_over(message: str) -> None:
    input(f"The agent needs you: {message}\nDo it on the phone, then press Enter... ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, replay=False)
    parser.add_argument("--task", required=True)
    parser.add_argument("--serial", help="device serial (default: the only device attached)")
    parser.add_argument("--lang", choices=("zh", "en"), default="zh",
                        help="system prompt language of AutoGLM-Phone (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=30)
    args = parser.parse_args(argv)
    model = model_from_args(parser, args)

    from glmv_agent import AndroidEnv
    from glmv_agent.dialects import get_dialect

    with AndroidEnv(args.serial) as env:
        agent = Agent(model, env, dialect=get_dialect("autoglm-phone", "mobile", lang=args.lang),
                      max_steps=args.max_steps, on_take_over=take_over)
        for record in agent.iter_run(args.task):
            print(f"step {record.index}: {(record.action or {}).get('type', '-')} -> "
                  f"{record.outcome}", flush=True)
        result = agent.result
    assert result is not None
    print(f"status: {result.status}; answer: {result.answer}; trace: {result.trace_dir}")
    return 0 if result.status in ("success", "answered") else 1


if __name__ == "__main__":
    sys.exit(main())
