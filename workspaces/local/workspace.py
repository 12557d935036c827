"""The local workspace: everything on this machine, under one state directory, no cloud.

    <root>/mlflow.db, mlartifacts/     MLflow tracking + model registry (sqlite)       registry.py
    <root>/foundation/<name>/          the foundation model, built once                  registry.py, model.py
    <root>/data/<fingerprint>/         uploaded training files                           here
    <root>/jobs/<job>/                 a trainer process's spec, status, log, outputs    jobs.py, trainer.py
    <root>/endpoints/<name>/           an endpoint server's state, secrets and log       endpoints.py, server.py

`LocalWorkspace` is the bundle of those roles (the Workspace port, workspaces/ports/).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from workspaces.local.compute import LocalCompute
from workspaces.local.endpoints import EndpointServers
from workspaces.local.jobs import TrainerJobs
from workspaces.local.registry import MlflowRegistry
from workspaces.local.settings import EndpointLimits
from workspaces.ports import DataRef, Inventory, JobRef, ModelVersion, WorkspaceError


class LocalData:
    """Uploaded training files under <root>/data/<fingerprint>/."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def upload(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        target = self.root / "data" / fingerprint
        target.mkdir(parents=True, exist_ok=True)
        for source in (train, test):  # atomically: another run's trainer may be reading the same files
            partial = target / f".{source.name}.{os.getpid()}.partial"
            shutil.copyfile(source, partial)
            os.replace(partial, target / source.name)
        return DataRef(train=str(target / train.name), test=str(target / test.name), fingerprint=fingerprint)


class LocalWorkspace:
    kind = "local"

    def __init__(
        self,
        root: Path,
        endpoint_limits: EndpointLimits | None = None,
        mlflow_ui_url: str | None = None,
        assistant_only_loss: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.mlflow_ui_url = mlflow_ui_url.rstrip("/") if mlflow_ui_url else None
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = MlflowRegistry(self.root)
        self.jobs = TrainerJobs(self.root, self.registry, assistant_only_loss)
        self.registry.run_of = self.jobs.mlflow_run_id  # the trained model is an artifact of the trainer's run
        self.compute = LocalCompute()
        self.imports = self.registry  # `tunegate model import` fills the MLflow registry
        self.data = LocalData(self.root)
        self.endpoints = EndpointServers(self.root, self.registry, endpoint_limits or EndpointLimits())

    def links(
        self, job: JobRef | None = None, model: ModelVersion | None = None, endpoint: str | None = None
    ) -> dict[str, str]:
        """The job's folder, and with `workspace.local.mlflow_ui_url` set its MLflow run and model version pages."""
        found: dict[str, str] = {}
        run_id = self.jobs.mlflow_run_id(job) if job is not None else None
        if job is not None and job.url:
            found["job folder"] = job.url
        if self.mlflow_ui_url and run_id:
            experiment = self.registry.experiment_id(run_id)
            found["MLflow run"] = f"{self.mlflow_ui_url}/#/experiments/{experiment}/runs/{run_id}"
        if self.mlflow_ui_url and model is not None:
            found["model version"] = f"{self.mlflow_ui_url}/#/models/{model.name}/versions/{model.version}"
        if endpoint is not None and self.endpoints.running(endpoint):
            found["scoring URL"] = self.endpoints.credentials(endpoint).scoring_uri
        return found

    def inventory(self) -> Inventory:
        """What is here, and what a person must look at; a damaged state file is named among the problems and the
        rest is still listed."""
        running = self.jobs.running()
        endpoints: dict[str, tuple[str, ...]] = {}
        for name in self.endpoints.names():
            try:
                found = self.endpoints.get(name)
            except WorkspaceError:  # damaged: still there (and to be torn down); problems() says which file
                endpoints[name] = ()
                continue
            if found is not None:
                endpoints[name] = found.deployments
        return Inventory(
            endpoints=endpoints,
            endpoints_down=tuple(name for name in endpoints if not self.endpoints.running(name)),
            running_jobs=tuple(name for name, _ in running),
            processes=tuple(self.endpoints.server_pids() + [pid for _, pid in running]),
            endpoints_ended=tuple(name for name in endpoints if self.endpoints.orphaned(name)),
            problems=tuple(self.endpoints.problems() + self.jobs.problems()),
        )
