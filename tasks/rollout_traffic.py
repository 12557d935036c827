"""What a progressive rollout changes on the endpoint and the registry between its windows (tasks/rollout.py judges
the windows):

    shift_traffic  stage: the candidate's share (and the mirror) set on the endpoint
    restore_live   stage: the live model back to 100%, mirror off, the candidate deleted
    record_rollout stage: how far the candidate got, tagged on its model version
"""

from __future__ import annotations

from tasks.errors import stage
from tasks.rollout import Rollout
from workspaces.ports import ModelRegistry, ModelVersion, ServingEndpoints, WorkspaceError


@stage("read live model")
def live_model_of(endpoints: ServingEndpoints, endpoint: str, deployment: str) -> str:
    """ "name:version" the deployment serves ("?" when the endpoint cannot say)."""
    found = endpoints.get_deployment(endpoint, deployment)
    return found.model if found is not None else "?"


@stage("shift traffic")
def shift_traffic(
    endpoints: ServingEndpoints, endpoint: str, live: str, candidate: str, share: int, mirror: int = 0
) -> dict[str, int]:
    """The candidate at `share` % and the live model at the rest (mirror: `mirror` % of live traffic copied to the
    candidate, which takes none itself). Returns the traffic the endpoint now reports."""
    if mirror:
        endpoints.set_mirror(endpoint, {candidate: mirror})
    else:
        current = endpoints.get(endpoint)
        if current is not None and current.mirror:
            endpoints.set_mirror(endpoint, {})
        endpoints.set_traffic(endpoint, {live: 100 - share, candidate: share})
    found = endpoints.get(endpoint)
    return dict(found.traffic) if found is not None else {}


@stage("restore live")
def restore_live(endpoints: ServingEndpoints, endpoint: str, live: str, candidate: str) -> dict[str, int]:
    """The live model back to all traffic, no mirror, the candidate deleted: the endpoint as it was before the
    rollout. Safe to repeat; refuses when the live deployment is gone (nothing to give traffic back to)."""
    current = endpoints.get(endpoint)
    if current is None:
        return {}
    if live not in current.deployments:
        raise WorkspaceError(
            f"cannot restore {endpoint}: the live deployment {live} is gone ({current.traffic}); decide by hand"
        )
    if current.mirror:
        endpoints.set_mirror(endpoint, {})
    if current.traffic.get(live, 0) != 100:
        endpoints.set_traffic(endpoint, {live: 100})
    if candidate in current.deployments and candidate != live:
        endpoints.delete_deployment(endpoint, candidate)
    found = endpoints.get(endpoint)
    return dict(found.traffic) if found is not None else {}


@stage("record rollout")
def record_rollout(registry: ModelRegistry, model: ModelVersion, rollout: Rollout) -> ModelVersion:
    """How far the candidate got, on its model version beside the decision (tag `rollout`)."""
    return registry.tag_model(model, {"rollout": rollout.words()[:500]})
