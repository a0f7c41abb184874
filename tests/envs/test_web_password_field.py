"""The password-field confirmation decides on the field an action types into, on a real
Chromium page: `Type [i]` / a typed point with a target is judged by the element under it,
a target-less type by the field focused now, not by the field focused at the screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright")

from glmv_agent import Agent, ReplayBackend  # noqa: E402
from glmv_agent.actions import Point, Target, TypeText  # noqa: E402
from glmv_agent.envs.base import Observation  # noqa: E402
from glmv_agent.envs.web import WebEnv, default_executable_path  # noqa: E402

from browser_fixtures import server  # noqa: E402,F401 - module fixture
from web_server import PageServer  # noqa: E402

if default_executable_path() is None:
    pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)", allow_module_level=True)


@pytest.fixture()
def env(server: PageServer) -> Iterator[WebEnv]:
    web = WebEnv.launch(server.url("form.html"), viewport=(800, 600), set_of_marks=True)
    yield web
    web.close()


def label_of(obs: Observation, element_id: str) -> int:
    return next(e.label for e in obs.elements or [] if e.attributes.get("id") == element_id)


def centre_of(env: WebEnv, obs: Observation, selector: str) -> Point:
    box = env.page.locator(selector).bounding_box()
    w, h = obs.extra["viewport_css"]
    return Point(x=(box["x"] + box["width"] / 2) / w, y=(box["y"] + box["height"] / 2) / h)


def test_env_tells_the_field_under_the_target_and_the_focused_one(env: WebEnv) -> None:
    obs = env.observe()
    assert obs.extra["focused_is_password"] is False  # nothing focused at the screenshot
    password, name = label_of(obs, "password"), label_of(obs, "name")
    assert env.types_into_password(TypeText(target=Target(element=password), text="x"), obs)
    assert not env.types_into_password(TypeText(target=Target(element=name), text="x"), obs)
    point = Target(point=centre_of(env, obs, "#password"))
    assert env.types_into_password(TypeText(target=point, text="x"), obs)
    # Without a target the keys go to the focused field, as the page is now.
    assert not env.types_into_password(TypeText(text="x"), obs)
    env.page.focus("#password")
    assert env.types_into_password(TypeText(text="x"), obs)


def answer(thought: str, action: str) -> str:
    return f"<answer>Thought: {thought}\nAction: {action}\nMemory_Updated: {{}}</answer>"


def test_typing_a_secret_into_a_password_field_the_action_targets_asks(
    env: WebEnv, tmp_path: Path
) -> None:
    """The screenshot shows no focused field; `Type [i]` clicks the password field and
    types: that must be confirmed (before the fix it ran without asking)."""
    obs = env.observe()
    password = label_of(obs, "password")
    asked: list[Any] = []
    backend = ReplayBackend([answer("Fill the password.", f"Type [{password}]; [{{{{pw}}}}]"),
                             answer("Done.", "ANSWER; <content>typed</content>")])
    agent = Agent(backend, env, family="glm-4.1v", platform="web", settle_time=0,
                  secrets={"pw": "S3cr3t-9"}, trace_dir=tmp_path / "trace",
                  confirm=lambda action, step: asked.append(action.type) or True)
    result = agent.run("log in")
    assert result.status == "answered", result.error
    assert asked == ["type"]
    assert result.steps[0].sensitive == "typing into a password field"
    assert env.page.input_value("#password") == "S3cr3t-9"


def test_typing_into_a_plain_field_while_a_password_field_is_focused_does_not_ask(
    env: WebEnv, tmp_path: Path
) -> None:
    """The other way round: the password field has focus at the screenshot, the action
    types into the name field; no password confirmation."""
    env.page.focus("#password")
    obs = env.observe()
    assert obs.extra["focused_is_password"] is True
    name = label_of(obs, "name")
    asked: list[Any] = []
    backend = ReplayBackend([answer("Fill the name.", f"Type [{name}]; [Ada]"),
                             answer("Done.", "ANSWER; <content>typed</content>")])
    agent = Agent(backend, env, family="glm-4.1v", platform="web", settle_time=0,
                  trace_dir=tmp_path / "trace",
                  confirm=lambda action, step: asked.append(action.type) or True)
    result = agent.run("enter the name Ada")
    assert result.status == "answered", result.error
    assert asked == [] and result.steps[0].sensitive is None
    assert env.page.input_value("#name") == "Ada"


def test_async_env_tells_the_field_under_the_target(server: PageServer) -> None:
    import asyncio

    from glmv_agent.envs.web import AsyncWebEnv

    async def scenario() -> tuple[bool, bool, bool]:
        env = await AsyncWebEnv.launch(server.url("form.html"), set_of_marks=True)
        async with env:
            obs = await env.observe()
            password = TypeText(target=Target(element=label_of(obs, "password")), text="x")
            name = TypeText(target=Target(element=label_of(obs, "name")), text="x")
            return (await env.types_into_password(password, obs),
                    await env.types_into_password(name, obs),
                    await env.types_into_password(TypeText(text="x"), obs))

    # In a thread of its own: a sync playwright of another test may own this thread's loop.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, scenario()).result(timeout=120) == (True, False, False)
