"""The tunegate flow: data -> compute -> fine-tune -> gate -> register -> approval -> deploy -> smoke -> teardown.

Reads like the table in DESIGN.md. Each stage is a task in tasks/; this module only chains them, keeps the
run summary and makes sure teardown runs whatever happens (success, failure, Ctrl-C, cancellation).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from flows.params import TunegateConfig, load_profile
from flows.summary import RunSummary
from tasks import approval, compute, data, deploy, finetune, metrics, model, register, teardown
from tasks.settings import RetrySettings
from workspaces.base import Workspace
from workspaces.factory import open_workspace


class RunStopped(Exception):
    """The run ended early on purpose (gate failed, rejected, smoke failed); the message says why."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def endpoint_name_for(config: TunegateConfig, run_id: str) -> str:
    # ephemeral runs get their own endpoint, as the notebook appends a timestamp: never touches a live one
    if config.teardown.mode == "ephemeral":
        return f"{config.endpoint.name}-{run_id.replace('-', '')[:8]}".lower()
    return config.endpoint.name


def has_prefect_server() -> bool:
    """True when runs talk to a real Prefect server (PREFECT_API_URL), which is where a person can resume them."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


class ManualApprovalNeedsServer(ValueError):
    pass


def require_server_for_manual(config: TunegateConfig) -> None:
    if config.approval.policy == "manual" and not has_prefect_server():
        raise ManualApprovalNeedsServer(
            "approval.policy manual needs a Prefect server a reviewer can reach: start one with `prefect server start`, "
            "then `export PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect config set PREFECT_API_URL=...`) and run again"
        )


def _with_retries(stage, retries: RetrySettings):
    return stage.with_options(retries=retries.attempts, retry_delay_seconds=retries.delay_s)


def run_stages(config: TunegateConfig, workspace: Workspace, run_id: str, summary: RunSummary, state: dict) -> None:
    """Every stage up to promotion. `state` collects what teardown needs to know (what this run created)."""
    r = config.retries
    logger = get_run_logger()
    run_dir = Path(config.workspace.state_dir) / "runs" / run_id

    sampled = _with_retries(data.sample_data, r)(config.data, str(run_dir / "data"), str(Path(config.workspace.state_dir) / "datasets"))
    summary.data.rows, summary.data.fingerprint, summary.data.dropped_invalid = sampled.rows, sampled.fingerprint, sampled.dropped

    foundation = _with_retries(model.pick_model, r)(workspace, config.model)
    summary.model.foundation = f"{foundation.name}:{foundation.version}"
    validated = _with_retries(compute.validate_compute, r)(workspace, config.compute, foundation)

    data_ref = _with_retries(finetune.upload_data, r)(workspace, sampled.files["train_sft"], sampled.files["test_sft"], sampled.fingerprint)
    spec = finetune.build_spec(
        foundation, validated, data_ref, config.finetune, config.job.experiment_name or f"chat_completion_{foundation.name}"
    )
    key = finetune.idempotency_key(run_id, foundation, data_ref, validated.name, spec.parameters)
    job = _with_retries(finetune.submit_finetune, r)(workspace, spec, key)
    state["job"] = job
    summary.job.name, summary.job.url, summary.job.display_name, summary.job.reattached = job.name, job.url, spec.display_name, job.reattached
    _with_retries(finetune.wait_for_finetune, r)(workspace, job, config.job)

    registered_name = config.model.registered_name()
    gate = _with_retries(metrics.check_metrics, r)(workspace, job, config.gate, registered_name)
    summary.metrics, summary.gate.passed, summary.gate.reasons = gate.metrics, gate.passed, gate.reasons
    if not gate.passed:
        raise RunStopped("gate_failed", "metric gate failed: " + "; ".join(gate.failures))

    tags = register.lineage_tags(foundation, job, sampled.fingerprint, gate, run_id)
    version = _with_retries(register.register_model, r)(workspace, job, registered_name, tags)
    summary.model.name, summary.model.version = version.name, version.version

    decision = approval.policy_decision(config.approval, gate)
    if decision is None and not has_prefect_server():
        decision = approval.ApprovalRecord(
            approved=False, approver=f"policy:{config.approval.policy}", policy=config.approval.policy,
            decided_at=approval.now_iso(), comment="a person must decide and no Prefect server runs to ask one: rejected",
        )
    elif decision is None:
        facts = {
            "model": f"{version.name}:{version.version} (from {foundation.name}:{foundation.version})",
            "data": f"{sampled.rows} rows, fingerprint `{sampled.fingerprint}` ({config.data.source})",
            "target": f"endpoint `{endpoint_name_for(config, run_id)}`, instance type {config.endpoint.instance_type}, "
                      f"teardown {config.teardown.mode}",
            "fine-tune job": f"{job.name} {job.url or ''}",
        }
        summary.approval.decision = "waiting"
        decision = approval.ask_a_person(
            approval.review_markdown(version, gate, facts), config.approval,
            # a key per flow attempt: a retried run pauses again instead of reusing the previous answer
            key=f"approval-{version.version}-attempt{flow_run.run_count}",
        )
    version = _with_retries(approval.record_decision, r)(workspace, version, decision, gate)
    summary.approval.decision, summary.approval.approver, summary.approval.comment = decision.label, decision.approver, decision.comment
    if not decision.approved:
        raise RunStopped("rejected", f"{version.name}:{version.version} rejected by {decision.approver}: {decision.comment}")

    endpoint_name = endpoint_name_for(config, run_id)
    state["endpoint"] = endpoint_name
    summary.endpoint.name = endpoint_name
    deployed = _with_retries(deploy.deploy_candidate, r)(
        workspace, config.endpoint, endpoint_name, version, foundation, ephemeral=config.teardown.mode == "ephemeral"
    )
    state["deployment"] = deployed.deployment
    summary.endpoint.deployment = deployed.deployment

    smoke = _with_retries(deploy.smoke_invoke, r)(workspace, deployed, config.smoke, sampled.files["test_gen"])
    summary.smoke.ok, summary.smoke.latency_ms, summary.smoke.error, summary.smoke.sample_output = (
        smoke.ok, smoke.latency_ms, smoke.error, smoke.sample_output
    )
    if not smoke.ok:
        _with_retries(deploy.roll_back, r)(workspace, deployed)
        summary.endpoint.deployment = None
        raise RunStopped("smoke_failed", f"smoke request through {deployed.deployment} failed: {smoke.error}; rolled back")

    retired = _with_retries(deploy.promote, r)(workspace, deployed, version, set_champion=config.teardown.mode == "keep")
    logger.info("%s now takes 100%% of %s; retired %s", deployed.deployment, endpoint_name, retired or "nothing")
    endpoint = workspace.get_endpoint(endpoint_name)
    summary.endpoint.traffic = dict(endpoint.traffic) if endpoint else {}


def run_teardown(config: TunegateConfig, workspace: Workspace, summary: RunSummary, state: dict) -> None:
    summary.teardown.mode = config.teardown.mode
    endpoint_name = state.get("endpoint")
    if endpoint_name is None:  # nothing was deployed: nothing to take down
        summary.teardown.done = True
        return
    try:
        result = _with_retries(teardown.teardown, config.retries)(workspace, config.teardown.mode, endpoint_name, state.get("deployment"))
        summary.teardown.done, summary.teardown.deleted = result.done, result.deleted
    except Exception as exc:  # noqa: BLE001 - a teardown failure is reported, and must not hide the run's own error
        summary.teardown.done = False
        summary.error = (summary.error + "; " if summary.error else "") + f"teardown failed: {exc}"


def _finish(config: TunegateConfig, summary: RunSummary, run_id: str, started: float) -> None:
    summary.seconds = round(time.monotonic() - started, 1)
    run_dir = Path(config.workspace.state_dir) / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    try:
        create_markdown_artifact(key="run-summary", markdown=summary.markdown(), description=f"tunegate {summary.status}")
    except Exception:  # noqa: BLE001 - the summary file above is the record; the artifact is a convenience
        get_run_logger().warning("could not create the run-summary artifact", exc_info=True)


def _teardown_on_cancel(flow, flow_run_obj, state) -> None:
    """Runs in the runner when a deployed run is cancelled and its process killed: take down this run's endpoint."""
    parameters = flow_run_obj.parameters or {}
    config = (load_profile(parameters["profile"], parameters.get("overrides") or []) if parameters.get("profile")
              else TunegateConfig.model_validate(parameters.get("config") or {}))
    if config.teardown.mode != "ephemeral":
        return
    workspace = open_workspace(config.workspace)
    name = endpoint_name_for(config, str(flow_run_obj.id))
    if workspace.get_endpoint(name) is not None:
        workspace.delete_endpoint(name)


@flow(name="tunegate", on_cancellation=[_teardown_on_cancel], on_crashed=[_teardown_on_cancel])
def tunegate(
    config: TunegateConfig = load_profile(),  # noqa: B008 - the UI form starts from local.yaml
    profile: str | None = None,
    overrides: list[str] | None = None,
) -> RunSummary:
    """Fine-tune a chat model, gate it, approve it, deploy it blue/green, smoke it, tear down.

    `config` is the form; a deployment that tracks a profile file instead names it in `profile` (with `--set`-style
    `overrides`), and then `config` is not used.
    """
    if profile:
        config = load_profile(profile, overrides or [])
    started = time.monotonic()
    run_id = str(flow_run.id or "local")
    summary = RunSummary(flow_run_id=run_id, workspace=config.workspace.kind)
    workspace: Workspace | None = None
    state: dict = {}
    try:
        require_server_for_manual(config)
        workspace = open_workspace(config.workspace)
        run_stages(config, workspace, run_id, summary, state)
        summary.status = "succeeded"
    except RunStopped as stop:
        summary.status, summary.error = stop.status, str(stop)
        raise
    except BaseException as exc:
        summary.status = "cancelled" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
        summary.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if workspace is not None:
            run_teardown(config, workspace, summary, state)
        _finish(config, summary, run_id, started)
    return summary
