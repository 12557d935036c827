"""The benchmark harness runs end to end on tiny sizes and prints its table (the figures themselves are not
tested: they are measured by `python -m bench` on a quiet machine, never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the benchmarks' harness (subprocesses, a tiny training), not the product's logic


def test_bench_quick_prints_the_sampling_rows_with_their_anchors(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "TUNEGATE_BENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "sample", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    assert table.startswith("| figure | tunegate | anchor | tunegate / anchor | notes |")
    assert "download-dataset.py" in table and "train_sft[0%:5%]" in table and "4x the rows" in table
    assert table.count("\n| ") == 3  # three rows under the header


def test_finetune_bench_runs_both_sides_on_a_tiny_model():
    """bench/finetune_gpu.py on the CPU at a toy size: both sides train, the report has its fields (figures are
    measured on a GPU, never asserted)."""
    import json

    command = [sys.executable, "-m", "bench.finetune_gpu", "--size", "phi3-tiny", "--steps", "2", "--warmup", "1"]
    command += ["--batch", "1", "--seq", "16", "--reps", "1", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{\n") :])
    assert report["tunegate_tokens_per_s"] > 0 and report["bare_tokens_per_s"] > 0 and report["parameters"] > 1e6
    assert report["device"] == "CPU" and report["tunegate_mfu_lora_4n"] is None  # no CPU peak is guessed


def test_bench_quick_prints_the_in_memory_flow_row_beside_a_bare_flow_of_as_many_tasks(tmp_path):
    out = tmp_path / "bench.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "memory", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    [row] = [line for line in out.read_text().splitlines() if line.startswith("| in-memory")]
    tasks = int(row.split("as many tasks (")[1].split(")")[0])
    assert tasks >= 15 and "FAILED" not in row  # the flow's stages, each a task run, counted on the server
