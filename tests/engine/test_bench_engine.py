"""benchmarks/bench_engine.py on a checkpoint of the user's choice (--checkpoint): the accuracy
of the quantized modes, end to end in its worker subprocess (a tiny checkpoint stands in for
the real 9B weights, which are not on this machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from paths import ROOT

BENCH = ROOT / "benchmarks" / "bench_engine.py"


def test_accuracy_only_on_a_given_checkpoint_reports_every_position(tiny_checkpoint_bf16: Path,
                                                                     tmp_path: Path):
    done = subprocess.run([sys.executable, str(BENCH), "--checkpoint", str(tiny_checkpoint_bf16),
                           "--quantize", "int8", "--accuracy-only", "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| int8 |" in done.stdout and "| dtype | metric |" not in done.stdout  # no timing rows
    (report,) = tmp_path.glob("bench_engine_*.json")
    results = json.loads(report.read_text())
    assert results["settings"]["checkpoint"] == str(tiny_checkpoint_bf16)
    accuracy = results["accuracy"]
    assert accuracy["positions"] > 100  # the 1280x720 screenshot's image tokens and the text
    assert 0 < accuracy["int8"]["relative_logit_error"] < 0.2
    assert 0 <= accuracy["int8"]["top1_agreement"] <= 1


def test_bad_options_are_refused_with_what_to_pass(tmp_path: Path):
    missing = subprocess.run([sys.executable, str(BENCH), "--checkpoint", str(tmp_path)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and "no config.json there" in missing.stderr
    unquantized = subprocess.run([sys.executable, str(BENCH), "--accuracy-only"],
                                 capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert unquantized.returncode == 2 and "--quantize int8 int4" in unquantized.stderr
