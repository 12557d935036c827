"""The model registry role: the foundation model catalogue, registered versions and the champion label."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from workspaces.ports.jobs import JobRef
from workspaces.ports.models import FoundationModel, ModelVersion


@runtime_checkable
class ModelRegistry(Protocol):
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        """The catalogue's model (NotFoundError naming what exists when it is not there)."""
        ...

    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        """The version of `name` registered from `job`, or None."""
        ...

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        """A new version of `name` from the job's trained model, its number unique and assigned by the registry."""
        ...

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion: ...

    def champion(self, name: str) -> ModelVersion | None:
        """The version labelled champion (what is promoted), or None before the first promotion."""
        ...

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        """Move the champion label to `model` (None: no champion)."""
        ...

    def record_evaluation(
        self, model: ModelVersion, metrics: dict[str, float], answers: list[dict[str, str]]
    ) -> str | None:
        """The answer evaluation's scores as metrics of the model's training run and its answers as a table there;
        where the table is, or None where this registry keeps no such record (the run's artifacts still do)."""
        ...


@runtime_checkable
class ModelImports(Protocol):
    """A registry that can take a model folder from this machine as a foundation model (`tunegate model import`)."""

    def import_model(self, folder: Path, name: str, tags: dict[str, str], version: str | None = None) -> ModelVersion:
        """Register `folder` (checked by the caller) as `name`, at `version` or the next free one."""
        ...
