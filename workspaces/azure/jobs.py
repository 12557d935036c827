"""Fine-tune jobs on Azure ML: the notebook's pipeline job (or the E2E guide's command job), its status, cancel,
and the finetune step's metrics from the workspace's MLflow tracking server."""

from __future__ import annotations

import re
from typing import Any

from azure.ai.ml import MLClient

from workspaces.azure.auth import MANAGEMENT_SCOPE
from workspaces.azure.errors import get_or_none, translated
from workspaces.azure.pipeline import build_command_job, build_pipeline_job
from workspaces.azure.settings import AzureSettings
from workspaces.base import (
    RETRYABLE_STATUS,
    ConflictError,
    FinetuneSpec,
    JobRef,
    JobState,
    JobStatus,
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
KEY_TAG = "tunegate.idempotency_key"
CREATED_BY = {"created_by": "tunegate"}


def job_state(status: Any) -> JobState:
    status = getattr(status, "value", status)  # the SDK gives a JobStatus enum or a string
    return STATES.get(str(status or "").lower(), JobState.QUEUED)


class AzureJobs:
    def __init__(self, ml: MLClient, registry: MLClient, settings: AzureSettings, credential: Any) -> None:
        self.ml = ml
        self.registry = registry
        self.settings = settings
        self.credential = credential

    def get_job(self, name: str) -> JobRef | None:
        job = get_or_none(f"job {name}", lambda: self.ml.jobs.get(name))
        if job is None:
            return None
        return JobRef(name=job.name, idempotency_key=(job.tags or {}).get(KEY_TAG, ""), url=job.studio_url)

    def submit(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        # create_or_update would overwrite a job of that name: a GPU job costs real money, never replace one
        if self.get_job(name) is not None:
            raise ConflictError(f"job {name} exists already in the workspace")
        job = self._build(spec, name)
        job.tags = {**(job.tags or {}), **CREATED_BY, KEY_TAG: idempotency_key}
        with translated(f"submit job {name}"):
            created = self.ml.jobs.create_or_update(job, experiment_name=spec.experiment_name)
        return JobRef(name=created.name, idempotency_key=idempotency_key, url=created.studio_url)

    def _build(self, spec: FinetuneSpec, name: str) -> Any:
        if self.settings.finetune_mode == "command":
            with translated("training environment"):
                env_name, _, env_label = self.settings.command_job.environment.partition("@")
                if ":" in env_name:
                    environment = self.ml.environments.get(*env_name.split(":", 1))
                else:
                    environment = self.ml.environments.get(env_name, label=env_label or "latest")
            return build_command_job(self.settings.command_job, spec, name, environment)
        component_name, version = self.settings.pipeline_component, self.settings.pipeline_component_version
        with translated(f"registry component {component_name}"):
            if version:
                component = self.registry.components.get(component_name, version=version)
            else:
                component = self.registry.components.get(component_name, label="latest")
        return build_pipeline_job(component, spec, name)

    def status(self, job: JobRef) -> JobStatus:
        with translated(f"job {job.name}"):
            current = self.ml.jobs.get(job.name)
        state = job_state(current.status)
        message = ""
        if state is JobState.FAILED:
            message = f"Azure ML job {current.status}; details in Studio: {current.studio_url}"
        return JobStatus(state=state, message=message)

    def cancel(self, job: JobRef) -> None:
        current = get_or_none(f"job {job.name}", lambda: self.ml.jobs.get(job.name))
        if current is None or job_state(current.status).terminal:
            return
        with translated(f"cancel job {job.name}"):
            self.ml.jobs.begin_cancel(job.name)  # cancellation completes on Azure's side; status follows it

    def running(self, names: list[str]) -> list[str]:
        return [name for name in names if not self.status(JobRef(name=name)).state.terminal]

    def _mlflow_store(self) -> Any:
        """MLflow's REST store on the workspace's tracking server, authenticated with *our* credential.

        azureml-mlflow turns `azureml://<host>/mlflow/v1.0/<scope>` into `https://<host>/mlflow/v2.0/<scope>` with a
        management-scope token from a credential chain of its own (which probes managed identity and browser
        logins); we make the same URL and token from the credential the MLClient already uses.
        """
        from mlflow.store.tracking.rest_store import RestStore
        from mlflow.utils.rest_utils import MlflowHostCreds

        uri = self.settings.mlflow_tracking_uri
        if not uri:
            with translated("workspace"):
                uri = self.ml.workspaces.get(self.ml.workspace_name).mlflow_tracking_uri
        match = re.fullmatch(r"azureml://([^/]+)/mlflow/v[0-9.]+(/.*)", uri)
        base = f"https://{match.group(1)}/mlflow/v2.0{match.group(2)}" if match else uri
        credential = self.credential

        def host_creds() -> MlflowHostCreds:
            return MlflowHostCreds(base, token=credential.get_token(MANAGEMENT_SCOPE).token)

        return RestStore(host_creds)

    def metrics(self, job: JobRef) -> dict[str, float]:
        """Train/eval loss of the pipeline's finetune step (HF Trainer keys): the pipeline job is an MLflow run,
        its steps are child runs."""
        from mlflow.exceptions import MlflowException

        store = self._mlflow_store()
        try:
            parent = store.get_run(job.name)
            children = store.search_runs(
                [parent.info.experiment_id],
                f"tags.mlflow.parentRunId = '{job.name}'",
                run_view_type=1,
                max_results=100,
            )
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise NotFoundError(f"no MLflow run for job {job.name}: {exc.message}") from exc
            code = getattr(exc, "get_http_status_code", lambda: 500)()
            error = TransientWorkspaceError if code in RETRYABLE_STATUS else WorkspaceError
            raise error(f"metrics of {job.name}: {exc.message}") from exc
        runs = [parent, *children]
        finetune = [
            run
            for run in runs
            if "finetune" in (run.info.run_name or "").lower()
            or "finetune" in run.data.tags.get("azureml.nodeid", "").lower()
        ]
        metrics: dict[str, float] = {}
        for run in finetune or runs:
            metrics.update({key: float(value) for key, value in run.data.metrics.items() if "loss" in key})
        if "train_loss" not in metrics and "loss" in metrics:
            metrics["train_loss"] = metrics["loss"]
        return metrics
