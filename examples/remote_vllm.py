"""Run the model on a vLLM / SGLang server and the agent anywhere: `OpenAIBackend`.

Shows: the 9B model (or GLM-4.5V/4.6V) on a GPU box, the agent on your laptop, talking the
OpenAI chat-completions protocol. Screenshots travel as base64 data URLs; the backend keeps
`<|begin_of_box|>` markers (skip_special_tokens off), re-wraps a server's separate
`reasoning_content` into `<think>...</think>`, retries on 429/5xx and reports the server's
errors clearly.

Start a server (GPU machine), one image per request is all the agent sends for GLM-4.1V:

    vllm serve zai-org/GLM-4.1V-9B-Thinking --served-model-name glm-4.1v \\
        --limit-mm-per-prompt '{"image": 1}' --max-model-len 32768 --port 8000
    # GLM-4.5V / 4.6V send up to 5 images per PC step (current + 4 history):
    vllm serve zai-org/GLM-4.5V --served-model-name glm-4.5v --tensor-parallel-size 4 \\
        --limit-mm-per-prompt '{"image": 5}' --reasoning-parser glm45
    # SGLang:
    python -m sglang.launch_server --model-path zai-org/GLM-4.1V-9B-Thinking --port 8000
    # or our own server over the in-process engine:
    glmv-agent serve --model /models/GLM-4.1V-9B-Thinking --port 8000

(Older vLLM versions spell the limit `--limit-mm-per-prompt image=1`.) Then, here:

    python examples/remote_vllm.py --base-url http://GPU-HOST:8000/v1 --model-name glm-4.1v \\
        --url https://example.com --task "What is the page's heading?"
    python examples/remote_vllm.py --base-url http://GPU-HOST:8000/v1 --model-name glm-4.1v \\
        --ping     # only check that the server answers

The API key comes from --api-key or $GLMV_API_KEY (vLLM: `--api-key` on the server).
"""

from __future__ import annotations

import argparse
import sys

from _common import add_model_args, model_from_args

from glmv_agent import Agent, OpenAIBackend, WebEnv
from glmv_agent.messages import message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, replay=False)
    parser.add_argument("--url", default="https://example.com")
    parser.add_argument("--task", default="What is the main heading of this page?")
    parser.add_argument("--family", default="glm-4.1v",
                        help="prompt format of the served model (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--ping", action="store_true", help="only send one text message")
    args = parser.parse_args(argv)
    if not args.base_url:
        parser.error("this example needs --base-url URL and --model-name NAME")
    backend = model_from_args(parser, args)
    assert isinstance(backend, OpenAIBackend)

    if args.ping:
        reply = backend.complete([message("user", "Reply with the word ready.")],
                                 max_new_tokens=64)
        print(f"server answered: {reply!r}")
        return 0

    with WebEnv.launch(args.url, set_of_marks=True) as env:
        agent = Agent(backend, env, family=args.family, max_steps=args.max_steps,
                      allowed_domains=[args.url])
        result = agent.run(args.task)
    print(f"status: {result.status}; answer: {result.answer}; "
          f"model time {result.timings.get('model', 0):.1f}s of {result.timings.get('total', 0):.1f}s")
    return 0 if result.status in ("success", "answered") else 1


if __name__ == "__main__":
    sys.exit(main())
