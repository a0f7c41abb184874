"""Coordinate conversions: HiDPI, multi-monitor offsets, DPR viewports, resizes, edges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glmv_agent.actions import Point
from glmv_agent.geometry import (
    ScreenMapping, desktop_mapping, env_to_normalized, fit_size, model_point_to_env,
    model_to_normalized, normalized_to_model, normalized_to_pixel, phone_mapping,
    pixel_to_normalized, rescale_pixel, resize_mapping, viewport_mapping,
)


@pytest.mark.parametrize("scale", [1.0, 1.25, 1.5, 2.0])
def test_hidpi_centre_and_corners(scale: float) -> None:
    # A 2560x1600 physical capture; pyautogui works in logical points = physical / scale.
    m = desktop_mapping(2560, 1600, scale=scale)
    x, y = m.to_env(Point(x=0.5, y=0.5))
    assert x == pytest.approx((1280 + 0.5) / scale)
    assert y == pytest.approx((800 + 0.5) / scale)
    left, top = m.to_env(Point(x=0.0, y=0.0))
    right, bottom = m.to_env(Point(x=1.0, y=1.0))
    assert left == pytest.approx(0.5 / scale) and top == pytest.approx(0.5 / scale)
    assert right == pytest.approx(2559.5 / scale) and bottom == pytest.approx(1599.5 / scale)
    assert right < 2560 / scale and bottom < 1600 / scale
    assert m.env_width == pytest.approx(2560 / scale)


def test_hidpi_125_exact_values() -> None:
    m = desktop_mapping(1920, 1080, scale=1.25)
    assert m.to_pixel(Point(x=0.25, y=0.75)) == (480, 810)
    assert m.to_env(Point(x=0.25, y=0.75)) == pytest.approx((480.5 / 1.25, 810.5 / 1.25))


def test_negative_monitor_offset() -> None:
    # Secondary 1920x1080 monitor placed left of and above the primary.
    m = desktop_mapping(1920, 1080, monitor_left=-1920, monitor_top=-200)
    x, y = m.to_env(Point(x=0.0, y=0.0))
    assert (x, y) == (-1919.5, -199.5)
    x, y = m.to_env(Point(x=1.0, y=1.0))
    assert (x, y) == (-0.5, 879.5)
    assert m.contains_env(-1, 0) and not m.contains_env(0, 0)
    assert not m.contains_env(-1921, 0)


def test_negative_offset_with_hidpi() -> None:
    m = desktop_mapping(3840, 2160, scale=2.0, monitor_left=-1920, monitor_top=0)
    x, y = m.to_env(Point(x=0.5, y=0.5))
    assert x == pytest.approx(-1920 + 1920.5 / 2)
    assert y == pytest.approx(1080.5 / 2)


def test_viewport_dpr2_with_scroll() -> None:
    # 1280x720 CSS viewport at DPR 2 -> a 2560x1440 screenshot.
    m = viewport_mapping(2560, 1440, device_pixel_ratio=2.0, scroll_x=0, scroll_y=3000)
    assert m.to_env(Point(x=0.5, y=0.5)) == (640.25, 360.25)
    page = viewport_mapping(2560, 1440, device_pixel_ratio=2.0, scroll_y=3000,
                            page_coordinates=True)
    assert page.to_env(Point(x=0.5, y=0.5)) == (640.25, 3360.25)
    assert page.env_width == 1280 and page.env_height == 720


def test_phone_mapping_is_identity_on_pixel_centres() -> None:
    m = phone_mapping(1080, 2400)
    assert m.to_env(Point(x=0.5, y=0.5)) == (540.5, 1200.5)
    assert m.to_pixel(Point(x=1.0, y=1.0)) == (1079, 2399)


def test_resize_between_capture_and_model_image() -> None:
    capture = desktop_mapping(2560, 1440, scale=2.0)
    small = resize_mapping(capture, 1280, 720)
    # Same screen area, so the same normalized point lands at (nearly) the same place.
    for p in (Point(x=0.1, y=0.9), Point(x=0.5, y=0.5), Point(x=0.999, y=0.001)):
        a = capture.to_env(p)
        b = small.to_env(p)
        assert abs(a[0] - b[0]) <= small.scale_x and abs(a[1] - b[1]) <= small.scale_y
    assert rescale_pixel(0, 0, (1280, 720), (2560, 1440)) == (1, 1)
    assert rescale_pixel(1279, 719, (1280, 720), (2560, 1440)) == (2559, 1439)
    assert rescale_pixel(2559, 1439, (2560, 1440), (1280, 720)) == (1279, 719)
    assert rescale_pixel(5000, -5, (100, 100), (10, 10)) == (9, 0)
    with pytest.raises(ValueError):
        rescale_pixel(0, 0, (0, 10), (10, 10))


def test_fit_size() -> None:
    assert fit_size(3840, 2160, 1920) == (1920, 1080)
    assert fit_size(1080, 2400, 1200) == (540, 1200)
    assert fit_size(800, 600, 1920) == (800, 600)
    with pytest.raises(ValueError):
        fit_size(0, 10, 10)


@pytest.mark.parametrize("grid", [999, 1000])
def test_grid_edges(grid: int) -> None:
    m = ScreenMapping(width=1920, height=1080)
    assert model_point_to_env(m, 0, 0, grid) == (0.5, 0.5)
    assert model_point_to_env(m, grid, grid, grid) == (1919.5, 1079.5)
    assert model_to_normalized(grid, grid) == 1.0
    assert model_to_normalized(grid + 50, grid) == 1.0  # clamped, never off-screen
    assert model_to_normalized(-3, grid) == 0.0
    assert normalized_to_model(model_to_normalized(500, grid), grid) == 500
    # 999 on a 1000 grid is just inside the right edge.
    assert normalized_to_pixel(999 / 1000, 0, 1000, 10) == (999, 0)


def test_grid_max_must_be_positive_and_nan_rejected() -> None:
    with pytest.raises(ValueError):
        model_to_normalized(5, 0)
    with pytest.raises(ValueError):
        model_to_normalized(float("nan"), 1000)


def test_env_to_normalized_round_trip_and_outside() -> None:
    m = desktop_mapping(2880, 1800, scale=1.5, monitor_left=-1920, monitor_top=-100)
    p = Point(x=0.3, y=0.7)
    x, y = m.to_env(p)
    back = env_to_normalized(m, x, y)
    assert m.to_pixel(back) == m.to_pixel(p)
    with pytest.raises(ValueError, match="outside"):
        env_to_normalized(m, 10, 10)


def test_invalid_mappings() -> None:
    with pytest.raises(ValueError):
        ScreenMapping(width=0, height=10)
    with pytest.raises(ValueError):
        desktop_mapping(10, 10, scale=0)
    with pytest.raises(ValueError):
        viewport_mapping(10, 10, device_pixel_ratio=-1)


@given(
    x=st.floats(0, 1), y=st.floats(0, 1),
    w=st.integers(1, 8000), h=st.integers(1, 8000),
    scale=st.sampled_from([1.0, 1.25, 1.5, 1.75, 2.0, 3.0]),
    left=st.integers(-8000, 8000), top=st.integers(-8000, 8000),
)
def test_every_point_maps_inside_the_screen(x, y, w, h, scale, left, top) -> None:
    m = desktop_mapping(w, h, scale=scale, monitor_left=left, monitor_top=top)
    ex, ey = m.to_env(Point(x=x, y=y))
    assert m.contains_env(ex, ey)
    px, py = m.to_pixel(Point(x=x, y=y))
    assert 0 <= px < w and 0 <= py < h


@given(mx=st.integers(-100, 1100), my=st.integers(-100, 1100),
       grid=st.sampled_from([999, 1000]), w=st.integers(1, 4000), h=st.integers(1, 4000))
def test_every_model_coordinate_maps_inside(mx, my, grid, w, h) -> None:
    m = viewport_mapping(w, h, device_pixel_ratio=2.0)
    ex, ey = model_point_to_env(m, mx, my, grid)
    assert 0 <= ex < w / 2 and 0 <= ey < h / 2


@given(px=st.integers(0, 3999), py=st.integers(0, 3999))
def test_pixel_round_trip(px, py) -> None:
    p = pixel_to_normalized(px, py, 4000, 4000)
    assert normalized_to_pixel(p.x, p.y, 4000, 4000) == (px, py)


# -- an observation locates targets: the one geometry step -------------------------------


def test_observation_locates_points_boxes_and_labels() -> None:
    from PIL import Image

    from glmv_agent.actions import Box, Click, Drag, Target
    from glmv_agent.envs.base import Element, Observation
    from glmv_agent.errors import ActionRefusedError
    from glmv_agent.geometry import viewport_mapping

    # A 200x100 device-pixel screenshot of a DPR-2 viewport: environment units are halves.
    obs = Observation(screenshot=Image.new("RGB", (200, 100)), platform="web",
                      mapping=viewport_mapping(200, 100, device_pixel_ratio=2.0),
                      elements=[Element(3, "button", "Go", 40, 20, 60, 40)])
    label, point = Target.of_element(3), Target.at(0.5, 0.5)
    box = Target(box=Box(x1=0.0, y1=0.0, x2=0.2, y2=0.4))
    assert obs.locate(label) == Point(x=0.25, y=0.3)  # the element's centre (50, 30)
    assert obs.pixel(label) == (50, 30) and obs.env_point(label) == (25.25, 15.25)
    assert obs.pixel(point) == (100, 50) and obs.env_point(point) == (50.25, 25.25)
    assert obs.pixel(box) == (20, 20)  # a box counts by its centre
    with pytest.raises(ActionRefusedError, match=r"label \[9\] is not on the current screen"):
        obs.env_point(Target.of_element(9))
    # For the trace: every target's pixel, labels not shown skipped.
    drag = Drag(start=label, end=Target.of_element(9))
    assert obs.target_pixels(drag) == [(50, 30)]
    assert obs.target_pixels(Click(target=point)) == [(100, 50)]
