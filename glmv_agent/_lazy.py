"""Lazy exports for a package `__init__` (PEP 562): a name's module is imported on first use.

    _LAZY = {"WebEnv": ".web"}        # name -> module that defines it (relative to the package)
    __getattr__ = lazy_getattr(__name__, _LAZY)

keeps `import package` light: torch, playwright and pyautogui load only when used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` resolving `names` from their modules, AttributeError otherwise."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module, package), name)

    return __getattr__
