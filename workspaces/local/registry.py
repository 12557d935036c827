"""The local model catalogue and registry: MLflow (sqlite) under the state directory.

The foundation model is built once on first use and registered with the same string tags an azureml registry
model carries; fine-tuned versions carry lineage tags; the champion is the registered model's `champion` alias
(aliases replace MLflow's deprecated stages).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from workspaces.local.foundation import FOUNDATION_TAGS, LOCAL_FOUNDATION
from workspaces.names import checked_name
from workspaces.ports import (
    FoundationModel,
    JobRef,
    ModelVersion,
    NotFoundError,
    TransientWorkspaceError,
    WorkspaceError,
    per_step,
)

CHAMPION = "champion"
JOB_TAG = "finetune_job"
EVALUATION_TABLE = "evaluation/answers.json"  # mlflow.log_table's format, shown in the run's Evaluation tab


class MlflowRegistry:
    def __init__(self, root: Path, run_of: Callable[[JobRef], str | None] | None = None) -> None:
        self.root = root
        # the trainer's MLflow run of a job (the trained model is an artifact of it): the jobs role knows
        self.run_of = run_of
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self._client: Any = None
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in run logs
        logging.getLogger("mlflow").setLevel(logging.WARNING)

    @property
    def client(self) -> Any:
        if self._client is None:
            import mlflow
            from mlflow.tracking import MlflowClient

            mlflow.set_tracking_uri(self.tracking_uri)
            # the first use creates the sqlite schema; two runs doing that at once on a fresh state dir fail
            # ("Circular dependency detected"): one at a time, and the second finds the tables made
            with FileLock(self.root / "mlflow.lock", is_singleton=True, thread_local=False):
                self.ensure_experiment("tunegate-registry")
                client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                client.search_registered_models(max_results=1)  # the registry's tables too
            self._client = client
        return self._client

    def ensure_experiment(self, name: str) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        from mlflow.exceptions import MlflowException

        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=(self.root / "mlartifacts" / name).as_uri())
        except MlflowException as exc:  # another run created it a moment ago
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            existing = mlflow.get_experiment_by_name(name)
            if existing is None:  # created and deleted again meanwhile: a real conflict, say it
                raise
            return existing.experiment_id

    def _versions(self, name: str) -> list[Any]:
        return list(self.client.search_model_versions(f"name = '{name}'"))

    @staticmethod
    def _as_version(mv: Any) -> ModelVersion:
        return ModelVersion(name=mv.name, version=str(mv.version), tags=dict(mv.tags))

    # ------------------------------------------------------------------ catalogue
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        versions = self._versions(name)
        if not versions and name == LOCAL_FOUNDATION:
            # built once: a run started at the same time on a fresh state dir waits and finds it registered
            with FileLock(self.root / "foundation.lock", is_singleton=True, thread_local=False):
                versions = self._versions(name)
                if not versions:
                    self._create_foundation(name)
                    versions = self._versions(name)
        if not versions:
            known = sorted({m.name for m in self.client.search_registered_models()})
            raise NotFoundError(
                f"model.name {name!r} is not in the local registry; registered: {known or 'none'} "
                f"(the built-in foundation model is {LOCAL_FOUNDATION!r})"
            )
        if version is None:
            if label != "latest":
                raise NotFoundError(
                    f"model.label {label!r}: the local registry knows only 'latest' (or pin model.version)"
                )
            chosen = max(versions, key=lambda mv: int(mv.version))
        else:
            chosen = next((mv for mv in versions if str(mv.version) == str(version)), None)
            if chosen is None:
                known_versions = sorted(int(v.version) for v in versions)
                raise NotFoundError(f"model {name} has no version {version}; versions: {known_versions}")
        return FoundationModel(
            name=name, version=str(chosen.version), id=f"models:/{name}/{chosen.version}", tags=dict(chosen.tags)
        )

    def _create_foundation(self, name: str) -> None:
        import mlflow

        from data.synthetic import generate_split
        from workspaces.local.model import build_foundation
        from workspaces.local.pyfunc import save_pyfunc

        texts = [
            message["content"]
            for row in generate_split("train_sft", 2000)
            for message in row.get("messages") or []
            if isinstance(message.get("content"), str)
        ]
        folder = self.root / "foundation" / name
        shutil.rmtree(folder, ignore_errors=True)
        hf_dir = build_foundation(texts, folder / "hf_model")
        save_pyfunc(hf_dir, folder / "mlflow_model")
        experiment = self.ensure_experiment("tunegate-foundation")
        with mlflow.start_run(experiment_id=experiment, run_name=f"create {name}") as run:
            mlflow.log_artifacts(str(folder / "mlflow_model"), artifact_path="model")
        self.client.create_registered_model(
            name,
            tags={"task": "chat-completion"},
            description="tiny Phi-3 created from scratch by tunegate's local workspace",
        )
        self.client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=FOUNDATION_TAGS
        )

    def import_model(self, folder: Path, name: str, tags: dict[str, str], version: str | None = None) -> ModelVersion:
        """Register a Hugging Face model folder (checked by imports.inspect_model_folder) as a new version of `name`,
        wrapped as the same MLflow chat model the built-in one is, with `tags`. The weights are copied into the
        registry's artifacts: the registered version stays whole if the folder is later moved or deleted."""
        import mlflow

        from workspaces.local.pyfunc import save_pyfunc

        checked_name("model", name)  # before any folder is made or removed under it
        if version is not None:
            checked_name("version", version)
        if name == LOCAL_FOUNDATION:
            raise WorkspaceError(f"{LOCAL_FOUNDATION!r} is the built-in model's name; import under another name")
        with FileLock(self.root / "import.lock", is_singleton=True, thread_local=False):
            existing = self._versions(name)
            following = str(max((int(mv.version) for mv in existing), default=0) + 1)
            if version is not None and str(version) != following:
                raise WorkspaceError(
                    f"--version {version}: the local registry numbers versions itself and the next of {name!r} is "
                    f"{following}; leave --version out or give {following}"
                )
            staging = self.root / "imports" / f"{name}-{following}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            # the MLflow model keeps the folder as the artifact `hf_model`, as the built-in one (MLflow stores a link
            # as a link, which its artifact store then refuses: a copy, removed once logged)
            shutil.copytree(folder, staging / "hf_model")
            save_pyfunc(staging / "hf_model", staging / "mlflow_model")
            experiment = self.ensure_experiment("tunegate-imports")
            with mlflow.start_run(experiment_id=experiment, run_name=f"import {name}") as run:
                mlflow.log_artifacts(str(staging / "mlflow_model"), artifact_path="model")
            shutil.rmtree(staging, ignore_errors=True)
            if not existing:
                self.client.create_registered_model(
                    name, tags={"task": "chat-completion"}, description=f"imported by tunegate from {folder}"
                )
            created = self.client.create_model_version(
                name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
            )
        return self._as_version(created)

    def model_folder(self, model_uri: str, into: Path) -> Path:
        """Download a registered MLflow model folder (models:/name/version) to `into`, once."""
        import mlflow.artifacts

        if not (into / "MLmodel").exists():
            shutil.rmtree(into, ignore_errors=True)
            into.parent.mkdir(parents=True, exist_ok=True)
            partial = into.parent / f".{into.name}.{os.getpid()}.{threading.get_ident()}.part"  # this process's own
            shutil.rmtree(partial, ignore_errors=True)
            # resolved through this registry's client: MLflow's global URIs may belong to another workspace here
            name, _, version = model_uri.removeprefix("models:/").partition("/")
            source = self.client.get_model_version_download_uri(name, version)
            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(partial), tracking_uri=self.tracking_uri
            )
            try:
                os.replace(downloaded, into)
            except OSError:  # another process put the same model there first
                if not (into / "MLmodel").exists():
                    raise
            shutil.rmtree(partial, ignore_errors=True)
        return into

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return {key: float(value) for key, value in self.client.get_run(run_id).data.metrics.items()}

    def metric_history(self, run_id: str, key: str) -> tuple[tuple[int, float], ...]:
        return per_step(self.client.get_metric_history(run_id, key))

    def log_artifact(self, run_id: str, path: Path) -> str:
        self.client.log_artifact(run_id, str(path))
        return f"{self.client.get_run(run_id).info.artifact_uri}/{path.name}"

    def experiment_id(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.experiment_id

    # ------------------------------------------------------------------ registry
    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            versions = self._versions(name)
        except MlflowException:
            return None
        found = [mv for mv in versions if mv.tags.get(JOB_TAG) == job.name]
        return self._as_version(min(found, key=lambda mv: int(mv.version))) if found else None

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        run_id = self.run_of(job) if self.run_of is not None else None
        if not run_id:
            raise WorkspaceError(f"job {job.name} has no MLflow run to register a model from")
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, description="fine-tuned by tunegate")
            except MlflowException as exc:  # another run created it a moment ago
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        run = self.client.get_run(run_id)
        mv = self.client.create_model_version(  # MLflow assigns the next integer version
            name,
            source=f"{run.info.artifact_uri}/trained_model",
            run_id=run_id,
            tags={**tags, JOB_TAG: job.name},
            description=f"fine-tuned by tunegate job {job.name}",
        )
        return self._as_version(self.client.get_model_version(name, mv.version))

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        for key, value in tags.items():
            self.client.set_model_version_tag(model.name, model.version, key, value)
        return self._as_version(self.client.get_model_version(model.name, model.version))

    def record_evaluation(
        self, model: ModelVersion, metrics: dict[str, float], answers: list[dict[str, str]]
    ) -> str | None:
        from mlflow.entities import Metric

        run_id = self.client.get_model_version(model.name, model.version).run_id
        if not run_id:
            return None
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])
        columns = {key: [row.get(key, "") for row in answers] for key in (answers[0] if answers else {})}
        self.client.log_table(run_id, data=columns, artifact_file=EVALUATION_TABLE)
        return f"{self.client.get_run(run_id).info.artifact_uri}/{EVALUATION_TABLE}"

    def champion(self, name: str) -> ModelVersion | None:
        """None only when there definitely is no champion (no such model, or no alias on it); any other failure
        is an error: the gate fails closed on it instead of taking it for "nothing to beat"."""
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return self._as_version(self.client.get_model_version_by_alias(name, CHAMPION))
        except MlflowException as exc:
            no_alias = exc.error_code == "INVALID_PARAMETER_VALUE" and f"alias {CHAMPION} not found" in exc.message
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or no_alias:
                return None
            error = TransientWorkspaceError if "locked" in exc.message else WorkspaceError
            raise error(f"champion of {name} in {self.tracking_uri}: {exc.message}") from exc
        except (SQLAlchemyError, OSError) as exc:  # the store itself failed (sqlite, disk): an error, never "none"
            raise WorkspaceError(f"champion of {name} in {self.tracking_uri}: {type(exc).__name__}: {exc}") from exc

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        from mlflow.exceptions import MlflowException

        if model is not None:
            self.client.set_registered_model_alias(name, CHAMPION, model.version)
            return
        try:
            self.client.delete_registered_model_alias(name, CHAMPION)
        except MlflowException:
            pass
