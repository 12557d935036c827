"""The state directory's layout and the records a run leaves there: one home for every path.

<state_dir>/runs/<flow run id>/data/       train_sft.jsonl, test_sft.jsonl, test_gen.jsonl, FINGERPRINT
<state_dir>/runs/<flow run id>/summary.json
<state_dir>/datasets/                      generated and downloaded datasets (cached)
<state_dir>/evaluations/<hash of model>.json a model's answers to its last evaluation's prompts
<state_dir>/workspace/                     the local workspace
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

SUMMARY = "summary.json"
FINGERPRINT = "FINGERPRINT"


class RunStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def workspace_dir(self) -> Path:
        return self.root / "workspace"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def data_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "data"

    def summary_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / SUMMARY

    def write_summary(self, run_id: str, text: str) -> Path:
        path = self.summary_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def write_report(self, run_id: str, filename: str, content: bytes) -> Path:
        """A file of the run's report (the loss curve) in its directory, written whole or not at all."""
        path = self.run_dir(run_id) / Path(filename).name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(content)
        partial.replace(path)
        return path

    def evaluation_path(self, model: str) -> Path:
        # a hash, not the name: a model name never becomes a path, whatever it holds
        return self.root / "evaluations" / f"{hashlib.sha256(model.encode()).hexdigest()[:24]}.json"

    def write_evaluation(self, model: str, record: dict) -> Path:
        """A model's evaluation answers ("name:version"), written whole or not at all."""
        path = self.evaluation_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({**record, "model": model}))
        partial.replace(path)
        return path

    def read_evaluation(self, model: str) -> dict | None:
        """The record of `model`, or None when there is none or it cannot be read as one (damaged, another's)."""
        try:
            record = json.loads(self.evaluation_path(model).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("model") == model else None

    def rollout_path(self, endpoint: str) -> Path:
        return self.root / "rollouts" / f"{hashlib.sha256(endpoint.encode()).hexdigest()[:24]}.json"

    def write_rollout(self, endpoint: str, record: dict) -> Path:
        """Where the rollout on `endpoint` stands (written whole or not at all): what a later run, `tunegate rollout
        status|abort` and `inventory` read to finish or undo one whose run is gone."""
        path = self.rollout_path(endpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({**record, "endpoint": endpoint}, indent=2))
        partial.replace(path)
        return path

    def read_rollout(self, endpoint: str) -> dict | None:
        """The rollout record of `endpoint`; None when there is none. A file that cannot be read as one is
        {"damaged": why}: said, never trusted."""
        path = self.rollout_path(endpoint)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"damaged": f"{path}: {type(exc).__name__}: {exc}"}
        if not isinstance(record, dict) or record.get("endpoint") != endpoint:
            return {"damaged": f"{path}: not a rollout record of {endpoint}"}
        return record

    def rollouts(self) -> list[dict]:
        """Every readable rollout record (inventory)."""
        found = []
        for path in sorted(self.root.glob("rollouts/*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("endpoint"), str):
                found.append(record)
        return found

    def read_summary(self, run_id: str) -> str | None:
        path = self.summary_path(run_id)
        return path.read_text() if path.exists() else None

    def newest_summary(self, since: float) -> str | None:
        """The newest summary written at or after `since` (a time.time()): the run this process just stopped."""
        found = [p for p in self.root.glob(f"runs/*/{SUMMARY}") if p.stat().st_mtime >= since]
        return max(found, key=lambda p: p.stat().st_mtime).read_text() if found else None


class SampleFiles:
    """A run's sampled split files, written while the sampler reads: each under a hidden partial name until every
    split is done, then renamed into place with FINGERPRINT beside them. A failed sample leaves nothing behind."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.partial: dict[str, Path] = {}

    def writer(self, split: str) -> BinaryIO:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.partial[split] = self.out_dir / f".{split}.jsonl.partial"
        return self.partial[split].open("wb")

    def commit(self, fingerprint: str) -> dict[str, str]:
        """Rename every split file into place and write the fingerprint; returns split -> path."""
        files = {}
        for split, path in self.partial.items():
            files[split] = str(self.out_dir / f"{split}.jsonl")
            os.replace(path, files[split])
        (self.out_dir / FINGERPRINT).write_text(fingerprint + "\n")
        return files

    def discard(self) -> None:
        for path in self.partial.values():
            path.unlink(missing_ok=True)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
