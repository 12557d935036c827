"""The training jobs role: submit a fine-tune, find it again by name, follow it, read what it measured."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from workspaces.ports.data import DataRef
from workspaces.ports.models import ModelVersion
from workspaces.ports.values import Value


def parameter_bool(value: object) -> bool:
    """A fine-tune parameter read as a boolean: True or "true" (any case); the registry tags spell them as strings."""
    return value is True or str(value).strip().lower() == "true"


class FinetuneSpec(Value):
    model_id: str
    compute: str
    gpus_per_node: int
    data: DataRef
    parameters: dict[str, str | int | float | bool]
    display_name: str
    experiment_name: str
    # the live champion: a workspace that can evaluates it on the same test split in the same job and reports
    # `champion_eval_loss`, so the gate compares like with like (Azure's pipeline cannot: it is left out there)
    compare_with: ModelVersion | None = None


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELED)


class JobRef(Value):
    name: str
    idempotency_key: str = ""
    url: str | None = None  # a link for humans (Studio URL, or the job directory)
    reattached: bool = False  # found, not submitted: an earlier run with the same inputs started it
    reused: bool = False  # ... and it had completed already: its model is used, nothing is trained
    # "name:version" of the champion the job re-evaluated on its own test split (its `champion_eval_loss`), as the
    # job recorded it: a job found again compares with that one, whatever is champion now
    evaluated_champion: str | None = None


class JobInfo(Value):
    """One job tunegate submitted, as `tunegate jobs` lists it."""

    name: str
    state: JobState
    display_name: str = ""
    idempotency_key: str = ""
    created: float | None = None  # seconds since the epoch
    url: str | None = None


class JobStatus(Value):
    state: JobState
    message: str = ""


class JobProgress(Value):
    """How far a running job has come, as far as the workspace can tell: every field but `state` may be unknown."""

    state: JobState
    status_text: str = ""  # the service's own word for where the job is ("Preparing", "Running", "training")
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    started: float | None = None  # seconds since the epoch when training began


class LossHistory(Value):
    """Loss per optimizer step of a job's training, and the reference points a reviewer compares it with."""

    train: tuple[tuple[int, float], ...] = ()
    eval: tuple[tuple[int, float], ...] = ()
    base_eval_loss: float | None = None  # the foundation model on the same test split, before training
    champion_eval_loss: float | None = None  # the live champion on the same test split, when the job evaluated it


def per_step(metrics: Iterable[Any]) -> tuple[tuple[int, float], ...]:
    """A metric's history (MLflow Metric entities: step, value, timestamp) as (step, value) in step order; of two
    values logged at one step, the later one (a retried step logs again)."""
    points = {m.step: float(m.value) for m in sorted(metrics, key=lambda m: (m.timestamp, m.step))}
    return tuple(sorted(points.items()))


@runtime_checkable
class TrainingJobs(Protocol):
    def get(self, name: str) -> JobRef | None:
        """The job of that name, or None when there is none."""
        ...

    def submit(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        """Start a new job called `name`; ConflictError when a job of that name exists already."""
        ...

    def status(self, job: JobRef) -> JobStatus:
        """NotFoundError when the job does not exist."""
        ...

    def cancel(self, job: JobRef) -> None:
        """Ask the job to stop; a job that already ended is left as it is."""
        ...

    def metrics(self, job: JobRef) -> dict[str, float]:
        """The job's final metrics; MetricsNotFound while it has logged none."""
        ...

    def list(self) -> list[JobInfo]:
        """Every job tunegate submitted in this workspace (whichever run did), newest first."""
        ...

    def progress(self, job: JobRef) -> JobProgress:
        """Where the job is now (state, step, latest losses); cheap enough to ask at every poll."""
        ...

    def loss_history(self, job: JobRef) -> LossHistory:
        """Train and eval loss per step of the job's training run, with the base's and champion's eval loss."""
        ...

    def attach(self, job: JobRef, filename: str, content: bytes) -> str | None:
        """Store a file (a report, a picture) with the job's tracking run; where it went, or None."""
        ...
