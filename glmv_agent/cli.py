"""The `glmv-agent` command line: run | serve | mcp | assistant | report | doctor | demo |
quantize.

Exit codes: 0 the task succeeded (or the command did its job), 1 the task ended without
success (infeasible, max steps, loop, stopped, refused, unparseable model answers), 2 bad
usage or configuration, 3 an environment or backend failure (a run that ended with status
"error" included), 130 interrupted by Ctrl+C (the run is stopped and its trace closed first).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import webbrowser
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import BackendError, CheckpointError, ConfigError, EnvError, GlmvAgentError, InputError
from .console import (
    StreamPrinter, TerminalSafeFormatter, make_confirm, print_record, say as _out, take_over_prompt,
)

EXIT_OK, EXIT_UNFINISHED, EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

FAMILIES = ("glm-4.1v", "glm-4.5v", "glm-4.6v", "autoglm-phone")
DTYPE_HELP = ("local engine dtype: bfloat16 (the default, on CPU and GPU alike: the "
              "checkpoints' own dtype), float16, or float32 (twice the memory)")


# ----------------------------------------------------------------------------- arguments


def _add_model_args(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required, metavar="PATH|URL",
                       help="checkpoint directory (in-process engine), an OpenAI-compatible "
                            "base URL (with --model-name), or a replay .json/.jsonl file")
    group.add_argument("--base-url", metavar="URL",
                       help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--model-name", metavar="NAME",
                       help="model name on the server (required with --base-url)")
    group.add_argument("--api-key", metavar="KEY",
                       help="API key for --base-url (default: $GLMV_API_KEY or $OPENAI_API_KEY)")
    group.add_argument("--device", default="auto", help="local engine device: auto, cpu, cuda")
    group.add_argument("--dtype", default=None, help=DTYPE_HELP)
    _add_quantize_arg(group)
    _add_compile_arg(group)


def _add_quantize_arg(parser: Any) -> None:
    parser.add_argument("--quantize", choices=("int8", "int4"), default=None,
                        help="local engine: weight-only quantization of the text decoder and "
                             "lm_head while loading (int8: about half the memory, int4: about a "
                             "third; faster decode, see README)")


def _add_compile_arg(parser: Any) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="local engine: compile the decode step with torch.compile at load "
                             "(CUDA graphs on a GPU); costs compile time once, see README")


def _add_agent_args(parser: argparse.ArgumentParser, *, interactive: bool = True) -> None:
    """The agent options; `interactive=False` (a server with no terminal to ask or print
    to) offers only deny (the default) or allow for sensitive actions, and no streaming."""
    group = parser.add_argument_group("agent")
    group.add_argument("--family", default="glm-4.1v", choices=FAMILIES,
                       help="model family whose prompt format to use (default: %(default)s)")
    group.add_argument("--max-steps", type=int, default=30, help="default: %(default)s")
    group.add_argument("--dry-run", action="store_true",
                       help="plan and record actions without executing them")
    if interactive:
        group.add_argument("--confirm", choices=("ask", "allow", "deny"), default="ask",
                           help="sensitive actions: ask on the terminal (default; denied when "
                                "there is no terminal), always allow, or always deny")
    else:
        group.add_argument("--confirm", choices=("deny", "allow"), default="deny",
                           help="sensitive actions: deny (default) or allow")
    group.add_argument("--trace-dir", type=Path, help="where to write the trace "
                       "(default: traces/<time>-<task>)")
    if interactive:
        group.add_argument("--show-thinking", action="store_true",
                           help="stream the model's answers (thinking included) as they "
                                "are generated")
    group.add_argument("--max-new-tokens", type=int, default=None)
    group.add_argument("--temperature", type=float, default=None)


def _add_env_args(parser: argparse.ArgumentParser) -> None:
    """How `open_env` starts each environment (everything but which one and its URL)."""
    parser.add_argument("--headed", action="store_true", help="web: show the browser window")
    parser.add_argument("--viewport", default="1280x720", help="web: WxH (default: %(default)s)")
    parser.add_argument("--dpr", type=float, default=1.0, metavar="RATIO",
                        help="web: device pixel ratio, e.g. 2 for a HiDPI screenshot "
                             "(default: 1)")
    parser.add_argument("--stability-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="web: wait at most this long for the page to settle after an "
                             "action (default: %(default)s)")
    parser.add_argument("--set-of-marks", action=argparse.BooleanOptionalAction, default=None,
                        help="web: label interactive elements on the screenshot (default: on "
                             "when the family's web prompt uses labels, as GLM-4.1V's does)")
    parser.add_argument("--allowed-domain", action="append", default=None, metavar="DOMAIN",
                        help="web: only allow these domains (repeatable)")
    parser.add_argument("--monitor", type=int, default=1,
                        help="desktop: mss monitor index (1 = primary)")
    parser.add_argument("--serial", help="android: device serial (see `adb devices`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glmv-agent",
        description="Let GLM-V models operate a web page, a desktop or an Android phone.",
    )
    parser.add_argument("--version", action="version", version=f"glmv-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run one task", description="Run one task to completion.")
    run.add_argument("task", help="what the agent should do, in natural language")
    run.add_argument("--env", choices=("web", "desktop", "android"), required=True)
    run.add_argument("--url", help="web: the page to start on (http(s), or a local "
                                    "file:///... page; the model itself can open http(s) only)")
    _add_env_args(run)
    run.add_argument("--report", action="store_true", help="write report.html into the trace")
    _add_model_args(run)
    _add_agent_args(run)
    run.set_defaults(handler=cmd_run)

    serve = sub.add_parser("serve", help="OpenAI-compatible server over the local engine",
                           description="Serve a local GLM-4.1V checkpoint over an "
                                       "OpenAI-compatible HTTP API.")
    serve.add_argument("--model", required=True, metavar="PATH", help="checkpoint directory")
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed when serving); default: %(default)s")
    serve.add_argument("--model-name", default=None,
                       help="name clients use (default: the checkpoint folder name)")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default=None, help=DTYPE_HELP)
    _add_quantize_arg(serve)
    _add_compile_arg(serve)
    serve.add_argument("--max-queue", type=int, default=8,
                       help="requests admitted at once (waiting or generating) before answering "
                            "503 (default: %(default)s)")
    serve.add_argument("--max-batch", type=int, default=4,
                       help="waiting requests with the same settings decoded together (default: %(default)s)")
    serve.add_argument("--batch-wait-ms", type=float, default=50,
                       help="an idle engine waits this long for requests still being preprocessed to "
                            "join its batch (default: %(default)s)")
    serve.add_argument("--api-key", default=os.environ.get("GLMV_SERVE_API_KEY"),
                       help="require 'Authorization: Bearer KEY' on /v1/* (default: $GLMV_SERVE_API_KEY; "
                            "unset = no key)")
    serve.add_argument("--allow-remote-images", action="store_true",
                       help="fetch http(s) image URLs (public hosts only, size/time capped); "
                            "off by default: only data: URLs")
    serve.add_argument("--default-max-tokens", type=int, default=2048,
                       help="max_tokens of requests that send none (default: %(default)s)")
    serve.add_argument("--max-model-len", type=int, default=None,
                       help="prompt + max_tokens limit (default: the checkpoint's context length)")
    serve.add_argument("--max-body-mb", type=int, default=32, help="request body limit (default: %(default)s)")
    serve.add_argument("--max-request-pixels", type=int, default=40_000_000,
                       help="decoded pixels of all images of one request (default: %(default)s)")
    serve.set_defaults(handler=cmd_serve)

    mcp = sub.add_parser(
        "mcp", help="the agent as MCP tools (stdio, or HTTP with --port)",
        description="Serve the agent over the Model Context Protocol: run_task, and "
                    "act/query/assert_that/locate/screenshot on persistent browser or "
                    "desktop sessions. stdio by default; --port serves streamable HTTP on "
                    "127.0.0.1 (no authentication, so never beyond loopback).",
    )
    mcp.add_argument("--port", type=int, default=None,
                     help="serve streamable HTTP at http://127.0.0.1:PORT/mcp instead of stdio")
    _add_env_args(mcp)
    _add_model_args(mcp)
    _add_agent_args(mcp, interactive=False)
    mcp.set_defaults(handler=cmd_mcp)

    assistant = sub.add_parser(
        "assistant", help="desktop assistant: take tasks one after another",
        description="A long-running desktop assistant: type a task (or a question about the "
                    "screen, starting with '?'), watch each action announced and marked on "
                    "screen before it happens, confirm sensitive ones. Ctrl+C stops the "
                    "current task; 'quit' exits.",
    )
    assistant.add_argument("--monitor", type=int, default=1)
    assistant.add_argument("--no-marker", action="store_true",
                           help="don't flash a marker at the target before acting")
    assistant.add_argument("--announce-delay", type=float, default=1.0,
                           help="seconds between announcing an action and doing it")
    assistant.add_argument("--no-hotkeys", action="store_true",
                           help="don't grab the global hotkeys Ctrl+Alt+P (pause/resume) and "
                                "Ctrl+Alt+S (stop)")
    assistant.add_argument("--terminal", action="store_true",
                           help="take tasks at a terminal prompt instead of the always-on-top "
                                "window (the default when a display is available)")
    assistant.add_argument("--geometry", default=None, metavar="WxH+X+Y",
                           help="where the window goes (default: the bottom-right corner)")
    _add_model_args(assistant)
    _add_agent_args(assistant)
    assistant.set_defaults(handler=cmd_assistant)

    report = sub.add_parser("report", help="render a trace as a self-contained HTML report")
    report.add_argument("trace_dir", type=Path, metavar="TRACE_DIR")
    report.add_argument("-o", "--output", type=Path, help="default: TRACE_DIR/report.html")
    report.add_argument("--open", action="store_true", help="open it in the browser")
    report.set_defaults(handler=cmd_report)

    doctor = sub.add_parser("doctor", help="check this machine and say what to fix")
    doctor.add_argument("--model", metavar="PATH", help="also check this checkpoint loads")
    doctor.add_argument("--base-url", metavar="URL", help="also check this server answers")
    doctor.add_argument("--load", action="store_true", help="load the weights fully (slow)")
    _add_quantize_arg(doctor)  # implies --load: the weights are loaded quantized
    _add_compile_arg(doctor)  # with --model: also compile its decode step
    doctor.set_defaults(handler=cmd_doctor)

    quantize = sub.add_parser(
        "quantize", help="write an int8/int4 copy of a checkpoint that loads in seconds",
        description="Quantize a checkpoint's text decoder and lm_head (weight-only, see README) "
                    "into a new directory; --model DST then loads it without quantizing again.")
    quantize.add_argument("src", type=Path, metavar="SRC", help="Hugging Face checkpoint directory")
    quantize.add_argument("dst", type=Path, metavar="DST", help="new directory to write")
    quantize.add_argument("--quantize", choices=("int8", "int4"), default="int8",
                          help="default: %(default)s")
    quantize.set_defaults(handler=cmd_quantize)

    demo = sub.add_parser(
        "demo", help="watch the whole loop on a bundled web app",
        description="Run the agent on a small bundled web app in a real headless browser. "
                    "Without --model/--base-url it replays recorded model answers (clearly "
                    "labelled as such), so you see the loop and its report in one command.",
    )
    demo.add_argument("--headed", action="store_true")
    demo.add_argument("--trace-dir", type=Path)
    _add_model_args(demo)
    demo.add_argument("--family", default="glm-4.1v", choices=FAMILIES)
    demo.set_defaults(handler=cmd_demo)

    # -v also works after the command (`glmv-agent serve -v`); see `verbosity`.
    for command in sub.choices.values():
        command.add_argument("-v", "--verbose", action="count", default=0,
                             dest="command_verbose", help="more logging (-vv for debug)")
    return parser


def verbosity(args: argparse.Namespace) -> int:
    """How many -v were given, before the command and after it together."""
    return args.verbose + getattr(args, "command_verbose", 0)


# ----------------------------------------------------------------------------- helpers


def resolve_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(model argument for Agent, extra Agent kwargs) from --model / --base-url."""
    if args.base_url:
        if not args.model_name:
            raise ConfigError("--base-url needs --model-name (the name the server serves)")
        options: dict[str, Any] = {}
        if args.api_key:
            options["api_key"] = args.api_key
        return args.base_url, {"model_name": args.model_name, "backend_options": options}
    if not args.model:
        raise ConfigError(
            "no model given: pass --model PATH (a checkpoint, see model/README.md) or "
            "--base-url URL --model-name NAME (an OpenAI-compatible server)"
        )
    if str(args.model).startswith(("http://", "https://")):
        if not args.model_name:
            raise ConfigError("a model URL needs --model-name (the name the server serves)")
        return args.model, {"model_name": args.model_name}
    path = Path(args.model)
    if path.is_dir():
        return path, {"backend_options": {"device": args.device, "dtype": args.dtype,
                                          "quantize": args.quantize, "compile": args.compile}}
    return path, {}


def load_backend(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The backend the model arguments name, and the remaining agent keyword arguments."""
    from .backends import make_backend

    model, agent_kwargs = resolve_model(args)
    backend = make_backend(model, model_name=agent_kwargs.pop("model_name", None),
                           **(agent_kwargs.pop("backend_options", None) or {}))
    return backend, agent_kwargs


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if getattr(args, "max_new_tokens", None):
        kwargs["max_new_tokens"] = args.max_new_tokens
    if getattr(args, "temperature", None) is not None:
        kwargs["temperature"] = args.temperature
    return kwargs


def run_agent(agent: Any, task: str, show_thinking: bool) -> tuple[Any, bool]:
    """Run with live progress: (result, whether Ctrl+C interrupted it).

    Ctrl+C stops the agent cleanly (the step is recorded, the trace closed) and the result
    is still returned.

    With `show_thinking`, the model's answers stream to the terminal as they are
    generated (the agent was built with a `StreamPrinter` as `on_text`).
    """
    printer = agent.on_text if isinstance(agent.on_text, StreamPrinter) else None
    try:
        for record in agent.iter_run(task):
            if printer is not None:
                printer.end()
            print_record(record, show_thinking and printer is None)
    except KeyboardInterrupt:
        agent.stop()
        _out("interrupted: stopping")
        if agent.result is None:  # interrupted before the run was set up
            raise
        return agent.result, True
    return agent.result, False


def summarize(result: Any) -> int:
    _out("")
    _out(f"status: {result.status}")
    if result.answer:
        _out(f"answer: {result.answer}")
    if result.error:
        _out(f"error:  {result.error}")
    _out(f"steps:  {len(result.steps)}")
    if result.trace_dir:
        _out(f"trace:  {result.trace_dir}")
    if result.status in ("success", "answered"):
        return EXIT_OK
    return EXIT_FAILURE if result.status == "error" else EXIT_UNFINISHED


def _parse_viewport(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--viewport must look like 1280x720, got {text!r}") from exc
    return width, height


# ----------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from .agent import Agent

    # The model first: a broken checkpoint or URL fails before a browser is started.
    backend, agent_kwargs = load_backend(args)
    env = open_env(args)
    try:
        agent = Agent(
            backend, env, family=args.family, max_steps=args.max_steps, dry_run=args.dry_run,
            confirm=make_confirm(args.confirm), on_take_over=take_over_prompt,
            on_text=StreamPrinter() if args.show_thinking else None,
            trace_dir=args.trace_dir, allowed_domains=getattr(args, "allowed_domain", None),
            **agent_kwargs, **generation_kwargs(args),
        )
        _out(f"task: {args.task}")
        result, interrupted = run_agent(agent, args.task, args.show_thinking)
        if getattr(args, "report", False) and result.trace_dir:
            from .report import render_report

            _out(f"report: {render_report(result.trace_dir)}")
        code = summarize(result)
        return EXIT_INTERRUPTED if interrupted else code
    finally:
        env.close()


def open_env(args: argparse.Namespace) -> Any:
    if args.env == "web":
        from .envs.web import WebEnv

        return WebEnv.launch(
            url=args.url, headless=not args.headed, viewport=_parse_viewport(args.viewport),
            device_scale_factor=args.dpr, stability_timeout=args.stability_timeout,
            set_of_marks=_set_of_marks(args), allowed_domains=args.allowed_domain,
        )
    if args.env == "desktop":
        from .envs.desktop import DesktopEnv

        return DesktopEnv(monitor=args.monitor)
    from .envs.android import AndroidEnv

    return AndroidEnv(serial=args.serial)


def _set_of_marks(args: argparse.Namespace) -> bool:
    if args.set_of_marks is not None:
        return bool(args.set_of_marks)
    from .dialects import uses_element_labels

    return uses_element_labels(args.family)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, bind_socket, checkpoint_context_length, create_app, uvicorn_server

    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"--model {path}: no config.json; expected a checkpoint directory "
                              "(see model/README.md for how to download one)")
    config = ServerConfig(
        model_name=args.model_name or path.resolve().name, api_key=args.api_key,
        max_queue=args.max_queue, max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000,
        default_max_tokens=args.default_max_tokens,
        context_length=args.max_model_len or checkpoint_context_length(path),
        max_body_bytes=args.max_body_mb * 2**20, max_request_pixels=args.max_request_pixels,
        allow_remote_images=args.allow_remote_images,
    )
    config.validate()  # options and the port are checked before minutes of loading weights
    if not 0 <= args.port < 65536:  # 0: a free port, printed once serving
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    sock = bind_socket(args.host, args.port)
    try:
        from .glm4v.engine import load

        _out(f"loading {path} ...")
        engine = load(path, device=args.device, dtype=args.dtype, quantize=args.quantize,
                      compile=args.compile)
        server = uvicorn_server(create_app(engine, config), config,
                                log_level="info" if args.verbose else "warning")
        port = sock.getsockname()[1]
        key = "API key required" if config.api_key else "no API key"
        _out(f"serving {config.model_name!r} at http://{args.host}:{port}/v1 ({key}; Ctrl+C to stop)")
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down on: a normal stop
            _out("stopped")
    finally:
        sock.close()
    return EXIT_OK


def cmd_mcp(args: argparse.Namespace) -> int:
    import asyncio

    from .mcp_server import HTTP_PATH, LOOPBACK, serve

    if args.port is not None:
        check_port_free(LOOPBACK, args.port)  # before the weights are loaded
        settings = mcp_settings(args)
        where = f"http://{LOOPBACK}:{args.port}{HTTP_PATH}"
        _out(f"glmv-agent MCP server on {where} (sensitive actions: {args.confirm})")
    else:
        # stdout is the protocol: a setup error goes to stderr, the log MCP clients show.
        try:
            settings = mcp_settings(args)
        except GlmvAgentError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_USAGE if isinstance(exc, (ConfigError, InputError)) else EXIT_FAILURE
        print(f"glmv-agent MCP server on stdio (sensitive actions: {args.confirm})",
              file=sys.stderr, flush=True)
    try:
        asyncio.run(serve(settings, port=args.port))
    finally:
        settings.backend.close()
    return EXIT_OK


def mcp_settings(args: argparse.Namespace) -> Any:
    """`glmv-agent mcp`'s AgentSettings: the model, loaded once before serving, and the
    agent and environment options of `run`."""
    from .sessions import AgentSettings

    if args.max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, got {args.max_steps}")
    backend, agent_kwargs = load_backend(args)

    def open_env_for(kind: str, url: str | None) -> Any:
        return open_env(argparse.Namespace(**{**vars(args), "env": kind, "url": url}))

    return AgentSettings(
        backend=backend, open_env=open_env_for, family=args.family, max_steps=args.max_steps,
        dry_run=args.dry_run, allow_sensitive=args.confirm == "allow",
        trace_root=args.trace_dir, agent_options={
            **agent_kwargs, **generation_kwargs(args),
            "allowed_domains": args.allowed_domain,
        },
    )


def check_port_free(host: str, port: int) -> None:
    """ConfigError now, rather than a traceback after loading a model, if `port` is taken."""
    import socket

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pass "
                              "another --port") from exc


def cmd_assistant(args: argparse.Namespace) -> int:
    from .assistant import DesktopAssistant

    model, agent_kwargs = resolve_model(args)
    options: dict[str, Any] = dict(
        monitor=args.monitor, family=args.family, max_steps=args.max_steps,
        confirm=args.confirm, show_marker=not args.no_marker,
        announce_delay=args.announce_delay, dry_run=args.dry_run, trace_root=args.trace_dir,
        agent_kwargs={**agent_kwargs, **generation_kwargs(args)},
    )
    if not args.terminal and os.environ.get("DISPLAY"):
        from .assistant_window import open_window

        window = open_window(model, geometry=args.geometry, hotkeys=not args.no_hotkeys,
                             **options)
        return window.run()
    # The terminal prompt answers confirmations and take-over requests itself.
    assistant = DesktopAssistant(model, output=_out, hotkeys=not args.no_hotkeys, **options)
    return assistant.repl()


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render_report

    path = render_report(args.trace_dir, args.output)
    _out(str(path))
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

    checks = run_checks(model=args.model, base_url=args.base_url, load=args.load,
                        quantize=args.quantize, compile=args.compile)
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.status]
        _out(f"[{mark}] {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != "ok":
            _out(f"       {'':<{width}}  fix: {check.fix}")
    failed = [c for c in checks if c.status == "fail"]
    _out("")
    _out("all required checks passed" if not failed else f"{len(failed)} check(s) failed")
    return EXIT_OK if not failed else EXIT_FAILURE


def cmd_quantize(args: argparse.Namespace) -> int:
    from .glm4v.quantized_checkpoint import write_quantized_checkpoint

    _out(f"quantizing {args.src} to {args.quantize} ...")
    out = write_quantized_checkpoint(args.src, args.dst, args.quantize)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1e9
    _out(f"wrote {out} ({size:.2f} GB); use it with --model {out}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    model = None
    agent_kwargs: dict[str, Any] = {}
    if args.model or args.base_url:
        model, agent_kwargs = resolve_model(args)
    result, report = run_demo(
        model=model, family=args.family, headless=not args.headed, trace_dir=args.trace_dir,
        output=_out, **agent_kwargs,
    )
    code = summarize(result)
    _out(f"report: {report}")
    return code


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose, args.command_verbose = verbosity(args), 0  # handlers read one total
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        _out("interrupted")
        return EXIT_INTERRUPTED
    except (ConfigError, InputError) as exc:
        _out(f"error: {exc}")
        return EXIT_USAGE
    except (EnvError, BackendError) as exc:
        _out(f"error: {exc}")
        return EXIT_FAILURE
    except GlmvAgentError as exc:
        _out(f"error: {exc}")
        return EXIT_FAILURE
    except ImportError as exc:
        extra = {"playwright": "web", "mss": "desktop", "pyautogui": "desktop",
                 "torch": "local", "safetensors": "local", "tokenizers": "local",
                 "av": "video", "mcp": "mcp", "fastapi": "server",
                 "uvicorn": "server"}.get((exc.name or "").split(".")[0])
        hint = f' (pip install "glmv-agent[{extra}]")' if extra else ""
        _out(f"error: missing dependency {exc.name}{hint}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
