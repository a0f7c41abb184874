"""A small real environment and a simple dialect for agent-loop tests.

`FormEnv` draws a form on a PIL canvas (buttons, a text field, a password field), hit-tests
clicks in environment coordinates through the same geometry the real environments use, and
changes state (and so its screenshot) when used. It stands in for a desktop or browser
where none is needed: the agent loop only sees `Environment`'s contract.

`JsonDialect` is a real `Dialect` with a trivial format: optional `<think>...</think>`, then
`ACTION {json action}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from glmv_agent.actions import (
    BaseAction, Click, Key, Scroll, TypeText, Wait, action_from_json,
)
from glmv_agent.dialects.base import Dialect, HistoryItem, Step
from glmv_agent.envs.base import ActionOutcome, Environment, Observation
from glmv_agent.errors import ActionError, ParseError
from glmv_agent.geometry import desktop_mapping
from glmv_agent.messages import Message, image, message

WIDTH, HEIGHT = 400, 300  # logical units


@dataclass
class Widget:
    name: str
    box: tuple[float, float, float, float]  # logical x1, y1, x2, y2

    def contains(self, x: float, y: float) -> bool:
        x1, y1, x2, y2 = self.box
        return x1 <= x < x2 and y1 <= y < y2

    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


WIDGETS = [
    Widget("plus", (20, 20, 120, 60)),
    Widget("delete", (140, 20, 260, 60)),
    Widget("name", (20, 100, 380, 130)),
    Widget("password", (20, 150, 380, 180)),
    Widget("dead", (20, 220, 120, 260)),  # clicking it changes nothing
]


def widget(name: str) -> Widget:
    return next(w for w in WIDGETS if w.name == name)


@dataclass
class FormState:
    counter: int = 0
    name: str = ""
    password: str = ""
    focused: str | None = None
    submitted: bool = False
    deleted: bool = False
    log: list[str] = field(default_factory=list)


class FormEnv(Environment):
    """A form on a canvas, captured at `scale` physical pixels per logical unit, placed at
    (`left`, `top`) on a virtual desktop."""

    platform = "pc"

    def __init__(self, scale: float = 1.0, left: float = 0.0, top: float = 0.0) -> None:
        super().__init__()
        self.scale, self.left, self.top = scale, left, top
        self.state = FormState()
        self.executed: list[tuple[str, list[tuple[float, float]]]] = []
        self.observe_count = 0

    def _capture(self) -> Observation:
        self.observe_count += 1
        s = self.scale
        img = Image.new("RGB", (int(WIDTH * s), int(HEIGHT * s)), "white")
        draw = ImageDraw.Draw(img)
        for w in WIDGETS:
            x1, y1, x2, y2 = (v * s for v in w.box)
            outline = "blue" if self.state.focused == w.name else "black"
            draw.rectangle((x1, y1, x2, y2), outline=outline, width=max(1, int(3 * s)))
        # State drawn as bars so it changes the thumbnail visibly.
        draw.rectangle((130 * s, 230 * s, (130 + 10 * self.state.counter) * s, 250 * s),
                       fill="green")
        draw.rectangle((22 * s, 102 * s, (22 + 8 * len(self.state.name)) * s, 128 * s),
                       fill="gray")
        draw.rectangle((22 * s, 152 * s, (22 + 8 * len(self.state.password)) * s, 178 * s),
                       fill="black")
        if self.state.deleted:
            draw.rectangle((0, 270 * s, WIDTH * s, HEIGHT * s), fill="red")
        mapping = desktop_mapping(img.width, img.height, scale=s,
                                  monitor_left=self.left, monitor_top=self.top)
        return Observation(
            screenshot=img, mapping=mapping, platform="pc", app="form",
            extra={"focused_is_password": self.state.focused == "password"},
        )

    def _hit(self, x: float, y: float) -> Widget | None:
        lx, ly = x - self.left, y - self.top
        return next((w for w in WIDGETS if w.contains(lx, ly)), None)

    def _do_click(self, action: Click, obs: Observation) -> ActionOutcome:
        x, y = self.resolve(action.target, obs)
        w = self._hit(x, y)
        self.executed.append(("click", [(x, y)]))
        if w is None:
            self.state.focused = None
        elif w.name == "plus":
            self.state.counter += 1
        elif w.name == "delete":
            self.state.deleted, self.state.counter = True, 0
        elif w.name in ("name", "password"):
            self.state.focused = w.name
        return ActionOutcome(action=action, env_points=[(x, y)],
                             detail=f"clicked {w.name if w else 'nothing'}")

    def _do_type(self, action: TypeText, obs: Observation) -> ActionOutcome:
        points = []
        if action.target is not None:
            points.append(self._do_click(Click(target=action.target), obs).env_points[0])
        if self.state.focused not in ("name", "password"):
            raise ActionError("no text field has the focus; click a field first")
        current = getattr(self.state, self.state.focused)
        setattr(self.state, self.state.focused, ("" if action.clear else current) + action.text)
        self.state.submitted = self.state.submitted or action.enter
        self.executed.append(("type", points))
        return ActionOutcome(action=action, env_points=points, detail="typed")

    def _do_key(self, action: Key, obs: Observation) -> ActionOutcome:
        if action.keys == ["enter"]:
            self.state.submitted = True
        self.executed.append(("key", []))
        return ActionOutcome(action=action)

    def _do_scroll(self, action: Scroll, obs: Observation) -> ActionOutcome:
        self.executed.append(("scroll", []))
        return ActionOutcome(action=action)

    def _do_wait(self, action: Wait, obs: Observation) -> ActionOutcome:
        self.executed.append(("wait", []))
        return ActionOutcome(action=action)


def norm(name: str) -> tuple[float, float]:
    """Normalized centre of a widget (what a perfect model would answer)."""
    cx, cy = widget(name).center()
    return cx / WIDTH, cy / HEIGHT


def click(name: str, think: str = "") -> str:
    x, y = norm(name)
    return answer({"type": "click", "target": {"point": {"x": x, "y": y}}}, think)


def answer(action: dict, think: str = "") -> str:
    return (f"<think>{think}</think>" if think else "") + "ACTION " + json.dumps(action)


_ACTION = re.compile(r"ACTION\s+(\{.*\})\s*$", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


class JsonDialect(Dialect):
    family = "json-test"
    platforms = ("pc", "web", "mobile")
    grid_max = 1000

    def build_messages(self, task: str, observation: Observation,
                       history: list[HistoryItem]) -> list[Message]:
        lines = [f"{i}. {h.step.action.to_json()}" for i, h in enumerate(history, 1)]
        prompt = f"Task: {task}\nPrevious actions:\n" + ("\n".join(lines) or "none")
        return [
            message("system", "Answer with ACTION {json}."),
            message("user", image(observation.model_image()), prompt),
        ]

    def parse(self, text: str) -> Step:
        expected = "a final line `ACTION {json action}`, e.g. ACTION {\"type\": \"wait\"}"
        m = _ACTION.search(text)
        if m is None:
            raise ParseError("no ACTION line in the answer", text=text, expected=expected)
        try:
            action: BaseAction = action_from_json(m.group(1))
        except ActionError as exc:
            raise ParseError(f"bad action: {exc}", text=text, expected=expected) from exc
        think = _THINK.search(text)
        return Step(action=action, thinking=think.group(1) if think else None, raw=text)


__all__ = ["FormEnv", "JsonDialect", "click", "answer", "norm", "widget"]
