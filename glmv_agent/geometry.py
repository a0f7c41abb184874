"""Coordinate conversions between what the model saw and where an action lands.

Pure functions and one frozen dataclass; no platform library is imported here.

Three coordinate spaces meet in an agent step:

* model space: integers on the family's grid (0-999 or 0-1000), parsed by a dialect;
* normalized space: floats in [0, 1] of the screenshot the model saw (what actions carry);
* environment space: the units the platform's input API takes, e.g. pyautogui's logical
  screen points (HiDPI: physical pixels / scale, plus the monitor's offset), playwright's
  CSS pixels of the viewport (device pixels / devicePixelRatio), or adb's physical pixels.

`ScreenMapping` describes the last step: a screenshot of `width` x `height` pixels whose
pixel (0, 0) sits at `origin` in environment space, one screenshot pixel being `scale`
environment units wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .actions import Point


@dataclass(frozen=True)
class ScreenMapping:
    """How one captured screenshot maps to the environment's input coordinates."""

    width: int
    height: int
    origin_x: float = 0.0
    origin_y: float = 0.0
    scale_x: float = 1.0
    scale_y: float = 1.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"screenshot size must be positive, got {self.width}x{self.height}")
        if not (self.scale_x > 0 and self.scale_y > 0):
            raise ValueError(f"scale must be positive, got ({self.scale_x}, {self.scale_y})")

    def to_pixel(self, point: Point) -> tuple[int, int]:
        """The screenshot pixel a normalized point falls in."""
        return normalized_to_pixel(point.x, point.y, self.width, self.height)

    def to_env(self, point: Point) -> tuple[float, float]:
        """Environment coordinates of the centre of the pixel the point falls in."""
        px, py = self.to_pixel(point)
        return (
            self.origin_x + (px + 0.5) * self.scale_x,
            self.origin_y + (py + 0.5) * self.scale_y,
        )

    @property
    def env_width(self) -> float:
        return self.width * self.scale_x

    @property
    def env_height(self) -> float:
        return self.height * self.scale_y

    def contains_env(self, x: float, y: float) -> bool:
        """Whether environment coordinates fall on this screenshot's area."""
        return (
            self.origin_x <= x < self.origin_x + self.env_width
            and self.origin_y <= y < self.origin_y + self.env_height
        )


def clamp_unit(value: float) -> float:
    """Clamp to [0, 1]; NaN is rejected rather than silently mapped somewhere."""
    if math.isnan(value):
        raise ValueError("coordinate is NaN")
    return min(1.0, max(0.0, value))


def model_to_normalized(value: float, grid_max: int) -> float:
    """A model coordinate on a 0..grid_max grid as a float in [0, 1] (clamped).

    GLM families use `grid_max` 999 or 1000 depending on the prompt; the dialect knows which.
    """
    if grid_max <= 0:
        raise ValueError(f"grid_max must be positive, got {grid_max}")
    return clamp_unit(value / grid_max)


def normalized_to_model(value: float, grid_max: int) -> int:
    """Inverse of `model_to_normalized`, rounded to the nearest grid integer."""
    return int(round(clamp_unit(value) * grid_max))


def normalized_to_pixel(x: float, y: float, width: int, height: int) -> tuple[int, int]:
    """The pixel (column, row) of a `width` x `height` image that a normalized point is in.

    x = 1.0 is the right edge, which belongs to the last column, so results are clamped to
    `width - 1` / `height - 1`: the result is always inside the image.
    """
    px = min(width - 1, int(clamp_unit(x) * width))
    py = min(height - 1, int(clamp_unit(y) * height))
    return px, py


def pixel_to_normalized(px: float, py: float, width: int, height: int) -> Point:
    """Normalized coordinates of the centre of pixel (px, py)."""
    return Point(x=clamp_unit((px + 0.5) / width), y=clamp_unit((py + 0.5) / height))
