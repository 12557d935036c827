"""The serving role: online endpoints, their deployments, the traffic split between them, and scoring."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from pydantic import Field

from workspaces import scoring
from workspaces.errors import NotFoundError
from workspaces.ports.models import ModelVersion
from workspaces.ports.values import Value
from workspaces.scoring import Credentials, ScoreResult, ScoringRequest

# deployment names are made once, in tasks/, for every workspace: they fit the strictest service's rule (Azure ML:
# 3-32 characters, letters, digits and dashes, starting with a letter), so a name is valid wherever it goes
DEPLOYMENT_NAME_MAX = 32


class Endpoint(Value):
    name: str
    traffic: dict[str, int] = Field(default_factory=dict)
    deployments: tuple[str, ...] = ()
    running: bool = True  # False: it exists but nothing answers (local: its server died); ensure restarts it


class Deployment(Value):
    endpoint: str
    name: str
    model: str  # "name:version"
    instance_type: str


@runtime_checkable
class ServingEndpoints(Protocol):
    def ensure(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        """Create the endpoint when missing. ephemeral: it belongs to this run only (local: its server dies with
        the run's process)."""
        ...

    def get(self, name: str) -> Endpoint | None: ...

    def lock(self, name: str) -> AbstractContextManager[Any]:
        """Held while a run changes the endpoint (deploy, smoke, promote or roll back): another run's changes to it
        wait until it is released, so two runs never interleave their promotions."""
        ...

    def create_deployment(
        self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1
    ) -> Deployment: ...

    def get_deployment(self, endpoint: str, name: str) -> Deployment | None:
        """The deployment (with the model version it serves), or None when the endpoint or it does not exist."""
        ...

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        """Percentages >= 0 that sum to 100 (or all 0) over deployments of the endpoint; deployments left out get 0.
        NotFoundError for a deployment the endpoint does not have, WorkspaceError for bad percentages."""
        ...

    def credentials(self, endpoint: str) -> Credentials: ...

    @property
    def batch_limit(self) -> int:
        """Conversations one scoring request may carry (1: one request per prompt)."""
        ...

    def invoke(
        self, endpoint: str, request: ScoringRequest, deployment: str | None = None, timeout_s: float = 120
    ) -> ScoreResult:
        """POST the scoring contract to the endpoint (one deployment when named); never raises for an HTTP answer."""
        ...

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """ConflictError while it takes traffic; a deployment that is already gone is not an error."""
        ...

    def delete(self, endpoint: str) -> None:
        """Delete with all deployments; an endpoint that is already gone is not an error."""
        ...


class ServingBase:
    """What every HTTP-scored serving adapter shares (local and Azure alike): `invoke` through the one scoring client,
    and `existing`, the endpoint that must be there."""

    @property
    def batch_limit(self) -> int:
        """Azure's chat-completion contract answers one conversation per request."""
        return 1

    def get(self, name: str) -> Endpoint | None:
        raise NotImplementedError

    def credentials(self, endpoint: str) -> Credentials:
        raise NotImplementedError

    def existing(self, name: str) -> Endpoint:
        """The endpoint, which must be there (just created or changed): NotFoundError when another process deleted it
        meanwhile."""
        found = self.get(name)
        if found is None:
            raise NotFoundError(f"endpoint {name} is gone (deleted while this run changed it)")
        return found

    def invoke(
        self, endpoint: str, request: ScoringRequest, deployment: str | None = None, timeout_s: float = 120
    ) -> ScoreResult:
        return scoring.score(self.credentials(endpoint), request, deployment, timeout_s)
