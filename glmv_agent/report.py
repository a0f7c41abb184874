"""Self-contained HTML report of one run, rendered from its trace directory.

Everything (screenshots included, as data URLs) is inlined into one file, so the report
opens offline in any browser and can be mailed or attached to an issue. On top, a timeline
of the run: one bar per step, split into its phases (observe, model, execute, settle...).
Each step shows its screenshot with the action drawn over it (an SVG layer in screenshot
pixels: click point, box, drag/swipe path, scroll arrow, typed text), a zoomed crop around
the target when the screenshot is too large to read at page width, the element the model
named, the thinking, the raw answer, the parse attempts, the outcome and the timings.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from .trace import STEPS_FILE, RunInfo, StepRecord, TraceReader

_STATUS_CLASS = {
    "success": "good", "answered": "good", "executed": "good", "terminal": "good",
    "dry_run": "info", "take_over": "info", "running": "info", "loop_nudge": "warn",
    "max_steps": "warn", "stopped": "warn", "loop": "warn", "denied": "warn",
}

# Timeline phases in the order they happen within a step: (timings key, label, colour).
# "model_ttft" stands for the part of "model" before decoding: the engine's prefill
# ("model_prefill") when known, else the time to the first streamed text; the rest of
# "model" is drawn as decoding. Time not covered by a phase is "other".
_PHASES = (
    ("observe", "observe", "#8e9aaf"), ("prompt", "prompt", "#b9a7d9"),
    ("model_ttft", "model: first token", "#1f3a93"), ("model", "model: decode", "#4a7fe0"),
    ("parse", "parse", "#d7a6e8"), ("policy", "policy", "#e0c3a0"),
    ("execute", "action", "#2f9e44"), ("settle", "settle", "#f2b531"),
    ("record", "record", "#868e96"), ("other", "other", "#dee2e6"),
)
# Screenshots wider than this (full screens) also get a zoomed crop around the target:
# at the page's ~750 px they are shrunk too much to read a small button.
ZOOM_MIN_WIDTH = 1000
ZOOM_CROP = (360, 220)  # screenshot pixels around the target, drawn at 2x

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f4f5f7;color:#1d2129}
header{background:#1d2129;color:#fff;padding:18px 28px}
header h1{font-size:18px;margin:0 0 6px}
header .meta{opacity:.85;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:20px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e5e6eb}
.badge.good{background:#d1f2dc;color:#0b6b2f}.badge.bad{background:#fbd9d9;color:#9b1c1c}
.badge.warn{background:#fdeccb;color:#8a5300}.badge.info{background:#dbe9fb;color:#124f9c}
section.step{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);margin:0 0 20px;padding:16px;display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:16px}
section.step h2{grid-column:1/-1;margin:0;font-size:16px}
.shot{position:relative;border:1px solid #ddd}.shotcol{align-self:start;min-width:0}
.shot img{width:100%;display:block}
.shot svg{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f8fa;padding:8px;border-radius:4px;margin:4px 0;font-size:12.5px}
details summary{cursor:pointer;font-weight:600;margin-top:6px}
table.timings{border-collapse:collapse;font-size:12.5px}
table.timings td{padding:1px 10px 1px 0}
.answer{background:#fff;border-left:4px solid #0b6b2f;padding:10px 14px;margin-bottom:20px}
.noshot{color:#86909c;font-style:italic}
.note{background:#fff7e6;border-left:4px solid #d46b08;padding:8px 14px;margin-bottom:12px}
.timeline{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:12px 16px;margin-bottom:20px}
.timeline h2{font-size:15px;margin:0 0 8px}
.tl-row{display:flex;align-items:center;gap:8px;margin:2px 0;font-size:12px;color:inherit;text-decoration:none}
.tl-row .tl-name{width:56px;flex:none}.tl-row .tl-total{width:64px;flex:none;text-align:right;color:#4e5969}
.tl-bar{flex:1;display:flex;height:14px;background:#f4f5f7;border-radius:3px;overflow:hidden}
.tl-bar span{display:block;height:100%}
.tl-legend{font-size:12px;color:#4e5969;margin-top:6px}
.tl-legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;border-radius:2px;vertical-align:-1px}
.tl-sum{font-size:12.5px;color:#4e5969;margin-bottom:6px}
.zoom{margin-top:8px}.zoom img{display:block;max-width:100%;border:1px solid #ddd}
.zoom .cap{font-size:12px;color:#4e5969}
"""


def render_report(trace_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write `report.html` (or `output`) for the trace in `trace_dir`; returns its path."""
    reader = TraceReader(trace_dir)
    info = reader.info
    records = reader.records()
    notes: list[str] = []
    if reader.torn_line is not None:
        notes.append(f"steps.jsonl has an incomplete last line (line {reader.torn_line}, "
                     "cut off when the run was killed); that step is not shown.")
    missing = [r.index for r in records
               if r.screenshot and not (reader.dir / r.screenshot).is_file()]
    if missing:
        notes.append(f"screenshot files are missing for step(s) {missing}.")
    for side in sorted(reader.dir.glob(f"{STEPS_FILE}.torn-*")):
        notes.append(f"{side.name} holds the incomplete record of a step cut off when the run "
                     f"was killed ({side.stat().st_size} bytes); the run was resumed after it.")
    page = render_html(info, records, reader.dir, notes)
    target = Path(output) if output is not None else reader.dir / "report.html"
    target.write_text(page, encoding="utf-8")
    return target


def render_html(info: RunInfo, records: list[StepRecord], trace_dir: Path,
                notes: list[str] | None = None) -> str:
    """The report page; `notes` (what is missing or damaged in the trace) go on top."""
    steps = "\n".join(_render_step(r, trace_dir) for r in records)
    duration = (info.ended_at or time.time()) - info.started_at
    answer = (
        f'<div class="answer"><b>Answer:</b> {_e(info.answer)}</div>' if info.answer else ""
    )
    if info.error:
        answer += f'<div class="note"><b>Error:</b> {_e(info.error)}</div>'
    answer = "".join(f'<div class="note">Note: {_e(n)}</div>' for n in notes or []) + answer
    meta = " · ".join(
        part for part in (
            f"status {_badge(info.status)}",
            f"{len(records)} steps",
            f"{duration:.1f} s",
            f"model {_e(model_label(info.model))}" if model_label(info.model) else "",
            f"{_e(info.family)} / {_e(info.platform)}" if info.family else "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started_at)),
            f"glmv-agent {_e(info.version)}" if info.version else "",
        ) if part
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>glmv-agent: {_e(info.task[:80])}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(info.task)}</h1><div class=\"meta\">{meta}</div></header>"
        f"<main>{answer}{render_timeline(records)}"
        f"{steps or '<p>No steps were recorded.</p>'}</main></body></html>\n"
    )


def model_label(model: str) -> str:
    """The model as recorded (`backend:name`), without a dangling ':' when the backend has
    no model name (replay, local); recorded answers are said to be so."""
    backend, _, name = model.partition(":")
    if backend == "replay" and not name:
        return "replay (recorded answers)"
    return f"{backend}:{name}" if name else backend


def render_timeline(records: list[StepRecord]) -> str:
    """One bar per step, split into its timed phases, all on one time scale."""
    timed = [r for r in records if r.timings.get("total")]
    if not timed:
        return ""
    longest = max(r.timings["total"] for r in timed)
    used: set[str] = set()
    rows: list[str] = []
    for record in timed:
        segments = []
        for key, label, color, seconds in _phase_spans(record.timings):
            used.add(key)
            segments.append(
                f'<span class="ph-{key}" style="width:{100 * seconds / longest:.2f}%;'
                f'background:{color}" title="{_e(label)} {seconds:.3f} s"></span>'
            )
        rows.append(
            f'<a class="tl-row" href="#step-{record.index}"><span class="tl-name">Step '
            f'{record.index}</span><span class="tl-bar">{"".join(segments)}</span>'
            f'<span class="tl-total">{record.timings["total"]:.2f} s</span></a>'
        )
    sums = {key: sum(r.timings.get(key, 0.0) for r in timed) for key in ("total", "model",
                                                                          "execute")}
    summary = (f"{len(timed)} steps, {sums['total']:.1f} s: model {sums['model']:.1f} s, "
               f"actions {sums['execute']:.1f} s, everything else "
               f"{sums['total'] - sums['model'] - sums['execute']:.1f} s")
    legend = "".join(f'<i style="background:{color}"></i>{_e(label)}'
                     for key, label, color in _PHASES if key in used)
    return (f'<section class="timeline"><h2>Timeline</h2><div class="tl-sum">{summary}</div>'
            f'{"".join(rows)}<div class="tl-legend">{legend}</div></section>')


def _phase_spans(timings: dict[str, float]) -> list[tuple[str, str, str, float]]:
    """(key, label, colour, seconds) of each phase of one step, in order; "model" is the
    part after the first token when that is known, "other" what no phase covers."""
    spans = []
    covered = 0.0
    first = timings.get("model_prefill", timings.get("model_ttft"))
    for key, label, color in _PHASES:
        if key == "other":
            seconds = timings.get("total", 0.0) - covered
        elif key == "model_ttft":
            seconds = first or 0.0
            if "model_prefill" in timings:
                label = "model: prefill"
        elif key == "model":
            seconds = timings.get("model", 0.0) - (first or 0.0)
            if first is None:
                label = "model"
        else:
            seconds = timings.get(key, 0.0)
        if seconds > 0.0005:
            spans.append((key, label, color, seconds))
            covered += seconds
    return spans


def _timing_value(key: str, value: float) -> str:
    """Seconds, except the counts among the timings (`model_cached_tokens`)."""
    return f"{int(value)} tokens" if key.endswith("_tokens") else f"{value:.3f} s"


def _element_info(record: StepRecord, action: dict[str, Any]) -> str:
    """What the model said it points at: its element_info, or the labelled web element."""
    parts = []
    if action.get("reason"):
        parts.append(str(action["reason"]))
    listed = dict(re.findall(r"\[(\d+)\]: ([^\t]*?);?(?=\t|$)", record.observation_text or ""))
    for key in ("target", "start", "end"):
        element = (action.get(key) or {}).get("element")
        if element is not None:
            parts.append(f"[{element}] {listed.get(str(element), '(not on the page)')}".strip())
    return "; ".join(parts)


def _render_step(record: StepRecord, trace_dir: Path) -> str:
    action = record.action or {}
    step = record.step or {}
    size = record.observation.get("size") or [0, 0]
    shot = _screenshot_html(record, trace_dir, action, size)
    parts = [
        f"<div><b>Action:</b> {_e(describe_action(action)) if action else '—'}</div>",
    ]
    element = _element_info(record, action)
    if element:
        parts.append(f'<div class="element"><b>Element:</b> {_e(element)}</div>')
    parts.append(f"<div><b>Outcome:</b> {_badge(record.outcome)} {_e(record.detail)}</div>")
    if record.observation.get("url"):
        parts.append(f"<div><b>URL:</b> {_e(record.observation['url'])}</div>")
    if record.observation.get("app"):
        parts.append(f"<div><b>App:</b> {_e(record.observation['app'])}</div>")
    if record.env_points:
        points = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in record.env_points)
        parts.append(f"<div><b>Landed at:</b> {points}</div>")
    if record.sensitive:
        answer = {True: "confirmed", False: "denied", None: "not asked"}[record.confirmed]
        parts.append(f"<div><b>Sensitive:</b> {_e(record.sensitive)} ({answer})</div>")
    if record.error:
        parts.append(f"<div><b>Error:</b> <pre>{_e(record.error)}</pre></div>")
    for key, title in (("thinking", "Thinking"), ("memory", "Memory"),
                       ("explanation", "Explanation")):
        if step.get(key):
            parts.append(f"<details open><summary>{title}</summary><pre>{_e(step[key])}</pre></details>")
    if record.response is not None:
        parts.append(f"<details><summary>Raw answer</summary><pre>{_e(record.response)}</pre></details>")
    for n, attempt in enumerate(record.attempts, 1):
        parts.append(
            f"<details><summary>Rejected answer {n}: {_e(attempt.error[:120])}</summary>"
            f"<pre>{_e(attempt.response)}</pre></details>"
        )
    if record.prompt:
        prompt = "\n\n".join(f"[{m.get('role')}] {m.get('text', '')}" for m in record.prompt)
        parts.append(f"<details><summary>Prompt</summary><pre>{_e(prompt)}</pre></details>")
    if record.timings:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_timing_value(k, v)}</td></tr>"
                       for k, v in record.timings.items())
        parts.append(f"<details><summary>Timings</summary><table class=\"timings\">{rows}</table></details>")
    return (
        f'<section class="step" id="step-{record.index}" data-step="{record.index}">'
        f"<h2>Step {record.index}</h2>{shot}<div class=\"info\">{''.join(parts)}</div></section>"
    )


def _screenshot_html(record: StepRecord, trace_dir: Path, action: dict[str, Any],
                     size: list[int]) -> str:
    name = record.marked_screenshot or record.screenshot
    path = trace_dir / name if name else None
    if path is None or not path.is_file():
        return '<div class="shot noshot">no screenshot</div>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    width, height = size if size and size[0] else _png_size(path)
    overlay = action_overlay(_with_landed_points(action, record, width, height), width, height)
    zoom = _zoom_html(record, path, width) if width >= ZOOM_MIN_WIDTH else ""
    return (  # the zoom sits below the .shot box, which the SVG layer covers exactly
        f'<div class="shotcol"><div class="shot"><img alt="step {record.index} screenshot" '
        f'src="data:image/png;base64,{data}">'
        f'<svg viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{overlay}</svg>'
        f'</div>{zoom}</div>'
    )


def _zoom_html(record: StepRecord, path: Path, width: int) -> str:
    """The region around the action's first target, at twice its size, marker drawn in."""
    if not record.pixel_points:
        return ""
    from PIL import Image, ImageDraw

    px, py = record.pixel_points[0]
    with Image.open(path) as img:
        shot = img.convert("RGB")
    scale = shot.width / width if width else 1.0  # the file may differ from the logical size
    cx, cy = px * scale, py * scale
    cw, ch = min(ZOOM_CROP[0], shot.width), min(ZOOM_CROP[1], shot.height)
    left = int(min(max(cx - cw / 2, 0), shot.width - cw))
    top = int(min(max(cy - ch / 2, 0), shot.height - ch))
    crop = shot.crop((left, top, left + cw, top + ch)).resize((cw * 2, ch * 2),
                                                               Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(crop)
    x, y = (cx - left) * 2, (cy - top) * 2
    for radius, fill in ((16, None), (3, "#e8362d")):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline="#e8362d",
                     width=3, fill=fill)
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<div class="zoom"><img alt="step {record.index} target, zoomed" '
            f'src="data:image/png;base64,{data}"><div class="cap">around ({px}, {py}), '
            f'{cw}x{ch} px shown at 2x</div></div>')


def _with_landed_points(action: dict[str, Any], record: StepRecord, width: int,
                        height: int) -> dict[str, Any]:
    """Fill targets given as element labels with where they actually landed.

    `env_points` are in environment units; the recorded mapping turns them back into
    normalized screenshot coordinates, so label clicks are drawn where they happened.
    """
    mapping = record.observation.get("mapping") or {}
    landed = list(record.env_points)
    if not landed or not mapping:
        return action
    filled = dict(action)
    for key in ("target", "start", "end"):
        target = action.get(key)
        if not target or not landed:
            continue
        env_x, env_y = landed.pop(0)
        if target.get("point"):
            continue
        x = (env_x - mapping.get("origin_x", 0.0)) / mapping.get("scale_x", 1.0) / width
        y = (env_y - mapping.get("origin_y", 0.0)) / mapping.get("scale_y", 1.0) / height
        filled[key] = {**target, "point": {"x": min(max(x, 0.0), 1.0), "y": min(max(y, 0.0), 1.0)}}
    return filled


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def _target_xy(target: dict[str, Any] | None, width: int, height: int) -> tuple[float, float] | None:
    if not target or not target.get("point"):
        return None
    return target["point"]["x"] * width, target["point"]["y"] * height


def action_overlay(action: dict[str, Any], width: int, height: int) -> str:
    """SVG elements (in screenshot pixels) that draw where an action lands."""
    unit = max(width, height) / 100  # marker size relative to the screenshot
    shapes: list[str] = []
    stroke = f'stroke="#e8362d" stroke-width="{unit * 0.35:.2f}" fill="none"'
    for key in ("target", "start", "end"):
        target = action.get(key)
        box = (target or {}).get("box")
        if box:
            shapes.append(
                f'<rect class="box" x="{box["x1"] * width:.1f}" y="{box["y1"] * height:.1f}" '
                f'width="{(box["x2"] - box["x1"]) * width:.1f}" '
                f'height="{(box["y2"] - box["y1"]) * height:.1f}" {stroke}/>'
            )
    start = _target_xy(action.get("start"), width, height)
    end = _target_xy(action.get("end"), width, height)
    if start and end:
        shapes.append(
            f'<line class="path" x1="{start[0]:.1f}" y1="{start[1]:.1f}" x2="{end[0]:.1f}" '
            f'y2="{end[1]:.1f}" {stroke} stroke-dasharray="{unit:.1f}"/>'
            f'<circle class="point" cx="{start[0]:.1f}" cy="{start[1]:.1f}" r="{unit:.1f}" {stroke}/>'
            f'<circle cx="{end[0]:.1f}" cy="{end[1]:.1f}" r="{unit * 0.5:.1f}" fill="#e8362d"/>'
        )
    point = _target_xy(action.get("target"), width, height)
    if point:
        x, y = point
        shapes.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="{unit * 1.4:.1f}" {stroke}/>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{unit * 0.3:.1f}" fill="#e8362d"/>'
        )
    label = _overlay_label(action)
    if label:
        x, y = point or start or (unit * 2, unit * 4)
        # Above the marker, or below it when that would leave the image.
        label_y = y - unit * 1.8 if y > unit * 4 else y + unit * 4
        shapes.append(
            f'<text class="label" x="{x + unit * 2:.1f}" y="{label_y:.1f}" '
            f'font-size="{unit * 2.2:.1f}" fill="#e8362d" stroke="#fff" '
            f'stroke-width="{unit * 0.5:.1f}" paint-order="stroke">{_e(label)}</text>'
        )
    return "".join(shapes)


def _overlay_label(action: dict[str, Any]) -> str:
    kind = action.get("type", "")
    if kind == "type":
        return f'⌨ "{_shorten(action.get("text", ""))}"'
    if kind == "scroll":
        arrows = {"up": "↑", "down": "↓", "left": "←", "right": "→"}
        return f"scroll {arrows.get(action.get('direction', ''), '')} ×{action.get('amount', '')}"
    if kind == "key":
        return "+".join(action.get("keys", []))
    if kind in ("click", "double_click", "right_click", "middle_click", "long_press", "hover"):
        return kind.replace("_", " ")
    return ""


def describe_action(action: dict[str, Any]) -> str:
    """A one-line human description of an action dict (used by the report and the CLI)."""
    kind = action.get("type", "?")
    details: list[str] = []
    for key in ("target", "start", "end"):
        target = action.get(key)
        if not target:
            continue
        if target.get("element") is not None:
            details.append(f"{key} [{target['element']}]")
        elif target.get("point"):
            details.append(f"{key} ({target['point']['x']:.3f}, {target['point']['y']:.3f})")
    for key in ("text", "keys", "direction", "amount", "url", "name", "seconds", "message",
                "success"):
        if action.get(key) not in (None, "", []):
            value = action[key]
            details.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return f"{kind}({', '.join(details)})"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _badge(status: str) -> str:
    css = _STATUS_CLASS.get(status, "bad")
    return f'<span class="badge {css}">{_e(status)}</span>'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
