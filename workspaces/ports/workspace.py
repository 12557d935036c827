"""A workspace: a typed bundle of the roles, plus what only the whole can say (links for people, the inventory)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import Field

from workspaces.ports.compute import ComputeTargets
from workspaces.ports.data import DataStore
from workspaces.ports.jobs import JobRef, TrainingJobs
from workspaces.ports.models import ModelVersion
from workspaces.ports.registry import ModelImports, ModelRegistry
from workspaces.ports.serving import ServingEndpoints
from workspaces.ports.values import Value


class Inventory(Value):
    """What tunegate created in this workspace and is still there: the leak check looks at this."""

    endpoints: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # endpoint -> deployments
    running_jobs: tuple[str, ...] = ()
    processes: tuple[int, ...] = ()  # local processes serving or training (a workspace without any leaves it empty)
    endpoints_down: tuple[str, ...] = ()  # exist, but their server is not running
    endpoints_ended: tuple[str, ...] = ()  # ephemeral endpoints of runs that have ended: to delete, never to start
    # for a person to act on: damaged state files, endpoints of runs that ended, live model != champion
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.endpoints and not self.running_jobs and not self.processes


@runtime_checkable
class Workspace(Protocol):
    """Each stage takes the one role it uses (`workspace.jobs`, `workspace.endpoints`, ...)."""

    # read-only members (an adapter's own role classes satisfy them)
    @property
    def kind(self) -> str: ...
    @property
    def registry(self) -> ModelRegistry: ...
    @property
    def compute(self) -> ComputeTargets: ...
    @property
    def data(self) -> DataStore: ...
    @property
    def jobs(self) -> TrainingJobs: ...
    @property
    def endpoints(self) -> ServingEndpoints: ...
    @property
    def imports(self) -> ModelImports | None:
        """None: models come from the workspace's own catalogue only."""
        ...

    def links(
        self, job: JobRef | None = None, model: ModelVersion | None = None, endpoint: str | None = None
    ) -> dict[str, str]:
        """Pages a person can open for these (the job, its tracking run, the model version, the endpoint and its
        scoring URL), label -> URL; only what this workspace can link to. Never a key."""
        ...

    def inventory(self) -> Inventory:
        """What is here and still running, and what a person must look at (`problems`)."""
        ...
