"""The contract every environment (desktop, web, phone) implements.

An environment is the single place that touches its platform library. It captures an
`Observation` and executes canonical actions; anything it cannot do is an
`UnsupportedActionError`, never a silent no-op.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from PIL import Image

from ..actions import BaseAction, Point, Target, TypeText
from ..errors import ActionRefusedError, UnsupportedActionError
from ..geometry import ScreenMapping, clamp_unit

Platform = Literal["mobile", "pc", "web"]

# Two screens count as unchanged when no cell of their 64x64 grayscale thumbnails differs
# by more than this (0-255): JPEG-like noise is ignored, but a toggled checkbox is not
# averaged away. Erring towards "changed" only delays loop detection and settling; erring
# the other way would stop a run that was making progress, or act on a moving screen.
SAME_SCREEN_TOLERANCE = 10


def screen_thumbnail(image: Image.Image) -> np.ndarray:
    """A 64x64 grayscale thumbnail, enough to tell whether the screen changed."""
    return np.asarray(image.convert("L").resize((64, 64), Image.Resampling.BOX),
                      dtype=np.int16)


def same_screen(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a - b).max()) <= SAME_SCREEN_TOLERANCE


# How long a frame the settle wait ended on stands in for a fresh screenshot: the next
# observation right after an action (a few ms later, in the agent's loop) reuses it instead
# of grabbing the same still screen again. Anything slower (a fixed `settle_time`, a user
# calling observe() later) grabs anew.
SETTLED_FRAME_MAX_AGE = 0.1


@dataclass
class StillFrame:
    """The frame a settle wait ended on, and when (time.monotonic()) it was grabbed."""

    image: Image.Image
    taken_at: float

    def fresh(self) -> bool:
        return time.monotonic() - self.taken_at <= SETTLED_FRAME_MAX_AGE


def wait_until_still(grab: Callable[[], Image.Image], timeout: float,
                     interval: float = 0.0) -> StillFrame | None:
    """Grab frames (`interval` seconds apart) until two in a row look the same: the last
    of them, or None once `timeout` seconds have passed. What the desktop and phone
    environments do after an action instead of sleeping a fixed time: a still screen costs
    two frames, and the last one can serve as the next observation's screenshot."""
    deadline = time.monotonic() + timeout
    last = screen_thumbnail(grab())
    while True:
        if interval:
            time.sleep(interval)
        image = grab()
        taken_at = time.monotonic()
        frame = screen_thumbnail(image)
        if same_screen(frame, last):
            return StillFrame(image, taken_at)
        if time.monotonic() >= deadline:
            return None
        last = frame


@dataclass
class Element:
    """An interactive element of a web page (set-of-marks), in screenshot pixels."""

    label: int
    tag: str
    text: str
    x1: float
    y1: float
    x2: float
    y2: float
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2


@dataclass
class Observation:
    """What the model sees at one step, plus what is needed to map its answer back.

    `screenshot` is in real captured pixels; `mapping` converts normalized coordinates of
    that image into the environment's input coordinates.
    """

    screenshot: Image.Image
    mapping: ScreenMapping
    platform: Platform
    url: str | None = None
    title: str | None = None
    app: str | None = None
    elements: list[Element] | None = None
    # A ready-made element list for the prompt (hand-built observations, replays). No
    # environment sets it: the dialects write the list from `elements`.
    elements_text: str | None = None
    marked_screenshot: Image.Image | None = None
    # `screenshot` as the PNG the platform delivered, when it did (saved as is, not
    # encoded again); None when the capture was raw pixels.
    screenshot_png: bytes | None = None
    timestamp: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.screenshot.size

    def model_image(self) -> Image.Image:
        """The image to show the model: the marked one in set-of-marks mode."""
        return self.marked_screenshot if self.marked_screenshot is not None else self.screenshot

    # -- geometry: the one place a target is located --------------------------------
    def locate(self, target: Target) -> Point:
        """Where `target` lies on this screenshot, normalized: its point (a box was reduced
        to its centre by `Target`), or the centre of the element with its label.

        Raises ActionRefusedError for a label that is not among this observation's
        elements: the model pointed at something it was not shown.
        """
        if target.point is not None:
            return target.point
        for element in self.elements or []:
            if element.label == target.element:
                cx, cy = element.center
                w, h = self.size
                return Point(x=clamp_unit(cx / w), y=clamp_unit(cy / h))
        labels = [e.label for e in self.elements or []]
        raise ActionRefusedError(
            f"element label [{target.element}] is not on the current screen; "
            f"labels shown: {labels}"
        )

    def pixel(self, target: Target) -> tuple[int, int]:
        """The screenshot pixel `target` falls in."""
        return self.mapping.to_pixel(self.locate(target))

    def env_point(self, target: Target) -> tuple[float, float]:
        """`target` in the environment's input coordinates (what its mouse or tap takes)."""
        return self.mapping.to_env(self.locate(target))

    def target_pixels(self, action: BaseAction) -> list[tuple[int, int]]:
        """Screenshot pixels of the action's targets, for the trace and markers; labels
        not on this screen are skipped (the policy refuses them)."""
        pixels = []
        for target in action.targets():
            try:
                pixels.append(self.pixel(target))
            except ActionRefusedError:
                continue
        return pixels


ActionHandler = Callable[["Environment", BaseAction, Observation], Any]


@dataclass
class ActionOutcome:
    """What executing an action did, for the trace: the action, where it landed, notes."""

    action: BaseAction
    env_points: list[tuple[float, float]] = field(default_factory=list)
    detail: str = ""
    # Seconds of the execution spent waiting for the screen to be ready afterwards (page
    # stable, frames unchanged); the agent records it as the step's "settle" phase.
    settle_s: float = 0.0


class Environment(ABC):
    """Base class: dispatches actions to `_do_<type>` methods or registered handlers."""

    platform: ClassVar[Platform]

    def __init__(self) -> None:
        self._handlers: dict[str, ActionHandler] = {}
        self.last_observation: Observation | None = None

    # -- to implement ---------------------------------------------------------------
    @abstractmethod
    def _capture(self) -> Observation:
        """Take a fresh observation."""

    def close(self) -> None:
        """Release the platform's resources (browser, adb process); idempotent."""

    # -- public API -----------------------------------------------------------------
    def observe(self) -> Observation:
        observation = self._capture()
        self.last_observation = observation
        return observation

    def enable_element_labels(self) -> bool:
        """Make every observation list (and draw) set-of-marks element labels, for a dialect
        whose prompt names elements by label (`Click [3]`).

        True when this environment now does; False when it has no such switch, and then the
        agent checks that each observation carries `elements`. Raises ConfigError when the
        user explicitly turned labels off.
        """
        return False

    def types_into_password(self, action: TypeText, observation: Observation) -> bool:
        """Whether `action` would type into a password field.

        The field that counts is the one typed into: the element under the action's target
        when it has one (typing clicks there first), else the focused field. This default
        only knows the field focused when `observation` was taken
        (`extra["focused_is_password"]`); an environment that can look at its target
        (the web one) overrides it.
        """
        return bool(observation.extra.get("focused_is_password"))

    def supported_actions(self) -> set[str]:
        """Action type names this environment can execute."""
        names = {
            name[len("_do_"):] for name in dir(type(self))
            if name.startswith("_do_") and callable(getattr(type(self), name))
        }
        return names | set(self._handlers)

    def supports(self, action_type: str) -> bool:
        return action_type in self.supported_actions()

    def register_handler(self, action_type: str, handler: ActionHandler) -> None:
        """Run `handler(env, action, observation)` for actions of `action_type`."""
        self._handlers[action_type] = handler

    def execute(self, action: BaseAction, observation: Observation | None = None) -> ActionOutcome:
        """Execute one action, with coordinates relative to `observation` (default: last)."""
        observation = observation or self.last_observation
        if observation is None:
            observation = self.observe()
        handler = self._handlers.get(action.type)
        if handler is not None:
            result = handler(self, action, observation)
            return result if isinstance(result, ActionOutcome) else ActionOutcome(action=action)
        method = getattr(self, f"_do_{action.type}", None)
        if method is None:
            supported = ", ".join(sorted(self.supported_actions()))
            raise UnsupportedActionError(
                f"{type(self).__name__} cannot execute {action.type!r} actions; "
                f"it supports: {supported}"
            )
        return method(action, observation)

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers for subclasses -----------------------------------------------------
    def resolve(self, target: Target, observation: Observation) -> tuple[float, float]:
        """Environment coordinates of a target (`Observation.env_point`)."""
        return observation.env_point(target)
