"""WebEnv / AsyncWebEnv against a real Chromium (Debian's /usr/bin/chromium via playwright).

Pages come from tests/support/web_pages/, served on 127.0.0.1 by tests/support/web_server.py. One browser
is launched per module; tests that need other settings (DPR 2, an allow-list, file
choosers) open a second context of that browser and wrap its page, which also exercises
`WebEnv(page)` on a user's own page.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("playwright")

from glmv_agent.actions import (  # noqa: E402
    Click, DoubleClick, Drag, Goto, Hover, Key, MiddleClick, NavigateBack, RightClick, Scroll,
    Swipe, Target, TypeText, Wait,
)
from glmv_agent.dialects.elements import format_elements_text  # noqa: E402
from glmv_agent.envs.base import Element, Observation  # noqa: E402
from glmv_agent.envs.web import (  # noqa: E402
    WebEnv, default_executable_path, normalize_url, playwright_key_combo, url_allowed,
    wheel_delta,
)
from glmv_agent.errors import (  # noqa: E402
    ActionError, ActionRefusedError, ConfigError, EnvError, UnsupportedActionError,
)

from browser_fixtures import server  # noqa: E402,F401 - module fixture
from threads import in_own_thread  # noqa: E402
from web_server import PageServer  # noqa: E402

if default_executable_path() is None:
    pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)", allow_module_level=True)


@pytest.fixture(scope="module")
def env(server: PageServer) -> Iterator[WebEnv]:
    with WebEnv.launch(server.url("buttons.html"), set_of_marks=True) as web:
        yield web


@pytest.fixture()
def user_context(env: WebEnv) -> Iterator[Any]:
    """A second context of the module's browser, as a user's own playwright code makes."""
    context = env.context.browser.new_context(viewport={"width": 1000, "height": 700})
    yield context
    try:
        context.close()
    except Exception:
        pass


def open_page(env: WebEnv, server: PageServer, name: str) -> Observation:
    env.execute(Goto(url=server.url(name)))
    return env.observe()


def target_of(env: WebEnv, obs: Observation, selector: str, frac: tuple[float, float] = (0.5, 0.5)) -> Target:
    """Normalized point inside an element, from its real box in the page."""
    box = env.page.locator(selector).bounding_box()
    assert box is not None, selector
    css_w, css_h = obs.extra["viewport_css"]
    return Target.at(
        (box["x"] + box["width"] * frac[0]) / css_w, (box["y"] + box["height"] * frac[1]) / css_h
    )


def page_log(env: WebEnv) -> list[str]:
    return env.page.evaluate("window.__log")


def element(obs: Observation, **attrs: str) -> Element:
    for el in obs.elements or []:
        if all(el.attributes.get(k) == v for k, v in attrs.items()):
            return el
    raise AssertionError(f"no element with {attrs} in {[e.attributes for e in obs.elements or []]}")


# -- pure helpers -------------------------------------------------------------------------


def test_key_combo_names() -> None:
    assert playwright_key_combo(["ctrl", "a"]) == "Control+a"
    assert playwright_key_combo(["ctrl+shift+t"]) == "Control+Shift+t"
    assert playwright_key_combo(["cmd", "c"]) == "Meta+c"
    assert playwright_key_combo(["return"]) == "Enter"
    assert playwright_key_combo(["pagedown"]) == "PageDown"
    assert playwright_key_combo(["+"]) == "+"
    with pytest.raises(ActionError, match="unknown key"):
        playwright_key_combo(["hyperdrive"])


def test_url_rules() -> None:
    assert normalize_url("example.com/a") == "https://example.com/a"
    assert normalize_url("127.0.0.1:8000/x") == "http://127.0.0.1:8000/x"
    for bad in ("javascript:alert(1)", "file:///etc/passwd", "ftp://x.org", "data:text/html,hi"):
        with pytest.raises(ActionRefusedError):
            normalize_url(bad)
    allowed = ("example.com", "127.0.0.1:8000")
    assert url_allowed("https://example.com/", allowed)
    assert url_allowed("https://shop.example.com/x", allowed)
    assert not url_allowed("https://badexample.com/", allowed)
    assert url_allowed("http://127.0.0.1:8000/a", allowed)
    assert not url_allowed("http://127.0.0.1:9000/a", allowed)
    assert not url_allowed("chrome-error://chromewebdata/", allowed)
    assert url_allowed("about:blank", allowed)
    assert wheel_delta("down", 3) == (0.0, 300.0)
    assert wheel_delta("left", 1) == (-100.0, 0.0)


def test_elements_text_format_matches_the_glm_web_prompt() -> None:
    # The layout of the documented example: link text with a differing aria-label, an empty
    # text input, a button named by its aria-label, plain link texts.
    elements = [
        Element(0, "a", "Allrecipes", 0, 0, 1, 1, {"aria-label": "Visit Allrecipes' homepage"}),
        Element(1, "input", "", 0, 0, 1, 1, {"type": "text"}),
        Element(2, "button", "", 0, 0, 1, 1, {"type": "submit", "aria-label": "Click to search"}),
        Element(3, "a", "Log In", 0, 0, 1, 1),
        Element(4, "div", "", 0, 0, 1, 1),  # no text, not fillable: not listed
        Element(5, "a", "x" * 200, 0, 0, 1, 1),  # too long: not listed
    ]
    assert format_elements_text(elements) == (
        '[0]: "Allrecipes", "Visit Allrecipes\' homepage";\t[1]: <input> "";\t'
        '[2]: <button> "Click to search";\t[3]: "Log In";'
    )


# -- observation and clicks ---------------------------------------------------------------


def test_observe_gives_viewport_screenshot_and_mapping(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "buttons.html")
    assert obs.platform == "web"
    assert obs.size == (1280, 720)
    assert obs.url == server.url("buttons.html") and obs.title == "Buttons"
    assert obs.mapping.scale_x == 1.0
    assert obs.extra["focused_is_password"] is False
    # The screenshot is the real page: the area of button #b3 is not blank white.
    box = env.page.locator("#b3").bounding_box()
    crop = obs.screenshot.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    assert crop.getextrema() != ((255, 255), (255, 255), (255, 255))


@pytest.mark.parametrize("button", ["b1", "b2", "b3"])
def test_click_by_normalized_point_dpr1(env: WebEnv, server: PageServer, button: str) -> None:
    obs = open_page(env, server, "buttons.html")
    outcome = env.execute(Click(target=target_of(env, obs, f"#{button}")), obs)
    box = env.page.locator(f"#{button}").bounding_box()
    (entry,) = page_log(env)
    kind, name, x, y = entry.split()
    assert (kind, name) == ("click", button)
    assert box["x"] <= float(x) <= box["x"] + box["width"]
    assert box["y"] <= float(y) <= box["y"] + box["height"]
    assert outcome.env_points and abs(outcome.env_points[0][0] - float(x)) <= 1


def test_click_at_dpr2_on_a_wrapped_user_page(env: WebEnv, server: PageServer) -> None:
    context = env.context.browser.new_context(viewport={"width": 1280, "height": 720}, device_scale_factor=2)
    page = context.new_page()
    page.goto(server.url("buttons.html"))
    web = WebEnv(page)
    obs = web.observe()
    assert obs.size == (2560, 1440)  # device pixels
    assert obs.mapping.scale_x == 0.5 and obs.extra["device_pixel_ratio"] == 2
    for button in ("b1", "b2"):
        web.execute(Click(target=target_of(web, obs, f"#{button}")), obs)
    log = page.evaluate("window.__log")
    assert [e.split()[:2] for e in log] == [["click", "b1"], ["click", "b2"]]
    x, y = map(float, log[1].split()[2:])
    assert 900 <= x <= 1020 and 600 <= y <= 640  # #b2's CSS box
    web.close()
    assert not page.is_closed()  # wrapping never closes the user's page
    assert page.evaluate("1 + 1") == 2
    context.close()


def test_double_right_middle_click_and_hover(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "buttons.html")
    env.execute(DoubleClick(target=target_of(env, obs, "#b1")), obs)
    env.execute(RightClick(target=target_of(env, obs, "#b2")), obs)
    env.execute(MiddleClick(target=target_of(env, obs, "#b3")), obs)
    env.execute(Hover(target=target_of(env, obs, "#hoverbox")), obs)
    log = page_log(env)
    assert "dblclick b1" in log
    assert "contextmenu b2" in log
    assert "auxclick b3 1" in log
    assert log[-1] == "enter hoverbox"
    assert env.page.evaluate("getComputedStyle(document.getElementById('hoverbox')).backgroundColor") == "rgb(136, 204, 136)"


def test_actions_wait_for_the_page_to_settle(env: WebEnv, server: PageServer) -> None:
    # A slow fetch then a delayed second update, and a navigation started from a timer:
    # when execute() returns, both have landed, so the next screenshot is current.
    obs = open_page(env, server, "delayed.html")
    outcome = env.execute(Click(target=target_of(env, obs, "#load")), obs)
    assert env.page.evaluate("document.querySelectorAll('#results li').length") == 2
    assert env.page.evaluate("document.getElementById('first').textContent") == "slow done"
    assert "still changing" not in outcome.detail
    env.execute(Click(target=target_of(env, obs, "#later")), obs)
    assert env.observe().title == "Page two"


def test_stability_waits_for_what_the_action_started_not_for_endless_loops(
        env: WebEnv, server: PageServer) -> None:
    """The quiet window is short (60 ms); what an action sets in motion is watched instead:
    its timers (here 300 ms) and CSS transitions (400 ms), while the page's own endless 50 ms
    polling loop does not hold the check up until the timeout."""
    obs = open_page(env, server, "ticker.html")
    outcome = env.execute(Click(target=target_of(env, obs, "#go")), obs)
    assert env.page.evaluate("document.getElementById('shown').textContent") == "shown"
    assert "still changing" not in outcome.detail
    assert outcome.settle_s > 0  # reported, for the step's "settle" phase
    obs = open_page(env, server, "transition.html")  # a CSS transform changes no layout
    env.execute(Click(target=target_of(env, obs, "#fade")), obs)
    assert env.page.evaluate("getComputedStyle(document.getElementById('box')).transform") == \
        "matrix(1, 0, 0, 1, 300, 0)"


# -- scrolling and frames -------------------------------------------------------------


def test_scroll_page_then_click(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "scroll.html")
    assert env.page.evaluate("document.getElementById('far').getBoundingClientRect().top") > 720
    env.execute(Scroll(direction="down", amount=10), obs)  # over the page, not the inner box
    assert env.page.evaluate("window.scrollY") > 900
    obs = env.observe()
    top = env.page.evaluate("document.getElementById('far').getBoundingClientRect().top")
    assert 0 <= top < 720
    env.execute(Click(target=target_of(env, obs, "#far")), obs)
    assert page_log(env) == ["click far"]
    env.execute(Scroll(direction="up", amount=20), obs)
    assert env.page.evaluate("window.scrollY") == 0


def test_scroll_inner_container_under_the_pointer(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "scroll.html")
    env.execute(Scroll(direction="down", amount=10, target=target_of(env, obs, "#box")), obs)
    assert env.page.evaluate("document.getElementById('box').scrollTop") > 700
    assert env.page.evaluate("window.scrollY") == 0  # the page itself did not move
    obs = env.observe()
    env.execute(Click(target=target_of(env, obs, "#deep")), obs)
    assert page_log(env) == ["click deep"]


def test_iframe_click_and_marks(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "iframe.html")
    # The frame's content starts at (200 + 5 border, 100 + 5 border); its button at (50, 60).
    inside = element(obs, id="inside")
    assert (inside.x1, inside.y1, inside.x2, inside.y2) == (255, 165, 355, 195)
    assert "Inside frame" in format_elements_text(obs.elements or [])
    env.execute(Click(target=Target.of_element(inside.label)), obs)
    (entry,) = page_log(env)
    x, y = map(float, entry.split()[2:])
    assert 50 <= x <= 150 and 60 <= y <= 90  # coordinates inside the frame's own viewport


# -- select, forms, keys, drag ------------------------------------------------------------


def test_select_opens_visible_options_and_picks_by_click(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "select.html")
    fruit = element(obs, id="fruit")
    env.execute(Click(target=Target.of_element(fruit.label)), obs)
    obs = env.observe()
    options = [e for e in obs.elements or [] if e.attributes.get("role") == "option"]
    assert [o.text for o in options] == ["Choose…", "Apple", "Banana", "Cherry"]
    assert all(o.y1 >= fruit.y2 - 1 for o in options)  # drawn below the select, in the page
    banana = next(o for o in options if o.text == "Banana")
    assert f'[{banana.label}]: "Banana";' in format_elements_text(obs.elements or [])
    env.execute(Click(target=Target.of_element(banana.label)), obs)
    assert env.page.evaluate("document.getElementById('fruit').value") == "banana"
    assert page_log(env) == ["change banana"]
    obs = env.observe()
    assert not [e for e in obs.elements or [] if e.attributes.get("role") == "option"]


def test_type_into_select_chooses_the_option(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "select.html")
    fruit = element(obs, id="fruit")
    outcome = env.execute(TypeText(text="cherry", target=Target.of_element(fruit.label)), obs)
    assert "Cherry" in outcome.detail
    assert env.page.evaluate("document.getElementById('chosen').textContent") == "cherry"
    with pytest.raises(ActionError, match="no option 'Mango'"):
        env.execute(TypeText(text="Mango", target=Target.of_element(fruit.label)), obs)


def test_form_typing_unicode_and_submit(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "form.html")
    name = 'Zoë 张伟 🚀 "quoted" it\'s'
    env.execute(TypeText(text=name, target=Target.of_element(element(obs, id="name").label)), obs)
    env.execute(TypeText(text="s3cr3t!", target=Target.of_element(element(obs, id="password").label)), obs)
    assert env.observe().extra["focused_is_password"] is True
    env.execute(TypeText(text="第一行\nsecond line", target=target_of(env, obs, "#notes")), obs)
    env.execute(Click(target=Target.of_element(element(obs, id="submit").label)), obs)
    result = json.loads(env.page.evaluate("document.getElementById('result').textContent"))
    assert result == {"name": name, "password": "s3cr3t!", "notes": "第一行\nsecond line"}


def test_keys_select_all_then_type_replaces(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "form.html")
    field = Target.of_element(element(obs, id="name").label)
    env.execute(TypeText(text="old value", target=field), obs)
    env.execute(Key(keys=["ctrl", "a"]), obs)
    env.execute(TypeText(text="new"), obs)
    assert env.page.evaluate("document.getElementById('name').value") == "new"
    assert "keydown a ctrl" in page_log(env)
    env.execute(TypeText(text="fresh", target=field, clear=True, enter=True), obs)
    assert env.page.evaluate("document.getElementById('name').value") == "fresh"
    assert json.loads(env.page.evaluate("document.getElementById('result').textContent"))["name"] == "fresh"


def test_drag_slider_and_draggable(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "drag.html")
    start = target_of(env, obs, "#slider", (0.01, 0.5))
    end = target_of(env, obs, "#slider", (0.75, 0.5))
    env.execute(Drag(start=start, end=end), obs)
    assert 65 <= int(env.page.evaluate("document.getElementById('slider').value")) <= 85
    env.execute(Drag(start=target_of(env, obs, "#piece"), end=target_of(env, obs, "#zone")), obs)
    assert page_log(env) == ["drop piece"]


# -- navigation ---------------------------------------------------------------------------


def test_goto_link_and_back(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "links.html")
    env.execute(Click(target=target_of(env, obs, "#next")), obs)
    assert env.observe().title == "Page two"
    outcome = env.execute(NavigateBack())
    assert env.page.url == server.url("links.html") and "went back" in outcome.detail
    with pytest.raises(ActionRefusedError, match="only http"):
        env.execute(Goto(url="javascript:alert(1)"))
    env.execute(Wait(seconds=0.1))
    assert env.page.url == server.url("links.html")


def test_navigate_back_without_history_is_an_error_for_the_model(
    env: WebEnv, server: PageServer, user_context: Any
) -> None:
    page = user_context.new_page()
    page.goto(server.url("links.html"))
    web = WebEnv(page)
    assert "went back to about:blank" in web.execute(NavigateBack()).detail  # the tab's start
    # An error (not a silent note), so the agent tells the model its action did nothing.
    with pytest.raises(ActionError, match="no previous page"):
        web.execute(NavigateBack())
    assert page.url == "about:blank"
    web.close()


def test_javascript_dialogs_are_dismissed_and_reported(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "dialogs.html")
    assert "dialog" not in obs.extra
    outcome = env.execute(Click(target=target_of(env, obs, "#confirm")), obs)
    assert "confirm dialog 'Delete everything?'" in outcome.detail and "Cancel" in outcome.detail
    obs = env.observe()
    assert obs.extra["dialog"] == {"type": "confirm", "message": "Delete everything?"}
    assert "dialog" not in env.observe().extra  # reported once, by the next observation
    outcome = env.execute(Click(target=target_of(env, obs, "#prompt")), obs)
    assert "prompt dialog 'Your name?'" in outcome.detail
    assert env.observe().extra["dialog"] == {"type": "prompt", "message": "Your name?", "default": "Ann"}
    outcome = env.execute(Click(target=target_of(env, obs, "#alert")), obs)
    assert "alert dialog 'Saved!'; it was closed" in outcome.detail
    # The page went on after each dialog: confirm/prompt answered as Cancel.
    assert page_log(env) == ["confirm false", "prompt null", "after alert"]


def test_set_of_marks_sees_open_shadow_roots(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "shadow.html")
    texts = [e.text for e in obs.elements or []]
    assert texts[:2] == ["Light button", "Shadow button"] and "Deep link" in texts
    assert "Closed root button" not in texts  # closed shadow roots are invisible to scripts
    field = element(obs, placeholder="Inside shadow")
    assert field.tag == "input"
    for name, log in (("Shadow button", "click shadow-btn"), ("Deep link", "click deep")):
        label = next(e.label for e in obs.elements or [] if e.text == name)
        env.execute(Click(target=Target.of_element(label)), obs)
        assert page_log(env)[-1] == log
    env.execute(TypeText(text="in shadow", target=Target.of_element(field.label)), obs)
    typed = env.page.evaluate(
        "document.getElementById('card').shadowRoot.getElementById('shadow-input').value"
    )
    assert typed == "in shadow"


def test_new_tab_and_popup_are_followed(env: WebEnv, server: PageServer) -> None:
    first = env.page
    obs = open_page(env, server, "links.html")
    outcome = env.execute(Click(target=target_of(env, obs, "#newtab")), obs)
    assert env.page is not first and env.page.url == server.url("page2.html")
    assert "followed the new tab" in outcome.detail
    assert env.observe().title == "Page two"
    obs = open_page(env, server, "links.html")
    env.execute(Click(target=target_of(env, obs, "#popup")), obs)
    assert env.page.url == server.url("page2.html?popup=1")
    # Tabs closing themselves hand control back to an open one.
    for page in env.context.pages[1:]:
        page.close()
    assert env.page is first


def test_allowed_domains_block_other_hosts(env: WebEnv, server: PageServer, user_context: Any) -> None:
    page = user_context.new_page()
    page.goto(server.url("links.html"))
    web = WebEnv(page, allowed_domains=["127.0.0.1"])
    other = f"http://localhost:{server.port}/page2.html"
    with pytest.raises(ActionRefusedError, match="outside allowed_domains"):
        web.execute(Goto(url=other))
    obs = web.observe()
    outcome = web.execute(Click(target=target_of(web, obs, "#away")), obs)
    assert "blocked navigation" in outcome.detail and other in outcome.detail
    assert web.page.url == server.url("links.html")
    outcome = web.execute(Click(target=target_of(web, obs, "#away_tab")), obs)
    assert "blocked navigation" in outcome.detail
    assert [p.url for p in user_context.pages] == [server.url("links.html")]
    with pytest.raises(ActionRefusedError, match="outside allowed_domains"):
        web.execute(Click(target=target_of(web, obs, "#redirect")), obs)
    assert web.page.url == server.url("links.html")
    # Allowed navigation still works.
    web.execute(Click(target=target_of(web, obs, "#next")), obs)
    assert web.page.url == server.url("page2.html")
    web.close()


def test_file_chooser_refused_unless_allowed(env: WebEnv, server: PageServer, user_context: Any) -> None:
    obs = open_page(env, server, "form.html")
    with pytest.raises(ActionRefusedError, match="file chooser"):
        env.execute(Click(target=target_of(env, obs, "#upload")), obs)
    page = user_context.new_page()
    page.goto(server.url("form.html"))
    web = WebEnv(page, allow_file_chooser=True)
    obs = web.observe()
    outcome = web.execute(Click(target=target_of(web, obs, "#upload")), obs)
    assert "file chooser" in outcome.detail and web.file_chooser is not None
    web.close()


# -- set-of-marks -----------------------------------------------------------------------


def test_set_of_marks_labels_and_text(env: WebEnv, server: PageServer) -> None:
    obs = open_page(env, server, "marks.html")
    ids = [e.attributes.get("id") for e in obs.elements or []]
    # Reading order; hidden, display:none, covered, off-screen and disabled ones left out;
    # the <span> inside the clickable card is part of the card.
    assert ids == ["home", "search", "go", "icon", "card", "rb", "editor", "email", "size"]
    # The environment reports elements; the prompt text is the dialects' to write.
    assert obs.elements_text is None
    assert format_elements_text(obs.elements or []) == (
        '[0]: "Home";\t[1]: <input> "";\t[2]: <button> "Search";\t[3]: <button> "Settings";\t'
        '[4]: "Open card details";\t[5]: "Role button";\t[7]: <input> "Email address";\t'
        '[8]: "Small Large";'
    )
    go = obs.elements[2]
    assert (go.x1, go.y1) == (450, 20)
    # Labels are drawn on a copy of the screenshot, not in the page.
    assert obs.marked_screenshot is not None and obs.model_image() is obs.marked_screenshot
    corner = (int(go.x1) + 2, int(go.y1) - 4)
    assert obs.marked_screenshot.getpixel(corner) != obs.screenshot.getpixel(corner)
    count = "document.querySelectorAll('*').length"
    before = env.page.evaluate(count)
    env.observe()
    assert env.page.evaluate(count) == before
    env.execute(TypeText(text="lasagna", target=Target.of_element(1)), obs)
    assert env.page.evaluate("document.getElementById('search').value") == "lasagna"
    with pytest.raises(ActionRefusedError, match=r"\[42\]"):
        env.execute(Click(target=Target.of_element(42)), obs)


# -- errors, async ------------------------------------------------------------------------


def test_unsupported_and_invalid_actions(env: WebEnv) -> None:
    with pytest.raises(UnsupportedActionError, match="swipe"):
        env.execute(Swipe(start=Target.at(0.1, 0.1), end=Target.at(0.2, 0.2)))
    with pytest.raises(ActionError, match="unknown key"):
        env.execute(Key(keys=["warp"]))
    assert {"click", "type", "scroll", "goto"} <= env.supported_actions()
    with pytest.raises(ConfigError):
        WebEnv(env.page, allowed_domains=[""])


def test_closed_page_raises_env_error(env: WebEnv, server: PageServer, user_context: Any) -> None:
    page = user_context.new_page()
    page.goto(server.url("buttons.html"))
    web = WebEnv(page)
    web.observe()
    user_context.close()
    with pytest.raises(EnvError, match="closed"):
        web.observe()
    with pytest.raises(EnvError, match="closed"):
        web.execute(Click(target=Target.at(0.5, 0.5)))


def test_closed_env_raises_env_error(env: WebEnv) -> None:
    context = env.context.browser.new_context()
    web = WebEnv(context.new_page())
    web.close()
    with pytest.raises(EnvError, match="closed"):
        web.observe()
    context.close()


def _descendants() -> set[int]:
    """Live processes below this test process (playwright's driver, Chromium), from /proc."""
    import os
    from pathlib import Path

    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # zombies are gone already, only not reaped
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def test_launch_with_bad_options_leaves_no_browser_running(server: PageServer) -> None:
    import time

    def launch_badly() -> None:
        with pytest.raises(ConfigError, match="stability_timeout"):
            WebEnv.launch(server.url("buttons.html"), stability_timeout=-1)
        with pytest.raises(ConfigError, match="allowed_domains"):
            WebEnv.launch(allowed_domains=[""])

    before = _descendants()
    in_own_thread(launch_badly)
    deadline = time.monotonic() + 20  # processes may take a moment to be reaped
    while _descendants() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _descendants() - before


def test_cli_open_env_passes_dpr_and_stability_timeout(server: PageServer) -> None:
    from glmv_agent.cli import build_parser, open_env

    args = build_parser().parse_args([
        "run", "task", "--env", "web", "--url", server.url("buttons.html"), "--viewport",
        "640x360", "--dpr", "2", "--stability-timeout", "3", "--model", "unused.json",
    ])

    def scenario() -> tuple[tuple[int, int], float, float]:
        with open_env(args) as web:
            obs = web.observe()
            return obs.size, obs.extra["device_pixel_ratio"], web._core.stability_timeout

    assert in_own_thread(scenario) == ((1280, 720), 2, 3)


def test_async_twin(server: PageServer) -> None:
    from glmv_agent.envs.web import AsyncWebEnv

    async def scenario() -> dict[str, Any]:
        env = await AsyncWebEnv.launch(server.url("form.html"), set_of_marks=True, device_scale_factor=2)
        async with env:
            obs = await env.observe()
            name = element(obs, id="name")
            await env.execute(TypeText(text="异步 ✓", target=Target.of_element(name.label)))
            await env.execute(Click(target=Target.of_element(element(obs, id="submit").label)))
            result = json.loads(await env.page.evaluate("document.getElementById('result').textContent"))
            with pytest.raises(ActionRefusedError, match="file chooser"):
                await env.execute(Click(target=Target.of_element(element(obs, id="upload").label)))
            size, text = obs.size, format_elements_text(obs.elements or [])
            # Dialogs under the async API: dismissed (awaited in the loop) and reported.
            await env.execute(Goto(url=server.url("dialogs.html")))
            obs = await env.observe()
            outcome = await env.execute(Click(target=Target.of_element(element(obs, id="confirm").label)))
            dialog = (await env.observe()).extra.get("dialog")
            log = await env.page.evaluate("window.__log")
            facts = {"size": size, "text": text, "result": result,
                     "dialog": dialog, "detail": outcome.detail, "log": log}
        with pytest.raises(EnvError, match="closed"):
            await env.observe()
        return facts

    box = in_own_thread(lambda: asyncio.run(scenario()))
    assert box["size"] == (2560, 1440)
    assert box["dialog"] == {"type": "confirm", "message": "Delete everything?"}
    assert "confirm dialog" in box["detail"] and box["log"] == ["confirm false"]
    assert box["result"]["name"] == "异步 ✓"
    assert '<input> "Password"' in box["text"] and '<button> "Send"' in box["text"]


# -- end to end ---------------------------------------------------------------------------


def test_agent_completes_a_form_with_recorded_glm41v_web_answers(
    env: WebEnv, server: PageServer, tmp_path: Any
) -> None:
    """The whole loop on a real page: set-of-marks observation -> GLM-4.1V web prompt ->
    recorded answers in the documented WebVoyager format -> parsed actions -> real typing.

    The answers stand in for GLM-4.1V-9B-Thinking (no 9B weights here); labels refer to
    form.html's set-of-marks numbering: [0] name, [1] password.
    """
    from glmv_agent.agent import Agent
    from glmv_agent.backends.replay import ReplayBackend

    answers = [
        "<think>The name box is first.</think><answer>Thought: The form has a name field "
        "labelled [0]; I type the name there.\nAction: Type [0]; [Ada Lovelace]\n"
        "Memory_Updated: {}</answer>",
        "<think>Now the password.</think><answer>Thought: The password field is [1].\n"
        "Action: Type [1]; [hunter2]\nMemory_Updated: {\"name\": \"Ada Lovelace\"}</answer>",
        "<think>The form shows the result.</think><answer>Thought: The form was sent.\n"
        "Action: ANSWER; <content>Sent the form for Ada Lovelace</content>\n"
        "Memory_Updated: {\"name\": \"Ada Lovelace\"}</answer>",
    ]
    open_page(env, server, "form.html")
    backend = ReplayBackend(answers)
    # Type [1] goes into the password field, so it is confirmed (the user says yes).
    agent = Agent(backend, env, family="glm-4.1v", trace_dir=tmp_path / "trace", settle_time=0,
                  confirm=lambda action, step: True)
    result = agent.run("Fill in the form with the name Ada Lovelace and the password hunter2")

    assert result.status == "answered", result.error
    assert result.answer == "Sent the form for Ada Lovelace"
    assert result.steps[1].sensitive == "typing into a password field"
    sent = json.loads(env.page.evaluate("document.getElementById('result').textContent"))
    assert sent == {"name": "Ada Lovelace", "password": "hunter2", "notes": ""}
    assert [s.action["type"] for s in result.steps] == ["type", "type", "answer"]
    assert [s.action.get("target", {}).get("element") for s in result.steps[:2]] == [0, 1]
    assert all(s.outcome != "error" for s in result.steps)
    # The model saw the element list in the documented format.
    first_prompt = json.dumps(backend.calls[0][0], default=str, ensure_ascii=False)
    assert '[0]: <input> \\"\\";' in first_prompt and '<button> \\"Send\\"' in first_prompt
    trace = tmp_path / "trace"
    assert trace.is_dir() and any(trace.rglob("*.png"))


def test_agent_tells_the_model_about_a_dismissed_dialog(env: WebEnv, server: PageServer,
                                                        tmp_path: Any) -> None:
    """A dialog the env dismissed reaches the model as a note on its next prompt."""
    from glmv_agent.agent import Agent
    from glmv_agent.backends.replay import ReplayBackend

    from scripted_env import JsonDialect, answer

    obs = open_page(env, server, "dialogs.html")
    point = target_of(env, obs, "#alert").point
    assert point is not None
    click = answer({"type": "click", "target": {"point": {"x": point.x, "y": point.y}}})
    backend = ReplayBackend([click, answer({"type": "done", "success": True})])
    agent = Agent(backend, env, dialect=JsonDialect("web"), trace_dir=tmp_path / "trace",
                  settle_time=0)
    assert agent.run("press the alert button").status == "success"
    first, second = (json.dumps(m, default=str) for m in backend.messages)
    assert "dialog" not in first
    assert "alert dialog 'Saved!', which was dismissed" in second
    assert page_log(env) == ["after alert"]


def test_screenshot_equals_playwrights_with_the_caret_hidden(env: WebEnv, server: PageServer) -> None:
    """The observation's screenshot (one DevTools capture) has the same pixels as
    page.screenshot(): device pixels at DPR 2, a scrolled page, a focused field whose
    blinking caret is hidden in both; the page keeps no style sheet of ours afterwards."""
    context = env.context.browser.new_context(viewport={"width": 900, "height": 400},
                                              device_scale_factor=2)
    page = context.new_page()
    page.goto(server.url("scroll.html"))
    page.evaluate("""() => { const field = document.createElement("input"); field.id = "f";
        field.style = "position: fixed; top: 10px; left: 10px"; document.body.appendChild(field); }""")
    page.click("#f")
    page.evaluate("window.scrollTo(0, 333)")
    web = WebEnv(page)
    try:
        for _ in range(4):  # the caret blinks every ~500 ms: both phases are seen
            obs = web.observe()
            assert obs.size == (1800, 800)
            theirs = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
            assert obs.screenshot.tobytes() == theirs.tobytes()
            assert page.evaluate("document.adoptedStyleSheets.length") == 0
            assert page.evaluate("scrollY") == 333
            page.wait_for_timeout(300)
    finally:
        web.close()
        context.close()


def test_hash_navigation_is_measured_once(env: WebEnv, server: PageServer) -> None:
    """A click that changes only the URL's fragment (a hash-routed app) is reported by the
    browser after the stability check began; the page is not measured a second time for
    it, while its result is on screen when execute() returns."""
    obs = open_page(env, server, "links.html")
    env.page.evaluate("""() => { const a = document.createElement("a"); a.id = "hash";
        a.href = "#/next"; a.textContent = "hash link"; document.body.prepend(a);
        addEventListener("hashchange", () => { document.title = "routed " + location.hash; }); }""")
    obs = env.observe()
    checks: list[str] = []
    evaluate = env.page.evaluate

    def counting(script: str, *args: Any) -> Any:
        if "stopped changing" in script:
            checks.append(script)
        return evaluate(script, *args)

    env.page.evaluate = counting  # type: ignore[method-assign]
    try:
        outcome = env.execute(Click(target=target_of(env, obs, "#hash")), obs)
    finally:
        del env.page.evaluate
    assert env.page.title() == "routed #/next" and env.page.url.endswith("#/next")
    assert len(checks) == 1 and "still changing" not in outcome.detail
