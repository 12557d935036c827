"""The Azure ML workspace: azure-ai-ml v2 + azure-identity, following the notebook call for call.

    registry.models.get(name, label="latest")                     registry.py   get_foundation_model
    compute.get / begin_create_or_update(AmlCompute) / list_sizes  compute.py    ensure_compute, list_sizes
    registry.components.get + @pipeline, jobs.create_or_update     jobs.py, pipeline.py   submit_finetune
    jobs.get / jobs.begin_cancel, MLflow on the tracking URI       jobs.py       job_status, cancel_job, job_metrics
    models.create_or_update(Model(azureml://jobs/<job>/outputs/trained_model, mlflow_model))   registry.py
    online_endpoints / online_deployments, get_keys, begin_delete  endpoints.py
    POST scoring_uri with the key                                   ../scoring.py invoke

Errors are translated once, in errors.py. `AzureWorkspace` is the bundle of those roles (the Workspace port,
workspaces/ports/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient

from workspaces.azure.auth import make_credential, registry_client, workspace_client
from workspaces.azure.compute import AzureCompute
from workspaces.azure.endpoints import AzureEndpoints
from workspaces.azure.jobs import AzureJobs
from workspaces.azure.registry import AzureRegistry
from workspaces.azure.settings import AzureSettings
from workspaces.ports import DataRef, Inventory, JobRef, ModelVersion

STUDIO = "https://ml.azure.com"


class AzureData:
    """uri_file inputs: the SDK uploads each local file at submission under a content hash (LocalUpload/<md5>/), so
    an identical sample is stored once; the fingerprint goes on the model as a lineage tag."""

    def upload(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        return DataRef(train=str(train.resolve()), test=str(test.resolve()), fingerprint=fingerprint)


class AzureWorkspace:
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
        self.jobs = AzureJobs(workspace_client, registry_client, self.settings, credential)
        # a command job's model is where its script logged it (checked non-empty first), not a job output
        model_path_of = self.jobs.command_model_path if self.settings.finetune_mode == "command" else None
        self.registry = AzureRegistry(workspace_client, registry_client, model_path_of)
        self.endpoints = AzureEndpoints(workspace_client, self.settings, credential)
        self.compute = AzureCompute(workspace_client)
        self.data = AzureData()
        self.imports = None  # register a folder with the SDK or `az ml model create`

    @classmethod
    def from_settings(cls, workspace: Any) -> AzureWorkspace:
        """From a profile's `workspace` section (see auth.py for how the clients are found)."""
        credential = make_credential(workspace.azure)
        return cls(
            workspace_client(workspace, credential), registry_client(workspace, credential), workspace.azure, credential
        )

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
