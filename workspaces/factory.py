"""The one place a backend is chosen: `open_workspace(settings)` keyed by `workspace.kind`.

Tests hand the flow an in-memory workspace with `use_workspace(fake)`, the way Dagster picks resources
by deployment name: an explicit seam, not a patch.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workspaces.azure.settings import AzureSettings
from workspaces.base import Workspace
from workspaces.local.settings import LocalSettings


class WorkspaceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: Literal["local", "azure"] = Field("local", description="Which backend runs the flow.")
    state_dir: str = Field(".tunegate", description="Local state: runs, sampled data, and the local workspace.")
    # azure only; kept here so one profile shape serves both backends
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace_name: str | None = None
    registry_name: str = "azureml"
    azure: AzureSettings = Field(default_factory=AzureSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)

    @model_validator(mode="after")
    def _no_placeholders(self) -> WorkspaceSettings:
        for key in ("subscription_id", "resource_group", "workspace_name"):
            value = getattr(self, key)
            if value and value.startswith("<"):
                raise ValueError(
                    f"workspace.{key} is still the placeholder {value}: fill it in, or set "
                    "workspace.azure.config_path to your config.json and remove the three ids"
                )
        return self


_override: contextvars.ContextVar[Workspace | None] = contextvars.ContextVar("tunegate_workspace", default=None)


@contextlib.contextmanager
def use_workspace(workspace: Workspace) -> Iterator[Workspace]:
    token = _override.set(workspace)
    try:
        yield workspace
    finally:
        _override.reset(token)


def open_workspace(settings: WorkspaceSettings) -> Workspace:
    override = _override.get()
    if override is not None:
        return override
    if settings.kind == "local":
        from workspaces.local.workspace import LocalWorkspace

        return LocalWorkspace(
            Path(settings.state_dir) / "workspace", settings.local.endpoint_limits, settings.local.mlflow_ui_url
        )
    from workspaces.azure.workspace import AzureWorkspace

    return AzureWorkspace.from_settings(settings)
