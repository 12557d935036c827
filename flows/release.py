"""The release, in two phases: `deploy_and_smoke` puts the approved candidate next to the live model at 0% and smokes
it (or rolls it back); `promote` gives it all traffic in one update, the champion label, and retires the old
deployments. Between them a candidate serves nothing and can be judged (a phase added there sees `run.deployed`).
A kept endpoint is shared: the endpoint lock is taken by deploy_and_smoke and held on the run until promote is done
(or the run ends), so another run's release waits for this one's, and this one's gate is checked again against
whatever champion that run left."""

from __future__ import annotations

from prefect.logging import get_run_logger

from flows.rollout import finish_promoted, recover_interrupted_rollout
from flows.run import Run, RunStatus, RunStopped
from tasks.deploy import deployment_name
from tasks.gate import model_id
from tasks.gate_advice import stop_message
from workspaces.factory import open_chat_flows
from workspaces.ports import ModelVersion


def deploy_and_smoke(run: Run) -> None:
    candidate = run.candidate_()
    if candidate.already_champion:
        keep_serving_champion(run, candidate.version)
        return
    run.state.endpoint = run.endpoint_name
    run.hold(run.workspace.endpoints.lock(run.endpoint_name))
    if run.keep:
        recheck_gate_after_waiting(run, candidate.champion)
        reconcile(run, run.endpoint_name, run.registered_name)
    deploy_candidate_and_smoke(run, run.endpoint_name, candidate.version)


def promote(run: Run) -> None:
    """All traffic to the smoked candidate; nothing to do when the champion already serves (keep_serving_champion)."""
    deployed = run.deployed
    if deployed is None:
        return
    version = run.candidate_().version
    retired = run.stages.promote(run.workspace.endpoints, run.workspace.registry, deployed, version, run.keep)
    get_run_logger().info(
        "%s now takes 100%% of %s; retired %s", deployed.deployment, deployed.endpoint, retired or "nothing"
    )
    run.stage("read_endpoint", run.workspace.endpoints, deployed.endpoint)
    finish_promoted(run)
    run.release_held()


def reconcile(run: Run, endpoint_name: str, model_name: str) -> None:
    recover_interrupted_rollout(run, endpoint_name)
    run.stage("reconcile_endpoint", run.workspace.endpoints, run.workspace.registry, endpoint_name, model_name)


def recheck_gate_after_waiting(run: Run, champion: ModelVersion | None) -> None:
    """While this run trained or waited for approval, another may have promoted a new champion: the candidate must
    beat that one too, or it does not go live."""
    now, error = run.champion_or_error()
    if error is None and model_id(now) == model_id(champion):
        return
    gate = run.gate(now, error, run.trained_().evaluated_champion)
    became = f"{model_id(now)} became champion while this run waited"
    if not gate.passed:
        raise RunStopped(RunStatus.GATE_FAILED, stop_message(gate, first=f"{became}; "))
    if not gate.comparable and run.config.approval.policy != "auto":  # approved against another champion than this
        raise RunStopped(
            RunStatus.GATE_FAILED,
            f"Gate failed: {became} and this model cannot be compared with it; run again to compare",
        )


def keep_serving_champion(run: Run, champion: ModelVersion) -> None:
    """The champion is this job's model, promoted by an earlier run: check the endpoint serves it, and make it when
    it does not."""
    endpoint = run.config.endpoint.name
    run.state.endpoint = endpoint
    run.hold(run.workspace.endpoints.lock(endpoint))
    reconcile(run, endpoint, champion.name)
    serving = run.stage("read_endpoint", run.workspace.endpoints, endpoint)
    if serving is not None and serving.live == [model_id(champion)]:
        live = next(name for name, share in sorted(serving.traffic.items()) if share > 0)
        run.observe("deployment", (endpoint, live))
        run.note_links(endpoint=endpoint)
        run.release_held()
        return
    get_run_logger().warning("%s is champion but not live on %s: deploying it again", model_id(champion), endpoint)
    deploy_candidate_and_smoke(run, endpoint, champion)


def deploy_candidate_and_smoke(run: Run, endpoint_name: str, version: ModelVersion) -> None:
    config, endpoints = run.config, run.workspace.endpoints
    # named before it exists: a deploy that fails half-way still has its candidate taken down (if it serves nothing)
    run.state.deployment = deployment_name(config.endpoint.deployment_prefix, version)
    foundation = run.prepared_().foundation
    ephemeral = config.teardown.mode == "ephemeral"
    deployed = run.stage(
        "deploy_candidate",
        endpoints,
        config.endpoint,
        endpoint_name,
        version,
        foundation,
        ephemeral=ephemeral,
        approved_first=config.approval.when == "before-deploy",
    )
    run.state.deployment = deployed.deployment

    test_gen = run.prepared_().sampled.files["test_gen"]
    # with an evaluation to follow, it judges replies on more prompts; without one, the smoke test is the last word
    smoke = run.stage(
        "smoke_invoke", endpoints, deployed, config.smoke, test_gen, fail_on_no_reply=not config.evaluate.enabled
    )
    if smoke.ok and config.smoke.promptflow:
        batch = run.stage(
            "smoke_promptflow", open_chat_flows(), endpoints, run.workspace.kind, deployed, config.smoke, test_gen
        )
        if not batch.ok:
            smoke = smoke.model_copy(update={"ok": False, "error": f"through Prompt flow: {batch.error}"})
            run.observe("smoke_invoke", smoke)
    if not smoke.ok:
        run.stage("roll_back", endpoints, deployed)
        raise RunStopped(
            RunStatus.SMOKE_FAILED,
            f"Smoke failed, rolled back: {deployed.deployment} on {endpoint_name}: {smoke.error}",
        )

    run.note_links(endpoint=endpoint_name)
    run.deployed = deployed  # promote (or a phase before it) takes it from here
