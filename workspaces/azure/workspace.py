"""The Azure ML workspace: azure-ai-ml v2 + azure-identity, following the notebook call for call.

    registry.models.get(name, label="latest")                     registry.py   get_foundation_model
    compute.get / begin_create_or_update(AmlCompute) / list_sizes  compute.py    ensure_compute, list_sizes
    registry.components.get + @pipeline, jobs.create_or_update     jobs.py, pipeline.py   submit_finetune
    jobs.get / jobs.begin_cancel, MLflow on the tracking URI       jobs.py       job_status, cancel_job, job_metrics
    models.create_or_update(Model(azureml://jobs/<job>/outputs/trained_model, mlflow_model))   registry.py
    online_endpoints / online_deployments, get_keys, begin_delete  endpoints.py
    POST scoring_uri with the key                                   ../scoring.py invoke

Errors are translated once, in errors.py. `AzureWorkspace` assembles the roles into the Workspace port
(workspaces/assembled.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient

from workspaces.assembled import AssembledWorkspace
from workspaces.azure import compute
from workspaces.azure.auth import make_credential, registry_client, workspace_client
from workspaces.azure.endpoints import AzureEndpoints
from workspaces.azure.jobs import AzureJobs
from workspaces.azure.registry import AzureRegistry
from workspaces.azure.settings import AzureSettings
from workspaces.base import Compute, ComputeSpec, DataRef, Inventory, JobRef, ModelVersion, Sku

STUDIO = "https://ml.azure.com"


class AzureWorkspace(AssembledWorkspace):
    kind = "azure"

    def __init__(
        self,
        workspace_client: MLClient,
        registry_client: MLClient,
        settings: AzureSettings | None = None,
        credential: Any = None,
    ) -> None:
        self.ml = workspace_client
        self.settings = settings or AzureSettings()
        credential = credential or workspace_client._credential
        self.registry = AzureRegistry(workspace_client, registry_client)
        self.jobs = AzureJobs(workspace_client, registry_client, self.settings, credential)
        self.endpoints = AzureEndpoints(workspace_client, self.settings)

    @classmethod
    def from_settings(cls, workspace: Any) -> AzureWorkspace:
        """From a profile's `workspace` section (see auth.py for how the clients are found)."""
        credential = make_credential(workspace.azure)
        return cls(
            workspace_client(workspace, credential), registry_client(workspace, credential), workspace.azure, credential
        )

    def ensure_compute(self, spec: ComputeSpec) -> Compute:
        return compute.ensure_compute(self.ml, spec)

    def list_sizes(self) -> list[Sku]:
        return compute.list_sizes(self.ml)

    def upload_data(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        # uri_file inputs: the SDK uploads each local file at submission under a content hash (LocalUpload/<md5>/),
        # so an identical sample is stored once; the fingerprint goes on the model as a lineage tag.
        return DataRef(train=str(train.resolve()), test=str(test.resolve()), fingerprint=fingerprint)

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        # a command job's model is where its script logged it (checked non-empty first), not a job output
        path = self.jobs.command_model_path(job) if self.settings.finetune_mode == "command" else None
        return self.registry.register_model(job, name, tags, path=path)

    def attach_to_job(self, job: JobRef, filename: str, content: bytes) -> str | None:
        """Not on Azure: adding a file to a finished job's run needs azureml-mlflow's artifact upload (its own
        credential chain); the picture stays in the run directory and the Prefect artifact, and Studio draws the
        step's own metric charts on the job page."""
        return None

    def links(
        self, job: JobRef | None = None, model: ModelVersion | None = None, endpoint: str | None = None
    ) -> dict[str, str]:
        """Studio pages (job, model version, endpoint) and the endpoint's scoring URL (never its key)."""
        wsid = (
            f"/subscriptions/{self.ml.subscription_id}/resourcegroups/{self.ml.resource_group_name}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.ml.workspace_name}"
        )
        found: dict[str, str] = {}
        if job is not None and job.url:
            found["job in Studio"] = job.url
        if model is not None:
            found["model version in Studio"] = f"{STUDIO}/model/{model.name}:{model.version}/details?wsid={wsid}"
        if endpoint is not None:
            found["endpoint in Studio"] = f"{STUDIO}/endpoints/realtime/{endpoint}/detail?wsid={wsid}"
            scoring_uri = self.endpoints.scoring_uri(endpoint)
            if scoring_uri:
                found["scoring URL"] = scoring_uri
        return found

    def inventory(self) -> Inventory:
        endpoints = {
            name: found.deployments
            for name in self.endpoints.created_by_tunegate()
            if (found := self.endpoints.get(name))
        }
        return Inventory(endpoints=endpoints, running_jobs=tuple(self.jobs.running()))
