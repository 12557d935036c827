"""What serves, and changing it: read the endpoint, promote a smoked candidate, make a kept endpoint and the
champion agree (repair_for, reconcile), roll a candidate back."""

from __future__ import annotations

from prefect.logging import get_run_logger
from pydantic import BaseModel

from tasks.approval import is_approved
from tasks.deploy import DeploymentRefused, DeployResult
from tasks.errors import stage
from workspaces.ports import (
    ModelRegistry,
    ModelVersion,
    ServingEndpoints,
    WorkspaceError,
)


class ServingState(BaseModel):
    """An endpoint as the workspace reports it: each deployment's model version and traffic share."""

    name: str
    traffic: dict[str, int]
    models: dict[str, str]  # deployment -> "name:version"

    @property
    def live(self) -> list[str]:
        """Model versions of the deployments that take traffic."""
        return [self.models.get(name, "?") for name, pct in sorted(self.traffic.items()) if pct > 0]


def serving_state(endpoints: ServingEndpoints, endpoint_name: str) -> ServingState | None:
    endpoint = endpoints.get(endpoint_name)
    if endpoint is None:
        return None
    models = {}
    for name in endpoint.deployments:
        deployment = endpoints.get_deployment(endpoint_name, name)
        models[name] = deployment.model if deployment else "?"
    return ServingState(name=endpoint_name, traffic=dict(endpoint.traffic), models=models)


@stage("promote")
def promote(
    endpoints: ServingEndpoints,
    registry: ModelRegistry,
    deployed: DeployResult,
    model: ModelVersion,
    set_champion: bool,
) -> list[str]:
    """All traffic to the new deployment in one update (never a moment with no deployment taking traffic), check
    that what now serves is this model, make it champion, then retire the old deployments. Returns the retired names.

    The champion is always what serves: when it cannot be recorded, traffic goes back to where it was before the
    error is raised. A retirement that fails leaves an old deployment at 0%, which serves nothing."""
    wanted = f"{model.name}:{model.version}"
    if not is_approved(model):  # the last door before traffic: whatever order the run decided in
        raise DeploymentRefused(
            f"{wanted} has no recorded approval (decision={model.tags.get('decision')!r}); not giving it traffic"
        )
    endpoints.set_traffic(deployed.endpoint, {deployed.deployment: 100})
    try:
        serving = serving_state(endpoints, deployed.endpoint)
        if serving is None or serving.live != [wanted]:
            raise WorkspaceError(
                f"after promotion {deployed.endpoint} serves {serving.live if serving else 'nothing'}, not {wanted}"
            )
        if set_champion:
            registry.set_champion(model, model.name)
    except BaseException:
        # live and champion must not disagree: back to what served (a retry of this stage promotes again)
        if deployed.previous_traffic:
            endpoints.set_traffic(deployed.endpoint, deployed.previous_traffic)
            get_run_logger().warning(
                "promotion of %s not completed: traffic of %s is back to %s",
                wanted, deployed.endpoint, deployed.previous_traffic,
            )  # fmt: skip
        raise
    endpoint = endpoints.get(deployed.endpoint)
    retired = [name for name in (endpoint.deployments if endpoint else ()) if name != deployed.deployment]
    for name in retired:
        endpoints.delete_deployment(deployed.endpoint, name)
    return retired


class Repair(BaseModel):
    """How to make an endpoint's live model and the registry's champion agree again (a promotion was killed
    half-way): nothing, traffic back to the champion's deployment, or the live model recorded as champion."""

    needed: bool
    traffic_to: str | None = None  # a deployment that serves the champion
    champion: str | None = None  # "name:version" that serves and is to be recorded as champion
    why: str = ""


def repair_for(serving: ServingState | None, champion: ModelVersion | None) -> Repair:
    """Pure rule. The champion is the record of the last promotion that finished: while one of the endpoint's
    deployments still serves it, traffic goes back there (the interrupted promotion is undone; the next run of the
    same inputs does it again). When none does (there was none, or it is gone), what serves is what the killed
    promotion had already smoke-tested and sent all traffic to: it is recorded as champion."""
    if serving is None or not serving.live:
        return Repair(needed=False)
    wanted = f"{champion.name}:{champion.version}" if champion is not None else None
    if serving.live == [wanted]:
        return Repair(needed=False)
    why = f"{serving.name} serves {', '.join(serving.live)} but the champion is {wanted or 'none'}"
    holding = sorted(name for name, model in serving.models.items() if model == wanted)
    if holding:
        return Repair(needed=True, traffic_to=holding[0], why=why)
    if len(set(serving.live)) == 1:
        return Repair(needed=True, champion=serving.live[0], why=why)
    return Repair(needed=True, why=f"{why}, and more than one model takes traffic: decide which by hand")


def reconcile(endpoints: ServingEndpoints, registry: ModelRegistry, endpoint_name: str, model_name: str) -> str | None:
    """Make a kept endpoint's live model and the champion agree (repair_for), saying what was done; None when they
    agreed. Refuses (WorkspaceError) when it cannot tell which should win."""
    serving = serving_state(endpoints, endpoint_name)
    if serving is None or not all(live.rpartition(":")[0] == model_name for live in serving.live):
        return None  # the endpoint serves another model (one endpoint may serve two names): not this one's to judge
    champion = registry.champion(model_name)
    repair = repair_for(serving, champion)
    if not repair.needed:
        return None
    if repair.traffic_to is not None:
        endpoints.set_traffic(endpoint_name, {repair.traffic_to: 100})
        done = f"{repair.why} (a promotion was interrupted): traffic back to {repair.traffic_to}, which serves it"
    elif repair.champion is not None:
        name, _, version = repair.champion.rpartition(":")
        registry.set_champion(ModelVersion(name=name, version=version), name)
        done = f"{repair.why} and no deployment serves that one: recorded {repair.champion} as champion"
    else:
        raise WorkspaceError(repair.why)
    return done


@stage("reconcile endpoint")
def reconcile_endpoint(
    endpoints: ServingEndpoints, registry: ModelRegistry, endpoint_name: str, model_name: str
) -> str | None:
    """Before a kept endpoint is changed: live and champion agree, or are made to (see reconcile)."""
    done = reconcile(endpoints, registry, endpoint_name, model_name)
    if done:
        get_run_logger().warning("repaired %s: %s", endpoint_name, done)
    return done


@stage("read endpoint")
def read_endpoint(endpoints: ServingEndpoints, name: str) -> ServingState | None:
    """The endpoint as the workspace reports it (what serves), for the run summary."""
    return serving_state(endpoints, name)


@stage("roll back")
def roll_back(endpoints: ServingEndpoints, deployed: DeployResult) -> None:
    """Delete the new deployment; live traffic was never moved, so it stays where it was. A deployment that takes
    traffic is never the one to roll back: refuse rather than take down what serves."""
    endpoint = endpoints.get(deployed.endpoint)
    if endpoint is None or deployed.deployment not in endpoint.deployments:
        return
    share = endpoint.traffic.get(deployed.deployment, 0)
    if share > 0:
        raise DeploymentRefused(
            f"not rolling back {deployed.endpoint}/{deployed.deployment}: it takes {share}% of traffic "
            f"({endpoint.traffic}); the candidate must never be what serves"
        )
    endpoints.delete_deployment(deployed.endpoint, deployed.deployment)
