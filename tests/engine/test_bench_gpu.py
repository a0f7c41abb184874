"""benchmarks/bench_gpu.py runs end to end with --tiny on CPU (the GPU run has the same path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT

pytest.importorskip("transformers")

ROWS = ["ours bf16 eager", "transformers bf16", "ours int4 eager", "ours int8 eager"]  # plan order


def test_bench_gpu_tiny_on_cpu_writes_every_row(tmp_path: Path):
    out = tmp_path / "table.md"
    # Compiled rows are left out: compiling takes longer than this test may (tests/engine/test_glm4v_compile.py).
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny",
                           "--device", "cpu", "--tokens", "4", "--runs", "1", "--out", str(out),
                           "--rows", *ROWS], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("device: ")
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in rows] == ROWS
    for row in rows:
        assert row["note"] == "", row
        assert row["ttft_s"] > 0 and row["decode_tok_s"] > 0 and row["prompt_tokens"] > 100
    # Same screenshot and prompt for both engines: the same number of prompt tokens.
    assert len({r["prompt_tokens"] for r in rows}) == 1
    # Quantized weights are smaller than bf16 ones.
    weights = {r["name"]: r["weights_gb"] for r in rows}
    assert weights["ours int4 eager"] < weights["ours int8 eager"] < weights["ours bf16 eager"]
    table = out.read_text()
    assert all(f"| {name} |" in table for name in ROWS)


def test_bench_gpu_without_cuda_says_how_to_run_it():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "--device cpu" in done.stderr
