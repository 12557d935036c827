"""The Azure ML workspace: azure-ai-ml v2 + azure-identity, following the notebook call for call.

    registry.models.get(name, label="latest")                    -> get_foundation_model
    compute.get / begin_create_or_update(AmlCompute) / list_sizes -> ensure_compute, list_sizes
    registry.components.get("chat_completion_pipeline", label=...) + @pipeline, force_rerun, continue_on_step_failure
    jobs.create_or_update(pipeline, experiment_name=...)         -> submit_finetune (job name from the idempotency key)
    jobs.get / jobs.begin_cancel                                  -> job_status, cancel_job
    MLflow on the workspace's tracking URI                        -> job_metrics (the finetune step's run)
    models.create_or_update(Model(path=azureml://jobs/<job>/outputs/trained_model, type=mlflow_model))
    online_endpoints / online_deployments begin_create_or_update, get_keys, begin_delete

Every SDK error is translated once, in `_errors`: 429/5xx/connection failures become TransientWorkspaceError (the
tasks retry them), anything else a WorkspaceError carrying the service's own message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import (
    AmlCompute, IdentityConfiguration, ManagedIdentityConfiguration, ManagedOnlineDeployment, ManagedOnlineEndpoint,
    Model, OnlineRequestSettings, ProbeSettings,
)
from azure.core.exceptions import (
    ClientAuthenticationError, HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError,
)
from pydantic import SecretStr

from workspaces.azure_pipeline import ComponentParameterError, build_command_job, build_pipeline_job
from workspaces.azure_settings import AzureSettings
from workspaces.base import (
    Compute, ComputeSpec, Credentials, DataRef, Deployment, Endpoint, FinetuneSpec, FoundationModel, Inventory,
    JobRef, JobState, JobStatus, ModelVersion, NotFoundError, Sku, TransientWorkspaceError, WorkspaceError,
)

logger = logging.getLogger(__name__)

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
STATES = {
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "notresponding": JobState.FAILED,
    "canceled": JobState.CANCELED,
    "running": JobState.RUNNING,
    "finalizing": JobState.RUNNING,
    "cancelrequested": JobState.RUNNING,  # not over until Azure says Canceled
}
CREATED_BY = {"created_by": "tunegate"}
CHAMPION_TAG = "tunegate.champion"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"


@contextlib.contextmanager
def _errors(action: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFoundError(f"{action}: {exc.message or exc}") from exc
    except ClientAuthenticationError as exc:
        raise WorkspaceError(f"{action}: authentication failed ({exc.message or exc}); run `az login` or set a service principal") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientWorkspaceError(f"{action}: {exc}") from exc
    except HttpResponseError as exc:
        message = f"{action}: HTTP {exc.status_code} {exc.message or exc}"
        if exc.status_code in TRANSIENT_STATUS:
            raise TransientWorkspaceError(message) from exc
        raise WorkspaceError(message) from exc
    except ComponentParameterError:
        raise
    except Exception as exc:
        # the SDK's own client-side validation (ValidationException, ...) is a permanent input error
        if type(exc).__module__.startswith("azure."):
            raise WorkspaceError(f"{action}: {exc}") from exc
        raise


def _get_or_none(action: str, get: Any) -> Any | None:
    """`get()` under the error translation, with "does not exist" as None instead of an error."""
    try:
        with _errors(action):
            return get()
    except NotFoundError:
        return None


def make_credential(settings: AzureSettings, default: Any = None) -> Any:
    """DefaultAzureCredential; the notebook's browser fallback only when a person is at a terminal."""
    from azure.identity import DefaultAzureCredential, InteractiveBrowserCredential

    credential = (default or DefaultAzureCredential)()
    try:
        credential.get_token(MANAGEMENT_SCOPE)
        return credential
    except Exception as exc:  # noqa: BLE001 - azure-identity raises several kinds here
        if settings.interactive_login and sys.stdin.isatty():
            return InteractiveBrowserCredential()
        raise WorkspaceError(
            "no Azure credentials for a non-interactive run: run `az login` on this machine, or set "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET for a service principal, or use a managed identity "
            f"(DefaultAzureCredential said: {str(exc).splitlines()[0][:300]})"
        ) from exc


class AzureWorkspace:
    kind = "azure"

    def __init__(self, workspace_client: MLClient, registry_client: MLClient, settings: AzureSettings | None = None,
                 credential: Any = None) -> None:
        self.ml = workspace_client
        self.registry = registry_client
        self.settings = settings or AzureSettings()
        self.credential = credential or workspace_client._credential
        self._submitted: dict[str, JobRef] = {}

    @classmethod
    def from_settings(cls, workspace: Any) -> "AzureWorkspace":
        """From a profile's `workspace` section: config.json, else subscription / resource group / workspace."""
        settings: AzureSettings = workspace.azure
        credential = make_credential(settings)
        ids = {"subscription_id": workspace.subscription_id, "resource_group_name": workspace.resource_group,
               "workspace_name": workspace.workspace_name}
        if settings.config_path or not any(ids.values()):
            try:
                ml = MLClient.from_config(credential=credential, path=settings.config_path)
            except Exception as exc:  # noqa: BLE001 - from_config raises a bare Exception without config.json
                raise WorkspaceError(
                    "Azure workspace not configured: download config.json from the workspace's page in Azure ML Studio "
                    "and point workspace.azure.config_path at it, or set workspace.subscription_id, "
                    f"workspace.resource_group and workspace.workspace_name ({str(exc)[:200]})"
                ) from exc
        else:
            missing = [f"workspace.{key.removesuffix('_name') if key == 'resource_group_name' else key}"
                       for key, value in ids.items() if not value]
            if missing:
                raise WorkspaceError(f"workspace.kind azure needs {', '.join(missing)} (or workspace.azure.config_path)")
            ml = MLClient(credential, **ids)
        registry = MLClient(credential, registry_name=workspace.registry_name)
        return cls(ml, registry, settings, credential)

    # ------------------------------------------------------------------ catalogue
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        with _errors(f"registry model {name}"):
            model = self.registry.models.get(name, version=version) if version else self.registry.models.get(name, label=label)
        return FoundationModel(name=model.name, version=str(model.version), id=model.id, tags=dict(model.tags or {}))

    # ------------------------------------------------------------------ compute
    def ensure_compute(self, spec: ComputeSpec) -> Compute:
        compute = _get_or_none(f"compute {spec.name}", lambda: self.ml.compute.get(spec.name)) or self._create_compute(spec)
        state = getattr(compute.provisioning_state, "value", compute.provisioning_state)  # the SDK may give an enum
        return Compute(name=compute.name, size=compute.size, provisioning_state=str(state))

    def _create_compute(self, spec: ComputeSpec) -> Any:
        last: WorkspaceError | None = None
        for tier in ("dedicated", "low_priority"):  # no dedicated quota: a low-priority cluster can still run it
            cluster = AmlCompute(name=spec.name, size=spec.size, tier=tier, min_instances=spec.min_instances,
                                 max_instances=spec.max_instances, idle_time_before_scale_down=spec.idle_seconds_before_scaledown)
            try:
                with _errors(f"create compute {spec.name} ({tier})"):
                    return self.ml.compute.begin_create_or_update(cluster).result()
            except TransientWorkspaceError:
                raise
            except WorkspaceError as exc:
                logger.warning("%s", exc)
                last = exc
        raise last or WorkspaceError(f"could not create compute {spec.name}")

    def list_sizes(self) -> list[Sku]:
        with _errors("list VM sizes"):
            return [Sku(name=size.name, gpus=int(size.gpus or 0)) for size in self.ml.compute.list_sizes()]

    # ------------------------------------------------------------------ data and jobs
    def upload_data(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        # uri_file inputs: the SDK uploads each local file at submission under a content hash (LocalUpload/<md5>/),
        # so an identical sample is stored once; the fingerprint goes on the model as a lineage tag.
        return DataRef(train=str(train.resolve()), test=str(test.resolve()), fingerprint=fingerprint)

    def _job_name(self, key: str, attempt: int) -> str:
        return f"tunegate-{key[:20]}" + (f"-{attempt}" if attempt > 1 else "")

    def _existing_job(self, name: str) -> Any | None:
        return _get_or_none(f"job {name}", lambda: self.ml.jobs.get(name))

    def submit_finetune(self, spec: FinetuneSpec, idempotency_key: str) -> JobRef:
        attempt = 1
        while (existing := self._existing_job(self._job_name(idempotency_key, attempt))) is not None:
            if self._state(existing.status) not in (JobState.FAILED, JobState.CANCELED):
                ref = JobRef(name=existing.name, idempotency_key=idempotency_key, url=existing.studio_url, reattached=True)
                self._submitted[ref.name] = ref
                return ref  # a GPU job costs real money: never submit the same work twice
            attempt += 1
        name = self._job_name(idempotency_key, attempt)
        if self.settings.finetune_mode == "command":
            with _errors("training environment"):
                env_name, _, env_label = self.settings.command_job.environment.partition("@")
                environment = self.ml.environments.get(env_name, label=env_label or "latest") if ":" not in env_name \
                    else self.ml.environments.get(*env_name.split(":", 1))
            job = build_command_job(self.settings.command_job, spec, name, environment)
        else:
            with _errors(f"registry component {self.settings.pipeline_component}"):
                component = self.registry.components.get(
                    self.settings.pipeline_component, version=self.settings.pipeline_component_version
                ) if self.settings.pipeline_component_version else self.registry.components.get(
                    self.settings.pipeline_component, label="latest")
            job = build_pipeline_job(component, spec, name)
        job.tags = {**(job.tags or {}), **CREATED_BY, "tunegate.idempotency_key": idempotency_key}
        with _errors(f"submit job {name}"):
            created = self.ml.jobs.create_or_update(job, experiment_name=spec.experiment_name)
        ref = JobRef(name=created.name, idempotency_key=idempotency_key, url=created.studio_url)
        self._submitted[ref.name] = ref
        return ref

    @staticmethod
    def _state(status: str | None) -> JobState:
        status = getattr(status, "value", status)  # the SDK gives a JobStatus enum or a string
        return STATES.get(str(status or "").lower(), JobState.QUEUED)

    def job_status(self, job: JobRef) -> JobStatus:
        with _errors(f"job {job.name}"):
            current = self.ml.jobs.get(job.name)
        state = self._state(current.status)
        message = f"Azure ML job {current.status}; details in Studio: {current.studio_url}" if state is JobState.FAILED else ""
        return JobStatus(state=state, message=message)

    def cancel_job(self, job: JobRef) -> None:
        with _errors(f"cancel job {job.name}"):
            self.ml.jobs.begin_cancel(job.name)  # cancellation completes on Azure's side; job_status follows it

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
            with _errors("workspace"):
                uri = self.ml.workspaces.get(self.ml.workspace_name).mlflow_tracking_uri
        match = re.fullmatch(r"azureml://([^/]+)/mlflow/v[0-9.]+(/.*)", uri)
        base = f"https://{match.group(1)}/mlflow/v2.0{match.group(2)}" if match else uri
        credential = self.credential

        def host_creds() -> MlflowHostCreds:
            return MlflowHostCreds(base, token=credential.get_token(MANAGEMENT_SCOPE).token)

        return RestStore(host_creds)

    def job_metrics(self, job: JobRef) -> dict[str, float]:
        """Train/eval loss of the pipeline's finetune step (HF Trainer keys): the pipeline job is an MLflow run,
        its steps are child runs."""
        from mlflow.exceptions import MlflowException

        store = self._mlflow_store()
        try:
            parent = store.get_run(job.name)
            children = store.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{job.name}'",
                                         run_view_type=1, max_results=100)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise NotFoundError(f"no MLflow run for job {job.name}: {exc.message}") from exc
            code = getattr(exc, "get_http_status_code", lambda: 500)()
            raise (TransientWorkspaceError if code in TRANSIENT_STATUS else WorkspaceError)(f"metrics of {job.name}: {exc.message}") from exc
        runs = [parent, *children]
        finetune = [run for run in runs if "finetune" in (run.info.run_name or "").lower()
                    or "finetune" in run.data.tags.get("azureml.nodeid", "").lower()]
        metrics: dict[str, float] = {}
        for run in finetune or runs:
            metrics.update({key: float(value) for key, value in run.data.metrics.items() if "loss" in key})
        if "train_loss" not in metrics and "loss" in metrics:
            metrics["train_loss"] = metrics["loss"]
        return metrics

    # ------------------------------------------------------------------ registry
    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        for existing in self._model_versions(name):  # a retried registration returns what it made
            if (existing.tags or {}).get("finetune_job") == job.name:
                return self._as_version(existing)
        model = Model(
            path=f"azureml://jobs/{job.name}/outputs/trained_model",
            type=AssetTypes.MLFLOW_MODEL,
            name=name,
            version=str(int(time.time())),  # as the notebook: a timestamp never collides
            description=f"{name} fine tuned by tunegate job {job.name}",
            tags={**tags, "finetune_job": job.name, **CREATED_BY},
        )
        with _errors(f"register model {name}"):
            return self._as_version(self.ml.models.create_or_update(model))

    def _model_versions(self, name: str) -> list[Any]:
        return _get_or_none(f"model {name}", lambda: list(self.ml.models.list(name=name))) or []

    @staticmethod
    def _as_version(model: Any) -> ModelVersion:
        return ModelVersion(name=model.name, version=str(model.version), tags=dict(model.tags or {}))

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        with _errors(f"tag model {model.name}:{model.version}"):
            current = self.ml.models.get(model.name, version=model.version)
            current.tags = {**(current.tags or {}), **tags}
            return self._as_version(self.ml.models.create_or_update(current))

    def champion(self, name: str) -> ModelVersion | None:
        # the champion is tracked by a tag on the model version: it survives ephemeral endpoints and is one lookup
        for model in self._model_versions(name):
            if (model.tags or {}).get(CHAMPION_TAG) == "true":
                return self._as_version(model)
        return None

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        previous = self.champion(name)
        if previous is not None and (model is None or previous.version != model.version):
            self.tag_model(previous, {CHAMPION_TAG: "false"})
        if model is not None:
            self.tag_model(model, {CHAMPION_TAG: "true"})

    # ------------------------------------------------------------------ endpoints
    def _endpoint(self, name: str) -> Any | None:
        return _get_or_none(f"endpoint {name}", lambda: self.ml.online_endpoints.get(name))

    def ensure_endpoint(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        if self._endpoint(name) is None:
            identity = None
            if self.settings.endpoint_identity:
                identity = IdentityConfiguration(type="user_assigned", user_assigned_identities=[
                    ManagedIdentityConfiguration(resource_id=self.settings.endpoint_identity)])
            endpoint = ManagedOnlineEndpoint(name=name, description=description, auth_mode="key", identity=identity,
                                             tags={**CREATED_BY, "tunegate.ephemeral": str(ephemeral).lower()})
            with _errors(f"create endpoint {name}"):
                self.ml.online_endpoints.begin_create_or_update(endpoint).result()
        return self.get_endpoint(name)  # type: ignore[return-value]

    def get_endpoint(self, name: str) -> Endpoint | None:
        endpoint = self._endpoint(name)
        if endpoint is None:
            return None
        with _errors(f"deployments of {name}"):
            deployments = tuple(sorted(d.name for d in self.ml.online_deployments.list(endpoint_name=name)))
        return Endpoint(name=name, traffic={k: int(v) for k, v in (endpoint.traffic or {}).items()}, deployments=deployments)

    def create_deployment(self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1) -> Deployment:
        deployment = ManagedOnlineDeployment(
            name=name,
            endpoint_name=endpoint,
            model=f"azureml:{model.name}:{model.version}",
            instance_type=instance_type,
            instance_count=instance_count,
            liveness_probe=ProbeSettings(initial_delay=self.settings.liveness_initial_delay_s),
            request_settings=OnlineRequestSettings(request_timeout_ms=self.settings.request_timeout_ms),
            tags=dict(CREATED_BY),
        )
        with _errors(f"create deployment {endpoint}/{name}"):
            self.ml.online_deployments.begin_create_or_update(deployment).result()
        return Deployment(endpoint=endpoint, name=name, model=f"{model.name}:{model.version}", instance_type=instance_type)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        with _errors(f"traffic of {endpoint}"):
            current = self.ml.online_endpoints.get(endpoint)
            current.traffic = dict(traffic)
            self.ml.online_endpoints.begin_create_or_update(current).result()
        return self.get_endpoint(endpoint)  # type: ignore[return-value]

    def endpoint_credentials(self, endpoint: str) -> Credentials:
        with _errors(f"credentials of {endpoint}"):
            scoring_uri = self.ml.online_endpoints.get(endpoint).scoring_uri
            keys = self.ml.online_endpoints.get_keys(endpoint)
        return Credentials(scoring_uri=scoring_uri, key=SecretStr(keys.primary_key))

    def delete_deployment(self, endpoint: str, name: str) -> None:
        with _errors(f"delete deployment {endpoint}/{name}"):
            self.ml.online_deployments.begin_delete(name=name, endpoint_name=endpoint).result()

    def delete_endpoint(self, endpoint: str) -> None:
        with _errors(f"delete endpoint {endpoint}"):
            self.ml.online_endpoints.begin_delete(name=endpoint).result()

    # ------------------------------------------------------------------ leak checks
    def inventory(self) -> Inventory:
        with _errors("list endpoints"):
            endpoints = [e for e in self.ml.online_endpoints.list() if (e.tags or {}).get("created_by") == "tunegate"]
        listing = {}
        for endpoint in endpoints:
            found = self.get_endpoint(endpoint.name)
            if found is not None:
                listing[endpoint.name] = found.deployments
        running = tuple(name for name, ref in self._submitted.items() if not self.job_status(ref).state.terminal)
        return Inventory(endpoints=listing, running_jobs=running)

