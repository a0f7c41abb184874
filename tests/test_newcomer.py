"""What a new user meets first: the README's commands, the public import paths, the CLI's
exit codes and terminal output, and the small contracts a Python user relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
