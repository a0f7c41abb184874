"""Canonical, model-agnostic actions.

Every model family's output is parsed into one of these (see `glmv_agent.dialects`) and
every environment executes them (see `glmv_agent.envs`). Nothing here knows a prompt's
wording or a platform library.

Coordinates are normalized to the screenshot the model saw: `x` and `y` in [0, 1], origin
top-left. Environments map them to real pixels through `glmv_agent.geometry`.

Users add their own action types by subclassing `BaseAction` with a unique `type` literal
and decorating the class with `register_action`; environments accept a handler for it via
`Environment.register_handler`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ActionError

Unit = Annotated[float, Field(ge=0.0, le=1.0)]

ScrollDirection = Literal["up", "down", "left", "right"]


class Point(BaseModel):
    """A normalized point of the screenshot: (0, 0) top-left, (1, 1) bottom-right."""

    model_config = ConfigDict(frozen=True)
    x: Unit
    y: Unit


class Box(BaseModel):
    """A normalized box (x1, y1) top-left to (x2, y2) bottom-right."""

    model_config = ConfigDict(frozen=True)
    x1: Unit
    y1: Unit
    x2: Unit
    y2: Unit

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(
                f"box corners are out of order: ({self.x1}, {self.y1}) must be top-left of "
                f"({self.x2}, {self.y2})"
            )
        return self

    @property
    def center(self) -> Point:
        return Point(x=(self.x1 + self.x2) / 2, y=(self.y1 + self.y2) / 2)


class Target(BaseModel):
    """Where an action lands: a point, a box (its centre is used), or a web element label.

    `element` is the number of a set-of-marks label (GLM-4.1V web prompt); the web
    environment resolves it to that element's centre. When a box is given without a point,
    the point is the box centre.
    """

    model_config = ConfigDict(frozen=True)
    point: Point | None = None
    box: Box | None = None
    element: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _point_from_box(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("point") is None and data.get("box") is not None:
            box = data["box"]
            box = box if isinstance(box, Box) else Box.model_validate(box)
            data = {**data, "box": box, "point": box.center}
        return data

    @model_validator(mode="after")
    def _has_location(self) -> Target:
        if self.point is None and self.element is None:
            raise ValueError("a target needs a point, a box or an element label")
        return self

    @classmethod
    def at(cls, x: float, y: float) -> Target:
        return cls(point=Point(x=x, y=y))

    @classmethod
    def of_element(cls, label: int) -> Target:
        return cls(element=label)


class BaseAction(BaseModel):
    """Fields every action has.

    `sensitive` is set when the model itself flags the action as needing confirmation
    (e.g. AutoGLM's `message=` on a tap); the agent also applies its own policy.
    """

    model_config = ConfigDict(extra="forbid")
    type: str
    sensitive: bool = False
    reason: str | None = None

    # Actions that end the episode (the loop stops after executing them).
    terminal: ClassVar[bool] = False
    # Actions the agent records without touching the environment (model bookkeeping).
    agent_side: ClassVar[bool] = False

    def targets(self) -> list[Target]:
        """Every target this action touches, for bounds checks and drawing."""
        found: list[Target] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Target):
                found.append(value)
        return found

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


class Click(BaseAction):
    type: Literal["click"] = "click"
    target: Target


class DoubleClick(BaseAction):
    type: Literal["double_click"] = "double_click"
    target: Target


class RightClick(BaseAction):
    type: Literal["right_click"] = "right_click"
    target: Target


class MiddleClick(BaseAction):
    type: Literal["middle_click"] = "middle_click"
    target: Target


class LongPress(BaseAction):
    type: Literal["long_press"] = "long_press"
    target: Target
    duration: float = Field(default=1.0, gt=0, le=30, description="seconds")


class Hover(BaseAction):
    type: Literal["hover"] = "hover"
    target: Target


class Drag(BaseAction):
    type: Literal["drag"] = "drag"
    start: Target
    end: Target


class TypeText(BaseAction):
    """Type `text`, optionally into `target` (clicked first), optionally clearing it first."""

    type: Literal["type"] = "type"
    text: str
    target: Target | None = None
    clear: bool = False
    enter: bool = False


class Key(BaseAction):
    """Press keys together, e.g. ["ctrl", "c"]; names are normalized lower-case."""

    type: Literal["key"] = "key"
    keys: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _normalize(self) -> Key:
        cleaned = [k.strip().lower() for k in self.keys]
        if any(not k for k in cleaned):
            raise ValueError(f"empty key name in {self.keys!r}")
        object.__setattr__(self, "keys", cleaned)
        return self


class Scroll(BaseAction):
    """Scroll so that content further in `direction` comes into view.

    `direction="down"` shows what is below (a mouse wheel turned towards the user);
    `amount` counts wheel steps.
    """

    type: Literal["scroll"] = "scroll"
    direction: ScrollDirection
    amount: int = Field(default=5, ge=1, le=100)
    target: Target | None = None


class Swipe(BaseAction):
    """A touch swipe from `start` to `end` (the finger's path, not the content's)."""

    type: Literal["swipe"] = "swipe"
    start: Target
    end: Target
    duration: float = Field(default=0.5, gt=0, le=10, description="seconds")


class NavigateBack(BaseAction):
    type: Literal["navigate_back"] = "navigate_back"


class NavigateHome(BaseAction):
    type: Literal["navigate_home"] = "navigate_home"


class OpenApp(BaseAction):
    type: Literal["open_app"] = "open_app"
    name: str = Field(min_length=1)


class Goto(BaseAction):
    type: Literal["goto"] = "goto"
    url: str = Field(min_length=1)


class Wait(BaseAction):
    type: Literal["wait"] = "wait"
    seconds: float = Field(default=5.0, ge=0, le=600)


class Answer(BaseAction):
    """The model answers the user's question; ends the episode."""

    type: Literal["answer"] = "answer"
    text: str
    terminal: ClassVar[bool] = True


class Done(BaseAction):
    """The model declares the task finished (`success`) or infeasible (not `success`)."""

    type: Literal["done"] = "done"
    success: bool = True
    message: str | None = None
    terminal: ClassVar[bool] = True


class TakeOver(BaseAction):
    """The model asks a human to act (login, captcha, payment), then continues."""

    type: Literal["take_over"] = "take_over"
    message: str = ""


Action = Annotated[
    Union[
        Click, DoubleClick, RightClick, MiddleClick, LongPress, Hover, Drag, TypeText, Key,
        Scroll, Swipe, NavigateBack, NavigateHome, OpenApp, Goto, Wait, Answer, Done, TakeOver,
    ],
    Field(discriminator="type"),
]

BUILTIN_ACTIONS: tuple[type[BaseAction], ...] = (
    Click, DoubleClick, RightClick, MiddleClick, LongPress, Hover, Drag, TypeText, Key,
    Scroll, Swipe, NavigateBack, NavigateHome, OpenApp, Goto, Wait, Answer, Done, TakeOver,
)

_REGISTRY: dict[str, type[BaseAction]] = {}


def _type_name(cls: type[BaseAction]) -> str:
    field = cls.model_fields.get("type")
    if field is None or not isinstance(field.default, str) or not field.default:
        raise ActionError(
            f"{cls.__name__} needs a string default for its `type` field, e.g. "
            f'`type: Literal["my_action"] = "my_action"`'
        )
    return field.default


def register_action(cls: type[BaseAction]) -> type[BaseAction]:
    """Register a custom action class (usable as a decorator).

    Its `type` default must be unique; `action_from_dict` then builds it from plain data.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseAction)):
        raise ActionError(f"register_action expects a BaseAction subclass, got {cls!r}")
    name = _type_name(cls)
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ActionError(f"action type {name!r} is already registered by {existing.__name__}")
    _REGISTRY[name] = cls
    return cls


def unregister_action(name: str) -> None:
    """Remove a custom action type (built-in types cannot be removed)."""
    if any(_type_name(c) == name for c in BUILTIN_ACTIONS):
        raise ActionError(f"{name!r} is a built-in action type and cannot be unregistered")
    _REGISTRY.pop(name, None)


def registered_actions() -> dict[str, type[BaseAction]]:
    """All known action types, built-in and custom, by `type` name."""
    return dict(_REGISTRY)


def action_from_dict(data: dict[str, Any]) -> BaseAction:
    """Build an action from plain data such as `{"type": "click", "target": {...}}`."""
    if not isinstance(data, dict):
        raise ActionError(f"an action must be a dict with a 'type' key, got {type(data).__name__}")
    name = data.get("type")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ActionError(f"unknown action type {name!r}; known types: {known}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ActionError(f"invalid {name!r} action: {exc}") from exc


def action_from_json(text: str) -> BaseAction:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ActionError(f"action JSON is malformed: {exc}") from exc
    return action_from_dict(data)


for _cls in BUILTIN_ACTIONS:
    register_action(_cls)
