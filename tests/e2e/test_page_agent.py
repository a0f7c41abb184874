"""PageAgent / AsyncPageAgent on a user's own playwright page in a real Chromium.

The browser is Debian's /usr/bin/chromium driven by playwright; pages come from
tests/support/web_pages/ served on 127.0.0.1. The model answers are SCRIPTED (ReplayBackend), not
produced by a model: they are written in GLM-4.1V-9B-Thinking's documented web format
(`<think>..</think><answer>Thought: .. Action: .. Memory_Updated: ..</answer>`) because
the 9B weights cannot run here. Everything else is real: set-of-marks, the GLM-4.1V web
prompt, parsing, policy, the clicks and typing in the page.

Set-of-marks labels of the pages used: form.html [0] name, [1] password, [2] notes,
[4] Send; buttons.html [0] One, [1] Three, [2] Two.
"""

from __future__ import annotations

import asyncio
import logging
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright")

from glmv_agent import AsyncPageAgent, PageAgent, ReplayBackend, TaskFailedError  # noqa: E402
from glmv_agent.envs.web import CHROMIUM_ARGS, default_executable_path  # noqa: E402
from glmv_agent.errors import ConfigError  # noqa: E402
from glmv_agent.page_agent import verdict  # noqa: E402
from glmv_agent.trace import TraceReader  # noqa: E402

from browser_fixtures import browser, server  # noqa: E402,F401 - module fixtures
from threads import in_own_thread  # noqa: E402
from web_server import PageServer  # noqa: E402

if default_executable_path() is None:
    pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)", allow_module_level=True)


def answer(thought: str, action: str, memory: str = "{}", think: str = "") -> str:
    """One scripted answer in the GLM-4.1V web format."""
    return (f"<think>{think or thought}</think><answer>Thought: {thought}\n"
            f"Action: {action}\nMemory_Updated: {memory}</answer>")


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """The user's own page, as their playwright script would make it."""
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    user_page = context.new_page()
    yield user_page
    context.close()


def log(page: Any) -> list[str]:
    return page.evaluate("window.__log")


def prompt_text(backend: ReplayBackend, call: int) -> str:
    return json.dumps(backend.calls[call][0], default=str, ensure_ascii=False)


def test_act_fills_the_form_and_leaves_the_page_open(page: Any, server: PageServer,
                                                    tmp_path: Path) -> None:
    page.goto(server.url("form.html"))
    backend = ReplayBackend([
        answer("The name field is [0].", "Type [0]; [Ada Lovelace]"),
        answer("Now the password field [1].", "Type [1]; [hunter2]",
               '{"name": "Ada Lovelace"}'),
        answer("The form was sent with both values.",
               "ANSWER; <content>Filled in and sent the form</content>"),
    ])
    asked: list[str] = []
    # Typing into the password field [1] asks, although the name field had the focus.
    with PageAgent(page, backend, settle_time=0, trace_dir=tmp_path / "traces",
                   confirm=lambda action, step: asked.append(action.text) or True) as agent:
        result = agent.act("Fill in the form: name Ada Lovelace, password hunter2")

    assert result.status == "answered" and result.answer == "Filled in and sent the form"
    assert asked == ["hunter2"]
    sent = json.loads(page.evaluate("document.getElementById('result').textContent"))
    assert sent == {"name": "Ada Lovelace", "password": "hunter2", "notes": ""}
    # The instruction went in as the task of the trained GLM-4.1V web prompt.
    first = prompt_text(backend, 0)
    assert 'final mission: \\"Fill in the form: name Ada Lovelace' in first
    assert '[0]: <input> \\"\\";' in first
    # Our page, still open and usable; one trace per command.
    assert not page.is_closed() and page.url == server.url("form.html")
    assert page.title() == "Form"
    (trace,) = (tmp_path / "traces").iterdir()
    assert trace.name.startswith("001-act-") and (trace / "steps.jsonl").is_file()


def test_act_that_does_not_finish_raises_unless_asked_not_to(page: Any,
                                                            server: PageServer) -> None:
    page.goto(server.url("form.html"))
    typing = answer("The name field is [0].", "Type [0]; [Ada]")
    agent = PageAgent(page, ReplayBackend([typing, typing]), settle_time=0, max_steps=1)
    with pytest.raises(TaskFailedError, match="max_steps") as caught:
        agent.act("Fill in the form")
    assert caught.value.result is not None and caught.value.result.status == "max_steps"
    result = agent.act("Fill in the form", raise_on_failure=False)
    assert result.status == "max_steps"
    assert page.input_value("#name") == "Ada"


def test_click_on_a_described_button(page: Any, server: PageServer) -> None:
    page.goto(server.url("buttons.html"))
    backend = ReplayBackend([
        # A first answer that is not a click: refused, the model is told and asked again.
        answer("I will scroll to look around.", "Scroll [WINDOW]; [down]"),
        answer("The button labelled Two is [2].", "Click [2]"),
    ])
    agent = PageAgent(page, backend, settle_time=0)
    agent.click("the button labelled Two")

    assert [entry.split()[:2] for entry in log(page)] == [["click", "b2"]]
    assert page.evaluate("window.scrollY") == 0  # the refused scroll never ran
    assert "Click the element described as: the button labelled Two" in prompt_text(backend, 0)
    assert "not allowed" in prompt_text(backend, 1)
    assert backend.remaining == 0


def test_click_is_executed_inside_its_run_and_traced(page: Any, server: PageServer,
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The click happens in the run: the trace shows it executed, the run a success."""
    page.goto(server.url("buttons.html"))
    backend = ReplayBackend([answer("Two is [2].", "Click [2]"),
                             answer("Unused: the run ends after the click.", "Click [0]")])
    agent = PageAgent(page, backend, settle_time=0, trace_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="glmv_agent"):
        agent.click("the button labelled Two")
    result = agent.last_result
    assert result is not None and result.status == "success"
    assert [r.outcome for r in result.steps] == ["executed"]
    assert result.steps[0].env_points  # where it landed on the page
    assert backend.remaining == 1  # asked once: one click is all the command does
    assert [entry.split()[:2] for entry in log(page)] == [["click", "b2"]]
    on_disk = TraceReader(result.trace_dir).records()
    assert [r.outcome for r in on_disk] == ["executed"]
    assert TraceReader(result.trace_dir).info.status == "success"
    assert "run ended: stopped" not in caplog.text


def test_click_refuses_when_the_model_does_not_click(page: Any, server: PageServer) -> None:
    page.goto(server.url("buttons.html"))
    backend = ReplayBackend([answer("There is no such button.",
                                    "ANSWER; <content>No Four button here</content>")])
    agent = PageAgent(page, backend, settle_time=0)
    with pytest.raises(TaskFailedError, match="nothing was clicked"):
        agent.click("the button labelled Four")
    assert log(page) == []


def test_query_answers_without_touching_the_page(page: Any, server: PageServer) -> None:
    page.goto(server.url("buttons.html"))
    backend = ReplayBackend([
        answer("Let me click One first.", "Click [0]"),  # refused: queries never act
        answer("The labels are visible.", "ANSWER; <content>One, Three, Two</content>",
               '{"buttons": ["One", "Three", "Two"]}'),
    ])
    agent = PageAgent(page, backend, settle_time=0)
    assert agent.extract("Which buttons are on the page?") == "One, Three, Two"

    assert log(page) == []  # neither the refused click nor anything else ran
    first = prompt_text(backend, 0)
    assert "Answer this question from the web page as it is now" in first
    assert "Which buttons are on the page?" in first
    assert "not allowed" in prompt_text(backend, 1)


def test_query_gives_up_with_a_clear_error(page: Any, server: PageServer) -> None:
    page.goto(server.url("buttons.html"))
    clicking = answer("Click One.", "Click [0]")
    agent = PageAgent(page, ReplayBackend([clicking, answer("Click Two.", "Click [2]")]),
                      settle_time=0)
    with pytest.raises(TaskFailedError, match="gave no answer"):
        agent.query("What is on the page?")
    assert log(page) == []


def test_assert_that_passes_and_fails_with_the_reasoning(page: Any, server: PageServer) -> None:
    page.goto(server.url("buttons.html"))
    backend = ReplayBackend([
        answer("Three buttons are shown: One, Three and Two.",
               "ANSWER; <content>Yes, there is a button labelled Two.</content>"),
        answer("The buttons are One, Three and Two; none says Four.",
               "ANSWER; <content>No. The buttons are One, Three and Two.</content>"),
        answer("Hard to say.", "ANSWER; <content>Possibly</content>"),
    ])
    agent = PageAgent(page, backend, settle_time=0)
    agent.assert_that("there is a button labelled Two")
    with pytest.raises(AssertionError, match="is false") as caught:
        agent.check("there is a button labelled Four")
    assert "none says Four" in str(caught.value)
    with pytest.raises(AssertionError, match="no clear yes/no"):
        agent.assert_that("the page looks nice")
    assert 'start the content with \\"yes\\"' in prompt_text(backend, 0)
    assert log(page) == []


def test_unparseable_answers_end_with_a_clear_error(page: Any, server: PageServer) -> None:
    page.goto(server.url("form.html"))
    garbage = "<think>hmm</think><answer>I would like to fill the form.</answer>"
    agent = PageAgent(page, ReplayBackend([garbage, garbage]), settle_time=0,
                      max_parse_retries=1)
    with pytest.raises(TaskFailedError, match="unparseable model output") as caught:
        agent.act("Fill in the form")
    step = caught.value.result.steps[0]
    assert step.outcome == "parse_error" and len(step.attempts) == 2
    assert page.input_value("#name") == "" and not page.is_closed()


def test_bad_arguments_are_config_errors(page: Any) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        PageAgent(page, ReplayBackend([])).act("  ")
    with pytest.raises(ConfigError, match="sets 'dry_run' itself"):
        PageAgent(page, ReplayBackend([]), dry_run=True)
    with pytest.raises(ConfigError, match="unknown model family"):
        PageAgent(page, ReplayBackend([]), family="gpt-9")
    assert verdict("Yes, it is.") is True and verdict("no") is False
    assert verdict("**True**") is True and verdict("maybe yes") is None


def test_async_page_agent_on_an_async_playwright_page(server: PageServer) -> None:
    from playwright.async_api import async_playwright

    backend = ReplayBackend([
        answer("The name field is [0].", "Type [0]; [Grace Hopper]"),
        answer("Sent.", "ANSWER; <content>done</content>"),
        answer("Send is [4].", "Click [4]"),
        answer("The result shows the name.", "ANSWER; <content>Grace Hopper</content>"),
        answer("The result shows Grace Hopper.", "ANSWER; <content>yes</content>"),
    ])

    async def scenario() -> dict[str, Any]:
        async with async_playwright() as p:
            chromium = await p.chromium.launch(executable_path=default_executable_path(),
                                               args=list(CHROMIUM_ARGS))
            page = await chromium.new_page(viewport={"width": 1000, "height": 700})
            await page.goto(server.url("form.html"))
            # "Send" is a sensitive click (messaging): approve it as a user would.
            allowed: list[str] = []
            async with AsyncPageAgent(page, backend, settle_time=0,
                                      confirm=lambda a, s: allowed.append(a.type) or True) as agent:
                result = await agent.act("Type the name Grace Hopper")
                after_act = await page.evaluate("document.getElementById('result').textContent")
                await page.fill("#name", "Grace Hopper")  # the user's own script goes on
                await agent.click("the Send button")
                name = await agent.query("Which name does the result show?")
                await agent.assert_that("the result shows Grace Hopper")
            facts = {"status": result.status, "after_act": json.loads(after_act),
                     "name": name, "open": not page.is_closed(), "title": await page.title(),
                     "allowed": allowed}
            await chromium.close()
            return facts

    # playwright's sync API owns this thread's event loop: run the async script in its own.
    box = in_own_thread(lambda: asyncio.run(scenario()))
    assert box["status"] == "answered" and box["name"] == "Grace Hopper"
    assert box["after_act"]["name"] == "Grace Hopper"
    assert box["open"] and box["title"] == "Form"
    assert box["allowed"] == ["click"]
    assert backend.remaining == 0


def test_a_sensitive_click_needs_confirmation(page: Any, server: PageServer) -> None:
    page.goto(server.url("buttons.html"))
    # The model's own thinking mentions deleting: the policy flags the click as sensitive.
    deleting = answer("Button One will delete the account; I click it.", "Click [0]")
    from glmv_agent.errors import ActionRefusedError

    agent = PageAgent(page, ReplayBackend([deleting]), settle_time=0)
    with pytest.raises(ActionRefusedError, match="no confirm callback"):
        agent.click("the delete account button")
    asked: list[str] = []
    agent = PageAgent(page, ReplayBackend([deleting, deleting]), settle_time=0,
                      confirm=lambda action, step: asked.append(action.type) or False)
    with pytest.raises(ActionRefusedError, match="did not allow"):
        agent.click("the delete account button")
    assert asked == ["click"] and log(page) == []
    # The denial is in the run's record: the user's "no" ends the command at once.
    assert agent.last_result.status == "refused"
    assert [r.outcome for r in agent.last_result.steps] == ["denied"]
    agent = PageAgent(page, ReplayBackend([deleting]), settle_time=0,
                      confirm=lambda action, step: True)
    agent.click("the delete account button")
    assert [entry.split()[:2] for entry in log(page)] == [["click", "b1"]]
