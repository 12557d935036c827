"""Teardown: runs on success, failure and cancellation. Ephemeral deletes the run's endpoint; keep deletes only
what this run left behind that takes no traffic."""

from __future__ import annotations

from pydantic import BaseModel

from tasks.errors import stage
from workspaces.base import Workspace


class TeardownResult(BaseModel):
    mode: str
    done: bool
    deleted: list[str]


def leftovers(traffic: dict[str, int], deployments: tuple[str, ...], created: str | None) -> list[str]:
    """Deployments to delete in keep mode: the one this run created, when it ended up taking no traffic."""
    return [name for name in deployments if name == created and traffic.get(name, 0) == 0]


@stage("teardown")
def teardown(workspace: Workspace, mode: str, endpoint_name: str, created_deployment: str | None) -> TeardownResult:
    endpoint = workspace.get_endpoint(endpoint_name)
    if endpoint is None:
        return TeardownResult(mode=mode, done=True, deleted=[])
    if mode == "ephemeral":
        workspace.delete_endpoint(endpoint_name)
        return TeardownResult(mode=mode, done=True, deleted=[endpoint_name])
    deleted = leftovers(endpoint.traffic, endpoint.deployments, created_deployment)
    for name in deleted:
        workspace.delete_deployment(endpoint_name, name)
    return TeardownResult(mode=mode, done=True, deleted=[f"{endpoint_name}/{name}" for name in deleted])
