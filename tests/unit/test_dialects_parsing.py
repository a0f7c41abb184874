"""Parser tests: every documented output example plus realistic and malformed variants.

The corpus in tests/support/data/dialects/parse_corpus.json lists raw answers (as GLM-4.1V,
GLM-4.5V and AutoGLM-Phone write them: think/answer tags, box markers, single-quoted
dicts, Chinese text, repetitions) with the canonical action each must become, and
malformed answers that must raise ParseError with an `expected` hint.
"""

from __future__ import annotations

import json

import pytest

from glmv_agent.dialects import get_dialect, parse
from glmv_agent.dialects._syntax import SyntaxProblem, parse_call, parse_literal
from glmv_agent.errors import ParseError
from paths import DATA

CORPUS = json.loads((DATA / "dialects" / "parse_corpus.json")
                    .read_text(encoding="utf-8"))


def _subset(actual: object, expected: object) -> bool:
    """Every key of `expected` is in `actual` with an equal (floats: close) value."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(actual[k], v) for k, v in expected.items())
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and abs(actual - expected) < 1e-6
    return actual == expected


@pytest.mark.parametrize("case", CORPUS["valid"], ids=lambda c: c["id"])
def test_valid_answers_parse_to_expected_action(case: dict) -> None:
    step = get_dialect(case["family"], case["platform"]).parse(case["text"])
    got = step.action.to_dict()
    assert _subset(got, case["action"]), got
    for key in ("memory", "explanation", "thinking"):
        if key in case:
            assert getattr(step, key) == case[key]
    assert step.raw == case["text"]
    for point in (t.point for t in step.action.targets() if t.point is not None):
        assert 0.0 <= point.x <= 1.0 and 0.0 <= point.y <= 1.0


@pytest.mark.parametrize("case", CORPUS["invalid"], ids=lambda c: c["id"])
def test_malformed_answers_raise_parse_error(case: dict) -> None:
    with pytest.raises(ParseError) as info:
        get_dialect(case["family"], case["platform"]).parse(case["text"])
    assert info.value.text == case["text"]
    assert info.value.expected
    assert case["expected_mentions"] in info.value.expected


def test_top_level_parse_defaults_to_glm41v_pc() -> None:
    step = parse("<think>x</think><answer>key(keys='ctrl+c')</answer>")
    assert step.action.to_dict()["keys"] == ["ctrl", "c"]
    assert step.extra["action_text"] == "key(keys='ctrl+c')"


def test_pc_takes_first_valid_action_of_repeated_answer() -> None:
    text = ("<answer>Click OK.\nleft_click(start_box='[100,200]')\nMemory:\n[]\n\n"
            "Click OK.\nleft_click(start_box='[900,900]')\nMemory:\n[]</answer>")
    step = parse(text, "glm-4.1v", "pc")
    assert step.action.target.point.x == pytest.approx(0.1)
    assert step.memory == "[]"


def test_pc_skips_a_broken_call_and_uses_the_next() -> None:
    text = "<answer>left_click(start_box='[abc]')\nleft_click(start_box='[10,20]')</answer>"
    step = parse(text, "glm-4.5v", "pc")
    assert step.action.target.point.x == pytest.approx(10 / 999)


def test_pc_type_with_escaped_quotes_and_newline() -> None:
    text = "<answer>Typing.\ntype(content='He said \\'hi\\'\nand \"left\" 你好')</answer>"
    step = parse(text, "glm-4.1v", "pc")
    assert step.action.text == "He said 'hi'\nand \"left\" 你好"


def test_mobile_json_with_true_false_and_python_quotes_agree() -> None:
    dialect = get_dialect("glm-4.1v", "mobile")
    a = dialect.parse('Action: {"action_type": "input_text", "text": "pw", '
                      '"box_2d": [[10,20,30,40]], "override": true}')
    b = dialect.parse("Action: {'action_type': 'input_text', 'text': 'pw', "
                      "'box_2d': [[10,20,30,40]], 'override': True}")
    assert a.action == b.action
    assert a.action.clear is True
    assert a.action.target.point.x == pytest.approx(20 / 999)


def test_mobile_swipe_is_finger_path_inside_box() -> None:
    step = parse('Action: {"action_type": "swipe", "direction": "up", '
                 '"box_2d": [[0,200,999,600]]}', "glm-4.1v", "mobile")
    action = step.action
    assert action.type == "swipe"
    assert action.start.point.y > action.end.point.y  # finger moves up
    assert 200 / 999 < action.end.point.y < action.start.point.y < 600 / 999


def test_web_answer_content_multiline_and_memory() -> None:
    text = ("Thought: Found it.\nAction: ANSWER; <content>Line one\nLine two</content>\n"
            "Memory_Updated: {\"a\": 1}")
    step = parse(text, "glm-4.1v", "web")
    assert step.action.text == "Line one\nLine two"
    assert step.memory == '{"a": 1}'
    assert step.explanation == "Found it."


def test_autoglm_history_roundtrip_text() -> None:
    dialect = get_dialect("autoglm-phone", "mobile")
    step = dialect.parse('<think>打开设置</think><answer>do(action="Launch", app="设置")</answer>')
    assert dialect.assistant_text(step) == (
        '<think>打开设置</think><answer>do(action="Launch", app="设置")</answer>')


def test_syntax_rejects_non_literals_without_evaluating() -> None:
    for source in ["left_click(start_box=__import__('os').system('true'))",
                   "do(action=open('/etc/passwd').read())", "do(**{'a': 1})",
                   "x.y(a=1)", "do(action=1+2)", "do(action=[i for i in ()])"]:
        with pytest.raises(SyntaxProblem):
            parse_call(source)
    with pytest.raises(SyntaxProblem):
        parse_literal("{'a': f(1)}")
    assert parse_literal("{'k': [1, -2.5, null, false]}") == {"k": [1, -2.5, None, False]}


def test_non_text_input_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        get_dialect("glm-4.1v", "pc").parse(None)  # type: ignore[arg-type]
