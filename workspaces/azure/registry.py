"""Models: the foundation model from the `azureml` registry, fine-tuned versions in the workspace (registered
from the job's `trained_model` output, as the notebook does), their tags, and the champion tag."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Model

from workspaces.azure.errors import get_or_none, translated
from workspaces.ports import ConflictError, FoundationModel, JobRef, ModelVersion, WorkspaceError

CHAMPION_TAG = "tunegate.champion"
JOB_TAG = "finetune_job"
CREATED_BY = {"created_by": "tunegate"}
VERSION_ATTEMPTS = 5
# what the service says when a PUT names a version that exists with another path (azure-ai-ml's ASSET_PATH_ERROR)
ASSET_PATH_TAKEN = "Asset paths cannot be updated"


def version_taken(error: WorkspaceError) -> bool:
    """The version the SDK picked was registered by someone else between its read of nextVersion and its PUT."""
    from azure.ai.ml.exceptions import AssetPathException

    cause = error.__cause__
    return isinstance(cause, AssetPathException) or ASSET_PATH_TAKEN in str(error) or isinstance(error, ConflictError)


def as_version(model: Any) -> ModelVersion:
    return ModelVersion(name=model.name, version=str(model.version), tags=dict(model.tags or {}))


class AzureRegistry:
    def __init__(self, ml: MLClient, registry: MLClient, model_path_of: Callable[[JobRef], str] | None = None) -> None:
        self.ml = ml
        self.registry = registry
        # command mode: where the job's script logged its model (the jobs role reads the run's files)
        self.model_path_of = model_path_of

    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        with translated(f"registry model {name}"):
            if version:
                model = self.registry.models.get(name, version=version)
            else:
                model = self.registry.models.get(name, label=label)
        return FoundationModel(name=model.name, version=str(model.version), id=model.id, tags=dict(model.tags or {}))

    def _versions(self, name: str) -> list[Any]:
        return get_or_none(f"model {name}", lambda: list(self.ml.models.list(name=name))) or []

    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        found = [model for model in self._versions(name) if (model.tags or {}).get(JOB_TAG) == job.name]
        return as_version(min(found, key=lambda model: str(model.version))) if found else None

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        """From the pipeline's `trained_model` output (the notebook), or where a command job's script logged it.

        No version is given: the SDK reads the container's nextVersion, then PUTs that version. Two runs finishing
        together read the same number; the second PUT then meets the first's version ("Asset paths cannot be
        updated"). That is a race, not an error: read the next number again and register under it."""
        path = self.model_path_of(job) if self.model_path_of is not None else None
        for attempt in range(1, VERSION_ATTEMPTS + 1):
            model = Model(  # a new one each time: the SDK writes the version it picked into the object
                path=path or f"azureml://jobs/{job.name}/outputs/trained_model",
                type=AssetTypes.MLFLOW_MODEL,
                name=name,
                description=f"{name} fine tuned by tunegate job {job.name}",
                tags={**tags, JOB_TAG: job.name, **CREATED_BY},
            )
            try:
                with translated(f"register model {name}"):
                    return as_version(self.ml.models.create_or_update(model))
            except WorkspaceError as exc:
                if not version_taken(exc) or attempt == VERSION_ATTEMPTS:
                    raise
                mine = self.find_model_version(name, job)  # taken by this very job (a retried request)? then done
                if mine is not None:
                    return mine
        raise AssertionError("unreachable")

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        with translated(f"tag model {model.name}:{model.version}"):
            current = self.ml.models.get(model.name, version=model.version)
            current.tags = {**(current.tags or {}), **tags}
            return as_version(self.ml.models.create_or_update(current))

    def champion(self, name: str) -> ModelVersion | None:
        # the champion is a tag on the model version: it survives ephemeral endpoints and is one lookup
        for model in self._versions(name):
            if (model.tags or {}).get(CHAMPION_TAG) == "true":
                return as_version(model)
        return None

    def record_evaluation(
        self, model: ModelVersion, metrics: dict[str, float], answers: list[dict[str, str]]
    ) -> str | None:
        # the pipeline's run is closed once it completes and the model asset carries only lineage and decision
        # tags: the scores and answers are the run's summary and artifacts
        return None

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        previous = self.champion(name)
        if previous is not None and (model is None or previous.version != model.version):
            self.tag_model(previous, {CHAMPION_TAG: "false"})
        if model is not None:
            self.tag_model(model, {CHAMPION_TAG: "true"})
