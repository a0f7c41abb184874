"""What the tests need installed: pyproject.toml's `dev` extra, self-references resolved.

conftest.py checks it at start-up, so a missing package (transformers, the parity tests'
oracle, above all) stops the run with the fix instead of silently skipping tests.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# Set to 1 to run without some test dependencies on purpose; their tests then skip.
ALLOW_MISSING_ENV = "GLMV_TEST_ALLOW_MISSING"


def extra_requirements(extra: str = "dev", pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The base dependencies plus those of `extra`, with `glmv-agent[...]` expanded."""
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    own = canonicalize_name(project["name"])
    extras = project.get("optional-dependencies", {})
    found: dict[str, Requirement] = {}
    pending = [Requirement(text) for text in project.get("dependencies", [])]
    pending += [Requirement(f"{project['name']}[{extra}]")]
    seen_extras: set[str] = set()
    while pending:
        requirement = pending.pop()
        if canonicalize_name(requirement.name) != own:
            found.setdefault(canonicalize_name(requirement.name), requirement)
            continue
        for name in requirement.extras - seen_extras:
            seen_extras.add(name)
            pending += [Requirement(text) for text in extras[name]]
    return sorted(found.values(), key=lambda r: canonicalize_name(r.name))


def unmet(requirements: list[Requirement]) -> list[str]:
    """The requirements this interpreter does not satisfy, each with what it has instead."""
    problems = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement} (installed: {version})")
    return problems
