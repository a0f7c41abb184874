"""A built wheel installs into a fresh virtual environment and `glmv-agent demo` runs from it.

The venv reuses this machine's already-installed dependencies (`--system-site-packages`;
nothing can be downloaded in tests) but gets glmv-agent only from the wheel, so prompt
templates, data files and the console script must all ship inside it.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from paths import ROOT



@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("glmv_agent-*.whl")
    return built


def test_wheel_ships_templates_and_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "glmv_agent/prompts/glm41v/web.txt",
        "glmv_agent/data/demo/index.html",
        "glmv_agent/data/demo/replay-glm-4.1v.json",
        "glmv_agent/py.typed",
    ):
        assert required in names, f"{required} missing from the wheel"
    # Every template of the top-level prompts/ folder, under the package glmv_agent.prompts.
    templates = sorted(path.relative_to(ROOT / "prompts").as_posix()
                       for path in (ROOT / "prompts").rglob("*.txt"))
    assert len(templates) >= 10
    for template in templates:
        assert f"glmv_agent/prompts/{template}" in names, f"{template} missing from the wheel"
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "glmv-agent = glmv_agent.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_demo_runs_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"  # not the repository: nothing importable by accident
    work.mkdir()
    where = subprocess.run([python, "-c", "import glmv_agent; print(glmv_agent.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True)
    assert str(env_dir) in where.stdout, where.stdout
    result = subprocess.run([env_dir / "bin" / "glmv-agent", "demo", "--trace-dir", "trace"],
                            cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answer: $9.99" in result.stdout
    assert (work / "trace" / "report.html").is_file()


def test_every_template_loads_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """The dialects read their templates through importlib.resources from the installed
    wheel, character for character what prompts/ holds."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    templates = sorted(path.relative_to(ROOT / "prompts").as_posix()
                       for path in (ROOT / "prompts").rglob("*.txt"))
    script = ("import sys, glmv_agent\n"
              "from glmv_agent.dialects._history import load_template\n"
              "assert glmv_agent.__file__.startswith(sys.argv[1]), glmv_agent.__file__\n"
              "for name in sys.argv[2:]: sys.stdout.write(repr(load_template(name)) + '\\n')\n")
    done = subprocess.run([sys.executable, "-c", script, str(target), *templates],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.splitlines()
    assert [eval(text) for text in loaded] == [  # noqa: S307 - our own repr() output
        (ROOT / "prompts" / name).read_text(encoding="utf-8") for name in templates]


def test_pyproject_lists_every_package() -> None:
    """packages is an explicit list (for the prompts/ mapping): a new subpackage must be added."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts)
             for path in (ROOT / "glmv_agent").rglob("__init__.py")} | {"glmv_agent.prompts"}
    assert listed == found
