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


# -- building mappings for each platform ------------------------------------------------


def desktop_mapping(
    width: int, height: int, *, scale: float = 1.0, monitor_left: float = 0.0,
    monitor_top: float = 0.0,
) -> ScreenMapping:
    """Mapping for a desktop monitor screenshot taken in physical pixels.

    `scale` is the OS scale factor (1.25, 1.5, 2 on HiDPI): input APIs such as pyautogui
    take logical points, so one physical pixel is `1 / scale` logical units.
    `monitor_left`/`monitor_top` is the monitor's origin in the virtual desktop, in logical
    units; it is negative for monitors left of or above the primary one.
    """
    if not scale > 0:
        raise ValueError(f"display scale must be positive, got {scale}")
    return ScreenMapping(
        width=width, height=height, origin_x=monitor_left, origin_y=monitor_top,
        scale_x=1.0 / scale, scale_y=1.0 / scale,
    )


def viewport_mapping(
    width: int, height: int, *, device_pixel_ratio: float = 1.0, scroll_x: float = 0.0,
    scroll_y: float = 0.0, page_coordinates: bool = False,
) -> ScreenMapping:
    """Mapping for a browser viewport screenshot of `width` x `height` device pixels.

    Playwright's mouse takes CSS pixels relative to the viewport, so one screenshot pixel is
    `1 / device_pixel_ratio` CSS pixels. With `page_coordinates=True` the result is in
    document coordinates instead (the viewport's scroll offset added), which is what
    `document.elementFromPoint` does not want but `window.scrollTo` and element boxes do.
    """
    if not device_pixel_ratio > 0:
        raise ValueError(f"devicePixelRatio must be positive, got {device_pixel_ratio}")
    origin_x = scroll_x if page_coordinates else 0.0
    origin_y = scroll_y if page_coordinates else 0.0
    return ScreenMapping(
        width=width, height=height, origin_x=origin_x, origin_y=origin_y,
        scale_x=1.0 / device_pixel_ratio, scale_y=1.0 / device_pixel_ratio,
    )


def phone_mapping(width: int, height: int) -> ScreenMapping:
    """Mapping for an adb screencap: `input tap` takes the same physical pixels."""
    return ScreenMapping(width=width, height=height)


# -- conversions -----------------------------------------------------------------------


def env_to_normalized(mapping: ScreenMapping, x: float, y: float) -> Point:
    """Normalized point of the screenshot pixel under environment coordinates (x, y).

    Raises ValueError when (x, y) is not on the screenshot's area.
    """
    if not mapping.contains_env(x, y):
        raise ValueError(
            f"({x}, {y}) is outside the captured area starting at "
            f"({mapping.origin_x}, {mapping.origin_y}) of size "
            f"{mapping.env_width} x {mapping.env_height}"
        )
    px = min(mapping.width - 1, int((x - mapping.origin_x) / mapping.scale_x))
    py = min(mapping.height - 1, int((y - mapping.origin_y) / mapping.scale_y))
    return pixel_to_normalized(px, py, mapping.width, mapping.height)


def model_point_to_env(
    mapping: ScreenMapping, mx: float, my: float, grid_max: int
) -> tuple[float, float]:
    """Model-grid coordinates straight to environment coordinates (for tools and tests)."""
    point = Point(x=model_to_normalized(mx, grid_max), y=model_to_normalized(my, grid_max))
    return mapping.to_env(point)


def rescale_pixel(
    px: float, py: float, from_size: tuple[int, int], to_size: tuple[int, int]
) -> tuple[int, int]:
    """A pixel of an image resized from `from_size` to `to_size`, e.g. when the model saw a
    downscaled copy of the capture, or the screen changed resolution since the capture.

    Pixel centres are matched, and the result is clamped inside the target image.
    """
    fw, fh = from_size
    tw, th = to_size
    if min(fw, fh, tw, th) <= 0:
        raise ValueError(f"image sizes must be positive, got {from_size} -> {to_size}")
    x = int(math.floor((px + 0.5) * tw / fw))
    y = int(math.floor((py + 0.5) * th / fh))
    return min(tw - 1, max(0, x)), min(th - 1, max(0, y))


def resize_mapping(mapping: ScreenMapping, width: int, height: int) -> ScreenMapping:
    """The same screen area described by an image resized to `width` x `height`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return ScreenMapping(
        width=width, height=height, origin_x=mapping.origin_x, origin_y=mapping.origin_y,
        scale_x=mapping.env_width / width, scale_y=mapping.env_height / height,
    )


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio whose longer side is <= `max_side`.

    Images already small enough are kept as they are (never upscaled).
    """
    if width <= 0 or height <= 0 or max_side <= 0:
        raise ValueError(f"sizes must be positive, got {width}x{height}, max_side={max_side}")
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    ratio = max_side / longest
    return max(1, int(round(width * ratio))), max(1, int(round(height * ratio)))
