"""Teardown: runs on success, failure and cancellation. Ephemeral deletes the run's endpoint; keep deletes only
what this run left behind that takes no traffic. `take_down` is the one rule; the stage task, the flow's
cancellation hook and `tunegate teardown` all call it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from tasks.errors import stage
from workspaces.ports import ServingEndpoints, WorkspaceError

Mode = Literal["ephemeral", "keep"]


class TeardownResult(BaseModel):
    mode: str
    done: bool
    deleted: list[str]


def leftovers(traffic: dict[str, int], deployments: tuple[str, ...], created: str | None) -> list[str]:
    """Deployments to delete in keep mode: the one this run created, when it ended up taking no traffic."""
    return [name for name in deployments if name == created and traffic.get(name, 0) == 0]


def take_down(
    endpoints: ServingEndpoints, mode: Mode, endpoint_name: str, created_deployment: str | None = None
) -> TeardownResult:
    """Idempotent: an endpoint or deployment that is already gone counts as taken down."""
    try:
        endpoint = endpoints.get(endpoint_name)
    except WorkspaceError:
        if mode != "ephemeral":
            raise
        # cannot tell whether it is there: delete anyway (deleting what is gone is no error), never leave it running
        endpoints.delete(endpoint_name)
        return TeardownResult(mode=mode, done=True, deleted=[endpoint_name])
    if endpoint is None:
        return TeardownResult(mode=mode, done=True, deleted=[])
    if mode == "ephemeral":
        endpoints.delete(endpoint_name)
        return TeardownResult(mode=mode, done=True, deleted=[endpoint_name])
    deleted = leftovers(endpoint.traffic, endpoint.deployments, created_deployment)
    for name in deleted:
        endpoints.delete_deployment(endpoint_name, name)
    return TeardownResult(mode=mode, done=True, deleted=[f"{endpoint_name}/{name}" for name in deleted])


@stage("teardown")
def teardown(
    endpoints: ServingEndpoints, mode: Mode, endpoint_name: str, created_deployment: str | None
) -> TeardownResult:
    return take_down(endpoints, mode, endpoint_name, created_deployment)
