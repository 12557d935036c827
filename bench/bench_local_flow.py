"""Wall time of the whole local flow, cold (fresh state dir: builds the foundation model) vs warm.

python bench/bench_local_flow.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(state_dir: Path) -> tuple[float, dict]:
    summary = state_dir / "summary.json"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--set",
            f"workspace.state_dir={state_dir}",
            "--summary-json",
            str(summary),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started, json.loads(summary.read_text())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold, first = run(Path(tmp))
        warm, second = run(Path(tmp))
    print(f"{'':10}{'wall s':>8}{'flow s':>8}{'eval_loss':>11}{'base':>8}{'smoke ms':>10}")
    for label, wall, s in (("cold", cold, first), ("warm", warm, second)):
        print(
            f"{label:10}{wall:>8.1f}{s['seconds']:>8.1f}{s['metrics']['eval_loss']:>11.3f}"
            f"{s['metrics']['base_eval_loss']:>8.3f}{s['smoke']['latency_ms']:>10.0f}"
        )
    print(f"warm/cold: {warm / cold:.2f}")


if __name__ == "__main__":
    main()
