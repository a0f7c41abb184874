"""The agent's own time per step (everything but the model), against a bare loop.

    python benchmarks/bench_agent_overhead.py                 # web and desktop, 5 runs each
    python benchmarks/bench_agent_overhead.py --only web --runs 10

Web: the bundled demo app (`glmv_agent/data/demo`) in headless Chromium with set-of-marks
labels, answered by its recorded GLM-4.1V answers (ReplayBackend, so the model takes no
time). Per step the agent's non-model time (`timings.total - timings.model`) is compared
with a bare playwright loop in the same process and on the same page that does what a
hand-written script needs: a screenshot, the same click or typing at the same place the
agent acted, and `wait_for_load_state()`.

Desktop: a Tk app (tests/support/desktop_app.py) under Xvfb (1280x720), answered by recorded
GLM-4.1V PC clicks on pads whose look does not change (a static screen). The bare loop
is an mss screenshot plus the same pyautogui click; the agent's overhead is its non-model
time minus that.

Both with the trace on (the default: PNGs and JSON on disk) and off. Prints a table and
writes benchmarks/results/bench_agent_overhead_<timestamp>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from glmv_agent.agent import Agent  # noqa: E402
from glmv_agent.backends.replay import ReplayBackend  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _phases(records: list[Any]) -> dict[str, float]:
    """Median seconds of each timed phase over the steps."""
    keys = sorted({k for r in records for k in r.timings})
    return {k: _median([r.timings.get(k, 0.0) for r in records]) for k in keys}


def _non_model(record: Any) -> float:
    return record.timings["total"] - record.timings.get("model", 0.0)


def _summary(agent_steps: dict[str, list[Any]], bare: list[float]) -> dict[str, Any]:
    """Medians per mode (trace on / off) against the bare loop's."""
    bare_median = _median(bare)
    out: dict[str, Any] = {"bare": {"steps": len(bare), "median_s": bare_median}}
    for mode, records in agent_steps.items():
        median = _median([_non_model(r) for r in records])
        out[mode] = {"steps": len(records), "median_non_model_s": median,
                     "ratio_to_bare": median / bare_median,
                     "beyond_bare_s": median - bare_median, "phases": _phases(records)}
    return out


# -- web ------------------------------------------------------------------------------------

def bench_web(runs: int, trace_root: Path) -> dict[str, Any]:
    from glmv_agent.demo import DEMO_TASK, demo_dir, replay_answers, serve_directory
    from glmv_agent.envs.web import WebEnv

    answers = replay_answers("glm-4.1v")
    with serve_directory(demo_dir()) as url:
        start = url + "index.html"
        env = WebEnv.launch(url=start, set_of_marks=True, allowed_domains=["127.0.0.1"])
        try:
            page = env.page
            agent_steps: dict[str, list[Any]] = {"trace": [], "no_trace": []}
            bare: list[float] = []
            for run in range(runs + 1):  # run 0 warms the browser and the caches up
                for mode in ("trace", "no_trace"):
                    page.goto(start)
                    page.wait_for_load_state()
                    agent = Agent(ReplayBackend(answers), env, family="glm-4.1v", max_steps=8,
                                  trace=mode == "trace",
                                  trace_dir=trace_root / f"web-{mode}-{run}")
                    result = agent.run(DEMO_TASK)
                    assert result.status == "answered", result.error
                    if run:
                        agent_steps[mode].extend(result.steps)
                actions = [(r.action or {}, list(r.env_points)) for r in result.steps]
                page.goto(start)
                page.wait_for_load_state()
                times = bare_web_loop(page, actions)
                if run:
                    bare.extend(times)
        finally:
            env.close()
    return _summary(agent_steps, bare)


def bare_web_loop(page: Any, actions: list[tuple[dict[str, Any], list[Any]]]) -> list[float]:
    """What a hand-written playwright script does per step: look, act, wait for the load."""
    times = []
    for action, points in actions:
        t = time.perf_counter()
        page.screenshot(type="png")
        if action.get("type") == "type":
            x, y = points[0]
            page.mouse.click(x, y)
            page.keyboard.type(action["text"])
            if action.get("enter"):
                page.keyboard.press("Enter")
        elif action.get("type") == "click":
            x, y = points[0]
            page.mouse.click(x, y)
        page.wait_for_load_state()
        times.append(time.perf_counter() - t)
    return times


# -- desktop --------------------------------------------------------------------------------

def desktop_answers(app: Any, steps: int) -> list[str]:
    """GLM-4.1V PC clicks (0-1000 grid) on the app's pads, round robin, then DONE()."""
    width, height = app.screen
    answers = []
    pads = ["pad_a", "pad_c", "pad_b"]
    for i in range(steps):
        px, py = app.centre_pixel(pads[i % len(pads)])
        x, y = round(px / width * 1000), round(py / height * 1000)
        answers.append(f"<think>Click the pad.</think><answer>Click it.\n"
                       f"left_click(start_box='[{x},{y}]', element_info='pad')\nMemory: []</answer>")
    answers.append("<think>Done.</think><answer>Done.\nDONE()\nMemory: []</answer>")
    return answers


def bench_desktop(runs: int, trace_root: Path, steps: int = 6) -> dict[str, Any]:
    from glmv_agent.envs._xvfb import VirtualDisplay
    from glmv_agent.envs.desktop import DesktopEnv
    from xvfb import TkApp

    with VirtualDisplay(1280, 720) as display:
        app = TkApp(display.name)
        try:
            env = DesktopEnv(display=display.name)
            answers = desktop_answers(app, steps)
            agent_steps: dict[str, list[Any]] = {"trace": [], "no_trace": []}
            bare: list[float] = []
            for run in range(runs + 1):
                for mode in ("trace", "no_trace"):
                    agent = Agent(ReplayBackend(answers), env, family="glm-4.1v",
                                  max_steps=steps + 2, loop_limit=None,
                                  trace=mode == "trace",
                                  trace_dir=trace_root / f"desktop-{mode}-{run}")
                    result = agent.run("click the pads")
                    assert result.status == "success", result.error
                    if run:
                        agent_steps[mode].extend(r for r in result.steps if r.action
                                                 and r.action["type"] == "click")
                points = [r.env_points[0] for r in result.steps if r.env_points]
                times = bare_desktop_loop(env, points)
                if run:
                    bare.extend(times)
        finally:
            app.close()
    return _summary(agent_steps, bare)


def bare_desktop_loop(env: Any, points: list[tuple[float, float]]) -> list[float]:
    """A screenshot with mss and the same pyautogui click, per step."""
    import mss

    gui = env._gui()  # the same configured pyautogui (pause, display) the env clicks with
    times = []
    with (getattr(mss, "MSS", None) or mss.mss)(display=env.display) as sct:
        for x, y in points:
            t = time.perf_counter()
            sct.grab(sct.monitors[1])
            gui.click(x=int(x), y=int(y), interval=0.05)
            times.append(time.perf_counter() - t)
    return times


# -- main -----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("web", "desktop"))
    args = parser.parse_args()
    results: dict[str, Any] = {"runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="glmv-bench-") as tmp:
        if args.only in (None, "web"):
            results["web"] = bench_web(args.runs, Path(tmp))
        if args.only in (None, "desktop"):
            results["desktop"] = bench_desktop(args.runs, Path(tmp))
    for platform in ("web", "desktop"):
        if platform not in results:
            continue
        res = results[platform]
        print(f"{platform}: bare loop median {res['bare']['median_s'] * 1000:.0f} ms/step "
              f"({res['bare']['steps']} steps)")
        for mode in ("trace", "no_trace"):
            r = res[mode]
            extra = (f"{r['ratio_to_bare']:.2f}x bare" if platform == "web"
                     else f"{r['beyond_bare_s'] * 1000:+.0f} ms beyond bare")
            phases = ", ".join(f"{k} {v * 1000:.0f}" for k, v in r["phases"].items())
            print(f"  agent, {mode:8s}: median non-model {r['median_non_model_s'] * 1000:.0f} "
                  f"ms/step, {extra} ({r['steps']} steps); phase medians ms: {phases}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_agent_overhead_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
