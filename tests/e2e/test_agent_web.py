"""The agent loop on a real Chromium page: what the web dialects need from the environment.

The model answers are SCRIPTED (ReplayBackend) in GLM-4.1V's documented web format; the
browser, the set-of-marks labels, the prompt, the parser and the clicks are real. Labels of
tests/support/web_pages/buttons.html: [0] One, [1] Three, [2] Two.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright")

from glmv_agent import Agent, PageAgent, ReplayBackend  # noqa: E402
from glmv_agent.envs.web import WebEnv, default_executable_path  # noqa: E402
from glmv_agent.errors import ConfigError  # noqa: E402

from scripted_env import FormEnv  # noqa: E402
from browser_fixtures import browser, server  # noqa: E402,F401 - module fixtures
from web_server import PageServer  # noqa: E402

if default_executable_path() is None:
    pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)", allow_module_level=True)


def answer(thought: str, action: str) -> str:
    return (f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n"
            "Memory_Updated: {}</answer>")


@pytest.fixture()
def page(browser: Any, server: PageServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    user_page = context.new_page()
    user_page.goto(server.url("buttons.html"))
    yield user_page
    context.close()


@pytest.mark.parametrize("family", ["glm-4.1v", "glm-4.5v"])
def test_label_dialect_turns_set_of_marks_on(page: Any, family: str, tmp_path: Path) -> None:
    """WebEnv(page) without set_of_marks: the agent turns the labels on, so the prompt lists
    the elements, the model sees numbered boxes and `Click [2]` lands on button Two."""
    backend = ReplayBackend([answer("Two is [2].", "Click [2]"),
                             answer("Done.", "ANSWER; <content>clicked</content>")])
    env = WebEnv(page)
    agent = Agent(backend, env, family=family, platform="web", settle_time=0,
                  trace_dir=tmp_path / "trace")
    result = agent.run("Click the button Two")
    assert result.status == "answered", result.error
    assert page.evaluate("window.__log")[0].split()[:2] == ["click", "b2"]
    first = json.dumps(backend.calls[0][0], default=str, ensure_ascii=False)
    assert "[2]:" in first and "Two" in first  # the element list is in the prompt
    assert result.steps[0].marked_screenshot  # and the labelled screenshot was shown
    assert (tmp_path / "trace" / result.steps[0].marked_screenshot).is_file()


def test_labels_turned_off_explicitly_are_refused(page: Any) -> None:
    env = WebEnv(page, set_of_marks=False)
    with pytest.raises(ConfigError, match="set_of_marks=False"):
        Agent(ReplayBackend([]), env, family="glm-4.1v", platform="web")
    # A family that points with coordinates has no use for labels: accepted as it is.
    Agent(ReplayBackend([]), env, family="glm-4.1v", platform="pc", trace=False)


def test_page_agent_refuses_labels_turned_off(page: Any) -> None:
    with pytest.raises(ConfigError, match="set-of-marks labels"):
        PageAgent(page, ReplayBackend([]), family="glm-4.1v", set_of_marks=False)
    assert not page.is_closed()


class _WebFormEnv(FormEnv):
    platform = "web"  # a custom web environment that lists no elements


def test_custom_env_without_elements_ends_the_run_with_a_clear_error(tmp_path: Path) -> None:
    env = _WebFormEnv()
    agent = Agent(ReplayBackend([answer("Click.", "Click [0]")]), env, family="glm-4.1v",
                  settle_time=0, trace_dir=tmp_path / "trace")
    result = agent.run("press plus")
    assert result.status == "error"
    assert "gave no element list" in (result.error or "")
    assert env.executed == []
