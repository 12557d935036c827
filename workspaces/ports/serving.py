"""The serving role: online endpoints, their deployments, the traffic split between them, and scoring."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from pydantic import Field

from workspaces import scoring
from workspaces.errors import NotFoundError, WorkspaceError
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
    mirror: dict[str, int] = Field(default_factory=dict)  # deployment -> % of live traffic copied to it


class DeploymentTraffic(Value):
    """What one deployment served in a window: every request it answered or failed (mirrored copies included)."""

    requests: int = 0
    errors: int = 0  # 5xx and timeouts: the deployment's fault, not the client's
    mirrored: int = 0  # of the requests, copies of live traffic (mirror_traffic), their answers thrown away
    p95_ms: float | None = None  # None: no request in the window
    # where the workspace tells them apart: requests and p95 per kind of request (split: the traffic split chose
    # it; targeted: the deployment header named it; mirror: a copy), so that like is compared with like
    requests_by_kind: dict[str, int] = Field(default_factory=dict)
    p95_ms_by_kind: dict[str, float] = Field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class TrafficReading(Value):
    """Each deployment's traffic between the `since` reading it was asked with and `at` (seconds since the epoch);
    `mark` is what the next reading counts from (the adapter's own: counters, a time)."""

    at: float
    deployments: dict[str, DeploymentTraffic] = Field(default_factory=dict)
    mark: dict[str, Any] = Field(default_factory=dict)


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

    def set_mirror(self, endpoint: str, mirror: dict[str, int]) -> Endpoint:
        """Copy a share of the endpoint's live traffic to one deployment (its answers thrown away, the live answer
        never delayed): {deployment: percent}, at most one deployment and 50%; {} stops mirroring. The mirrored
        deployment must take no traffic itself."""
        ...

    def traffic(self, endpoint: str, since: TrafficReading | None = None) -> TrafficReading:
        """What each deployment served since the `since` reading (since it started, without one): requests, errors,
        p95 latency, mirrored copies."""
        ...

    @property
    def batch_limit(self) -> int:
        """Conversations one scoring request may carry (1: one request per prompt)."""
        ...

    def invoke(
        self, endpoint: str, request: ScoringRequest, deployment: str | None = None, timeout_s: float = 120
    ) -> ScoreResult:
        """POST the scoring contract to the endpoint (one deployment when named); never raises for an HTTP answer."""
        ...

    def stream(self, endpoint: str, request: ScoringRequest, deployment: str | None = None) -> Iterator[str]:
        """The answer to `request.messages` piece by piece as the endpoint generates it (an endpoint that cannot
        stream: the whole answer as one piece). An error answer raises WorkspaceError with the endpoint's words."""
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

    def stream(self, endpoint: str, request: ScoringRequest, deployment: str | None = None) -> Iterator[str]:
        """The scoring contract answers whole: one piece (local endpoints stream, through their OpenAI route)."""
        yield from one_piece(self.invoke(endpoint, request, deployment))  # invoked when read: errors come then


def one_piece(result: ScoreResult) -> Iterator[str]:
    """A whole answer as a stream of one piece; an error answer raises WorkspaceError as it is read."""
    if result.error:
        raise WorkspaceError(result.error)
    yield result.output or ""
