"""What a new user meets first: the README's commands, the public import paths, the CLI's
exit codes and terminal output, and the small contracts a Python user relies on."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT



def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (nothing imported yet) from the repository root."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=120)


# ----------------------------------------------------------------------------- envs package


def test_envs_package_exports_every_environment_lazily() -> None:
    code = (
        "import sys\n"
        "import glmv_agent.envs as envs\n"
        "heavy = [m for m in ('playwright', 'pyautogui', 'mss') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from glmv_agent.envs import WebEnv, AsyncWebEnv, DesktopEnv, AndroidEnv\n"
        "from glmv_agent.envs import Environment, Observation\n"
        "import glmv_agent\n"
        "assert WebEnv is glmv_agent.WebEnv and AsyncWebEnv is glmv_agent.AsyncWebEnv\n"
        "assert DesktopEnv is glmv_agent.DesktopEnv and AndroidEnv is glmv_agent.AndroidEnv\n"
        "assert all(issubclass(c, Environment) for c in (WebEnv, DesktopEnv, AndroidEnv))\n"
        "assert {'WebEnv', 'AsyncWebEnv', 'DesktopEnv', 'AndroidEnv'} <= set(envs.__all__)\n"
        "assert 'WebEnv' in dir(envs)\n"
        "try:\n"
        "    envs.NoSuchEnv\n"
        "except AttributeError as exc:\n"
        "    assert 'NoSuchEnv' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
        "print('ok')\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ----------------------------------------------------------------------------- backend protocol


class PlainModel:
    """A user's own model client: no Backend base class, only `complete` (and a `model`)."""

    model = "my-model"

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[dict] = []
        self.closed = False

    def complete(self, messages: list, **params: object) -> str:
        self.calls.append(params)
        return self.answers.pop(0)

    def close(self) -> None:
        self.closed = True


def test_any_object_with_complete_is_a_backend(tmp_path: Path) -> None:
    from glmv_agent import Agent
    from glmv_agent.backends import make_backend
    from glmv_agent.backends.base import Backend, BackendProtocol
    from scripted_env import FormEnv, JsonDialect, answer, click

    model = PlainModel([click("plus"), answer({"type": "done", "success": True, "message": "ok"})])
    assert isinstance(model, BackendProtocol) and not isinstance(model, Backend)
    env = FormEnv()
    agent = Agent(model, env, dialect=JsonDialect("pc"), trace_dir=tmp_path / "trace",
                  settle_time=0, max_new_tokens=77,
                  on_text=lambda delta: None)  # on_text: the stream path too
    result = agent.run("press plus")
    assert result.status == "success" and env.state.counter == 1
    assert len(model.calls) == 2 and all(call["max_new_tokens"] == 77 for call in model.calls)
    info = json.loads((tmp_path / "trace" / "run.json").read_text())
    assert info["model"].endswith("my-model")
    agent.close()
    assert model.closed
    # Objects without a callable `complete` are still refused, with what is accepted.
    for wrong in (object(), 42, type("NoCall", (), {"complete": 3})()):
        with pytest.raises(Exception, match="complete") as caught:
            make_backend(wrong)
        assert type(caught.value).__name__ == "ConfigError"


# ----------------------------------------------------------------------------- the CLI

CLI = [sys.executable, "-m", "glmv_agent.cli"]
PAGE = "<html><body><h1>Local page</h1><button>Go</button></body></html>"
# An answer the GLM-4.1V web parser rejects, full of terminal control sequences: clear
# screen, set the window title, ring the bell, carriage return, a C1 CSI, a bidi override.
HOSTILE = "I will \x1b[2J\x1b]0;pwned\x07 press\r the button \x9b31m now \u202eevil"


def cli(*args: str, timeout: float = 300) -> tuple[int, str]:
    """(exit code, stdout + stderr as written: bytes decoded, no newline translation)."""
    done = subprocess.run([*CLI, *args], capture_output=True, timeout=timeout, cwd=ROOT)
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def answer_text(content: str) -> str:
    return (f"<think>The heading is visible.</think>\n<answer>Thought: done.\n"
            f"Action: ANSWER; <content>{content}</content>\nMemory_Updated: {{}}</answer>")


@pytest.fixture(scope="module")
def unparseable_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """`glmv-agent run --show-thinking` where the model never answers in its format."""
    from glmv_agent.demo import serve_directory

    tmp = tmp_path_factory.mktemp("unparseable")
    (tmp / "index.html").write_text(PAGE)
    answers = tmp / "answers.json"
    answers.write_text(json.dumps([HOSTILE] * 3))
    with serve_directory(tmp) as url:
        code, output = cli("run", "press the button", "--env", "web", "--url", url + "index.html",
                           "--model", str(answers), "--trace-dir", str(tmp / "trace"),
                           "--show-thinking")
    return code, output, tmp / "trace"


def test_unparseable_answers_mean_the_task_did_not_succeed(
        unparseable_run: tuple[int, str, Path]) -> None:
    code, output, trace = unparseable_run
    # README: 1 = the task did not succeed; 3 is kept for environment / backend failures.
    assert code == 1, output
    assert "status: unparseable" in output
    info = json.loads((trace / "run.json").read_text())
    assert info["status"] == "unparseable" and "unparseable model output" in info["error"]


def test_show_thinking_writes_no_control_characters(unparseable_run: tuple[int, str, Path]) -> None:
    import unicodedata

    code, output, _ = unparseable_run
    streamed = [line for line in output.split("\n") if line.startswith("        | ")]
    assert streamed and "".join(streamed).count("pwned") == 3, output  # all three attempts
    raw = sorted({repr(c) for c in output
                  if (unicodedata.category(c) == "Cc" and c not in "\n\t") or c == "\u202e"})
    assert raw == [], output
    # What was there is still shown, escaped, so the user sees what the model wrote.
    assert "\\x1b[2J" in streamed[0] and "\\r" in streamed[0] and "\\u202e" in streamed[0]


def test_run_starts_on_a_local_file(tmp_path: Path) -> None:
    page = tmp_path / "local page.html"
    page.write_text(PAGE)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([answer_text("Local page")]))
    code, output = cli("run", "What is the heading?", "--env", "web", "--url", page.as_uri(),
                       "--model", str(answers), "--trace-dir", str(tmp_path / "trace"))
    assert code == 0, output
    assert "status: answered" in output and "answer: Local page" in output
    step = json.loads((tmp_path / "trace" / "steps.jsonl").read_text().splitlines()[0])
    assert step["observation"]["url"] == page.as_uri()


def test_run_with_a_missing_local_file_is_a_usage_error(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([answer_text("x")]))
    missing = (tmp_path / "nope.html").as_uri()
    code, output = cli("run", "t", "--env", "web", "--url", missing, "--model", str(answers),
                       "--trace-dir", str(tmp_path / "trace"))
    assert code == 2, output
    assert "no such file" in output and "nope.html" in output


@pytest.mark.parametrize("option", ["-v", "-vv", "--verbose"])
def test_verbose_works_before_and_after_every_command(option: str) -> None:
    from glmv_agent.cli import build_parser, verbosity

    minimal = {"run": ["t", "--env", "web"], "serve": ["--model", "m"], "report": ["trace"],
               "assistant": [], "doctor": [], "demo": [], "mcp": [], "quantize": ["src", "dst"]}
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = 2 if option == "-vv" else 1
    for name, subparser in commands.choices.items():
        assert "-v, --verbose" in subparser.format_help(), name
        args = minimal.get(name, [])
        assert verbosity(parser.parse_args([name, *args, option])) == expected, name
        assert verbosity(parser.parse_args([option, name, *args])) == expected, name
        assert verbosity(parser.parse_args([option, name, *args, option])) == 2 * expected, name


def test_dtype_help_says_what_the_engine_loads() -> None:
    for command in ("run", "serve", "assistant", "demo"):
        code, output = cli(command, "--help")
        assert code == 0, output
        text = " ".join(output.split())  # argparse wraps help lines
        assert "float32 (CPU default)" not in text
        assert "bfloat16 (the default" in text, (command, text)


# ----------------------------------------------------------------------------- local start page


def test_a_local_start_page_is_the_users_choice_not_the_models(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    from glmv_agent.actions import Goto
    from glmv_agent.envs import WebEnv
    from glmv_agent.envs.web import default_executable_path
    from glmv_agent.errors import ActionRefusedError, ConfigError

    if default_executable_path() is None:
        pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)")
    start, other = tmp_path / "start.html", tmp_path / "other.html"
    start.write_text(PAGE)
    other.write_text("<h1>Other</h1>")
    # An allow-list is about hosts; a local start page has none and still opens.
    with WebEnv.launch(start.as_uri(), allowed_domains=["example.com"]) as env:
        assert env.page.url == start.as_uri()
        assert env.page.inner_text("h1") == "Local page"
        with pytest.raises(ActionRefusedError, match="only http"):  # the model cannot
            env.execute(Goto(url=other.as_uri()))
        assert env.page.url == start.as_uri()
        env.execute(Goto(url=start.as_uri()))  # back to the user's own page: fine
        assert env.observe().url == start.as_uri()
    with pytest.raises(ConfigError, match="no such file"):
        WebEnv.launch((tmp_path / "missing.html").as_uri())


# ----------------------------------------------------------------------------- desktop noise


def test_desktop_processes_print_no_xauth_warnings(tmp_path: Path) -> None:
    """python-xlib prints "Xlib.xauth: warning, no xauthority details available" on every
    X connection when ~/.Xauthority has no entries (as on Xvfb); none of it may show."""
    import shutil

    from glmv_agent.envs._xvfb import VirtualDisplay

    if shutil.which("Xvfb") is None or importlib.util.find_spec("pyautogui") is None:
        pytest.skip("needs Xvfb and pyautogui")  # (importing pyautogui needs a display)
    code = (
        "from glmv_agent.actions import Hover, Point, Target\n"
        "from glmv_agent.envs import DesktopEnv\n"
        "from glmv_agent.hotkeys import HotkeyListener\n"
        "env = DesktopEnv()\n"
        "observation = env.observe()\n"
        "env.execute(Hover(target=Target(point=Point(x=0.5, y=0.5))))\n"
        "with HotkeyListener(lambda name: None):\n"
        "    pass\n"
        "print('done', observation.size)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / ".Xauthority").write_bytes(b"")  # what ensure_xauthority() leaves
    with VirtualDisplay(640, 480) as display:
        done = _python(code, DISPLAY=display.name, HOME=str(home),
                       XAUTHORITY=str(home / ".Xauthority"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "done (640, 480)", done.stdout
    assert "Xlib" not in done.stdout + done.stderr


# ----------------------------------------------------------------------------- torch floor


def test_the_torch_floor_is_what_the_engine_needs() -> None:
    """text.py calls SDPA with enable_gqa=True (torch 2.5); pyproject must not promise less,
    and an older torch must fail with a clear error, not a TypeError deep in attention."""
    tomllib = pytest.importorskip("tomllib")
    import re

    from glmv_agent.errors import ConfigError
    from glmv_agent.glm4v import MIN_TORCH, require_torch

    assert MIN_TORCH == "2.5"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    floors = [re.fullmatch(r"torch>=([\d.]+)", dep) for dep in extras["local"]]
    assert [m.group(1) for m in floors if m] == [MIN_TORCH]
    assert f"torch >= {MIN_TORCH}" in (ROOT / "README.md").read_text()
    for old in ("2.4.1", "2.3.0+cpu", "1.13.1"):
        with pytest.raises(ConfigError, match=r"torch >= 2\.5.*pip install"):
            require_torch(old)
    for new in ("2.5.0", "2.13.0+cpu", "2.6.0a0+git1234", "3.0"):
        require_torch(new)
    require_torch()  # the installed one


# ----------------------------------------------------------------------------- README set-up


def _readme_block(heading: str) -> list[str]:
    """The command lines of the first bash block under a README heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_test_setup_installs_what_the_tests_import() -> None:
    import ast
    import re

    from dev_requirements import extra_requirements
    from importlib import metadata
    from packaging.utils import canonicalize_name

    setup, test = _readme_block("Tests")
    assert test == "python -m pytest -q"
    # .ci/run ends with exactly that command, after installing the same extra.
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == test
    extra = re.search(r'pip install -e "\.\[(\w+)\]"', setup).group(1)
    assert f'python -m pip install -q -e ".[{extra}]"' in ci
    assert "glmv-agent demo" in "\n".join(_readme_block("Quick start"))
    # The extra gives everything `all` does (so the quick start works too) ...
    provided = {canonicalize_name(r.name) for r in extra_requirements(extra)}
    assert {canonicalize_name(r.name) for r in extra_requirements("all")} <= provided
    # ... and every package a test imports or importorskips.
    local = {path.stem for path in (ROOT / "tests").rglob("*.py")}
    imported: dict[str, str] = {}
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local | {"glmv_agent"}:
                    imported.setdefault(top, path.name)
    assert {"transformers", "openai", "pytest", "hypothesis"} <= set(imported)
    owners = metadata.packages_distributions()
    unprovided = {module: where for module, where in imported.items()
                  # (not installed here: take the module's name for its distribution's)
                  if not {canonicalize_name(d) for d in owners.get(module, [module])} & provided}
    assert unprovided == {}, f"imported by tests but not in the {extra!r} extra"


def test_a_missing_test_dependency_stops_the_run_instead_of_skipping(tmp_path: Path) -> None:
    """conftest.py checks the dev extra first: with a package missing, pytest exits with the
    fix, not with its tests quietly skipped (GLMV_TEST_ALLOW_MISSING=1 allows that)."""
    import shutil

    tests = tmp_path / "tests"
    (tests / "support").mkdir(parents=True)
    for helper in ("conftest.py", "support/dev_requirements.py"):
        shutil.copy(ROOT / "tests" / helper, tests / helper)
    (tests / "test_oracle.py").write_text(
        "import pytest\n\n"
        "def test_parity():\n"
        "    pytest.importorskip('glmv_no_such_oracle')\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "glmv-agent"\ndependencies = ["pytest>=8"]\n'
        '[project.optional-dependencies]\noracle = ["glmv-no-such-oracle==5.23.0"]\n'
        'dev = ["glmv-agent[oracle]"]\n'
        '[tool.pytest.ini_options]\npythonpath = ["tests/support"]\n'
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    env = {k: v for k, v in os.environ.items() if k != "GLMV_TEST_ALLOW_MISSING"}
    stopped = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env,
                             timeout=120)
    assert stopped.returncode == pytest.ExitCode.USAGE_ERROR, stopped.stdout + stopped.stderr
    message = stopped.stdout + stopped.stderr
    assert "glmv-no-such-oracle==5.23.0 (not installed)" in message
    assert 'pip install -e ".[dev]"' in message and "GLMV_TEST_ALLOW_MISSING=1" in message
    allowed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                             env={**env, "GLMV_TEST_ALLOW_MISSING": "1"}, timeout=120)
    assert allowed.returncode == 0 and "1 skipped" in allowed.stdout, allowed.stdout
