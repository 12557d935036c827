"""A local job's MLflow run, recorded by the process that watches the job from what its trainer left behind.

The trainer process never imports MLflow: its import (2.8 s), the sqlite store's set-up (1.2 s) and the model
folder's requirement checks (0.6 s) made a 9 s training job 13 s (issue 26). It appends every logged metric to
JOB_DIR/metrics.jsonl and saves the merged HF folder; the first look at the job once it is over (`status`) records
one MLflow run from them: params, every metric at its step, the MLflow model folder as the `trained_model` artifact,
the run's status. JOB_DIR/mlflow.json keeps the run id. A look killed half-way leaves that file saying so: the next
one deletes the half-made run and records it again, so a job never has two runs."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from workspaces.local.processes import read_json_or_empty, write_json

if TYPE_CHECKING:  # the trainer imports this module for append_metrics: nothing of MLflow's at run time
    from workspaces.local.registry import MlflowRegistry

logger = logging.getLogger("tunegate")
METRICS_FILE = "metrics.jsonl"
RECORD_FILE = "mlflow.json"
RUN_STATUS = {"completed": "FINISHED", "failed": "FAILED", "canceled": "KILLED"}
MLFLOW_BATCH = 1000  # MLflow takes at most 1000 metrics and 100 params in one log_batch
PARAMS_BATCH = 100
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value's length


def append_metrics(job_dir: Path, metrics: dict[str, float], step: int) -> None:
    """One line per log call, written whole in one write: a reader never sees half a line unless the trainer was
    killed in the middle of it, and that line is skipped."""
    line = json.dumps({"step": step, "timestamp": int(time.time() * 1000), "metrics": metrics}) + "\n"
    with open(job_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line)


def logged_metrics(job_dir: Path) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) of every metric the trainer logged, in order; lines that are not a metric
    record (cut by a kill, edited by hand) are left out and said in the log."""
    path = job_dir / METRICS_FILE
    if not path.exists():
        return []
    found: list[tuple[str, float, int, int]] = []
    skipped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            step, timestamp = int(record["step"]), int(record["timestamp"])
            found += [(str(key), float(value), timestamp, step) for key, value in record["metrics"].items()]
        except (ValueError, KeyError, TypeError, AttributeError):
            skipped += 1
    if skipped:
        logger.warning("%s: %d lines are not metric records and were left out of the MLflow run", path, skipped)
    return found


def recorded_run_id(job_dir: Path) -> str | None:
    """The job's MLflow run once it is recorded whole; None before (or when mlflow.json is damaged: recorded again)."""
    record = read_json_or_empty(job_dir / RECORD_FILE)
    return record.get("run_id") if record.get("finished") and isinstance(record.get("run_id"), str) else None


def record_run(registry: MlflowRegistry, job_dir: Path, spec: dict[str, Any], status: dict[str, Any]) -> str:
    """The MLflow run of a job that is over (`status["state"]` terminal), recorded now if it is not yet."""
    with FileLock(job_dir / "mlflow.lock", thread_local=False):  # two watchers of one job record it once
        if (run_id := recorded_run_id(job_dir)) is not None:
            return run_id
        client = registry.client
        experiment = registry.ensure_experiment(spec["experiment_name"])
        half_made = read_json_or_empty(job_dir / RECORD_FILE).get("run_id")
        if isinstance(half_made, str):
            _delete_run(client, half_made)
        # a kill -9 between create_run and mlflow.json leaves a run the file does not name: found by its tag (job
        # names are checked names: safe in the filter)
        unnamed = f"tags.`tunegate.job` = '{spec['job_name']}' and attributes.status = 'RUNNING'"
        for found in client.search_runs([experiment], filter_string=unnamed):
            _delete_run(client, found.info.run_id)
        started = status.get("started") or status.get("submitted") or time.time()
        run = client.create_run(
            experiment,
            start_time=int(float(started) * 1000),
            tags={"tunegate.job": spec["job_name"]},
            run_name=spec.get("display_name") or spec["job_name"],
        )
        run_id = run.info.run_id
        write_json(job_dir / RECORD_FILE, {"run_id": run_id, "finished": False})
        _log(client, run_id, spec, status, logged_metrics(job_dir))
        if status["state"] == "completed":
            client.log_artifacts(run_id, str(model_folder(job_dir)), artifact_path="trained_model")
        ended = status.get("ended") or time.time()
        client.set_terminated(run_id, RUN_STATUS.get(status["state"], "FAILED"), end_time=int(float(ended) * 1000))
        write_json(job_dir / RECORD_FILE, {"run_id": run_id, "finished": True})
        return run_id


def model_folder(job_dir: Path) -> Path:
    """outputs/mlflow_model_folder (the pipeline's output of that name) around the trainer's merged HF folder,
    written whole or not at all."""
    from workspaces.local.pyfunc import save_pyfunc

    outputs = job_dir / "outputs"
    folder = outputs / "mlflow_model_folder"
    if (folder / "MLmodel").exists():
        return folder
    partial = outputs / ".mlflow_model_folder.partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_pyfunc(outputs / "hf_model", partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def _log(client: Any, run_id: str, spec: dict, status: dict, metrics: list[tuple[str, float, int, int]]) -> None:
    from mlflow.entities import Metric, Param

    params = {key: str(value)[:PARAM_VALUE_LIMIT] for key, value in spec.get("parameters", {}).items()}
    if status.get("device"):
        params["device"] = str(status["device"])
    items = [Param(key, value) for key, value in params.items()]
    for first in range(0, len(items), PARAMS_BATCH):
        client.log_batch(run_id, params=items[first : first + PARAMS_BATCH])
    entries = [Metric(key, value, timestamp, step) for key, value, timestamp, step in metrics]
    for first in range(0, len(entries), MLFLOW_BATCH):
        client.log_batch(run_id, metrics=entries[first : first + MLFLOW_BATCH])


def _delete_run(client: Any, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_run(run_id)
    except MlflowException as exc:  # already gone: nothing of it to leave behind
        logger.info("half-recorded MLflow run %s: %s", run_id, exc.message)
