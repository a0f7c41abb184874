"""Property tests: parsers only ever raise ParseError, coordinates stay in [0, 1], and
building messages works for any valid task, history and screenshot."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from glmv_agent.dialects import HistoryItem, get_dialect
from glmv_agent.envs.base import Observation
from glmv_agent.errors import ParseError
from glmv_agent.geometry import ScreenMapping
from glmv_agent.messages import validate_messages

COMBOS = [("glm-4.1v", "mobile"), ("glm-4.1v", "pc"), ("glm-4.1v", "web"),
          ("glm-4.5v", "mobile"), ("glm-4.5v", "pc"), ("glm-4.5v", "web"),
          ("autoglm-phone", "mobile")]
DIALECTS = {combo: get_dialect(*combo) for combo in COMBOS}

# Fragments real answers are made of, so generated text often gets deep into the parsers.
FRAGMENTS = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "<|begin_of_box|>", "<|end_of_box|>",
    "left_click(", "start_box='[", "type(content='", "key(keys='", "scroll(", "direction='",
    "do(action=\"", "Tap\", element=[", "Swipe\", start=[", "finish(message=\"", "Type\", text=\"",
    "Action: ", "{\"action_type\": \"", "click\", \"box_2d\": [[", "swipe", "Memory:", "Reason:",
    "Thought:", "Click [", "Type [", "Scroll [WINDOW]; [", "ANSWER; <content>", "Key; [",
    "]", "]]", ")", "'", "\"", "\\", ",", "}", "{", "\n", " ", "-", "1e309", "999", "1000",
    "-5", "3.5", "True", "null", "__import__", "(", "[[", "你好", "\x00", "\t",
])
ANSWERS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(FRAGMENTS, st.integers(-5000, 5000).map(str),
                       st.text(max_size=5)), max_size=40).map("".join),
)


def _points(step) -> list:
    return [t.point for t in step.action.targets() if t.point is not None] + [
        t.box for t in step.action.targets() if t.box is not None]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=ANSWERS, combo=st.sampled_from(COMBOS))
def test_parse_raises_only_parse_error_and_coordinates_are_normalized(answer, combo) -> None:
    try:
        step = DIALECTS[combo].parse(answer)
    except ParseError as exc:
        assert exc.expected and exc.text == answer
        return
    assert step.raw == answer
    for where in _points(step):
        for value in where.model_dump().values():
            assert 0.0 <= value <= 1.0


@settings(max_examples=200, deadline=None)
@given(x=st.integers(-3000, 3000), y=st.integers(-3000, 3000),
       combo=st.sampled_from([("glm-4.1v", "pc"), ("glm-4.5v", "pc")]))
def test_pc_points_always_inside_screen(x, y, combo) -> None:
    step = DIALECTS[combo].parse(f"<answer>left_click(start_box='[{x},{y}]')</answer>")
    point = step.action.target.point
    assert 0.0 <= point.x <= 1.0 and 0.0 <= point.y <= 1.0
    grid = DIALECTS[combo].grid_max
    if 0 <= x <= grid and 0 <= y <= grid:
        assert abs(point.x - x / grid) < 1e-9 and abs(point.y - y / grid) < 1e-9


@settings(max_examples=200, deadline=None)
@given(coords=st.lists(st.integers(-2000, 3000), min_size=2, max_size=2),
       message=st.text(max_size=30).filter(lambda s: '"' not in s and "\\" not in s))
def test_autoglm_tap_points_inside_screen(coords, message) -> None:
    x, y = coords
    step = DIALECTS[("autoglm-phone", "mobile")].parse(
        f'do(action="Tap", element=[{x},{y}], message="{message}")')
    point = step.action.target.point
    assert 0.0 <= point.x <= 1.0 and 0.0 <= point.y <= 1.0
    assert step.action.sensitive


_HISTORY_ANSWERS = {
    ("glm-4.1v", "mobile"): 'Memory: m\nReason: r\nAction: {"action_type": "wait"}',
    ("glm-4.1v", "pc"): "<answer>ok\nWAIT()\nMemory:\n[]</answer>",
    ("glm-4.1v", "web"): "Thought: t\nAction: Wait\nMemory_Updated: {}",
    ("glm-4.5v", "mobile"): 'Memory: m\nReason: r\nAction: {"action_type": "wait"}',
    ("glm-4.5v", "pc"): "<answer>ok\nWAIT()\nMemory:\n[]</answer>",
    ("glm-4.5v", "web"): "Thought: t\nAction: Wait\nMemory_Updated: {}",
    ("autoglm-phone", "mobile"): '<think>t</think><answer>do(action="Wait", duration="1 seconds")</answer>',
}


@settings(max_examples=60, deadline=None)
@given(task=st.text(max_size=80), combo=st.sampled_from(COMBOS),
       steps=st.integers(0, 7), width=st.integers(1, 64), height=st.integers(1, 64),
       with_shots=st.booleans(), app=st.one_of(st.none(), st.text(max_size=10)),
       url=st.one_of(st.none(), st.text(max_size=20)))
def test_build_messages_never_fails_for_valid_inputs(task, combo, steps, width, height,
                                                     with_shots, app, url) -> None:
    dialect = DIALECTS[combo]
    shot = Image.new("RGB", (width, height))
    step = dialect.parse(_HISTORY_ANSWERS[combo])
    history = [HistoryItem(step=step, screenshot=shot if with_shots else None,
                           observation_text=app) for _ in range(steps)]
    observation = Observation(screenshot=shot, mapping=ScreenMapping(width, height),
                              platform=combo[1], app=app, url=url, elements_text="")
    messages = dialect.build_messages(task, observation, history)
    validate_messages(messages)
    texts = [p["text"] for m in messages for p in (m["content"] if isinstance(m["content"], list) else [])
             if p["type"] == "text"]
    assert any(task in t for t in texts) or combo[0] == "autoglm-phone" and steps > 0
    assert "<<" not in "".join(texts).replace(task, "").replace(app or "", "").replace(url or "", "")
