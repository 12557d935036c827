"""The local workspace: everything on this machine, under one state directory, no cloud.

    <root>/mlflow.db, mlartifacts/     MLflow tracking + model registry (sqlite)       registry.py
    <root>/foundation/<name>/          the foundation model, built once                  registry.py, model.py
    <root>/data/<fingerprint>/         uploaded training files                           here
    <root>/jobs/<job>/                 a trainer process's spec, status, log, outputs    jobs.py, trainer.py
    <root>/endpoints/<name>/           an endpoint server's state, secrets and log       endpoints.py, server.py

`LocalWorkspace` assembles those roles into the Workspace port; each role module does one kind of I/O.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from workspaces import scoring
from workspaces.base import (
    Compute,
    ComputeSpec,
    Credentials,
    DataRef,
    Deployment,
    Endpoint,
    FinetuneSpec,
    FoundationModel,
    Inventory,
    JobRef,
    JobStatus,
    ModelVersion,
    ScoreResult,
    ScoringRequest,
    Sku,
)
from workspaces.local import compute
from workspaces.local.endpoints import EndpointServers
from workspaces.local.jobs import TrainerJobs
from workspaces.local.registry import MlflowRegistry


class LocalWorkspace:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = MlflowRegistry(self.root)
        self.jobs = TrainerJobs(self.root, self.registry)
        self.endpoints = EndpointServers(self.root, self.registry)

    # catalogue and compute
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        return self.registry.get_foundation_model(name, version, label)

    def list_sizes(self) -> list[Sku]:
        return compute.list_sizes()

    def ensure_compute(self, spec: ComputeSpec) -> Compute:
        return compute.ensure_compute(spec)

    # data and jobs
    def upload_data(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        target = self.root / "data" / fingerprint
        target.mkdir(parents=True, exist_ok=True)
        for source in (train, test):
            shutil.copyfile(source, target / source.name)
        return DataRef(train=str(target / train.name), test=str(target / test.name), fingerprint=fingerprint)

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

    # registry
    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        return self.registry.find_model_version(name, job)

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        return self.registry.register_model(job, self.jobs.mlflow_run_id(job), name, tags)

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        return self.registry.tag_model(model, tags)

    def champion(self, name: str) -> ModelVersion | None:
        return self.registry.champion(name)

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        self.registry.set_champion(model, name)

    # serving
    def ensure_endpoint(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        return self.endpoints.ensure(name, description, ephemeral)

    def get_endpoint(self, name: str) -> Endpoint | None:
        return self.endpoints.get(name)

    def create_deployment(
        self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1
    ) -> Deployment:
        return self.endpoints.create_deployment(endpoint, name, model, instance_type, instance_count)

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

    # leak checks
    def inventory(self) -> Inventory:
        running = self.jobs.running()
        endpoints = {name: found.deployments for name in self.endpoints.names() if (found := self.endpoints.get(name))}
        return Inventory(
            endpoints=endpoints,
            running_jobs=tuple(name for name, _ in running),
            processes=tuple(self.endpoints.server_pids() + [pid for _, pid in running]),
        )
