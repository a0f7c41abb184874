"""GLM-4.1V-9B-Thinking: the GUI-agent prompts and answer formats of its official docs.

All three platforms are single-turn: history is written into the prompt text, never as
chat turns. The model answers `<think>...</think><answer>...</answer>` and wraps grounded
coordinates in `<|begin_of_box|>...<|end_of_box|>`.

Coordinate contract (declared as data in `COORDINATES`):

| platform | action format                                   | coordinates                    |
|----------|-------------------------------------------------|--------------------------------|
| mobile   | JSON dict `{"action_type": "click", ...}`       | box `[[x1,y1,x2,y2]]`, 0-999   |
| pc       | call `left_click(start_box='[x,y]')`            | point `[x,y]`, 0-1000 (prompt) |
| web      | `Click [3]` set-of-marks label                  | element label, no coordinates  |

The PC prompt text tells the model "normalized to 0-1000" while the action-space table of
the same doc says 0-999; the model reads the prompt, so we divide by 1000 (the two differ by
0.1%). Boxes are reduced to their centre by `Target`.

Images: mobile and web send one screenshot (web: the set-of-marks one) before the text;
PC sends the current screenshot first at full size, then up to 4 history screenshots
scaled to 50% x 50%, oldest to newest, then the text.

Web: `{Web}` is the site the run started on (`StartSite`: WebVoyager's task URL), not the
page shown now.

Open points the docs leave undecided (our choice in brackets): how long mobile `wait` waits
(5 s like PC's WAIT; AndroidWorld's executor sleeps 1 s); which memory the PC/web prompt
shows when the latest step wrote none (the latest step that did; the 4.5V doc says "the
most recent step's output"); the 4.1V PC example's history shows `\\"` inside the
explanations, which we take for an escaping artefact of the doc (explanations are kept as
the model wrote them).

Where the doc's template and its "used in practice" example disagree we follow the
example (mobile: `'override': True/False`; web: the memory example without backslashes).
Mapping of actions onto canonical ones:

* mobile: click -> Click, long_press -> LongPress, input_text -> TypeText(target, clear=
  override, enter=True: the prompt the model reads says the action "contains clicking the
  text field, typing in the text and pressing the enter", and AndroidWorld's executor
  presses Enter after typing; the doc's action-space table only says it "clicks a given
  position and inputs text", which is silent on Enter rather than contradicting it),
  keyboard_enter -> Key(["enter"]),
  navigate_home/back, swipe -> Swipe (the finger path; "up" = finger moves up, content
  below comes into view) across the middle half of its box or the screen, open_app ->
  OpenApp, wait -> Wait(5), answer -> Answer, status -> Done(success=complete).
* pc: left/right/middle_click, hover, left_double_click, left_drag -> Drag, key -> Key
  (split on '+'), type -> TypeText (into the focused element), scroll -> Scroll(amount=
  step), WAIT -> Wait(5), DONE -> Done(True), FAIL -> Done(False).
* web: Click -> Click(element), Type -> TypeText(element, clear=True, enter=True: the prompt
  says the textbox content is replaced and Enter is hit automatically), Scroll -> Scroll
  (element or window), Wait -> Wait(5), GoBack -> NavigateBack, Bing -> Goto(bing.com),
  ANSWER -> Answer, Key -> Key.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, NamedTuple

from pydantic import ValidationError

from ..actions import (
    Answer, BaseAction, Click, Done, DoubleClick, Drag, Goto, Hover, Key, LongPress,
    MiddleClick, NavigateBack, NavigateHome, OpenApp, Point, RightClick, Scroll, Swipe,
    Target, TypeText, Wait,
)
from ..envs.base import Observation, Platform
from ..errors import ParseError
from ..messages import Message, image, message, text
from ._history import action_text, half_size, load_template, recent_screenshots, render
from ._syntax import (
    SyntaxProblem, find_calls, find_dicts, parse_call, parse_literal,
    split_keys, split_response, to_target,
)
from .base import Dialect, HistoryItem, Step
from .elements import elements_text

# How each platform's answers locate things; see the table in the module docstring.
COORDINATES: dict[str, dict[str, Any]] = {
    "mobile": {"kind": "box", "grid_max": 999, "order": "x1,y1,x2,y2"},
    "pc": {"kind": "point", "grid_max": 1000, "order": "x,y"},
    "web": {"kind": "element", "grid_max": 1000, "order": None},
}

# AndroidWorld's app list, as the doc gives it for `#SUPPORTED_APPS#`.
ANDROID_WORLD_APPS: tuple[str, ...] = (
    "Google Chrome", "Google Chat", "Settings", "YouTube", "Google Play", "Gmail",
    "Google Maps", "Google Photos", "Google Calendar", "Camera", "Audio Recorder",
    "Google Drive", "Google Keep", "Grubhub", "Tripadvisor", "Starbucks", "Google Docs",
    "Google Sheets", "Google Slides", "Clock", "Google Search", "Contacts", "Facebook",
    "WhatsApp", "Instagram", "Twitter", "Snapchat", "Telegram", "LinkedIn", "Spotify",
    "Netflix", "Amazon Shopping", "TikTok", "Discord", "Reddit", "Pinterest",
    "Android World", "Files", "Markor", "Clipper", "Messages", "Simple SMS Messenger",
    "Dialer", "Simple Calendar Pro", "Simple Gallery Pro", "Miniwob", "Simple Draw Pro",
    "Pro Expense", "Broccoli", "CAA", "OsmAnd", "Tasks", "Open Tracks Sports Tracker",
    "Joplin", "VLC", "Retro Music",
)

PC_FUNCTIONS = (
    "left_click", "right_click", "middle_click", "hover", "left_double_click", "left_drag",
    "key", "type", "scroll", "WAIT", "DONE", "FAIL",
)
MOBILE_ACTIONS = (
    "status", "answer", "click", "long_press", "input_text", "keyboard_enter",
    "navigate_home", "navigate_back", "swipe", "open_app", "wait",
)

PC_EXPECTED = (
    "A short explanation, then exactly one action call such as "
    "left_click(start_box='[x,y]', element_info=''), right_click(...), middle_click(...), "
    "hover(...), left_double_click(...), left_drag(start_box='[x1,y1]', end_box='[x2,y2]'), "
    "key(keys='ctrl+c'), type(content='text'), scroll(start_box='[x,y]', "
    "direction='down/up', step=5), WAIT(), DONE() or FAIL(), with coordinates on the "
    "0-1000 grid, then 'Memory:' and a JSON list."
)
MOBILE_EXPECTED = (
    "Memory: ...\nReason: ...\nAction: {\"action_type\": ...} where action_type is one of "
    + ", ".join(MOBILE_ACTIONS)
    + "; box_2d is [[xmin,ymin,xmax,ymax]] on the 0-999 grid."
)
WEB_EXPECTED = (
    "Thought: ...\nAction: one of 'Click [N]', 'Type [N]; [text]', "
    "'Scroll [N or WINDOW]; [up or down]', 'Wait', 'GoBack', 'Bing', "
    "'ANSWER; <content>answer</content>', 'Key; [Return]'\nMemory_Updated: {...}"
)

# How the official GUI-agent examples call GLM-4.1V and GLM-4.5V (zai-org/GLM-V
# examples/gui-agent/glm-41v/gui_agent_41v.py and glm-45v/gui_agent_45v.py, `call_openai_api`):
# every backend gets these unless the user overrides them.
GUI_AGENT_SAMPLING: dict[str, Any] = {
    "max_new_tokens": 8192, "temperature": 0.001, "skip_special_tokens": False,
}

BING_URL = "https://www.bing.com/"
NO_HISTORY = "You just started, no action has been performed yet."


def _fail(raw: str, why: str, expected: str) -> ParseError:
    return ParseError(f"could not read an action from the model's answer: {why}",
                      text=raw, expected=expected)


def _build(cls: type[BaseAction], **fields: Any) -> BaseAction:
    try:
        return cls(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SyntaxProblem(f"invalid {cls.__name__} ({first['loc']}: {first['msg']})") from None


def _text_arg(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SyntaxProblem(f"{name} must be text, got {value!r}")
    return str(value)


# --------------------------------------------------------------------------- PC actions
def pc_action(name: str, args: list[Any], kwargs: dict[str, Any], grid_max: int) -> BaseAction:
    """A canonical action from a parsed PC call (GLM-4.1V and GLM-4.5V share the names)."""
    info = kwargs.get("element_info")
    reason = str(info) if isinstance(info, (str, int, float)) and str(info).strip() else None

    def box(key: str, position: int) -> Target:
        value = kwargs.get(key, args[position] if len(args) > position else None)
        if value is None:
            raise SyntaxProblem(f"{name} needs {key}='[x,y]'")
        return to_target(value, grid_max)

    pointer = {"left_click": Click, "right_click": RightClick, "middle_click": MiddleClick,
               "hover": Hover, "left_double_click": DoubleClick}
    if name in pointer:
        return _build(pointer[name], target=box("start_box", 0), reason=reason)
    if name == "left_drag":
        return _build(Drag, start=box("start_box", 0), end=box("end_box", 1), reason=reason)
    if name == "key":
        combo = kwargs.get("keys", kwargs.get("key", args[0] if args else None))
        keys = split_keys(_text_arg(combo, "keys")) if combo is not None else []
        if not keys:
            raise SyntaxProblem("key needs keys='ctrl+c'")
        return _build(Key, keys=keys)
    if name == "type":
        content = kwargs.get("content", kwargs.get("text", args[0] if args else None))
        if content is None:
            raise SyntaxProblem("type needs content='...'")
        return _build(TypeText, text=_text_arg(content, "content"))
    if name == "scroll":
        direction = str(kwargs.get("direction", args[1] if len(args) > 1 else "")).strip().lower()
        if direction not in ("up", "down", "left", "right"):
            raise SyntaxProblem(f"scroll direction must be 'down' or 'up', got {direction!r}")
        step = kwargs.get("step", 5)
        try:
            amount = int(float(step))
        except (TypeError, ValueError, OverflowError):  # 1e999 or a 400-digit step
            raise SyntaxProblem(f"scroll step must be an integer, got {str(step)[:40]!r}") from None
        where = kwargs.get("start_box", args[0] if args else None)
        target = to_target(where, grid_max) if where not in (None, "", []) else None
        return _build(Scroll, direction=direction, amount=min(100, max(1, amount)),
                      target=target, reason=reason)
    if name == "WAIT":
        return _build(Wait, seconds=5.0)
    if name == "DONE":
        return _build(Done, success=True)
    if name == "FAIL":
        return _build(Done, success=False)
    raise SyntaxProblem(f"unknown action {name!r}")


_MEMORY_TAG = re.compile(r"<memory>(.*?)(?:</memory>|$)", re.S)
_MEMORY_LINE = re.compile(r"(?:^|\n)\s*Memory\s*:\s*(.*)$", re.S)


def parse_pc(raw: str, grid_max: int, expected: str = PC_EXPECTED) -> Step:
    """Explanation, one call, `Memory:` list: the PC answer of GLM-4.1V and GLM-4.5V."""
    thinking, answer = split_response(raw)
    problems: list[str] = []
    for start, end, source in find_calls(answer, PC_FUNCTIONS):
        try:
            name, args, kwargs = parse_call(source)
            action = pc_action(name, args, kwargs, grid_max)
        except SyntaxProblem as exc:
            problems.append(f"{source[:80]!r}: {exc}")
            continue
        explanation = re.sub(r"\s*Action\s*:\s*$", "", answer[:start].strip()).strip()
        after = answer[end:]
        memory_match = _MEMORY_TAG.search(after) or _MEMORY_LINE.search(after)
        memory = memory_match.group(1).strip() if memory_match else None
        if memory is not None:
            # Trailing repetitions of the whole answer are not memory.
            memory = memory.split("\n\n")[0].strip()
        return Step(action=action, thinking=thinking, memory=memory,
                    explanation=explanation or None, raw=raw,
                    extra={"action_text": source, "answer": answer})
    why = "; ".join(problems[:3]) if problems else "no action call found"
    raise _fail(raw, why, expected)


# ----------------------------------------------------------------------- mobile actions
def swipe_path(direction: str, region: Target | None) -> tuple[Target, Target]:
    """Finger path of a swipe: across the middle half of `region` (default: the screen)."""
    if region is not None and region.box is not None:
        x1, y1, x2, y2 = region.box.x1, region.box.y1, region.box.x2, region.box.y2
    else:
        x1, y1, x2, y2 = 0.0, 0.0, 1.0, 1.0
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = x2 - x1, y2 - y1
    paths = {
        "up": ((cx, y1 + 0.75 * h), (cx, y1 + 0.25 * h)),
        "down": ((cx, y1 + 0.25 * h), (cx, y1 + 0.75 * h)),
        "left": ((x1 + 0.75 * w, cy), (x1 + 0.25 * w, cy)),
        "right": ((x1 + 0.25 * w, cy), (x1 + 0.75 * w, cy)),
    }
    (sx, sy), (ex, ey) = paths[direction]
    return Target(point=Point(x=sx, y=sy)), Target(point=Point(x=ex, y=ey))


def _given(value: Any) -> bool:
    """Whether an optional box_2d was filled: the prompt says to "leave it empty", which
    models write as absent, "", [] or [[]]."""
    if isinstance(value, list):
        return any(_given(v) for v in value)
    return value not in (None, "")


def mobile_action(data: dict[str, Any], grid_max: int) -> BaseAction:
    """A canonical action from an AndroidWorld-style JSON action (GLM-4.1V / 4.5V mobile)."""
    kind = str(data.get("action_type", "")).strip().lower()

    def box() -> Target:
        value = data.get("box_2d", data.get("box"))
        if value in (None, "", []):
            raise SyntaxProblem(f"{kind} needs box_2d [[xmin,ymin,xmax,ymax]]")
        return to_target(value, grid_max)

    if kind == "click":
        return _build(Click, target=box())
    if kind == "long_press":
        return _build(LongPress, target=box())
    if kind == "input_text":
        if "text" not in data:
            raise SyntaxProblem("input_text needs text")
        override = data.get("override", False)
        if isinstance(override, str):
            override = override.strip().lower() == "true"
        target = box() if _given(data.get("box_2d")) else None
        # The prompt: "this action contains clicking the text field, typing in the text
        # and pressing the enter".
        return _build(TypeText, text=_text_arg(data["text"], "text"), target=target,
                      clear=bool(override), enter=True)
    if kind == "keyboard_enter":
        return _build(Key, keys=["enter"])
    if kind == "navigate_home":
        return _build(NavigateHome)
    if kind == "navigate_back":
        return _build(NavigateBack)
    if kind == "swipe" or kind == "scroll":
        direction = str(data.get("direction", "")).strip().lower()
        if direction not in ("up", "down", "left", "right"):
            raise SyntaxProblem(f"swipe direction must be up, down, left or right, got {direction!r}")
        # A point instead of a box gives no region: the whole screen is swiped.
        region = box() if _given(data.get("box_2d")) else None
        start, end = swipe_path(direction, region)
        return _build(Swipe, start=start, end=end)
    if kind == "open_app":
        name = data.get("app_name", data.get("app"))
        if not name:
            raise SyntaxProblem("open_app needs app_name")
        return _build(OpenApp, name=_text_arg(name, "app_name"))
    if kind == "wait":
        return _build(Wait, seconds=5.0)
    if kind == "answer":
        return _build(Answer, text=_text_arg(data.get("text", ""), "text"))
    if kind == "status":
        status = str(data.get("goal_status", "")).strip().lower()
        if status not in ("complete", "infeasible"):
            raise SyntaxProblem(f"goal_status must be complete or infeasible, got {status!r}")
        return _build(Done, success=status == "complete")
    raise SyntaxProblem(f"unknown action_type {kind!r}")


class Section(NamedTuple):
    """One `Name: content` part of an answer; content runs up to the next marker."""

    name: str
    at: int  # where the marker starts
    start: int  # where the content starts
    end: int


def sections(answer: str, marker: re.Pattern[str]) -> list[Section]:
    """The answer cut at every `marker` (group 1: the section name), wherever it is.

    The official GLM-V example parsers split on `Thought:|Action:|Memory_Updated:` and match
    `Memory:(.*?)Reason:(.*?)Action:(.*)` anywhere in the text, so a whole answer on one
    line is valid; so it is here. One regex pass: linear in the answer's length.
    """
    found = list(marker.finditer(answer))
    ends = [m.start() for m in found[1:]] + [len(answer)]
    return [Section(m.group(1), m.start(), m.end(), end) for m, end in zip(found, ends)]


def _content(answer: str, section: Section | None) -> str | None:
    return answer[section.start:section.end].strip() if section is not None else None


# `Memory:`, `**Reason**:` ... (bold markers are written by some checkpoints).
_MOBILE_MARKER = re.compile(r"\**(Memory|Reason|Action)\**\s*:\**")


def parse_mobile(raw: str, grid_max: int, expected: str = MOBILE_EXPECTED) -> Step:
    """`Memory: / Reason: / Action: {...}` answers (GLM-4.1V and GLM-4.5V mobile), on
    separate lines or not."""
    thinking, answer = split_response(raw)
    parts = sections(answer, _MOBILE_MARKER)
    first_reason = next((k for k, p in enumerate(parts) if p.name == "Reason"), 0)
    marker = next((p for p in parts[first_reason:] if p.name == "Action"), None)
    head = [p for p in parts if marker is None or p.at < marker.at]
    problems: list[str] = []
    offset = marker.start if marker else 0
    for _start, _end, source in find_dicts(answer[offset:]):
        try:
            data = parse_literal(source)
            if not isinstance(data, dict) or "action_type" not in data:
                raise SyntaxProblem("the dict has no 'action_type'")
            action = mobile_action(data, grid_max)
        except SyntaxProblem as exc:
            problems.append(f"{source[:80]!r}: {exc}")
            continue
        memory = _content(answer, next((p for p in head if p.name == "Memory"), None))
        reason = _content(answer, next((p for p in head if p.name == "Reason"), None))
        return Step(action=action, thinking=thinking, memory=memory, explanation=reason,
                    raw=raw, extra={"action_text": source, "action_dict": data, "answer": answer})
    why = "; ".join(problems[:3]) if problems else "no {\"action_type\": ...} dict found"
    raise _fail(raw, why, expected)


def mobile_history(history: list[HistoryItem]) -> str:
    """`Step i:\\nMemory: ...\\nReason: ...\\nAction: {...}` blocks, numbered from 0."""
    if not history:
        # The wording AndroidWorld's M3A agent (which this prompt derives from) uses.
        return NO_HISTORY
    blocks = []
    for i, item in enumerate(history):
        data = item.step.extra.get("action_dict")
        written = repr(data) if isinstance(data, dict) else action_text(item)
        blocks.append(
            f"Step {i}:\nMemory: {item.step.memory or 'None'}\n"
            f"Reason: {item.step.explanation or ''}\nAction: {written}"
        )
    return "\n".join(blocks)


# -------------------------------------------------------------------------- web actions
_WEB_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("click", re.compile(r"^Click\s*\[?\s*(\d+)\s*\]?", re.I)),
    ("type", re.compile(r"^Type\s*\[?\s*(\d+)\s*\]?\s*[;,]\s*(.*)$", re.I | re.S)),
    ("scroll", re.compile(
        r"^Scroll\s*\[?\s*(WINDOW|\d+)\s*\]?\s*[;,]\s*\[?\s*(up|down|left|right)\s*\]?", re.I)),
    ("wait", re.compile(r"^Wait\b", re.I)),
    ("goback", re.compile(r"^Go\s*Back\b", re.I)),
    ("bing", re.compile(r"^(?:Bing|Google)\b", re.I)),
    ("answer", re.compile(r"^ANSWER\s*[;:,]?\s*(.*)$", re.I | re.S)),
    ("key", re.compile(r"^Key\s*[;:,]\s*\[?\s*([^\]\n]+?)\s*\]?\s*\.?\s*$", re.I | re.M)),
]


def _strip_brackets(value: str) -> str:
    value = value.strip()
    if value.endswith("."):
        value = value[:-1].rstrip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return value


def _element(label: str) -> Target:
    """The set-of-marks label `label` (digits) as a target; absurdly long numbers are no
    label (and int() refuses more than 4,300 digits)."""
    if len(label) > 9:
        raise SyntaxProblem(f"element label {label[:12]}... is not a label on the page")
    return Target(element=int(label))


def web_action(source: str) -> BaseAction:
    """A canonical action from one WebVoyager-style action string."""
    source = source.strip().strip("`").strip()
    for kind, pattern in _WEB_PATTERNS:
        match = pattern.match(source)
        if not match:
            continue
        if kind == "click":
            return _build(Click, target=_element(match.group(1)))
        if kind == "type":
            content = match.group(2).split("\n")[0]
            return _build(TypeText, text=_strip_brackets(content),
                          target=_element(match.group(1)), clear=True, enter=True)
        if kind == "scroll":
            where = match.group(1)
            target = None if where.upper() == "WINDOW" else _element(where)
            return _build(Scroll, direction=match.group(2).lower(), target=target)
        if kind == "wait":
            return _build(Wait, seconds=5.0)
        if kind == "goback":
            return _build(NavigateBack)
        if kind == "bing":
            return _build(Goto, url=BING_URL)
        if kind == "answer":
            body = match.group(1)
            content = re.search(r"<content>(.*?)(?:</content>|$)", body, re.S)
            answer = content.group(1) if content else _strip_brackets(body.split("\n")[0])
            return _build(Answer, text=answer.strip())
        if kind == "key":
            keys = split_keys(match.group(1))
            keys = ["enter" if k == "return" else k for k in keys]
            if not keys:
                raise SyntaxProblem("Key needs a key name, e.g. Key; [Return]")
            return _build(Key, keys=keys)
    raise SyntaxProblem(f"unknown action {source.splitlines()[0][:60]!r}" if source else "empty action")


_WEB_MARKER = re.compile(r"\**(Thought|Action|Memory_Updated|Observation)\**\s*:\**\s*")


def parse_web(raw: str, expected: str = WEB_EXPECTED) -> Step:
    """`Thought: / Action: / Memory_Updated:` answers (GLM-4.1V and GLM-4.5V web), on
    separate lines or all on one."""
    thinking, answer = split_response(raw)
    parts = sections(answer, _WEB_MARKER)
    problems: list[str] = []
    thought: Section | None = None
    for k, part in enumerate(parts):
        if part.name == "Thought":
            thought = part
        if part.name != "Action":
            continue
        source = answer[part.start:part.end].strip()
        if not source.upper().startswith("ANSWER"):  # an answer's content may span lines
            source = source.partition("\n")[0]
        try:
            action = web_action(source)
        except SyntaxProblem as exc:
            problems.append(str(exc))
            continue
        memory = _content(answer, next((p for p in parts[k + 1:] if p.name == "Memory_Updated"),
                                       None))
        if memory is not None:
            # Trailing repetitions of the whole answer are not memory.
            memory = re.split(r"\n\s*\n", memory, maxsplit=1)[0].strip()
        return Step(action=action, thinking=thinking, memory=memory,
                    explanation=_content(answer, thought), raw=raw,
                    extra={"action_text": source.strip(), "answer": answer})
    why = "; ".join(problems[:3]) if problems else "no 'Action:' line found"
    raise _fail(raw, why, expected)


def web_previous_actions(history: list[HistoryItem]) -> str:
    """`i.Thought:...<TAB>Action:...<TAB>Observation:...` lines, numbered from 0.

    The docs show these separators as runs of spaces: tab characters expanded by the
    Markdown rendering (4.1V's runs end on 4-column tab stops).
    """
    lines = []
    for i, item in enumerate(history):
        observation = item.observation or item.step.extra.get("observation", "Success")
        lines.append(f"{i}.Thought:{item.step.explanation or ''}\tAction:{action_text(item)}"
                     f"\tObservation:{observation}")
    return "\n".join(lines)


class StartSite:
    """The web prompts' `{Web}`: the site the task is on, fixed for the whole run.

    WebVoyager (whose prompt this is) fills it with the task's start URL, not the page the
    browser shows now; the 4.1V doc's example keeps "https://www.allrecipes.com/" after a
    search was typed. An explicit `website` wins; otherwise the URL of the first step (empty
    history) is remembered, and a run resumed mid-way falls back to the current URL.
    """

    def __init__(self, website: str | None = None) -> None:
        self.website = website
        self._start_url: str | None = None

    def __call__(self, observation: Observation, history: list[HistoryItem]) -> str:
        if self.website:
            return self.website
        if not history:
            self._start_url = observation.url
        return self._start_url or observation.url or "the current website"


def latest_memory(history: list[HistoryItem], empty: str) -> str:
    for item in reversed(history):
        if item.step.memory:
            return item.step.memory
    return empty


# ------------------------------------------------------------------------------ dialect
# The canonical actions each platform's action vocabulary can express (GLM-4.1V and
# GLM-4.5V share the vocabularies).
SUPPORTED_ACTIONS: dict[str, frozenset[str]] = {
    "mobile": frozenset({"click", "long_press", "type", "key", "navigate_home",
                         "navigate_back", "swipe", "open_app", "wait", "answer", "done"}),
    "pc": frozenset({"click", "right_click", "middle_click", "hover", "double_click", "drag",
                     "key", "type", "scroll", "wait", "done"}),
    "web": frozenset({"click", "type", "scroll", "wait", "navigate_back", "goto", "answer",
                      "key"}),
}


def parse_answer(text: str, platform: str, grid_max: int, pc_expected: str = PC_EXPECTED) -> Step:
    """Parse one answer in the platform's vocabulary (shared by GLM-4.1V and GLM-4.5V)."""
    if not isinstance(text, str):
        raise ParseError(f"model output must be text, got {type(text).__name__}",
                         expected="text")
    if platform == "mobile":
        return parse_mobile(text, grid_max)
    if platform == "pc":
        return parse_pc(text, grid_max, expected=pc_expected)
    return parse_web(text)


class GLM41VDialect(Dialect):
    """GLM-4.1V-9B-Thinking on AndroidWorld (mobile), OSWorld (pc) and WebVoyager (web)."""

    family: ClassVar[str] = "glm-4.1v"
    platforms: ClassVar[tuple[Platform, ...]] = ("mobile", "pc", "web")
    grid_max: ClassVar[int] = 1000
    coordinates: ClassVar[dict[str, dict[str, Any]]] = COORDINATES
    history_images: ClassVar[int] = 4

    def __init__(self, platform: Platform, *, supported_apps: list[str] | tuple[str, ...] =
                 ANDROID_WORLD_APPS, website: str | None = None) -> None:
        super().__init__(platform)
        # Instance value shadows the class default: the grid depends on the platform.
        self.grid_max = int(COORDINATES[platform]["grid_max"])  # type: ignore[misc]
        self.supported_apps = tuple(supported_apps)
        self.website = StartSite(website)

    # -- prompts ------------------------------------------------------------------
    def build_messages(
        self, task: str, observation: Observation, history: list[HistoryItem]
    ) -> list[Message]:
        if self.platform == "mobile":
            prompt = render(load_template("glm41v/mobile.txt"), task=task,
                            supported_apps=",".join(self.supported_apps),
                            history=mobile_history(history))
            return [message("user", image(observation.model_image()), prompt)]
        if self.platform == "pc":
            return self._pc_messages(task, observation, history)
        prompt = render(load_template("glm41v/web.txt"), task=task,
                        web=self.website(observation, history),
                        previous_actions=web_previous_actions(history),
                        memory=latest_memory(history, "{}"),
                        web_text=elements_text(observation))
        return [message("user", image(observation.model_image()), prompt)]

    def _pc_messages(
        self, task: str, observation: Observation, history: list[HistoryItem]
    ) -> list[Message]:
        lines = []
        if history:
            lines.append("History actions:")
            for i, item in enumerate(history, start=1):
                explanation = (item.step.explanation or "").strip()
                body = f"{explanation}\n{action_text(item)}" if explanation else action_text(item)
                lines.append(f"step {i}: {body}")
        lines.append("Memory:\n" + latest_memory(history, "[]"))
        prompt = render(load_template("glm41v/pc.txt"), task=task,
                        history_with_memory="\n".join(lines))
        shots = recent_screenshots(history, self.history_images)
        parts = [image(observation.model_image())]
        parts += [image(half_size(shots[i])) for i in sorted(shots)]
        return [message("user", *parts, text(prompt))]

    # -- parsing ------------------------------------------------------------------
    def parse(self, text: str) -> Step:
        return parse_answer(text, self.platform, self.grid_max)

    def supported_actions(self) -> set[str]:
        return set(SUPPORTED_ACTIONS[self.platform])

    def shows_unexecuted(self) -> bool:
        return self.platform == "web"  # its history lists Thought, Action, Observation

    def generation_defaults(self) -> dict[str, Any]:
        return dict(GUI_AGENT_SAMPLING)


__all__ = ["GLM41VDialect", "GUI_AGENT_SAMPLING", "COORDINATES", "ANDROID_WORLD_APPS"]
