"""What every benchmark of bench/ shares: a trained local job to measure against, interleaved repetitions, peak
RSS of a process tree, and the markdown table of medians and ratios."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tasks.compute import validate
from tasks.finetune import build_spec, submit_or_reattach
from tasks.sampling import sample_to_directory
from tasks.settings import DataSettings, FinetuneSettings
from workspaces.local.workspace import LocalWorkspace
from workspaces.ports import ComputeSpec, JobRef


def trained_job(root: Path, data: DataSettings | None = None) -> tuple[LocalWorkspace, JobRef, Path]:
    """A completed local fine-tune with the default profile's data and parameters: (workspace, job, job dir)."""
    workspace = LocalWorkspace(root / "workspace")
    sampled = sample_to_directory(data or DataSettings(), root / "run", root / "cache")
    foundation = workspace.registry.get_foundation_model("tiny-phi3-chat")
    compute = validate(
        workspace.compute.ensure(ComputeSpec(name="local", size="local-cpu")),
        foundation,
        workspace.compute.list_sizes(),
    )
    uploaded = workspace.data.upload(
        Path(sampled.files["train_sft"]), Path(sampled.files["test_sft"]), sampled.fingerprint
    )
    spec = build_spec(foundation, compute, uploaded, FinetuneSettings(), "bench")
    job = submit_or_reattach(workspace.jobs, spec, "bench")
    while not workspace.jobs.status(job).state.terminal:
        time.sleep(0.5)
    return workspace, job, root / "workspace" / "jobs" / job.name


def rss_tree_mib(pid: int) -> float:
    """Resident memory of a process and its children (the sampler's threads share one; a server may fork)."""
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024
            with open(f"/proc/{current}/task/{current}/children") as handle:
                pids += [int(child) for child in handle.read().split()]
        except (OSError, StopIteration):
            continue
    return total


class PeakRss:
    """Samples a process tree's RSS every 10 ms while in the with-block."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_tree_mib(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def interleaved(runs: dict[str, Callable[[], float]], repetitions: int) -> dict[str, list[float]]:
    """Each callable once per round, rounds repeated, the order rotated: drift of a shared machine hits all alike."""
    names = list(runs)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(repetitions):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(runs[name]())
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)
