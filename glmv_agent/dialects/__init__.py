"""Model dialects: each family's trained prompt and answer format, one module per family.

    >>> from glmv_agent.dialects import get_dialect, parse
    >>> dialect = get_dialect("glm-4.1v", "pc")
    >>> parse("<answer>left_click(start_box='[500,500]')</answer>").action.type
    'click'

Families: "glm-4.1v" (`glm41v`), "glm-4.5v" / "glm-4.6v" (`glm45v`), "autoglm-phone"
(`autoglm`). Each module's docstring holds its coordinate contract table. A new family is
a `Dialect` subclass passed to `register_dialect`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .autoglm import AutoGLMDialect
from .base import Dialect, HistoryItem, Step
from .glm41v import GLM41VDialect
from .glm45v import GLM45VDialect

_DIALECTS: dict[str, type[Dialect]] = {}
_ALIASES: dict[str, str] = {}


def register_dialect(cls: type[Dialect]) -> type[Dialect]:
    """Make a Dialect subclass available to `get_dialect` under its `family` (and any
    `aliases`); usable as a class decorator. Re-registering a family replaces it."""
    if not (isinstance(cls, type) and issubclass(cls, Dialect)):
        raise ConfigError(f"register_dialect expects a Dialect subclass, got {cls!r}")
    family = getattr(cls, "family", None)
    if not isinstance(family, str) or not family.strip():
        raise ConfigError(f"{cls.__name__} needs a class attribute `family`, e.g. 'my-model'")
    platforms = getattr(cls, "platforms", None)
    if not platforms or not isinstance(getattr(cls, "grid_max", None), int):
        raise ConfigError(f"{cls.__name__} needs class attributes `platforms` and `grid_max`")
    key = family.strip().lower()
    _DIALECTS[key] = cls
    for alias in getattr(cls, "aliases", ()):
        _ALIASES[alias.strip().lower()] = key
    return cls


for _cls in (GLM41VDialect, GLM45VDialect, AutoGLMDialect):
    register_dialect(_cls)



def __getattr__(name: str) -> Any:
    # `FAMILIES` is computed on each access so families added later by
    # `register_dialect` are listed too (a constant would freeze the built-in three).
    if name == "FAMILIES":
        return tuple(_DIALECTS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def canonical_families() -> tuple[str, ...]:
    """Canonical family names registered right now, in registration order."""
    return tuple(_DIALECTS)


def families() -> list[str]:
    """Every accepted family name, aliases included."""
    return sorted({*_DIALECTS, *_ALIASES})


def dialect_class(family: str) -> type[Dialect]:
    if not isinstance(family, str):
        raise ConfigError(f"model family must be a string, got {family!r}")
    key = family.strip().lower()
    key = _ALIASES.get(key, key)
    cls = _DIALECTS.get(key)
    if cls is None:
        raise ConfigError(
            f"unknown model family {family!r}; known families: {', '.join(families())} "
            "(add your own with glmv_agent.dialects.register_dialect)"
        )
    return cls


def uses_element_labels(family: str) -> bool:
    """Whether the family's web prompt points at set-of-marks labels (`Click [3]`), so the
    web environment must draw and list them."""
    coordinates = getattr(dialect_class(family), "coordinates", {}) or {}
    return coordinates.get("web", {}).get("kind") == "element"


def get_dialect(family: str, platform: str, **options: Any) -> Dialect:
    """The dialect of `family` for `platform` ("mobile", "pc" or "web").

    `options` go to the dialect's constructor, e.g. `lang="en"` for autoglm-phone or
    `supported_apps=[...]` for the GLM-V mobile prompts.
    """
    cls = dialect_class(family)
    key = platform.strip().lower() if isinstance(platform, str) else platform
    if key not in cls.platforms:
        raise ConfigError(
            f"{cls.family} has no prompt for platform {platform!r}; "
            f"it supports: {', '.join(cls.platforms)}"
        )
    try:
        return cls(key, **options)
    except TypeError as exc:
        raise ConfigError(f"invalid options for the {cls.family} dialect: {exc}") from exc


def parse(text: str, model: str = "glm-4.1v", platform: str = "pc") -> Step:
    """Parse one raw answer of `model` on `platform` into a Step (or raise ParseError)."""
    return get_dialect(model, platform).parse(text)


__all__ = [
    "AutoGLMDialect", "Dialect", "FAMILIES", "GLM41VDialect", "GLM45VDialect", "HistoryItem",
    "Step", "canonical_families", "dialect_class", "families", "get_dialect", "parse", "register_dialect",
    "uses_element_labels",
]
