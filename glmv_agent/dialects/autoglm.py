"""AutoGLM-Phone-9B: the system prompt (zh / en) and multi-turn format of Open-AutoGLM.

Unlike the GLM-V benchmark prompts this family is multi-turn:

    system:    the prompt with `{date}` filled ("2025-12-12, Friday" / "2025年12月11日 星期四")
    user:      [screenshot, "<task>\\n\\n{\\"current_app\\": \\"...\\"}"]       first step
    assistant: "<think>...</think><answer>do(...)</answer>"
    user:      [screenshot, "** Screen Info **\\n\\n{\\"current_app\\": \\"...\\"}"]  later steps
    ...

Only the current user turn keeps its screenshot; earlier user turns keep their text only
(Open-AutoGLM drops each screenshot once the model has answered). The screen info is the
JSON of `{"current_app": ...}` (non-ASCII kept). The first turn adds it only when the app
is known, which reproduces both official sample files (the English one has none); later
turns always carry it, "System Home" standing in for an unknown app as in Open-AutoGLM.
The app of a past step comes from `HistoryItem.observation_text` (the screen-info JSON or
a bare app name). Past assistant turns are `<think>{thinking}</think><answer>{action}</answer>`
as Open-AutoGLM writes them back; the sample files hold only a first turn, so this part
is not checked against them (open point: Open-AutoGLM's client takes as "thinking"
everything before `do(action=`, tags included, when the server leaves the tags in).

Coordinate contract (`COORDINATES`): points `[x,y]` (Tap, Long Press, Double Tap, Swipe
start/end). The prompt says the grid runs from (0,0) to (999,999); Open-AutoGLM's
executor divides by 1000, which we follow (`grid_max = 1000`, 0.1% apart).

Action mapping:

| AutoGLM                         | canonical                                          |
|---------------------------------|----------------------------------------------------|
| Tap element                     | Click                                              |
| Tap element + message           | Click(sensitive=True, reason=message)              |
| Double Tap / Long Press         | DoubleClick / LongPress                            |
| Type / Type_Name text           | TypeText(clear=True): the prompt says typing clears the field |
| Swipe start, end                | Swipe (the finger path)                            |
| Launch app                      | OpenApp                                            |
| Back / Home                     | NavigateBack / NavigateHome                        |
| Wait duration="x seconds"       | Wait(x)                                            |
| Take_over message               | TakeOver                                           |
| Interact                        | TakeOver (the model asks the user to choose)       |
| Note message                    | Note (custom action type "note")                   |
| Call_API instruction            | CallAPI (custom action type "call_api")            |
| finish message                  | Done(success=True, message)                        |

Note and Call_API do nothing on the screen (Open-AutoGLM's handlers are no-ops): they are
registered custom actions so an agent can record or act on them with
`Environment.register_handler("note", ...)`.
"""

from __future__ import annotations

import json
import re
from datetime import date as Date
from typing import Any, ClassVar, Literal

from ..actions import (
    BaseAction, Click, Done, DoubleClick, LongPress, NavigateBack, NavigateHome, OpenApp,
    Swipe, TakeOver, Target, TypeText, Wait, register_action,
)
from ..envs.base import Observation, Platform
from ..errors import ConfigError, ParseError
from ..messages import Message, image, inert_text, message, text
from ._history import load_template, render
from ._syntax import SyntaxProblem, find_calls, parse_call, split_response, to_target
from .base import Dialect, HistoryItem, Step
from .glm41v import _build, _text_arg

COORDINATES: dict[str, dict[str, Any]] = {
    "mobile": {"kind": "point", "grid_max": 1000, "order": "x,y"},
}

WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "zh": ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"),
}
UNKNOWN_APP = "System Home"
ACTIONS = ("Tap", "Type", "Type_Name", "Swipe", "Long Press", "Double Tap", "Launch", "Back",
           "Home", "Wait", "Take_over", "Interact", "Note", "Call_API")
EXPECTED = (
    "<think>reasoning</think><answer>one line: do(action=\"Tap\", element=[x,y]), "
    "do(action=\"Type\", text=\"...\"), do(action=\"Swipe\", start=[x1,y1], end=[x2,y2]), "
    "do(action=\"Long Press\", element=[x,y]), do(action=\"Double Tap\", element=[x,y]), "
    "do(action=\"Launch\", app=\"...\"), do(action=\"Back\"), do(action=\"Home\"), "
    "do(action=\"Wait\", duration=\"x seconds\"), do(action=\"Take_over\", message=\"...\"), "
    "do(action=\"Interact\"), do(action=\"Note\", message=\"True\"), "
    "do(action=\"Call_API\", instruction=\"...\") or finish(message=\"...\"), "
    "coordinates on the 0-999 grid</answer>"
)


@register_action
class Note(BaseAction):
    """AutoGLM's `Note`: remember the current page's content for a later summary."""

    type: Literal["note"] = "note"
    message: str = ""
    agent_side: ClassVar[bool] = True


@register_action
class CallAPI(BaseAction):
    """AutoGLM's `Call_API`: summarize or comment on the page or on noted content."""

    type: Literal["call_api"] = "call_api"
    instruction: str = ""
    agent_side: ClassVar[bool] = True


def format_date(day: Date, lang: str) -> str:
    """The system prompt's date: '2025-12-12, Friday' (en) or '2025年12月11日 星期四' (zh)."""
    weekday = WEEKDAYS[lang][day.weekday()]
    if lang == "zh":
        return f"{day.year}年{day.month:02d}月{day.day:02d}日 {weekday}"
    return f"{day.isoformat()}, {weekday}"


def system_prompt(lang: str = "zh", day: Date | None = None) -> str:
    if lang not in WEEKDAYS:
        raise ConfigError(f"AutoGLM prompt language must be 'zh' or 'en', got {lang!r}")
    return render(load_template(f"autoglm/system_{lang}.txt"),
                  date=format_date(day or Date.today(), lang))


def screen_info(app: str) -> str:
    return json.dumps({"current_app": app}, ensure_ascii=False)


def _past_screen_info(item: HistoryItem) -> str:
    recorded = (item.observation_text or "").strip()
    if recorded.startswith("{"):
        return recorded
    return screen_info(recorded or UNKNOWN_APP)


def _duration(value: Any) -> float:
    if value is None:
        return 1.0  # Open-AutoGLM's default when the model gives none
    if isinstance(value, bool):
        raise SyntaxProblem(f"Wait duration must be like '3 seconds', got {value!r}")
    match = re.search(r"\d+(?:\.\d+)?", str(value))
    if not match:
        raise SyntaxProblem(f"Wait duration must be like '3 seconds', got {value!r}")
    return min(600.0, float(match.group()))


def autoglm_action(name: str, kwargs: dict[str, Any], grid_max: int) -> BaseAction:
    """A canonical action from parsed `do(...)` / `finish(...)` keyword arguments."""
    if name == "finish":
        message_ = kwargs.get("message")
        return _build(Done, success=True,
                      message=None if message_ is None else _text_arg(message_, "message"))
    kind = kwargs.get("action")
    if not isinstance(kind, str):
        raise SyntaxProblem("do(...) needs action=\"...\"")
    kind = kind.strip()

    def point(key: str) -> Target:
        if kwargs.get(key) is None:
            raise SyntaxProblem(f"{kind} needs {key}=[x,y]")
        found = to_target(kwargs[key], grid_max)
        if found.box is not None:
            # A box where a point belongs: use its centre (Target already did).
            return Target(point=found.point)
        return found

    if kind == "Tap":
        note = kwargs.get("message")
        return _build(Click, target=point("element"), sensitive=note is not None,
                      reason=None if note is None else _text_arg(note, "message"))
    if kind in ("Type", "Type_Name"):
        if "text" not in kwargs:
            raise SyntaxProblem(f"{kind} needs text=\"...\"")
        return _build(TypeText, text=_text_arg(kwargs["text"], "text"), clear=True)
    if kind == "Swipe":
        return _build(Swipe, start=point("start"), end=point("end"))
    if kind == "Long Press":
        return _build(LongPress, target=point("element"))
    if kind == "Double Tap":
        return _build(DoubleClick, target=point("element"))
    if kind == "Launch":
        app = kwargs.get("app")
        if not app:
            raise SyntaxProblem("Launch needs app=\"...\"")
        return _build(OpenApp, name=_text_arg(app, "app"))
    if kind == "Back":
        return _build(NavigateBack)
    if kind == "Home":
        return _build(NavigateHome)
    if kind == "Wait":
        return _build(Wait, seconds=_duration(kwargs.get("duration")))
    if kind == "Take_over":
        return _build(TakeOver, message=_text_arg(kwargs.get("message", ""), "message"))
    if kind == "Interact":
        return _build(TakeOver, message=_text_arg(
            kwargs.get("message", "Several options match; please choose one."), "message"))
    if kind == "Note":
        return _build(Note, message=_text_arg(kwargs.get("message", ""), "message"))
    if kind == "Call_API":
        return _build(CallAPI, instruction=_text_arg(kwargs.get("instruction", ""),
                                                     "instruction"))
    raise SyntaxProblem(f"unknown action {kind!r}; known: {', '.join(ACTIONS)}")


_LENIENT_TEXT = re.compile(r'^do\(\s*action\s*=\s*"(Type|Type_Name)"\s*,\s*text\s*=\s*"(.*)"\s*\)\s*$', re.S)
_LENIENT_FINISH = re.compile(r'^finish\(\s*message\s*=\s*"(.*)"\s*\)\s*$', re.S)


def _lenient(source: str) -> tuple[str, dict[str, Any]] | None:
    """Typed text or finish messages with unescaped inner quotes, read like Open-AutoGLM."""
    match = _LENIENT_TEXT.match(source)
    if match:
        return "do", {"action": match.group(1), "text": match.group(2)}
    match = _LENIENT_FINISH.match(source)
    if match:
        return "finish", {"message": match.group(1)}
    return None


def parse_autoglm(raw: str, grid_max: int = 1000) -> Step:
    thinking, answer = split_response(raw)
    if thinking is None and "<answer>" not in raw:
        # Untagged output: everything before the first call is the reasoning.
        first = next(find_calls(answer, ("do", "finish")), None)
        if first is not None and answer[:first[0]].strip():
            thinking = answer[:first[0]].strip()
    problems: list[str] = []
    for _start, _end, source in find_calls(answer, ("do", "finish")):
        try:
            try:
                name, args, kwargs = parse_call(source)
                if args:
                    raise SyntaxProblem("use keyword arguments, e.g. do(action=\"Back\")")
            except SyntaxProblem:
                lenient = _lenient(source)
                if lenient is None:
                    raise
                name, kwargs = lenient
            action = autoglm_action(name, kwargs, grid_max)
        except SyntaxProblem as exc:
            problems.append(f"{source[:80]!r}: {exc}")
            continue
        return Step(action=action, thinking=thinking, raw=raw,
                    extra={"action_text": source, "answer": answer})
    why = "; ".join(problems[:3]) if problems else "no do(...) or finish(...) call found"
    raise ParseError(f"could not read an action from the model's answer: {why}",
                     text=raw, expected=EXPECTED)


class AutoGLMDialect(Dialect):
    """AutoGLM-Phone-9B on Android phones (Open-AutoGLM's prompt and conversation)."""

    family: ClassVar[str] = "autoglm-phone"
    aliases: ClassVar[tuple[str, ...]] = ("autoglm",)
    platforms: ClassVar[tuple[Platform, ...]] = ("mobile",)
    grid_max: ClassVar[int] = 1000
    coordinates: ClassVar[dict[str, dict[str, Any]]] = COORDINATES

    def __init__(self, platform: Platform = "mobile", *, lang: str = "zh",
                 today: Date | None = None) -> None:
        super().__init__(platform)
        if lang not in WEEKDAYS:
            raise ConfigError(f"AutoGLM prompt language must be 'zh' or 'en', got {lang!r}")
        self.lang = lang
        self.today = today

    def build_messages(
        self, task: str, observation: Observation, history: list[HistoryItem]
    ) -> list[Message]:
        messages: list[Message] = [
            {"role": "system", "content": system_prompt(self.lang, self.today)}
        ]
        for i, item in enumerate(history):
            info = _past_screen_info(item)
            user_text = f"{task}\n\n{info}" if i == 0 else f"** Screen Info **\n\n{info}"
            if i == 0 and not (item.observation_text or "").strip():
                user_text = task
            messages.append(message("user", text(inert_text(user_text))))
            messages.append({"role": "assistant", "content": self.assistant_text(item.step)})
        if history:
            current = f"** Screen Info **\n\n{screen_info(observation.app or UNKNOWN_APP)}"
        elif observation.app:
            current = f"{task}\n\n{screen_info(observation.app)}"
        else:
            current = task
        messages.append(message("user", image(observation.model_image()),
                                text(inert_text(current))))
        return messages

    @staticmethod
    def assistant_text(step: Step) -> str:
        """How Open-AutoGLM writes the model's past answer back into the conversation (the
        model's text inert, the tags real)."""
        action = step.extra.get("action_text") or step.action.to_json()
        return f"<think>{inert_text(step.thinking or '')}</think><answer>{inert_text(action)}</answer>"

    def parse(self, text: str) -> Step:
        if not isinstance(text, str):
            raise ParseError(f"model output must be text, got {type(text).__name__}",
                             expected=EXPECTED)
        return parse_autoglm(text, self.grid_max)

    def supported_actions(self) -> set[str]:
        return {"click", "type", "swipe", "long_press", "double_click", "open_app",
                "navigate_back", "navigate_home", "wait", "take_over", "note", "call_api",
                "done"}

    def generation_defaults(self) -> dict[str, Any]:
        # Open-AutoGLM's ModelConfig defaults (phone_agent/model/client.py). It does not set
        # skip_special_tokens; keeping them makes every backend return the same text.
        return {"max_new_tokens": 3000, "temperature": 0.0, "top_p": 0.85,
                "skip_special_tokens": False, "extra": {"frequency_penalty": 0.2}}


__all__ = ["AutoGLMDialect", "Note", "CallAPI", "COORDINATES", "format_date", "system_prompt"]
