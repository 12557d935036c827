"""prefect.yaml is the one description of the deployments; `tunegate serve` builds the same ones from it."""

from __future__ import annotations

from flows.deployments import deployment_specs, runner_deployments
from flows.params import load_profile


def test_serve_builds_every_deployment_of_prefect_yaml():
    built = {d.name: d for d in runner_deployments()}
    assert set(built) == {"retrain-scheduled", "retrain-on-demand", "local-demo"}
    [schedule] = built["retrain-scheduled"].schedules
    assert schedule.schedule.cron == "0 3 * * 1" and schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.active is False  # it needs an Azure workspace: a laptop's `serve` must not start it weekly
    assert not built["retrain-on-demand"].schedules
    assert built["local-demo"].parameters["overrides"][0] == "approval.policy=manual"


def test_profiles_named_by_deployments_load_with_their_overrides():
    for spec in deployment_specs():
        parameters = spec.get("parameters") or {}
        if "profile" not in parameters:
            continue
        overrides = list(parameters.get("overrides") or [])
        if parameters["profile"].endswith("azure.yaml"):  # placeholders are for the user to fill in
            overrides += ["workspace.subscription_id=s", "workspace.resource_group=r", "workspace.workspace_name=w"]
        config = load_profile(parameters["profile"], overrides)
        assert config.approval.policy == "manual", spec["name"]
