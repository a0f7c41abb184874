"""GLM-4.5V and GLM-4.6V: the GUI-agent prompts and answer formats of the GLM-4.5V docs.

The action vocabularies are GLM-4.1V's (same parsers, see `glm41v`); the prompts, image
order and history encoding differ.

Coordinate contract (declared as data in `COORDINATES`):

| platform | action format                              | coordinates                      |
|----------|--------------------------------------------|----------------------------------|
| mobile   | JSON dict `{"action_type": "click", ...}`  | box `[[x1,y1,x2,y2]]`, 0-999     |
| pc       | call `left_click(start_box='[x,y]')`       | point `[x,y]`, 0-999             |
| web      | `Click [3]` set-of-marks label             | element label, no coordinates    |

Messages:

* pc: one user message whose text is split around history screenshots: the head (task +
  action space), then `\\nstep k: Screenshot:` + the step's screenshot at 50% x 50% for
  the last 4 steps ("(Omitted in context.)" for older steps or steps without one) +
  ` Thought: ...\\nAction: ...`, then the tail (memory of the latest step, output format,
  notes) and finally the current screenshot at full size.
* mobile and web: the prompt text, then the current screenshot (this family always puts
  the current screenshot last). Mobile takes `supported_apps` and `additional_notes`
  (default: the notes of the doc's AndroidWorld example). Web fills `{Time}` with the
  current time in Beijing, formatted like the doc's example ("2025-07-26, 10:00 AM"), and
  `{Web}` with the site the run started on (`glm41v.StartSite`), or `website=`.

The web prompt's `\\"` sequences are part of the documented prompt and are kept; the
element list is escaped the same way (`escape_quotes`), as the doc's example shows it
(`[1]: <button> \\"Close\\";`), while GLM-4.1V's example shows plain quotes. Where the
web template (`{TASK}, Please interact`) and its "used in practice" example (`... 7 days.
Please interact`) disagree, we follow the example: the task is followed by a space.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ClassVar

from ..envs.base import Observation, Platform
from ..messages import Message, Part, image, inert_text, message, text
from ._history import action_text, half_size, load_template, recent_screenshots, render
from .base import Dialect, HistoryItem, Step
from .elements import elements_text
from .glm41v import (
    GUI_AGENT_SAMPLING, SUPPORTED_ACTIONS, StartSite, latest_memory, mobile_history, parse_answer,
    web_previous_actions,
)

COORDINATES: dict[str, dict[str, Any]] = {
    "mobile": {"kind": "box", "grid_max": 999, "order": "x1,y1,x2,y2"},
    "pc": {"kind": "point", "grid_max": 999, "order": "x,y"},
    "web": {"kind": "element", "grid_max": 999, "order": None},
}

# The `app_names` list of the doc's mobile section.
ANDROID_WORLD_APPS: tuple[str, ...] = (
    "Google Chrome", "Settings", "YouTube", "Camera", "Audio Recorder", "Clock", "Contacts",
    "Files", "Markor", "Simple SMS Messenger", "Simple Calendar Pro", "Simple Gallery Pro",
    "Simple Draw Pro", "Pro Expense", "Broccoli", "OsmAnd", "Tasks",
    "Open Tracks Sports Tracker", "Joplin", "VLC", "Retro Music",
)

OMITTED = "(Omitted in context.)"
BEIJING = timezone(timedelta(hours=8))  # no daylight saving time in China


def beijing_time(now: datetime | None = None) -> str:
    """'2025-07-26, 10:00 AM' in Beijing time, as in the doc's web example."""
    moment = (now or datetime.now(timezone.utc)).astimezone(BEIJING)
    return moment.strftime("%Y-%m-%d, %I:%M %p")


def escape_quotes(elements: str) -> str:
    """The element list as the 4.5V web example writes it: `[1]: <button> \\"Close\\";`.

    Every double quote of the documented 4.5V web prompt (template and example, element list
    included) is written `\\"`; `elements_text` writes plain quotes (the 4.1V form), so
    they are escaped here.
    """
    return elements.replace('"', '\\"')


class GLM45VDialect(Dialect):
    """GLM-4.5V / GLM-4.6V on AndroidWorld (mobile), OSWorld (pc) and WebVoyager (web)."""

    family: ClassVar[str] = "glm-4.5v"
    aliases: ClassVar[tuple[str, ...]] = ("glm-4.6v",)
    platforms: ClassVar[tuple[Platform, ...]] = ("mobile", "pc", "web")
    grid_max: ClassVar[int] = 999
    coordinates: ClassVar[dict[str, dict[str, Any]]] = COORDINATES
    history_images: ClassVar[int] = 4

    def __init__(
        self,
        platform: Platform,
        *,
        supported_apps: list[str] | tuple[str, ...] = ANDROID_WORLD_APPS,
        additional_notes: str | None = None,
        clock: Callable[[], str] = beijing_time,
        website: str | None = None,
    ) -> None:
        super().__init__(platform)
        self.supported_apps = tuple(supported_apps)
        self.additional_notes = additional_notes
        self.clock = clock
        self.website = StartSite(website)

    # -- prompts ------------------------------------------------------------------
    def build_messages(
        self, task: str, observation: Observation, history: list[HistoryItem]
    ) -> list[Message]:
        if self.platform == "pc":
            return self._pc_messages(task, observation, history)
        if self.platform == "mobile":
            notes = self.additional_notes
            if notes is None:
                notes = load_template("glm45v/mobile_notes.txt")
            prompt = render(load_template("glm45v/mobile.txt"), task=task,
                            supported_apps=", ".join(self.supported_apps) + ".",
                            history=mobile_history(history), additional_notes=notes)
        else:
            prompt = render(load_template("glm45v/web.txt"), task=task,
                            web=self.website(observation, history), time=self.clock(),
                            previous_actions=web_previous_actions(history),
                            memory=latest_memory(history, "{}"),
                            web_text=escape_quotes(elements_text(observation)))
        return [message("user", prompt, image(observation.model_image()))]

    def _pc_messages(
        self, task: str, observation: Observation, history: list[HistoryItem]
    ) -> list[Message]:
        head = render(load_template("glm45v/pc_head.txt"), task=task,
                      action_space=load_template("glm45v/pc_action_space.txt"))
        shots = recent_screenshots(history, self.history_images)
        parts: list[Part] = []
        pending = head
        for i, item in enumerate(history):
            pending += f"\nstep {i + 1}: Screenshot:"
            if i in shots:
                parts += [text(pending), image(half_size(shots[i]))]
                pending = ""
            else:
                pending += OMITTED
            thought = (item.step.explanation or "").strip()
            pending += inert_text(f" Thought: {thought}\nAction: {action_text(item)}")
        pending += render(load_template("glm45v/pc_tail.txt"),
                          memory=latest_memory(history, "[]"))
        parts += [text(pending), image(observation.model_image())]
        return [message("user", *parts)]

    # -- parsing ------------------------------------------------------------------
    def parse(self, text: str) -> Step:
        return parse_answer(text, self.platform, self.grid_max, pc_expected=_PC_EXPECTED)

    def supported_actions(self) -> set[str]:
        return set(SUPPORTED_ACTIONS[self.platform])

    def shows_unexecuted(self) -> bool:
        return self.platform == "web"  # its history lists Thought, Action, Observation

    def generation_defaults(self) -> dict[str, Any]:
        return dict(GUI_AGENT_SAMPLING)  # the 4.5V example calls the model the same way


_PC_EXPECTED = (
    "Plain text explanation with exactly one action call such as "
    "left_click(start_box='[x,y]', element_info=''), right_click(...), middle_click(...), "
    "hover(...), left_double_click(...), left_drag(start_box='[x1,y1]', end_box='[x2,y2]'), "
    "key(keys='ctrl+c'), type(content='text'), scroll(start_box='[x,y]', direction='down', "
    "step=5), WAIT(), DONE() or FAIL(), coordinates on the 0-999 grid, then "
    "'Memory:' and a list of dicts."
)

__all__ = ["GLM45VDialect", "COORDINATES", "ANDROID_WORLD_APPS", "beijing_time"]
