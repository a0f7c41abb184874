"""Golden prompt tests: every family x platform reproduces its documented example exactly.

Expected renders under tests/support/data/dialects/ are the "used in practice" examples of
/work/shared/reference/gui-prompts (GLM-4.1V and GLM-4.5V agent docs, Open-AutoGLM
sample messages), copied verbatim; the model answers in golden_cases.json are the history
steps those examples show, wrapped the way the models emit them (<think>/<answer>, box
markers). Where a doc renders a tab as spaces (Markdown tab expansion: 4-column stops in
the 4.1V doc, 8 spaces in the 4.5V doc), the render's tabs are expanded the same way.
"""

from __future__ import annotations

import json
import re
from datetime import date

import pytest
from PIL import Image

from glmv_agent.dialects import (
    FAMILIES, AutoGLMDialect, Dialect, HistoryItem, Step, families, get_dialect,
    register_dialect,
)
from glmv_agent.dialects.autoglm import format_date
from glmv_agent.dialects.glm45v import beijing_time
from glmv_agent.envs.base import Element, Observation
from glmv_agent.errors import ConfigError, ParseError
from glmv_agent.geometry import ScreenMapping
from glmv_agent.messages import images_in, validate_messages
import paths

DATA = paths.DATA / "dialects"
CASES = json.loads((DATA / "golden_cases.json").read_text(encoding="utf-8"))


def golden(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def screenshot(width: int = 320, height: int = 200, color: str = "white") -> Image.Image:
    return Image.new("RGB", (width, height), color)


def observation(platform: str, shot: Image.Image | None = None, **fields) -> Observation:
    shot = shot or screenshot()
    return Observation(screenshot=shot, mapping=ScreenMapping(*shot.size), platform=platform,
                       **fields)


def history_from(dialect: Dialect, answers: list[str], shots: bool = True) -> list[HistoryItem]:
    return [HistoryItem(step=dialect.parse(a), screenshot=screenshot() if shots else None)
            for a in answers]


def only_text(messages) -> str:
    texts = [p["text"] for m in messages for p in m["content"] if p["type"] == "text"]
    assert len(texts) == 1
    return texts[0]


def doc_elements(example: str, before: str, after: str) -> str:
    return example.split(before, 1)[1].split(after, 1)[0]


# ------------------------------------------------------------------------- GLM-4.1V
def test_glm41v_mobile_matches_doc_example() -> None:
    case = CASES["glm41v_mobile"]
    dialect = get_dialect("glm-4.1v", "mobile")
    current = screenshot(108, 240)
    msgs = dialect.build_messages(case["task"], observation("mobile", current),
                                  history_from(dialect, case["answers"]))
    validate_messages(msgs)
    assert [m["role"] for m in msgs] == ["user"]
    assert [p["type"] for p in msgs[0]["content"]] == ["image", "text"]
    assert msgs[0]["content"][0]["image"] is current
    assert only_text(msgs) == golden("glm41v_mobile_example.txt")


def test_glm41v_mobile_empty_history_and_custom_apps() -> None:
    dialect = get_dialect("glm-4.1v", "mobile", supported_apps=["Clock", "Files"])
    prompt = only_text(dialect.build_messages("Set an alarm", observation("mobile"), []))
    assert "-- supported app_names: Clock,Files\n" in prompt
    assert "The current user goal/request is: Set an alarm\n" in prompt
    assert "so far:\nYou just started, no action has been performed yet.\n\n\n\nThe current" in prompt


def test_glm41v_pc_matches_doc_example_and_image_order() -> None:
    case = CASES["glm41v_pc"]
    dialect = get_dialect("glm-4.1v", "pc")
    current = screenshot(640, 400, "red")
    msgs = dialect.build_messages(case["task"], observation("pc", current),
                                  history_from(dialect, case["answers"]))
    validate_messages(msgs)
    assert only_text(msgs) == golden("glm41v_pc_example.txt")
    parts = msgs[0]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "image", "text"]
    # Current screenshot first at full size, history ones at 50% x 50%.
    assert parts[0]["image"] is current
    assert [p["image"].size for p in parts[1:3]] == [(160, 100), (160, 100)]


def test_glm41v_pc_keeps_only_last_four_history_images_oldest_first() -> None:
    dialect = get_dialect("glm-4.1v", "pc")
    colors = ["#000001", "#000002", "#000003", "#000004", "#000005", "#000006"]
    history = [HistoryItem(step=dialect.parse(f"<answer>left_click(start_box='[{i},{i}]')</answer>"),
                           screenshot=screenshot(100, 60, c)) for i, c in enumerate(colors)]
    msgs = dialect.build_messages("t", observation("pc"), history)
    pics = images_in(msgs)
    assert len(pics) == 5
    assert [p.getpixel((0, 0)) for p in pics[1:]] == [(0, 0, 3), (0, 0, 4), (0, 0, 5), (0, 0, 6)]
    prompt = only_text(msgs)
    assert prompt.endswith("step 6: left_click(start_box='[5,5]')\nMemory:\n[]")
    assert "History actions:\nstep 1: left_click(start_box='[0,0]')\n" in prompt


def test_glm41v_pc_no_history_and_latest_memory() -> None:
    dialect = get_dialect("glm-4.1v", "pc")
    prompt = only_text(dialect.build_messages("Open the terminal", observation("pc"), []))
    assert prompt.endswith("Now Please help me to solve the following task:\nOpen the terminal\nMemory:\n[]")
    step = dialect.parse("<answer>Noting the code.\nhover(start_box='[1,2]')\nMemory:\n"
                         "[{\"code\": \"1234\"}]</answer>")
    prompt = only_text(dialect.build_messages("t", observation("pc"), [HistoryItem(step=step)]))
    assert prompt.endswith("step 1: Noting the code.\nhover(start_box='[1,2]')\nMemory:\n[{\"code\": \"1234\"}]")


def test_glm41v_web_matches_doc_example() -> None:
    case = CASES["glm41v_web"]
    example = golden("glm41v_web_example.txt")
    elements = doc_elements(example, "then refer to the textual information.\n", "\n\nKey Guidelines")
    dialect = get_dialect("glm-4.1v", "web")
    marked = screenshot(640, 400, "blue")
    obs = observation("web", url=case["url"], elements_text=elements, marked_screenshot=marked)
    msgs = dialect.build_messages(case["task"], obs, history_from(dialect, case["answers"]))
    validate_messages(msgs)
    assert msgs[0]["content"][0]["image"] is marked  # the set-of-marks screenshot
    assert only_text(msgs).expandtabs(4) == example


def test_web_element_list_built_from_elements_when_no_text() -> None:
    dialect = get_dialect("glm-4.1v", "web")
    elements = [Element(0, "input", "", 0, 0, 10, 10), Element(1, "", "Log In", 0, 0, 5, 5)]
    prompt = only_text(dialect.build_messages("t", observation("web", elements=elements), []))
    assert '[0]: <input> "";\t[1]: "Log In";' in prompt


# ------------------------------------------------------------------------- GLM-4.5V
def test_glm45v_mobile_matches_doc_example() -> None:
    case = CASES["glm45v_mobile"]
    dialect = get_dialect("GLM-4.5V", "mobile", supported_apps=case["supported_apps"])
    current = screenshot(108, 240)
    msgs = dialect.build_messages(case["task"], observation("mobile", current),
                                  history_from(dialect, case["answers"]))
    validate_messages(msgs)
    # GLM-4.5V puts the current screenshot after the text.
    assert [p["type"] for p in msgs[0]["content"]] == ["text", "image"]
    assert msgs[0]["content"][1]["image"] is current
    assert only_text(msgs) == golden("glm45v_mobile_example.txt")


def test_glm45v_pc_matches_doc_example_messages() -> None:
    example = json.loads(golden("glm45v_pc_example_messages.json"))
    parts = example[0]["content"]
    joined = "".join(p["text"] for p in parts if p["type"] == "text")
    steps = re.findall(r" Thought: (.*?)\nAction: (.*?)\n", joined)
    assert len(steps) == 6
    dialect = get_dialect("glm-4.6v", "pc")
    answers = [f"<think>...</think><answer>{thought}\n<|begin_of_box|>{action}<|end_of_box|>\n"
               f"Memory:\n[]</answer>" for thought, action in steps]
    task = re.search(r"# Task:\n(.*?)\n", joined).group(1)
    current = screenshot(640, 400, "green")
    msgs = dialect.build_messages(task, observation("pc", current),
                                  history_from(dialect, answers))
    validate_messages(msgs)
    got = msgs[0]["content"]
    assert [p["type"] for p in got] == [
        "image" if p["type"] == "image_url" else p["type"] for p in parts]
    for mine, theirs in zip(got, parts):
        if theirs["type"] == "text":
            assert mine["text"] == theirs["text"]
    assert got[-1]["image"] is current
    assert all(p["image"].size == (160, 100) for p in got[1:-1] if p["type"] == "image")


def test_glm45v_pc_without_history() -> None:
    dialect = get_dialect("glm-4.5v", "pc")
    msgs = dialect.build_messages("Do it", observation("pc"), [])
    assert [p["type"] for p in msgs[0]["content"]] == ["text", "image"]
    prompt = msgs[0]["content"][0]["text"]
    assert "# Task:\nDo it\n\n# Task Platform\nUbuntu\n\n# Action Space\n\n### {left,right,middle}_click" in prompt
    assert "# Historical Actions and Current Memory\nHistory:\nMemory:\n[]\n# Output Format\n" in prompt
    assert prompt.endswith("Current Screenshot:\n")


def test_glm45v_pc_history_without_screenshots_is_omitted() -> None:
    dialect = get_dialect("glm-4.5v", "pc")
    history = history_from(dialect, ["<answer>Waiting.\nWAIT()\nMemory:\n[]</answer>"], shots=False)
    msgs = dialect.build_messages("t", observation("pc"), history)
    assert len(images_in(msgs)) == 1
    assert "History:\nstep 1: Screenshot:(Omitted in context.) Thought: Waiting.\nAction: WAIT()\nMemory:" \
        in msgs[0]["content"][0]["text"]


def test_glm45v_web_matches_doc_example() -> None:
    case = CASES["glm45v_web"]
    example = golden("glm45v_web_example.txt")
    elements = doc_elements(example, "then refer to the textual information.\n", "\nC. The")
    # glm-4.5v-agent.md example line `[0]: \"Learn more\";  [1]: <button> \"Close\";`: the
    # web env writes plain quotes, the dialect escapes them as the example shows.
    assert '[1]: <button> \\"Close\\";' in elements
    elements = elements.replace('\\"', '"')
    dialect = get_dialect("glm-4.5v", "web", clock=lambda: case["time"])
    obs = observation("web", url=case["url"], elements_text=elements)
    msgs = dialect.build_messages(case["task"], obs, history_from(dialect, case["answers"]))
    validate_messages(msgs)
    assert only_text(msgs).replace("\t", " " * 8) == example


def test_beijing_time_format() -> None:
    from datetime import datetime, timezone
    assert beijing_time(datetime(2025, 7, 26, 2, 0, tzinfo=timezone.utc)) == "2025-07-26, 10:00 AM"
    assert beijing_time(datetime(2025, 7, 26, 17, 5, tzinfo=timezone.utc)) == "2025-07-27, 01:05 AM"


# ---------------------------------------------------------------------- AutoGLM-Phone
@pytest.mark.parametrize("lang, app", [("en", None), ("zh", "小红书")])
def test_autoglm_rebuilds_official_sample_messages(lang: str, app: str | None) -> None:
    sample = json.loads(golden(f"autoglm_sample_messages_{lang}.json"))
    date_line = sample[0]["content"].split("\n", 1)[0]
    day = {"en": date(2025, 12, 12), "zh": date(2025, 12, 11)}[lang]
    assert date_line.endswith(format_date(day, lang))
    task = sample[1]["content"][1]["text"].split("\n\n")[0]
    dialect = get_dialect("autoglm-phone", "mobile", lang=lang, today=day)
    current = screenshot(108, 240)
    msgs = dialect.build_messages(task, observation("mobile", current, app=app), [])
    validate_messages(msgs)
    assert msgs[0] == {"role": "system", "content": sample[0]["content"]}
    assert msgs[1]["role"] == "user"
    assert [p["type"] for p in msgs[1]["content"]] == ["image", "text"]
    assert [p["type"] for p in sample[1]["content"]] == ["image_url", "text"]
    assert msgs[1]["content"][0]["image"] is current
    assert msgs[1]["content"][1]["text"] == sample[1]["content"][1]["text"]


def test_autoglm_multi_turn_drops_past_screenshots() -> None:
    dialect = get_dialect("autoglm-phone", "mobile", lang="zh", today=date(2025, 12, 11))
    answers = ['<think>先打开京东</think>\n<answer>do(action="Launch", app="京东")</answer>',
               '<think>点击搜索框</think><answer>do(action="Tap", element=[500,80])</answer>']
    history = [HistoryItem(step=dialect.parse(a), screenshot=screenshot(),
                           observation_text=obs_text)
               for a, obs_text in zip(answers, ['{"current_app": "小红书"}', "京东"])]
    current = screenshot(108, 240)
    msgs = dialect.build_messages("比价", observation("mobile", current, app="京东"), history)
    validate_messages(msgs)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == [{"type": "text", "text": '比价\n\n{"current_app": "小红书"}'}]
    assert msgs[2]["content"] == '<think>先打开京东</think><answer>do(action="Launch", app="京东")</answer>'
    assert msgs[3]["content"] == [{"type": "text", "text": '** Screen Info **\n\n{"current_app": "京东"}'}]
    assert msgs[4]["content"] == '<think>点击搜索框</think><answer>do(action="Tap", element=[500,80])</answer>'
    assert images_in(msgs) == [current]
    assert msgs[5]["content"][1]["text"] == '** Screen Info **\n\n{"current_app": "京东"}'


def test_autoglm_unknown_app_and_language_errors() -> None:
    dialect = get_dialect("autoglm", "mobile", lang="en")
    history = [HistoryItem(step=dialect.parse('do(action="Back")'))]
    msgs = dialect.build_messages("Go back", observation("mobile"), history)
    assert msgs[1]["content"][0]["text"] == "Go back"
    assert msgs[3]["content"][1]["text"] == '** Screen Info **\n\n{"current_app": "System Home"}'
    with pytest.raises(ConfigError, match="'zh' or 'en'"):
        get_dialect("autoglm-phone", "mobile", lang="fr")
    assert dialect.generation_defaults()["top_p"] == 0.85


def test_autoglm_date_formats() -> None:
    assert format_date(date(2025, 12, 12), "en") == "2025-12-12, Friday"
    assert format_date(date(2025, 1, 5), "zh") == "2025年01月05日 星期日"


# --------------------------------------------------------------------------- registry
def test_registry_names_aliases_and_errors() -> None:
    assert FAMILIES[:3] == ("glm-4.1v", "glm-4.5v", "autoglm-phone")
    assert isinstance(get_dialect("GLM-4.6V", "web"), type(get_dialect("glm-4.5v", "web")))
    assert get_dialect(" glm-4.1v ", "PC").platform == "pc"
    with pytest.raises(ConfigError, match="known families: .*glm-4.1v"):
        get_dialect("gpt-4o", "pc")
    with pytest.raises(ConfigError, match="supports: mobile"):
        get_dialect("autoglm-phone", "web")
    with pytest.raises(ConfigError, match="invalid options"):
        get_dialect("glm-4.1v", "pc", colour="red")
    with pytest.raises(ConfigError):
        register_dialect(int)  # type: ignore[arg-type]


def test_register_custom_dialect() -> None:
    from glmv_agent.actions import Answer
    from glmv_agent.messages import message

    @register_dialect
    class EchoDialect(Dialect):
        family = "echo-test"
        platforms = ("pc",)
        grid_max = 100

        def build_messages(self, task, observation, history):
            return [message("user", task)]

        def parse(self, text):
            if not text:
                raise ParseError("empty", text=text, expected="anything")
            return Step(action=Answer(text=text), raw=text)

    assert "echo-test" in families()
    # FAMILIES follows the registry (it used to be frozen at import time).
    import glmv_agent.dialects as dialects

    assert "echo-test" in dialects.FAMILIES and "echo-test" not in FAMILIES
    assert dialects.canonical_families() == dialects.FAMILIES
    assert get_dialect("Echo-Test", "pc").parse("hi").action.text == "hi"


def test_dialects_declare_coordinate_contracts() -> None:
    assert get_dialect("glm-4.1v", "mobile").grid_max == 999
    assert get_dialect("glm-4.1v", "pc").grid_max == 1000
    assert get_dialect("glm-4.5v", "pc").grid_max == 999
    assert get_dialect("autoglm-phone", "mobile").grid_max == 1000
    assert AutoGLMDialect.coordinates["mobile"]["kind"] == "point"


# ------------------------------------------------------------- audit against the docs
@pytest.mark.parametrize("family", ["glm-4.1v", "glm-4.5v"])
def test_web_prompt_names_the_start_site_not_the_current_page(family: str) -> None:
    # glm-4.1v-agent.md web example: "Please interact with https://www.allrecipes.com/"
    # while its history already typed a search (WebVoyager fills {Web} with the task's
    # start URL, fixed for the run).
    dialect = get_dialect(family, "web")
    start = "https://www.allrecipes.com/"
    first = only_text(dialect.build_messages("t", observation("web", url=start), []))
    assert f"Please interact with {start} and get the answer." in first
    history = history_from(dialect, ["Thought: go\nAction: Type [1]; [lasagna]"])
    later = observation("web", url="https://www.allrecipes.com/search?q=lasagna")
    assert f"Please interact with {start} and get the answer." in only_text(
        dialect.build_messages("t", later, history))
    # A new run (empty history) takes its own start page; `website=` overrides.
    other = only_text(dialect.build_messages("t", observation("web", url="https://github.com/"), []))
    assert "Please interact with https://github.com/ and get the answer." in other
    fixed = get_dialect(family, "web", website="https://example.org/")
    assert "Please interact with https://example.org/ and" in only_text(
        fixed.build_messages("t", later, history))
