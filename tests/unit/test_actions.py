"""Canonical actions: JSON round-trip for every type, validation, custom registration."""

from __future__ import annotations

from typing import Literal

import pytest

from glmv_agent.actions import (
    BUILTIN_ACTIONS, Answer, BaseAction, Box, Click, DoubleClick, Done, Drag, Goto, Hover, Key,
    LongPress, MiddleClick, NavigateBack, NavigateHome, OpenApp, RightClick, Scroll,
    Swipe, TakeOver, Target, TypeText, Wait, action_from_dict, action_from_json,
    register_action, registered_actions, unregister_action,
)
from glmv_agent.errors import ActionError

T = Target.at(0.25, 0.75)
EXAMPLES: list[BaseAction] = [
    Click(target=T),
    DoubleClick(target=Target(box=Box(x1=0.1, y1=0.2, x2=0.3, y2=0.4))),
    RightClick(target=T),
    MiddleClick(target=T, reason="open in new tab"),
    LongPress(target=T, duration=2.0),
    Hover(target=Target.of_element(7)),
    Drag(start=T, end=Target.at(1.0, 0.0)),
    TypeText(text="héllo 世界", target=T, clear=True, enter=True),
    Key(keys=["ctrl", "c"]),
    Scroll(direction="down", amount=3, target=T),
    Swipe(start=Target.at(0.5, 0.8), end=Target.at(0.5, 0.2), duration=0.3),
    NavigateBack(),
    NavigateHome(),
    OpenApp(name="微信"),
    Goto(url="https://example.com/a?b=c"),
    Wait(seconds=1.5),
    Answer(text="42"),
    Done(success=False, message="no such item"),
    TakeOver(message="please log in", sensitive=True),
]


def test_examples_cover_every_builtin() -> None:
    assert {type(a) for a in EXAMPLES} == set(BUILTIN_ACTIONS)


@pytest.mark.parametrize("action", EXAMPLES, ids=lambda a: a.type)
def test_json_round_trip(action: BaseAction) -> None:
    again = action_from_json(action.to_json())
    assert type(again) is type(action)
    assert again == action
    assert action_from_dict(action.to_dict()) == action


def test_box_target_uses_centre() -> None:
    t = Target(box=Box(x1=0.2, y1=0.2, x2=0.4, y2=0.6))
    assert t.point is not None and t.point.x == pytest.approx(0.3)
    assert t.point.y == pytest.approx(0.4)
    assert Click(target=t).targets() == [t]
    assert len(Drag(start=T, end=T).targets()) == 2
    assert TypeText(text="x").targets() == []


def test_validation_errors() -> None:
    with pytest.raises(ActionError, match="unknown action type"):
        action_from_dict({"type": "teleport"})
    with pytest.raises(ActionError, match="invalid 'click'"):
        action_from_dict({"type": "click", "target": {"point": {"x": 1.5, "y": 0}}})
    with pytest.raises(ActionError, match="malformed"):
        action_from_json("{not json")
    with pytest.raises(ActionError):
        action_from_dict({"type": "click", "target": {"point": {"x": 0, "y": 0}}, "bogus": 1})
    with pytest.raises(ValueError, match="out of order"):
        Box(x1=0.5, y1=0.5, x2=0.1, y2=0.9)
    with pytest.raises(ValueError, match="needs a point"):
        Target()
    with pytest.raises(ValueError):
        Key(keys=["ctrl", " "])
    assert Key(keys=[" Ctrl ", "C"]).keys == ["ctrl", "c"]


def test_custom_action_registration() -> None:
    @register_action
    class Zoom(BaseAction):
        type: Literal["zoom_test"] = "zoom_test"
        factor: float
        target: Target

    try:
        assert registered_actions()["zoom_test"] is Zoom
        z = action_from_json('{"type": "zoom_test", "factor": 2, "target": {"element": 3}}')
        assert isinstance(z, Zoom) and z.factor == 2.0 and z.targets()[0].element == 3
        assert action_from_json(z.to_json()) == z
        register_action(Zoom)  # same class again is fine

        class Other(BaseAction):
            type: Literal["zoom_test"] = "zoom_test"

        with pytest.raises(ActionError, match="already registered"):
            register_action(Other)
    finally:
        unregister_action("zoom_test")
    assert "zoom_test" not in registered_actions()
    with pytest.raises(ActionError, match="built-in"):
        unregister_action("click")
    with pytest.raises(ActionError):
        register_action(int)  # type: ignore[arg-type]
