"""The HTML report of a real run: header, timeline, element info, zoomed target crops.

The runs are real agent loops (ReplayBackend answers in GLM-4.1V's PC format on FormEnv,
tests/support/scripted_env.py); the rendered page is also opened in a real headless Chromium.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from glmv_agent.agent import Agent
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.report import model_label, render_html, render_report
from glmv_agent.trace import RunInfo, StepRecord, TraceReader

from scripted_env import FormEnv, norm

DONE = "<think>Done.</think><answer>The task is complete.\nDONE()\nMemory: []</answer>"


def click_plus(info: str = "7 button") -> str:
    x, y = (round(v * 1000) for v in norm("plus"))
    return (f"<think>The plus button.</think><answer>Click plus.\n"
            f"left_click(start_box='[{x},{y}]', element_info='{info}')\nMemory: []</answer>")


def full_screen_run(tmp_path: Path) -> Path:
    """Two steps on a 1920x1440 screenshot (FormEnv at 4.8 pixels per unit)."""
    trace = tmp_path / "trace"
    agent = Agent(ReplayBackend([click_plus(), DONE]), FormEnv(scale=4.8), family="glm-4.1v",
                  settle_time=0, trace_dir=trace)
    assert agent.run("press plus").status == "success"
    return trace


def zoom_images(page: str) -> list[Image.Image]:
    found = re.findall(r'<div class="zoom"><img [^>]*src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in found]


def test_header_names_the_model_without_a_dangling_colon(tmp_path: Path) -> None:
    page = render_report(full_screen_run(tmp_path)).read_text("utf-8")
    header = re.search(r"<header>.*?</header>", page, re.S).group(0)
    assert "model replay (recorded answers)" in header
    assert "replay:" not in header
    # Traces written before the fix say "replay:" / "local:": shown without the colon.
    assert model_label("replay:") == "replay (recorded answers)"
    assert model_label("local:") == "local"
    assert model_label("openai:glm-4.5v") == "openai:glm-4.5v"


def test_element_info_is_shown(tmp_path: Path) -> None:
    page = render_report(full_screen_run(tmp_path)).read_text("utf-8")
    assert "<b>Element:</b> 7 button" in page
    # A web step names its set-of-marks label with the element list entry it points at.
    record = StepRecord(index=1, outcome="executed",
                        action={"type": "click", "target": {"element": 2}},
                        observation_text='[0]: <button> "One";\t[2]: <button> "Two";')
    web = render_html(RunInfo(task="t"), [record], tmp_path)
    assert '<b>Element:</b> [2] &lt;button&gt; &quot;Two&quot;</div>' in web


def test_full_screen_shot_gets_a_zoomed_crop_around_the_target(tmp_path: Path) -> None:
    trace = full_screen_run(tmp_path)
    page = render_report(trace).read_text("utf-8")
    (zoom,) = zoom_images(page)  # the click has a target; done has none
    assert zoom.size == (720, 440)  # 360x220 screenshot pixels at 2x
    # The marker is drawn at the target, and the crop shows that part of the screenshot:
    # the plus button's black outline 2x-scaled, not a scaled-down whole screen.
    px, py = TraceReader(trace).records()[0].pixel_points[0]
    with Image.open(trace / "step-0001.png") as shot:
        left = min(max(px - 180, 0), shot.width - 360)
        top = min(max(py - 110, 0), shot.height - 220)
        expected = shot.convert("RGB").crop((left, top, left + 360, top + 220))
    cx, cy = (px - left) * 2, (py - top) * 2
    assert zoom.getpixel((cx, cy))[0] > 200 and zoom.getpixel((cx, cy))[1] < 100  # red dot
    dark = [(x, y) for x in range(0, 360, 4) for y in range(0, 220, 4)
            if sum(expected.getpixel((x, y))) < 100 and abs(x * 2 - cx) > 40]
    assert dark, "the crop region holds part of the button outline"
    assert all(sum(zoom.getpixel((x * 2 + 1, y * 2 + 1))) < 200 for x, y in dark)

    small = tmp_path / "small"
    Agent(ReplayBackend([click_plus(), DONE]), FormEnv(), family="glm-4.1v", settle_time=0,
          trace_dir=small).run("press plus")
    assert zoom_images(render_report(small).read_text("utf-8")) == []  # 400 px: readable


def test_timeline_shows_each_steps_phases(tmp_path: Path) -> None:
    records = [
        StepRecord(index=1, outcome="executed", timings={
            "observe": 0.1, "model_ttft": 1.0, "model": 3.0, "execute": 0.4, "total": 4.0}),
        StepRecord(index=2, outcome="terminal", timings={"observe": 0.1, "model": 2.0,
                                                         "total": 2.2}),
    ]
    page = render_html(RunInfo(task="t"), records, tmp_path)
    timeline = re.search(r'<section class="timeline">.*?</section>', page, re.S).group(0)
    rows = re.findall(r'<a class="tl-row" href="#step-(\d+)">(.*?)</a>', timeline)
    assert [index for index, _ in rows] == ["1", "2"]
    widths = {key: float(w) for key, w in
              re.findall(r'class="ph-(\w+)" style="width:([\d.]+)%', rows[0][1])}
    # One scale for all steps (the longest is 100%); prefill and decode apart when known.
    assert widths == pytest.approx({"observe": 2.5, "model_ttft": 25.0, "model": 50.0,
                                    "execute": 10.0, "other": 12.5})
    assert 'title="model: first token 1.000 s"' in rows[0][1]
    assert 'title="model 2.000 s"' in rows[1][1]  # no first-token time: one model span
    assert "model 5.0 s, actions 0.4 s" in timeline


def test_report_in_a_real_browser(tmp_path: Path) -> None:
    """Opened in Chromium: the action overlay covers exactly its screenshot and the zoom
    image loads below it."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from glmv_agent.envs.web import CHROMIUM_ARGS, default_executable_path

    if default_executable_path() is None:
        pytest.skip("no Chromium binary (set $GLMV_CHROMIUM)")
    report = render_report(full_screen_run(tmp_path))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=default_executable_path(),
                                    args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(report.as_uri())
        boxes = page.evaluate("""() => {
            const step = document.getElementById('step-1');
            const r = (el) => { const b = el.getBoundingClientRect();
                                return [b.left, b.top, b.width, b.height]; };
            const zoom = step.querySelector('.zoom img');
            return {img: r(step.querySelector('.shot img')), svg: r(step.querySelector('.shot svg')),
                    zoom: r(zoom), loaded: zoom.complete && zoom.naturalWidth};
        }""")
        browser.close()
    assert boxes["svg"] == pytest.approx(boxes["img"], abs=0.5)
    assert boxes["loaded"] == 720
    assert boxes["zoom"][1] >= boxes["img"][1] + boxes["img"][3]  # below, not on top
