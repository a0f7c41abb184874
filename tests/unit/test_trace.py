"""Traces: crash safety under SIGKILL, reading back, resume and replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glmv_agent.agent import Agent
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.errors import ConfigError
from glmv_agent.trace import RunInfo, StepRecord, TraceReader, TraceWriter

from scripted_env import FormEnv, JsonDialect, answer, click
import paths

DONE = answer({"type": "done"})

CHILD = textwrap.dedent('''
    import sys, threading
    from glmv_agent.agent import Agent
    from glmv_agent.backends.base import Backend
    from scripted_env import FormEnv, JsonDialect, click

    class Scripted(Backend):
        """Answers twice (the first after one bad try), then hangs like a stuck server."""
        def __init__(self):
            self.answers = ["garbage", click("plus"), click("plus")]
        def complete(self, messages, **params):
            if self.answers:
                return self.answers.pop(0)
            print("waiting", flush=True)
            threading.Event().wait()

    agent = Agent(Scripted(), FormEnv(), dialect=JsonDialect("pc"), settle_time=0,
                  trace_dir=sys.argv[1], secrets={"pin": "4711"})
    agent.run("press plus three times, pin 4711")
''')


def run_and_kill(trace_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.SUPPORT), str(paths.ROOT)])}
    proc = subprocess.Popen([sys.executable, str(script), str(trace_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "waiting", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_run_loses_nothing_done(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    run_and_kill(trace, tmp_path)
    reader = TraceReader(trace)
    info = reader.info
    assert info.status == "running" and info.ended_at is None and info.steps == 2
    assert info.task == "press plus three times, pin ***"
    records = reader.records()
    assert [r.index for r in records] == [1, 2]
    assert [r.outcome for r in records] == ["executed", "executed"]
    assert records[0].attempts[0].response == "garbage" and records[0].retries == 1
    assert records[0].screenshot == "step-0001.png" and reader.screenshot(records[0]) is not None
    assert records[0].prompt[1]["images"] == ["step-0001.png"]
    assert records[0].parsed_step().action.type == "click"
    assert reader.responses() == ["garbage", click("plus"), click("plus")]
    # Screenshots are written in the background, each under a temporary name first: the
    # one of the step in progress may be missing, but no PNG is ever half-written.
    from PIL import Image

    for png in trace.glob("step-*.png"):
        with Image.open(png) as img:
            img.load()

    # Resume in a fresh agent: history rebuilt, numbering continues, same directory.
    env = FormEnv()
    agent = Agent(ReplayBackend([click("plus"), DONE]), env, dialect=JsonDialect("pc"),
                  settle_time=0, secrets={"pin": "4711"})
    result = agent.resume_run(trace)
    assert result.status == "success" and [r.index for r in result.steps] == [1, 2, 3, 4]
    assert len(agent.history) == 3
    first_prompt = agent.backend.messages[0][1]["content"][-1]["text"]
    assert first_prompt.count('"type": "click"') == 2
    assert TraceReader(trace).info.status == "success"
    assert len(TraceReader(trace).records()) == 4
    for path in trace.iterdir():
        if path.suffix != ".png":
            assert b"4711" not in path.read_bytes()


def test_torn_last_line_is_skipped_corrupt_middle_is_an_error(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path)
    writer.start(RunInfo(task="t"))
    writer.record(StepRecord(index=1, outcome="executed"))
    writer.record(StepRecord(index=2, outcome="executed"))
    with open(tmp_path / "steps.jsonl", "a") as fh:
        fh.write('{"index": 3, "outc')  # the write a crash interrupted
    assert [r.index for r in TraceReader(tmp_path).records()] == [1, 2]
    lines = (tmp_path / "steps.jsonl").read_text().splitlines()
    (tmp_path / "steps.jsonl").write_text("\n".join([lines[0], "{broken", lines[1]]) + "\n")
    with pytest.raises(ConfigError, match="line 2"):
        TraceReader(tmp_path).records()


def test_resume_after_a_torn_last_line_quarantines_it(tmp_path: Path) -> None:
    """kill -9 during a step write leaves a cut-off last line (here cut inside a UTF-8
    character); resuming must not append onto it, and keeps its bytes in a side file."""
    from glmv_agent.report import render_report

    trace = tmp_path / "trace"
    run_and_kill(trace, tmp_path)
    line = StepRecord(index=3, outcome="executed", detail="按下加号").model_dump_json()
    torn = line.encode("utf-8")[: line.encode("utf-8").index("加".encode("utf-8")) + 1]
    with open(trace / "steps.jsonl", "ab") as fh:
        fh.write(torn)
    assert [r.index for r in TraceReader(trace).records()] == [1, 2]

    agent = Agent(ReplayBackend([click("plus"), DONE]), FormEnv(), dialect=JsonDialect("pc"),
                  settle_time=0, secrets={"pin": "4711"})
    assert agent.resume_run(trace).status == "success"
    reader = TraceReader(trace)
    assert [r.index for r in reader.records()] == [1, 2, 3, 4] and reader.torn_line is None
    assert (trace / "steps.jsonl.torn-1").read_bytes() == torn
    assert render_report(trace).is_file()


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    from glmv_agent.trace import quarantine_torn_tail

    writer = TraceWriter(tmp_path)
    writer.start(RunInfo(task="t"))
    writer.record(StepRecord(index=1, outcome="executed"))
    with open(tmp_path / "steps.jsonl", "a") as fh:
        fh.write(StepRecord(index=2, outcome="executed").model_dump_json())  # no newline yet
    assert quarantine_torn_tail(tmp_path) is None
    writer.record(StepRecord(index=3, outcome="executed"))
    assert [r.index for r in TraceReader(tmp_path).records()] == [1, 2, 3]
    assert quarantine_torn_tail(tmp_path) is None  # a clean file is left alone


def test_background_writer_keeps_order_and_reports_a_failed_write(tmp_path: Path) -> None:
    from PIL import Image

    writer = TraceWriter(tmp_path / "t", background=True)
    writer.start(RunInfo(task="t"))
    for index in (1, 2, 3):
        writer.save_screenshot(Image.new("RGB", (64, 48), (index, 0, 0)), f"step-{index}.png")
        writer.record(StepRecord(index=index, screenshot=f"step-{index}.png"))
    writer.wait_for_steps()  # every step line is on disk, and so the screenshots before it
    reader = TraceReader(tmp_path / "t")
    assert [r.index for r in reader.records()] == [1, 2, 3]
    assert reader.screenshot(reader.records()[2]).getpixel((0, 0)) == (3, 0, 0)
    writer.finish("success", None, 3)
    assert TraceReader(tmp_path / "t").info.status == "success"

    broken = TraceWriter(tmp_path / "gone", background=True)
    broken.start(RunInfo(task="t"))
    broken.flush()
    (tmp_path / "gone" / "run.json").unlink()
    (tmp_path / "gone").rmdir()  # e.g. the disk was unmounted
    broken.record(StepRecord(index=1))
    with pytest.raises(ConfigError, match="cannot write the trace"):
        broken.flush()


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a trace directory"):
        TraceReader(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        TraceReader(tmp_path).info


def test_writer_masks_and_finishes(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path, mask=lambda o: json.loads(json.dumps(o).replace("s3cr3t",
                                                                                  "***")))
    writer.start(RunInfo(task="use s3cr3t"))
    writer.record(StepRecord(index=1, detail="typed s3cr3t", response="s3cr3t"))
    writer.finish("success", "s3cr3t", 1)
    reader = TraceReader(tmp_path)
    assert reader.info.status == "success" and reader.info.answer == "***"
    assert reader.records()[0].detail == "typed ***"
    assert not (tmp_path / "run.json.tmp").exists()


def test_replay_backend_reproduces_a_run(tmp_path: Path) -> None:
    env = FormEnv()
    original = Agent(ReplayBackend(["bad", click("plus"), click("name"), DONE]), env,
                     dialect=JsonDialect("pc"), settle_time=0, trace_dir=tmp_path / "a")
    first = original.run("press plus then focus name")
    replay = ReplayBackend.from_trace(tmp_path / "a")
    assert replay.responses == ["bad", click("plus"), click("name"), DONE]
    env2 = FormEnv()
    second = Agent(replay, env2, dialect=JsonDialect("pc"), settle_time=0,
                   trace_dir=tmp_path / "b").run("press plus then focus name")
    assert second.status == first.status == "success"
    assert [r.action for r in second.steps] == [r.action for r in first.steps]
    assert env2.state == env.state
