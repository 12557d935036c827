"""A workspace assembled from role objects: each adapter builds its `registry`, `jobs` and `endpoints` (one module
per role, one kind of I/O each) and this class turns them into the Workspace port, so that the delegation and the
scoring call are written once for every adapter. An adapter overrides what its roles cannot say alone."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from workspaces import scoring
from workspaces.base import (
    Credentials,
    Deployment,
    Endpoint,
    FinetuneSpec,
    FoundationModel,
    JobInfo,
    JobProgress,
    JobRef,
    JobStatus,
    LossHistory,
    ModelVersion,
    ScoreResult,
    ScoringRequest,
)


class AssembledWorkspace:
    kind: str
    registry: Any  # get_foundation_model, find_model_version, register_model, tag_model, champion, set_champion
    jobs: Any  # get_job, submit, status, cancel, metrics, list
    endpoints: Any  # ensure, get, lock, create_deployment, set_traffic, credentials, delete_deployment, delete

    # catalogue and registry
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        return self.registry.get_foundation_model(name, version, label)

    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        return self.registry.find_model_version(name, job)

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        return self.registry.register_model(job, name, tags)

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        return self.registry.tag_model(model, tags)

    def champion(self, name: str) -> ModelVersion | None:
        return self.registry.champion(name)

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        self.registry.set_champion(model, name)

    # jobs
    def get_job(self, name: str) -> JobRef | None:
        return self.jobs.get_job(name)

    def submit_finetune(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        return self.jobs.submit(spec, name, idempotency_key)

    def job_status(self, job: JobRef) -> JobStatus:
        return self.jobs.status(job)

    def cancel_job(self, job: JobRef) -> None:
        self.jobs.cancel(job)

    def job_metrics(self, job: JobRef) -> dict[str, float]:
        return self.jobs.metrics(job)

    def list_jobs(self) -> list[JobInfo]:
        return self.jobs.list()

    def job_progress(self, job: JobRef) -> JobProgress:
        return self.jobs.progress(job)

    def loss_history(self, job: JobRef) -> LossHistory:
        return self.jobs.loss_history(job)

    def attach_to_job(self, job: JobRef, filename: str, content: bytes) -> str | None:
        return self.jobs.attach(job, filename, content)

    # serving
    def ensure_endpoint(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        return self.endpoints.ensure(name, description, ephemeral)

    def get_endpoint(self, name: str) -> Endpoint | None:
        return self.endpoints.get(name)

    def endpoint_lock(self, name: str) -> AbstractContextManager[None]:
        return self.endpoints.lock(name)

    def create_deployment(
        self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1
    ) -> Deployment:
        return self.endpoints.create_deployment(endpoint, name, model, instance_type, instance_count)

    def get_deployment(self, endpoint: str, name: str) -> Deployment | None:
        return self.endpoints.get_deployment(endpoint, name)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        return self.endpoints.set_traffic(endpoint, traffic)

    def endpoint_credentials(self, endpoint: str) -> Credentials:
        return self.endpoints.credentials(endpoint)

    def invoke(
        self, endpoint: str, request: ScoringRequest, deployment: str | None = None, timeout_s: float = 120
    ) -> ScoreResult:
        return scoring.score(self.endpoints.credentials(endpoint), request, deployment, timeout_s)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        self.endpoints.delete_deployment(endpoint, name)

    def delete_endpoint(self, endpoint: str) -> None:
        self.endpoints.delete(endpoint)
