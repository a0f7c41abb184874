"""Policy: hard refusals and confirmation triggers, on real observations."""

from __future__ import annotations

import pytest
from PIL import Image

from glmv_agent.actions import (
    Answer, Click, Done, Goto, Key, Point, Scroll, TakeOver, Target, TypeText,
)
from glmv_agent.dialects.base import Step
from glmv_agent.envs.base import Element, Observation
from glmv_agent.errors import ActionRefusedError, UnsupportedActionError
from glmv_agent.geometry import ScreenMapping, viewport_mapping
from glmv_agent.policy import Policy, last_sentences, load_keywords

SUPPORTED = {"click", "type", "key", "scroll", "goto"}


def obs(**extra) -> Observation:
    elements = [Element(label=3, tag="button", text="Buy now", x1=10, y1=10, x2=50, y2=30),
                Element(label=4, tag="a", text="Home", x1=60, y1=10, x2=90, y2=30)]
    return Observation(screenshot=Image.new("RGB", (200, 100)),
                       mapping=viewport_mapping(200, 100, device_pixel_ratio=2.0),
                       platform="web", elements=elements, extra=extra)


def test_supported_and_agent_actions() -> None:
    p = Policy()
    p.check(Click(target=Target.at(0.5, 0.5)), obs(), SUPPORTED)
    for a in (Done(), Answer(text="x"), TakeOver()):
        p.check(a, obs(), set())  # handled by the agent, never by the env
    with pytest.raises(UnsupportedActionError, match="cannot execute 'key'"):
        p.check(Key(keys=["a"]), obs(), {"click"})
    with pytest.raises(ActionRefusedError, match="not allowed by the policy"):
        Policy(allowed_actions={"click"}).check(Scroll(direction="up"), obs(), SUPPORTED)


def test_targets_must_be_on_screen() -> None:
    p = Policy()
    p.check(Click(target=Target.at(1.0, 1.0)), obs(), SUPPORTED)
    p.check(Click(target=Target.of_element(3)), obs(), SUPPORTED)
    with pytest.raises(ActionRefusedError, match=r"label \[9\]"):
        p.check(Click(target=Target.of_element(9)), obs(), SUPPORTED)
    # A point that bypassed validation (model_construct) is still caught.
    off = Target.model_construct(point=Point.model_construct(x=1.2, y=0.5), box=None,
                                 element=None)
    with pytest.raises(ActionRefusedError, match="outside the screenshot"):
        p.check(Click.model_construct(type="click", target=off, sensitive=False, reason=None),
                obs(), SUPPORTED)


def test_mapping_outside_screen_is_refused() -> None:
    class Shifted(ScreenMapping):
        def to_env(self, point):  # a broken platform mapping
            return (-5.0, -5.0)

    o = obs()
    o.mapping = Shifted(width=200, height=100)
    with pytest.raises(ActionRefusedError, match="outside the screen"):
        Policy().check(Click(target=Target.at(0.5, 0.5)), o, SUPPORTED)


def test_text_length() -> None:
    p = Policy(max_text_length=5)
    p.check(TypeText(text="12345"), obs(), SUPPORTED)
    with pytest.raises(ActionRefusedError, match="max_text_length=5"):
        p.check(TypeText(text="123456"), obs(), SUPPORTED)


@pytest.mark.parametrize("url,ok", [
    ("https://example.com/x", True),
    ("https://shop.example.com/", True),
    ("http://EXAMPLE.com.", True),
    ("https://example.com.evil.net/", False),
    ("https://notexample.com/", False),
    ("https://evil.net/?u=example.com", False),
])
def test_domain_allow_list(url: str, ok: bool) -> None:
    p = Policy(allowed_domains=["example.com"])
    if ok:
        p.check(Goto(url=url), obs(), SUPPORTED)
    else:
        with pytest.raises(ActionRefusedError, match="not in allowed_domains"):
            p.check(Goto(url=url), obs(), SUPPORTED)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "example.com"])
def test_bad_schemes(url: str) -> None:
    with pytest.raises(ActionRefusedError, match="scheme"):
        Policy().check(Goto(url=url), obs(), SUPPORTED)


def step(action, thinking=None, explanation=None) -> Step:
    return Step(action=action, thinking=thinking, explanation=explanation)


def test_sensitivity_triggers() -> None:
    p = Policy()
    click = Click(target=Target.at(0.5, 0.5))
    assert p.sensitivity(click, step(click, "open the menu"), obs()) is None
    assert "purchase" in p.sensitivity(click, step(click, "Now I buy the shoes"), obs())
    assert "payment" in p.sensitivity(click, step(click, None, "确认支付"), obs())
    assert "messaging" in p.sensitivity(click, step(click, "then SEND it"), obs())
    assert "deletion" in p.sensitivity(click, step(click, "永久删除这个文件"), obs())
    # Whole words only: "display" is not "pay", "sender" is not "send".
    assert p.sensitivity(click, step(click, "the display shows the sender"), obs()) is None
    # The clicked element's own text counts.
    buy = Click(target=Target.of_element(3))
    assert "purchase" in p.sensitivity(buy, step(buy, "click it"), obs())
    home = Click(target=Target.of_element(4))
    assert p.sensitivity(home, step(home, "go home"), obs()) is None
    # Typed text counts; scrolling never needs confirmation.
    typed = TypeText(text="please delete my account")
    assert "deletion" in p.sensitivity(typed, step(typed), obs())
    scroll = Scroll(direction="down")
    assert p.sensitivity(scroll, step(scroll, "find the buy button"), obs()) is None


def test_password_field_and_model_flag() -> None:
    p = Policy()
    typed = TypeText(text="abc")
    assert p.sensitivity(typed, step(typed), obs(focused_is_password=True)) == \
        "typing into a password field"
    assert p.sensitivity(typed, step(typed), obs(focused_is_password=False)) is None
    assert Policy(confirm_password_fields=False).sensitivity(
        typed, step(typed), obs(focused_is_password=True)) is None
    # The field the action types into, as the environment tells, wins over the focus
    # at the screenshot.
    assert p.sensitivity(typed, step(typed), obs(focused_is_password=False),
                         password_field=True) == "typing into a password field"
    assert p.sensitivity(typed, step(typed), obs(focused_is_password=True),
                         password_field=False) is None
    flagged = Click(target=Target.at(0.1, 0.1), sensitive=True)
    assert "flagged" in p.sensitivity(flagged, None, obs())


def test_keyword_table_is_shipped_and_customizable() -> None:
    table = load_keywords()
    assert {"purchase", "payment", "deletion", "messaging"} <= set(table)
    p = Policy(keywords={"custom": {"en": ["launch missiles"], "zh": []}})
    c = Click(target=Target.at(0.5, 0.5))
    assert p.sensitivity(c, step(c, "now   Launch  Missiles"), obs()) is not None
    assert p.sensitivity(c, step(c, "delete everything"), obs()) is None


def test_secret_vault() -> None:
    from glmv_agent.errors import ConfigError
    from glmv_agent.messages import image, message
    from glmv_agent.secrets import SecretVault

    v = SecretVault({"pw": "hunter2", "pw_long": "hunter2-extra"})
    assert v.mask("a hunter2-extra b hunter2") == "a *** b ***"
    assert v.substitute("{{pw}}/{{ pw_long }}/{{other}}") == "hunter2/hunter2-extra/{{other}}"
    typed = TypeText(text="{{pw}}", target=Target.at(0.5, 0.5))
    real = v.reveal(typed)
    assert real.text == "hunter2" and typed.text == "{{pw}}" and real.target == typed.target
    assert v.reveal(Click(target=Target.at(0.1, 0.1))) == Click(target=Target.at(0.1, 0.1))
    img = Image.new("RGB", (2, 2))
    msgs = v.mask_messages([message("user", image(img), "pw is hunter2"),
                            {"role": "assistant", "content": "hunter2"}])
    assert msgs[0]["content"][0]["image"] is img and msgs[0]["content"][1]["text"] == "pw is ***"
    assert msgs[1]["content"] == "***"
    assert v.mask_obj({"k": ["hunter2", 3]}) == {"k": ["***", 3]}
    with pytest.raises(ConfigError, match="identifier"):
        SecretVault({"my pw": "x1234"})
    with pytest.raises(ConfigError, match="non-empty"):
        SecretVault({"pw": ""})


def test_task_words_in_long_thinking_do_not_ask_at_every_step() -> None:
    """A deletion task restates "delete" in its reasoning at every step; only what this
    action does (its text, its element, the step's explanation) may ask for confirmation."""
    p = Policy()
    thinking = ("The user wants me to delete the old drafts. To delete them I first need "
                "the Drafts folder, which is in the sidebar. I will open it.")
    open_folder = Click(target=Target.of_element(4))  # element 4 is "Home"
    assert p.sensitivity(open_folder, step(open_folder, thinking, "Open the Drafts folder"),
                         obs()) is None
    # AutoGLM-style: no explanation, everything in the thinking; its closing decision counts.
    assert p.sensitivity(open_folder, step(open_folder, thinking), obs()) is None
    zh = "用户要删除旧草稿。要删除它们，我先要打开草稿箱。点击侧边栏里的草稿箱。"
    assert p.sensitivity(open_folder, step(open_folder, zh), obs()) is None
    # The step that really deletes is still caught: by its explanation...
    bin_click = Click(target=Target.at(0.5, 0.5))
    assert "deletion" in p.sensitivity(
        bin_click, step(bin_click, thinking, "Click the Delete button of the draft"), obs())
    # ...by the decision at the end of the thinking...
    assert "deletion" in p.sensitivity(
        bin_click, step(bin_click, thinking + " Now I click Delete to remove it."), obs())
    assert "deletion" in p.sensitivity(bin_click, step(bin_click, "草稿箱已打开。点击删除。"),
                                       obs())
    # ...and by the target element's own text, whatever the reasoning says.
    buy = Click(target=Target.of_element(3))
    assert "purchase" in p.sensitivity(buy, step(buy, "a long plan", "go on"), obs())


def test_last_sentences_split_en_and_zh() -> None:
    assert last_sentences("A first. Pay 3.5 now. I will click Drafts.", 2) == \
        "Pay 3.5 now. I will click Drafts."
    assert last_sentences("任务是删除草稿。先打开文件夹。点击草稿箱") == "点击草稿箱"
    assert last_sentences("line one\nline two") == "line two"
    assert last_sentences("") == ""
