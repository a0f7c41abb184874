"""The agent as Model Context Protocol tools: `glmv-agent mcp`.

    glmv-agent mcp --model model/GLM-4.1V-9B-Thinking              # stdio (default)
    glmv-agent mcp --base-url http://127.0.0.1:8000/v1 --model-name glm-4.1v --port 8765

A coding assistant or another agent that speaks MCP hands GUI work to glmv-agent:

* `run_task(task, env, url?, max_steps?)`: one task on a fresh browser, the desktop or a
  phone; a progress notification after every step; returns status, answer, one line per
  step and the trace directory.
* `open_session(env, url?)` then, on that persistent browser or desktop, `act`, `query`,
  `assert_that`, `locate` (where an element is; nothing clicked) and `screenshot` (an
  image); `list_sessions`, `close_session`.

Transports: stdio by default; streamable HTTP on 127.0.0.1 with `--port` (endpoint
`/mcp`). There is no authentication, so the HTTP server never listens beyond loopback:
whoever reaches it controls the browser or the desktop.

Sensitive actions (payments, deletion, sending, passwords) follow the command line's
`--confirm`: denied by default (the model is told), allowed with `--confirm allow`.
Every failure a client can cause (an unknown or closed session, a bad argument, a browser
that went away, a model that gave no answer) is a tool error with a message that says what
happened; it never stops the server. The sessions are in `glmv_agent.sessions`; this
module only maps them to tools (the official `mcp` SDK, `pip install "glmv-agent[mcp]"`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any, Literal

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from . import __version__
from .agent import Agent
from .errors import GlmvAgentError
from .sessions import AgentSettings, SessionManager, run_summary, step_line
from .trace import StepRecord

logger = logging.getLogger("glmv_agent")

SERVER_NAME = "glmv-agent"
HTTP_PATH = "/mcp"
LOOPBACK = "127.0.0.1"

INSTRUCTIONS = (
    "GUI agent tools backed by a GLM-V vision-language model. Use run_task for a whole "
    "task on a fresh browser/desktop/phone. For several steps on one page, open_session "
    "first, then act (do something), query (ask about the screen), assert_that (check a "
    "statement), locate (find an element's coordinates), screenshot, and close_session "
    "when done. Sensitive actions are denied unless the server was started with "
    "--confirm allow."
)


class TaskResult(BaseModel):
    """How a run ended (`run_task`, `act`)."""

    status: str
    answer: str | None = None
    error: str | None = None
    steps: list[str]
    trace_dir: str | None = None
    url: str | None = None


class SessionInfo(BaseModel):
    session_id: str
    env: str
    url: str | None = None


class Location(BaseModel):
    """Where an element is: `x`, `y` in the screenshot's pixels (what `screenshot` shows);
    `screen_x`, `screen_y` where a click lands (CSS pixels for a web page, screen pixels
    for the desktop); `element` the set-of-marks label the model chose, if any."""

    x: int
    y: int
    screen_x: float
    screen_y: float
    element: int | None = None
    trace_dir: str | None = None


@contextlib.contextmanager
def tool_errors(tool: str) -> Iterator[None]:
    """Turn what went wrong into a tool error the client can read; the server lives on."""
    try:
        yield
    except ToolError:
        raise
    except (GlmvAgentError, AssertionError) as exc:
        raise ToolError(str(exc)) from exc
    except Exception as exc:  # a library error nobody translated: still the client's answer
        logger.exception("%s failed", tool)
        raise ToolError(f"{tool} failed: {type(exc).__name__}: {exc}") from exc


def _task_result(result: Any, url: str | None = None) -> TaskResult:
    return TaskResult(**run_summary(result), url=url)


def build_server(settings: AgentSettings) -> tuple[MCPServer, SessionManager]:
    """The MCP server with every tool, and the sessions it manages."""
    sessions = SessionManager(settings)
    server: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, version=__version__,
                                  log_level="WARNING")

    @server.tool()
    async def run_task(task: str, ctx: Context,
                       env: Literal["web", "desktop", "android"] = "web",
                       url: str | None = None, max_steps: int | None = None) -> TaskResult:
        """Carry out a task with the GUI agent on a fresh environment, closed afterwards:
        `web` (a headless browser, starting at `url`), `desktop` (this machine's screen) or
        `android` (the phone `adb` sees). Reports progress after each step. Returns the
        run's status (success, answered, infeasible, max_steps, loop, stopped, refused,
        unparseable, error), the model's answer, one line per step and the trace directory."""
        async def progress(record: StepRecord, agent: Agent) -> None:
            await ctx.report_progress(record.index, agent.max_steps, step_line(record))

        with tool_errors("run_task"):
            result = await sessions.run_task(task, env, url, max_steps, on_step=progress)
            return _task_result(result)

    @server.tool()
    async def open_session(env: Literal["web", "desktop"] = "web",
                           url: str | None = None) -> SessionInfo:
        """Open a persistent browser (`web`, at `url`) or desktop session for act, query,
        assert_that, locate and screenshot. Close it with close_session."""
        with tool_errors("open_session"):
            session = await sessions.open(env, url)
            return SessionInfo(session_id=session.id, env=session.kind, url=session.url or url)

    @server.tool()
    async def act(session_id: str, instruction: str, max_steps: int | None = None
                  ) -> TaskResult:
        """Do what `instruction` says in the session (the agent loop runs until the model
        finishes); returns how it ended, one line per step and the page URL (web)."""
        with tool_errors("act"):
            session = sessions.get(session_id)
            result = await session.act(instruction, max_steps)
            return _task_result(result, session.url)

    @server.tool()
    async def query(session_id: str, question: str) -> str:
        """The model's answer to `question` about the session's screen; nothing is clicked
        or typed."""
        with tool_errors("query"):
            return await sessions.get(session_id).query(question)

    @server.tool()
    async def assert_that(session_id: str, statement: str) -> str:
        """Check that `statement` is true of the session's screen: returns the model's
        verdict when it is, a tool error with the model's answer when it is not."""
        with tool_errors("assert_that"):
            return await sessions.get(session_id).assert_that(statement)

    @server.tool()
    async def locate(session_id: str, description: str) -> Location:
        """Find the element `description` names on the session's screen and return its
        coordinates; nothing is clicked."""
        with tool_errors("locate"):
            return Location(**await sessions.get(session_id).locate(description))

    @server.tool()
    async def screenshot(session_id: str) -> Image:
        """The session's screen as a PNG image (with the element labels the model sees,
        when set-of-marks is on)."""
        with tool_errors("screenshot"):
            picture = await sessions.get(session_id).screenshot()
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            return Image(data=buffer.getvalue(), format="png")

    @server.tool()
    async def list_sessions() -> list[SessionInfo]:
        """The open sessions."""
        return [SessionInfo(session_id=s.id, env=s.kind, url=s.url)
                for s in sessions.sessions.values()]

    @server.tool()
    async def close_session(session_id: str) -> str:
        """Close a session and its browser (the desktop itself stays as it is)."""
        with tool_errors("close_session"):
            await sessions.close(session_id)
            return f"session {session_id} closed"

    return server, sessions


async def serve(settings: AgentSettings, port: int | None = None) -> None:
    """Serve over stdio, or streamable HTTP on 127.0.0.1:`port`; sessions closed at the end."""
    server, sessions = build_server(settings)
    try:
        if port is None:
            await server.run_stdio_async()
        else:
            await server.run_streamable_http_async(host=LOOPBACK, port=port,
                                                   streamable_http_path=HTTP_PATH)
    finally:
        await sessions.close_all()


__all__ = ["build_server", "serve", "tool_errors", "TaskResult", "SessionInfo", "Location",
           "HTTP_PATH", "LOOPBACK"]
