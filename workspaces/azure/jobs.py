"""Fine-tune jobs on Azure ML: the notebook's pipeline job (or the E2E guide's command job), its status, cancel,
and the finetune step's metrics from the workspace's MLflow tracking server."""

from __future__ import annotations

import builtins
import re
from typing import Any
from urllib.parse import urlsplit

from azure.ai.ml import MLClient

from workspaces.azure.auth import MANAGEMENT_SCOPE
from workspaces.azure.errors import get_or_none, translated
from workspaces.azure.pipeline import build_command_job, build_pipeline_job
from workspaces.azure.runs import (
    created_at,
    failure,
    is_finetune_step,
    job_state,
    mlflow_translated,
    run_name,
    status_words,
)
from workspaces.azure.settings import AzureSettings
from workspaces.ports import (
    ConflictError,
    FinetuneSpec,
    JobInfo,
    JobProgress,
    JobRef,
    JobState,
    JobStatus,
    LossHistory,
    MetricsNotFound,
    WorkspaceError,
    per_step,
)

KEY_TAG = "tunegate.idempotency_key"
CREATED_BY = {"created_by": "tunegate"}


class AzureJobs:
    def __init__(self, ml: MLClient, registry: MLClient, settings: AzureSettings, credential: Any) -> None:
        self.ml = ml
        self.registry = registry
        self.settings = settings
        self.credential = credential

    def get(self, name: str) -> JobRef | None:
        job = get_or_none(f"job {name}", lambda: self.ml.jobs.get(name))
        if job is None:
            return None
        return JobRef(name=job.name, idempotency_key=(job.tags or {}).get(KEY_TAG, ""), url=job.studio_url)

    def submit(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        # create_or_update would overwrite a job of that name: a GPU job costs real money, never replace one
        if self.get(name) is not None:
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
            message = (
                f"{failure(self.ml, job.name, status_words(current.status))}\nDetails in Studio: {current.studio_url}"
            )
        return JobStatus(state=state, message=message)

    def cancel(self, job: JobRef) -> None:
        current = get_or_none(f"job {job.name}", lambda: self.ml.jobs.get(job.name))
        if current is None or job_state(current.status).terminal:
            return
        with translated(f"cancel job {job.name}"):
            self.ml.jobs.begin_cancel(job.name)  # cancellation completes on Azure's side; status follows it

    def list(self) -> builtins.list[JobInfo]:
        """The jobs tunegate submitted (tag created_by), newest first; what the service says of each."""
        with translated("list jobs"):
            jobs = [job for job in self.ml.jobs.list() if (job.tags or {}).get("created_by") == "tunegate"]
        found = [
            JobInfo(
                name=job.name,
                state=job_state(job.status),
                display_name=job.display_name or "",
                idempotency_key=(job.tags or {}).get(KEY_TAG, ""),
                created=created_at(job),
                url=job.studio_url,
            )
            for job in jobs
        ]
        return sorted(found, key=lambda info: info.created or 0, reverse=True)

    def running(self) -> builtins.list[str]:
        """Jobs tunegate submitted (tag created_by) that the service still runs: whoever submitted them, so a job
        left by a crashed run is seen too."""
        with translated("list jobs"):
            jobs = list(self.ml.jobs.list())
        return sorted(
            job.name
            for job in jobs
            if (job.tags or {}).get("created_by") == CREATED_BY["created_by"] and not job_state(job.status).terminal
        )

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

    def _run_tree(self, store: Any, name: str) -> builtins.list[Any]:
        """Every MLflow run of the job: the job's run, the pipeline-component node's run, the component's steps."""
        from mlflow.entities import ViewType

        root = store.get_run(name)
        runs, seen, token = [root], {root.info.run_id}, None
        while True:
            page = store.search_runs(
                [root.info.experiment_id],
                f"tags.mlflow.rootRunId = '{name}'",
                run_view_type=ViewType.ALL,
                max_results=200,
                page_token=token,
            )
            runs += [run for run in page if run.info.run_id not in seen]
            seen |= {run.info.run_id for run in page}
            token = page.token
            if not token:
                return runs

    def _training_runs(
        self, job: JobRef, store: Any = None
    ) -> tuple[builtins.list[Any], builtins.list[Any], builtins.list[Any]]:
        """(every run of the job, its finetune steps oldest first, the runs holding its training metrics): the
        pipeline's finetune step wherever it sits in the run tree (Azure does not copy step metrics up to the
        job); a command job logs on its own run."""
        with mlflow_translated(f"MLflow runs of job {job.name}"):
            runs = self._run_tree(store or self._mlflow_store(), job.name)
        steps = sorted((run for run in runs if is_finetune_step(run)), key=lambda run: run.info.end_time or 0)
        return runs, steps, steps or [run for run in runs if run.info.run_id == job.name]

    def progress(self, job: JobRef) -> JobProgress:
        """The job's status in the service's words, and the latest step metrics its training run logged so far
        (HF Trainer's `loss`, `eval_loss`, `epoch`); the metrics are left out while no run has any."""
        with translated(f"job {job.name}"):
            current = self.ml.jobs.get(job.name)
        state = job_state(current.status)
        progress = JobProgress(state=state, status_text=status_words(current.status))
        try:
            _, _, picked = self._training_runs(job)
        except WorkspaceError:  # no run yet (queued, preparing): the status is all there is
            return progress
        latest: dict[str, float] = {}
        for run in picked:
            latest.update({key: float(value) for key, value in run.data.metrics.items()})
        started = min((run.info.start_time for run in picked if run.info.start_time), default=None)
        return progress.model_copy(
            update={
                "train_loss": latest.get("loss", latest.get("train_loss")),
                "eval_loss": latest.get("eval_loss"),
                "epoch": latest.get("epoch"),
                "started": started / 1000 if started else None,
            }
        )

    def loss_history(self, job: JobRef) -> LossHistory:
        """`loss` and `eval_loss` per step of the finetune step's run (the pipeline evaluates neither the base nor
        the champion: those reference lines are left out on Azure)."""
        store = self._mlflow_store()
        _, _, picked = self._training_runs(job, store)
        run_id = picked[-1].info.run_id if picked else job.name

        def history(key: str) -> tuple[tuple[int, float], ...]:
            with mlflow_translated(f"metric history of job {job.name}"):
                return per_step(store.get_metric_history(run_id, key))

        return LossHistory(train=history("loss"), eval=history("eval_loss"))

    def metrics(self, job: JobRef) -> dict[str, float]:
        """Train/eval loss (HF Trainer keys) from the run of the pipeline's finetune step (see _training_runs)."""
        runs, steps, picked = self._training_runs(job)
        metrics: dict[str, float] = {}
        for run in picked:  # the latest finetune run wins (a retried step logs again)
            metrics.update({key: float(value) for key, value in run.data.metrics.items() if "loss" in key})
        if "train_loss" not in metrics and "loss" in metrics:
            metrics["train_loss"] = metrics["loss"]
        if "eval_loss" not in metrics:
            searched = "; ".join(
                f"{run_name(run)} ({run.info.run_id}): {', '.join(sorted(run.data.metrics)) or 'no metrics'}"
                for run in runs
            )
            raise MetricsNotFound(
                f"no eval_loss in the runs of job {job.name}: searched {len(runs)} run(s) with "
                f"tags.mlflow.rootRunId = '{job.name}', finetune step {'found' if steps else 'not found'}: {searched}"
            )
        return metrics

    def attach(self, job: JobRef, filename: str, content: bytes) -> str | None:
        """Not on Azure: adding a file to a finished job's run needs azureml-mlflow's artifact upload (its own
        credential chain); the picture stays in the run directory and the Prefect artifact, and Studio draws the
        step's own metric charts on the job page."""
        return None

    def command_model_path(self, job: JobRef) -> str:
        """Where a command job's script logged its model (the guide registers it from there), after checking that
        an MLflow model (its MLmodel file) is there: an empty path registers nothing usable."""
        path = self.settings.command_job.model_path.strip("./") or "model_output"
        files = self.run_files(job)
        inside = [name for name in files if name.startswith(f"{path}/")]
        if not any(name.rsplit("/", 1)[-1] == "MLmodel" for name in inside):
            raise WorkspaceError(
                f"job {job.name} logged no MLflow model under '{path}' (command_job.model_path); found "
                f"{inside[:10] or files[:10] or 'nothing'}. The training script must log it there, as the guide's "
                f"fine_tune.py does: mlflow.transformers.log_model(..., artifact_path='{path}'), or set "
                "command_job.model_path to where it logs"
            )
        return f"azureml://jobs/{job.name}/outputs/artifacts/paths/{path}"

    def run_files(self, job: JobRef) -> builtins.list[str]:
        """Every file the job's run logged, as run history lists them: the client azureml-mlflow's artifact
        repository (MLflow's list_artifacts on an azureml:// run) lists them with, authenticated with our
        credential (its own would build a credential chain of its own), on the workspace's API host."""
        from azureml.mlflow._client.artifact.run_artifact_client import RunArtifactsClient
        from azureml.mlflow._internal.utils import ServiceContext

        with translated(f"job {job.name}"):
            experiment = self.ml.jobs.get(job.name).experiment_name
            context = ServiceContext(
                host_url=self._api_host(),
                subscription_id=self.ml.subscription_id,
                workspace_name=self.ml.workspace_name,
                resource_group_name=self.ml.resource_group_name,
                auth=self.credential,
            )
            client = RunArtifactsClient(context, experiment_name=experiment, run_id=job.name, path=None)
            return sorted(client.get_file_paths())

    def _api_host(self) -> str:
        """https://<region>.api.azureml.ms: the host of the workspace's tracking URI (MLflow and run history)."""
        uri = self.settings.mlflow_tracking_uri
        if not uri:
            with translated("workspace"):
                uri = self.ml.workspaces.get(self.ml.workspace_name).mlflow_tracking_uri
        return "https://" + urlsplit(uri).netloc
