"""The value types of models: a foundation model from the catalogue, a registered version."""

from __future__ import annotations

from pydantic import Field

from workspaces.ports.values import Value


class FoundationModel(Value):
    name: str
    version: str
    id: str  # what the fine-tune job takes as `mlflow_model_path` (an azureml:// id or a local models:/ uri)
    tags: dict[str, str] = Field(default_factory=dict)


class ModelVersion(Value):
    name: str
    version: str
    tags: dict[str, str] = Field(default_factory=dict)
