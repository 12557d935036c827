"""A local job's MLflow run, recorded from the trainer's files by whoever looks at the job once it is over
(workspaces/local/run_record.py): against a real MLflow store, on job folders written by hand (no training)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from workspaces.local.processes import write_json
from workspaces.local.registry import MlflowRegistry
from workspaces.local.run_record import RECORD_FILE, append_metrics, record_run, recorded_run_id


@pytest.fixture
def registry(tmp_path):
    return MlflowRegistry(tmp_path / "workspace")


def job_folder(root: Path, name: str, state: str) -> tuple[Path, dict, dict]:
    job_dir = root / "jobs" / name
    (job_dir / "outputs" / "hf_model").mkdir(parents=True)
    (job_dir / "outputs" / "hf_model" / "config.json").write_text("{}")
    spec = {"job_name": name, "display_name": f"display {name}", "experiment_name": "exp", "parameters": {"lr": 0.5}}
    write_json(job_dir / "spec.json", spec)
    status = {"state": state, "started": time.time() - 60, "ended": time.time(), "device": "CPU, fp32"}
    append_metrics(job_dir, {"base_eval_loss": 3.0}, 0)
    append_metrics(job_dir, {"step_loss": 2.5, "learning_rate": 0.4}, 5)
    with open(job_dir / "metrics.jsonl", "a") as handle:
        handle.write('["edited by hand"]\n')
    append_metrics(job_dir, {"step_loss": 2.0, "eval_loss": 2.2}, 10)
    with open(job_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 15, "timestamp": 1, "metr')  # cut by a kill -9 in the middle of a write
    return job_dir, spec, status


def runs_of(registry: MlflowRegistry, name: str) -> list:
    experiment = registry.client.get_experiment_by_name("exp")
    return registry.client.search_runs([experiment.experiment_id], filter_string=f"tags.`tunegate.job` = '{name}'")


def test_a_completed_job_is_recorded_once_with_its_metrics_params_and_model_folder(registry, tmp_path):
    job_dir, spec, status = job_folder(tmp_path, "done", "completed")
    run_id = record_run(registry, job_dir, spec, status)
    assert record_run(registry, job_dir, spec, status) == run_id == recorded_run_id(job_dir)  # once
    assert [run.info.run_id for run in runs_of(registry, "done")] == [run_id]
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "display done"
    assert run.data.params == {"lr": "0.5", "device": "CPU, fp32"}
    assert registry.metric_history(run_id, "step_loss") == ((5, 2.5), (10, 2.0))  # the cut and edited lines left out
    assert registry.run_metrics(run_id)["base_eval_loss"] == 3.0
    assert abs(run.info.start_time / 1000 - status["started"]) < 1
    artifacts = {item.path for item in registry.client.list_artifacts(run_id, "trained_model")}
    assert "trained_model/MLmodel" in artifacts
    assert (job_dir / "outputs" / "mlflow_model_folder" / "MLmodel").exists()


def test_a_recording_killed_half_way_is_made_again_and_the_half_made_run_deleted(registry, tmp_path):
    job_dir, spec, status = job_folder(tmp_path, "cut", "completed")
    experiment = registry.ensure_experiment("exp")
    half = registry.client.create_run(experiment, tags={"tunegate.job": "cut"}).info.run_id
    write_json(job_dir / RECORD_FILE, {"run_id": half, "finished": False})  # as a kill after create_run leaves it
    assert recorded_run_id(job_dir) is None
    run_id = record_run(registry, job_dir, spec, status)
    assert run_id != half and registry.client.get_run(half).info.lifecycle_stage == "deleted"
    assert [run.info.run_id for run in runs_of(registry, "cut")] == [run_id]


def test_a_damaged_record_file_is_recorded_again_not_read(registry, tmp_path):
    job_dir, spec, status = job_folder(tmp_path, "damaged", "completed")
    (job_dir / RECORD_FILE).write_text("{not json")
    run_id = record_run(registry, job_dir, spec, status)
    assert json.loads((job_dir / RECORD_FILE).read_text()) == {"run_id": run_id, "finished": True}


@pytest.mark.parametrize(("state", "mlflow_status"), [("failed", "FAILED"), ("canceled", "KILLED")])
def test_a_job_that_did_not_complete_is_recorded_with_what_it_logged_and_no_model(
    registry, tmp_path, state, mlflow_status
):
    job_dir, spec, status = job_folder(tmp_path, state, state)
    run_id = record_run(registry, job_dir, spec, status)
    assert registry.client.get_run(run_id).info.status == mlflow_status
    assert registry.metric_history(run_id, "step_loss") == ((5, 2.5), (10, 2.0))
    assert registry.client.list_artifacts(run_id) == []
    assert not (job_dir / "outputs" / "mlflow_model_folder").exists()


def test_a_run_left_by_a_kill_before_the_record_file_named_it_is_deleted_too(registry, tmp_path):
    job_dir, spec, status = job_folder(tmp_path, "unnamed", "completed")
    experiment = registry.ensure_experiment("exp")
    orphan = registry.client.create_run(experiment, tags={"tunegate.job": "unnamed"}).info.run_id  # no mlflow.json
    run_id = record_run(registry, job_dir, spec, status)
    assert registry.client.get_run(orphan).info.lifecycle_stage == "deleted"
    assert [run.info.run_id for run in runs_of(registry, "unnamed")] == [run_id]
