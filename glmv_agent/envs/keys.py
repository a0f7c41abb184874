"""Key names: what models write -> canonical names -> pyautogui / xdotool names per OS.

The tables live in `glmv_agent/data/keys.json`; this module only looks names up and
reports unknown ones clearly. Canonical names are pyautogui-like: `enter`, `esc`, `ctrl`,
`alt`, `shift`, `win` (Super / Windows key), `cmd` (macOS Command; `win` elsewhere),
`option`, arrows `up`/`down`/`left`/`right`, `pageup`, `pagedown`, `f1`..`f24`, ... plus any
single printable character (`a`, `7`, `+`).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import ActionError


@lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    text = resources.files("glmv_agent").joinpath("data/keys.json").read_text(encoding="utf-8")
    return json.loads(text)


def _is_char(name: str) -> bool:
    return len(name) == 1 and name.isprintable()


def known_keys() -> list[str]:
    """Canonical named keys (single printable characters are accepted as well)."""
    return sorted(_tables()["pyautogui"]["default"])


def canonical_key(name: str) -> str:
    """The canonical name of a key as a model may write it (`Return`, `PgUp`, `ctrl_l`...).

    Raises `ActionError` for names no table knows, so nothing is pressed by guesswork.
    """
    if _is_char(name):
        lowered = name.lower()
        return _tables()["aliases"].get(lowered, lowered) if not name.isalnum() else lowered
    lowered = name.strip().lower()
    if not lowered and name:
        lowered = name  # " " (space) or "\t"
    lowered = _tables()["aliases"].get(lowered, lowered)
    if _is_char(lowered) or lowered in _tables()["pyautogui"]["default"]:
        return lowered
    raise ActionError(
        f"unknown key name {name!r}; use a single character or one of: {', '.join(known_keys())}"
    )


def pyautogui_key(canonical: str, os_name: str | None = None) -> str:
    """pyautogui's name for a canonical key on `os_name` (a `sys.platform` value)."""
    if _is_char(canonical):
        return canonical
    os_name = os_name or sys.platform
    tables = _tables()["pyautogui"]
    override = tables.get(os_name, {})
    if canonical in override:
        return override[canonical]
    if canonical not in tables["default"]:
        raise ActionError(f"{canonical!r} is not a canonical key name; call canonical_key first")
    return tables["default"][canonical]


def xdotool_key(canonical: str) -> str:
    """xdotool's (X keysym) name for a canonical key."""
    tables = _tables()
    if _is_char(canonical):
        return tables["xdotool_chars"].get(canonical, canonical)
    if canonical not in tables["xdotool"]:
        raise ActionError(f"{canonical!r} is not a canonical key name; call canonical_key first")
    return tables["xdotool"][canonical]


def pyautogui_x11_mistyped() -> frozenset[str]:
    """Characters pyautogui sends wrongly on X11 (e.g. '<' arrives as '>')."""
    return frozenset(_tables()["pyautogui_x11_mistyped"])


def parse_combo(text: str) -> list[str]:
    """Split a combination such as `ctrl+shift+t` or `ctrl++` into canonical key names."""
    raw = text.strip()
    if not raw:
        raise ActionError("empty key combination; write e.g. 'ctrl+c' or 'enter'")
    if raw == "+":
        return ["+"]
    parts = raw.split("+")
    names: list[str] = []
    for index, part in enumerate(parts):
        if part == "":
            # Two '+' in a row (or a trailing '+') mean the '+' key itself.
            if index == len(parts) - 1 and names and names[-1] != "+":
                names.append("+")
            continue
        names.append(canonical_key(part))
    return names
