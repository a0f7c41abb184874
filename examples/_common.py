"""Command-line plumbing shared by the example scripts (not part of the SDK).

Every example accepts the same model options:

    --model PATH                         a checkpoint directory (in-process GLM-4.1V engine)
                                         or a replay .json/.jsonl file
    --base-url URL --model-name NAME     an OpenAI-compatible server (vLLM, SGLang, ...)
    --replay                             scripted answers bundled with the example, so it
                                         runs without weights (where the example has them)
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_model_args(parser: argparse.ArgumentParser, *, replay: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="PATH",
                       help="checkpoint directory (in-process engine) or replay .json/.jsonl")
    group.add_argument("--base-url", metavar="URL",
                       help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--model-name", metavar="NAME",
                       help="served model name (required with --base-url)")
    group.add_argument("--api-key", metavar="KEY", default=os.environ.get("GLMV_API_KEY"),
                       help="API key for --base-url (default: $GLMV_API_KEY)")
    if replay:
        group.add_argument("--replay", action="store_true",
                           help="use the example's scripted model answers (no weights needed)")


def model_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    scripted: list[str] | None = None) -> Any:
    """A backend or model path for `Agent` / `PageAgent` from the parsed options."""
    from glmv_agent.backends import make_backend
    from glmv_agent.backends.replay import ReplayBackend

    chosen = [bool(getattr(args, "replay", False)), bool(args.base_url), bool(args.model)]
    if sum(chosen) != 1:
        parser.error("give exactly one of --model PATH, --base-url URL (with --model-name)"
                     + (" or --replay" if scripted is not None else ""))
    if getattr(args, "replay", False):
        assert scripted is not None
        print("REPLAY: the model's answers are scripted (GLM-4.1V format), not generated; "
              "the browser, parsing and actions are real.", flush=True)
        return ReplayBackend(scripted)
    if args.base_url:
        if not args.model_name:
            parser.error("--base-url needs --model-name (see GET <base-url>/models)")
        options = {"api_key": args.api_key} if args.api_key else {}
        return make_backend(args.base_url, model_name=args.model_name, **options)
    return args.model


def chromium_launch_options() -> dict[str, Any]:
    """Headless Chromium options that work in containers (system Chromium if present)."""
    from glmv_agent.envs.web import CHROMIUM_ARGS, default_executable_path

    options: dict[str, Any] = {"args": list(CHROMIUM_ARGS)}
    path = default_executable_path()
    if path:
        options["executable_path"] = path
    return options
