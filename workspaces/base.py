"""The Workspace port: what the flow needs from a place that trains, registers and serves models.

Adapters (local, azure, the in-memory fake in tests/) implement `Workspace`; tasks only talk to this
protocol and these value types. The port offers primitives (find a job by name, find the version a job
registered, create one thing); the policies built on them (re-attach or resubmit, idempotent registration)
live once, in tasks/. Errors are split into transient (worth a retry) and permanent ones, so the tasks'
retry condition can decide without knowing which backend raised. tests/contract/ states what every
adapter must do.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from workspaces.errors import (
    RETRYABLE_STATUS,
    ConflictError,
    InvalidNameError,
    MetricsNotFound,
    NotFoundError,
    TransientWorkspaceError,
    WorkspaceError,
)
from workspaces.scoring import Credentials, ScoreResult, ScoringParameters, ScoringRequest

__all__ = [  # the port's errors and the scoring types are part of it: import them from here
    "RETRYABLE_STATUS",
    "ConflictError",
    "Credentials",
    "InvalidNameError",
    "MetricsNotFound",
    "NotFoundError",
    "ScoreResult",
    "ScoringRequest",
    "TransientWorkspaceError",
    "WorkspaceError",
    "Compute",
    "ComputeSpec",
    "DataRef",
    "Deployment",
    "Endpoint",
    "FinetuneSpec",
    "FoundationModel",
    "Inventory",
    "JobInfo",
    "JobRef",
    "JobState",
    "JobProgress",
    "JobStatus",
    "LossHistory",
    "ModelVersion",
    "Sku",
    "Workspace",
    "parameter_bool",
    "per_step",
]


# ---------------------------------------------------------------- value types


def parameter_bool(value: object) -> bool:
    """A fine-tune parameter read as a boolean: True or "true" (any case); the registry tags spell them as strings."""
    return value is True or str(value).strip().lower() == "true"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class FoundationModel(_Value):
    name: str
    version: str
    id: str  # what the fine-tune job takes as `mlflow_model_path` (an azureml:// id or a local models:/ uri)
    tags: dict[str, str] = Field(default_factory=dict)


class ComputeSpec(_Value):
    name: str
    size: str
    min_instances: int = 0
    max_instances: int = 1
    idle_seconds_before_scaledown: int = 120
    tier: str = "dedicated"


class Compute(_Value):
    name: str
    size: str
    provisioning_state: str


class Sku(_Value):
    name: str
    gpus: int


class DataRef(_Value):
    """Where the sampled files live once the workspace can read them."""

    train: str
    test: str
    fingerprint: str


class ModelVersion(_Value):
    name: str
    version: str
    tags: dict[str, str] = Field(default_factory=dict)


class FinetuneSpec(_Value):
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


class JobRef(_Value):
    name: str
    idempotency_key: str = ""
    url: str | None = None  # a link for humans (Studio URL, or the job directory)
    reattached: bool = False  # found, not submitted: an earlier run with the same inputs started it
    reused: bool = False  # ... and it had completed already: its model is used, nothing is trained
    # "name:version" of the champion the job re-evaluated on its own test split (its `champion_eval_loss`), as the
    # job recorded it: a job found again compares with that one, whatever is champion now
    evaluated_champion: str | None = None


class JobInfo(_Value):
    """One job tunegate submitted, as `tunegate jobs` lists it."""

    name: str
    state: JobState
    display_name: str = ""
    idempotency_key: str = ""
    created: float | None = None  # seconds since the epoch
    url: str | None = None


class JobStatus(_Value):
    state: JobState
    message: str = ""


class JobProgress(_Value):
    """How far a running job has come, as far as the workspace can tell: every field but `state` may be unknown."""

    state: JobState
    status_text: str = ""  # the service's own word for where the job is ("Preparing", "Running", "training")
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    started: float | None = None  # seconds since the epoch when training began


class LossHistory(_Value):
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


class Endpoint(_Value):
    name: str
    traffic: dict[str, int] = Field(default_factory=dict)
    deployments: tuple[str, ...] = ()
    running: bool = True  # False: it exists but nothing answers (local: its server died); ensure_endpoint restarts it


class Deployment(_Value):
    endpoint: str
    name: str
    model: str  # "name:version"
    instance_type: str


class Inventory(_Value):
    """What tunegate created in this workspace and is still there: the leak check looks at this."""

    endpoints: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # endpoint -> deployments
    running_jobs: tuple[str, ...] = ()
    processes: tuple[int, ...] = ()
    endpoints_down: tuple[str, ...] = ()  # exist, but their server is not running
    endpoints_ended: tuple[str, ...] = ()  # ephemeral endpoints of runs that have ended: to delete, never to start
    # for a person to act on: damaged state files, endpoints of runs that ended, live model != champion
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.endpoints and not self.running_jobs and not self.processes


# ---------------------------------------------------------------- the port


@runtime_checkable
class Workspace(Protocol):
    kind: str

    # model catalogue
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel: ...

    # compute
    def ensure_compute(self, spec: ComputeSpec) -> Compute: ...
    def list_sizes(self) -> list[Sku]: ...

    # data and training
    def upload_data(self, train: Path, test: Path, fingerprint: str) -> DataRef: ...

    def get_job(self, name: str) -> JobRef | None:
        """The job of that name, or None when there is none."""

    def submit_finetune(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        """Start a new job called `name`; ConflictError when a job of that name exists already."""

    def job_status(self, job: JobRef) -> JobStatus:
        """NotFoundError when the job does not exist."""

    def cancel_job(self, job: JobRef) -> None:
        """Ask the job to stop; a job that already ended is left as it is."""

    def job_metrics(self, job: JobRef) -> dict[str, float]: ...

    def list_jobs(self) -> list[JobInfo]:
        """Every job tunegate submitted in this workspace (whichever run did), newest first."""

    def job_progress(self, job: JobRef) -> JobProgress:
        """Where the job is now (state, step, latest losses); cheap enough to ask at every poll."""

    def loss_history(self, job: JobRef) -> LossHistory:
        """Train and eval loss per step of the job's training run, with the base's and champion's eval loss."""

    def attach_to_job(self, job: JobRef, filename: str, content: bytes) -> str | None:
        """Store a file (a report, a picture) with the job's tracking run; where it went, or None."""

    def links(
        self, job: JobRef | None = None, model: ModelVersion | None = None, endpoint: str | None = None
    ) -> dict[str, str]:
        """Pages a person can open for these (the job, its tracking run, the model version, the endpoint and its
        scoring URL), label -> URL; only what this workspace can link to. Never a key."""

    # registry
    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        """The version of `name` registered from `job`, or None."""

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        """A new version of `name` from the job's trained model, its number unique and assigned by the registry."""

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion: ...
    def champion(self, name: str) -> ModelVersion | None: ...
    def set_champion(self, model: ModelVersion | None, name: str) -> None: ...

    # serving
    def ensure_endpoint(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        """Create the endpoint when missing. ephemeral: it belongs to this run only (local: its server dies with
        the run's process)."""

    def get_endpoint(self, name: str) -> Endpoint | None: ...

    def endpoint_lock(self, name: str) -> AbstractContextManager[None]:
        """Held while a run changes the endpoint (deploy, smoke, promote or roll back): another run's changes to it
        wait until it is released, so two runs never interleave their promotions."""

    def create_deployment(
        self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1
    ) -> Deployment: ...

    def get_deployment(self, endpoint: str, name: str) -> Deployment | None:
        """The deployment (with the model version it serves), or None when the endpoint or it does not exist."""

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        """Percentages >= 0 that sum to 100 (or all 0) over deployments of the endpoint; deployments left out get 0.
        NotFoundError for a deployment the endpoint does not have, WorkspaceError for bad percentages."""

    def endpoint_credentials(self, endpoint: str) -> Credentials: ...

    def invoke(
        self, endpoint: str, request: ScoringRequest, deployment: str | None = None, timeout_s: float = 120
    ) -> ScoreResult:
        """POST the scoring contract to the endpoint (one deployment when named); never raises for an HTTP answer."""

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """ConflictError while it takes traffic; a deployment that is already gone is not an error."""

    def delete_endpoint(self, endpoint: str) -> None:
        """Delete with all deployments; an endpoint that is already gone is not an error."""

    # leak checks
    def inventory(self) -> Inventory: ...


# ---------------------------------------------------------------- chat flows (Prompt flow), beside the workspace


class ChatBatchRow(_Value):
    question: str
    answer: str | None = None
    error: str | None = None


class ChatBatch(_Value):
    """A batch run of the chat flow over a few prompts: one row per prompt, in order."""

    run: str  # the chat flow runner's name for the run (Prompt flow: `pf run show --name <run>`)
    status: str
    rows: tuple[ChatBatchRow, ...]
    outputs_at: str | None = None  # where the runner keeps the run's inputs, outputs and logs

    @property
    def failures(self) -> list[str]:
        failed = [f"{row.question[:60]!r}: {row.error}" for row in self.rows if row.answer is None]
        if self.status.lower() not in ("completed", "succeeded"):
            failed.insert(0, f"run {self.run} ended {self.status}")
        return failed


@runtime_checkable
class ChatFlows(Protocol):
    """Runs the chat flow (promptflows/chat) against an endpoint: the smoke step's optional batch."""

    def check(self) -> None:
        """WorkspaceError naming what to install or fix when batches cannot run here."""

    def batch(
        self,
        endpoint: str,
        credentials: Credentials,
        deployment: str | None,
        questions: list[str],
        parameters: ScoringParameters,
        workspace_kind: str,
    ) -> ChatBatch: ...
