"""Reading an Azure ML job and its run tree: the service's status words as JobState, the finetune step wherever
it sits in the pipeline, errors and times, and MLflow errors as the port's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from workspaces.ports import (
    RETRYABLE_STATUS,
    JobState,
    NotFoundError,
    TransientWorkspaceError,
    WorkspaceError,
)

STATES = {
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "notresponding": JobState.FAILED,
    "canceled": JobState.CANCELED,
    "running": JobState.RUNNING,
    "finalizing": JobState.RUNNING,
    "cancelrequested": JobState.RUNNING,  # not over until Azure says Canceled
}


def job_state(status: Any) -> JobState:
    status = getattr(status, "value", status)  # the SDK gives a JobStatus enum or a string
    return STATES.get(str(status or "").lower(), JobState.QUEUED)


FINETUNE_STEP = re.compile(r"(^|_)finetune$")  # chat_completion_finetune, text_generation_finetune, finetune


def run_name(run: Any) -> str:
    return run.data.tags.get("azureml.nodeid") or run.info.run_name or run.data.tags.get("mlflow.runName", "")


def is_finetune_step(run: Any) -> bool:
    names = {run.info.run_name or "", run.data.tags.get("azureml.nodeid", ""), run.data.tags.get("mlflow.runName", "")}
    return bool(run.data.tags.get("mlflow.parentRunId")) and any(FINETUNE_STEP.search(n.lower()) for n in names)


def status_words(status: Any) -> str:
    return str(getattr(status, "value", status) or "unknown")


def error_text(details: Any) -> str:
    error = getattr(getattr(details, "error", None), "error", None)
    if error is None:
        return "no error recorded on the run; see its logs"
    return f"{error.code or 'Error'}: {error.message}" if error.message else str(error.code)


def created_at(job: Any) -> float | None:
    created = getattr(getattr(job, "creation_context", None), "created_at", None)
    return created.timestamp() if created is not None and hasattr(created, "timestamp") else None


@contextmanager
def mlflow_translated(what: str) -> Iterator[None]:
    """MLflow's errors as the port's: a missing run is NotFoundError, a 429/5xx transient, the rest permanent."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"{what}: {exc.message}") from exc
        code = getattr(exc, "get_http_status_code", lambda: 500)()
        error = TransientWorkspaceError if code in RETRYABLE_STATUS else WorkspaceError
        raise error(f"{what}: {exc.message}") from exc


def failure(ml: Any, name: str, status: str) -> str:
    """Why the job failed, in the service's own words: the error run history records on each failed step (what
    `ml_client.jobs.stream` prints), found by walking the job's run tree; else the job run's own error."""
    runs = ml.jobs._runs_operations  # run history, as jobs.stream reads it; the SDK has no public call
    try:
        failed_steps = failed_leaves(runs, name)
        errors = [(step, error_text(runs.get_run_details(run_id))) for step, run_id in failed_steps]
        if not errors:
            errors = [("job", error_text(runs.get_run_details(name)))]
    except Exception as exc:  # noqa: BLE001 - the failure itself must be reported even if its details are not
        return f"Azure ML job {name} {status} (its error could not be read from run history: {exc})"
    said = "; ".join(f"{step}: {text}" for step, text in errors)
    return f"Azure ML job {name} {status}. {said}"


def failed_leaves(runs: Any, name: str, depth: int = 0) -> list[tuple[str, str]]:
    """(step name, run id) of the deepest failed runs under `name` (pipeline node -> component steps)."""
    found: list[tuple[str, str]] = []
    for child in runs.get_run_children(name):
        if child is None or str(getattr(child.status, "value", child.status)).lower() != "failed":
            continue
        deeper = failed_leaves(runs, child.name, depth + 1) if depth < 3 else []
        found.extend(deeper or [(child.display_name or child.name, child.name)])
    return found
