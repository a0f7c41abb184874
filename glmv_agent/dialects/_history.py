"""Shared prompt-building helpers: template loading/rendering and history formatting.

Templates live in the top-level `prompts/<family>/` (installed as `glmv_agent.prompts`) as
plain text copied from the official docs, with named placeholders written `<<name>>` (a syntax no GLM prompt contains, unlike
`{...}` or `#...#`, which appear literally in them). Rendering is one regex pass, so text
inserted for one placeholder is never re-scanned for another.
"""

from __future__ import annotations

import re
import weakref
from functools import lru_cache
from importlib import resources

from PIL import Image

from ..errors import ConfigError
from ..messages import inert_text
from .base import HistoryItem

_PLACEHOLDER = re.compile(r"<<([a-z_]+)>>")


@lru_cache(maxsize=None)
def load_template(relative_path: str) -> str:
    """The text of `prompts/<relative_path>` (the package `glmv_agent.prompts`), exactly
    as stored."""
    try:
        resource = resources.files("glmv_agent.prompts").joinpath(*relative_path.split("/"))
        return resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"prompt template {relative_path!r} is missing from the glmv_agent package; "
            "reinstall glmv-agent so its prompts/ folder is present"
        ) from exc


def render(template: str, **values: str) -> str:
    """Fill every `<<name>>`; a placeholder without a value is a ConfigError.

    Values (task, history, memory, page elements, URLs: model, page or user text) are
    inserted as `inert_text`, so they cannot smuggle chat-template tokens into the prompt."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise ConfigError(f"prompt template needs values for: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: inert_text(values[m.group(1)]), template)


# id(screenshot) -> its half-size copy, dropped when the screenshot is collected: every
# step's prompt shows the same history screenshots, which are scaled once, not each step.
_HALVES: dict[int, Image.Image] = {}


def half_size(image: Image.Image) -> Image.Image:
    """The image scaled to 50% x 50% (history screenshots of the PC prompts)."""
    half = _HALVES.get(id(image))
    if half is None:
        width, height = image.size
        half = image.resize((max(1, width // 2), max(1, height // 2)), Image.BICUBIC)
        _HALVES[id(image)] = half
        weakref.finalize(image, _HALVES.pop, id(image), None)
    return half


def action_text(item: HistoryItem) -> str:
    """The action as the model wrote it (box markers removed), for the history text."""
    text = item.step.extra.get("action_text")
    return str(text) if text else item.step.action.to_json()


def recent_screenshots(history: list[HistoryItem], limit: int) -> dict[int, Image.Image]:
    """Index -> screenshot for the last `limit` history steps that have one."""
    start = max(0, len(history) - limit)
    return {
        i: item.screenshot for i, item in enumerate(history)
        if i >= start and item.screenshot is not None
    }
