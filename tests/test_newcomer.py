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
