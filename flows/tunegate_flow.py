"""The tunegate flow, in the order of the notebook's table of contents:

    sample data -> pick model -> validate compute -> fine-tune (submit, wait) -> check metrics -> register
    -> approval gate -> deploy (new deployment at 0%) -> smoke invoke -> promote or roll back -> teardown

Each stage is a task in tasks/ (retried on transient errors, flows/stages.py); this module chains them, lets the
summary record what each returned, and makes sure teardown runs whatever happens (success, failure, Ctrl-C,
cancellation).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from data.runs import RunStore
from data.sources import source_problem
from flows.params import TunegateConfig, load_profile
from flows.stages import Stages
from flows.summary import RunSummary
from tasks import approval, finetune, preflight, register
from tasks.approval import ApprovalRecord, require_server_for_manual
from tasks.deploy import check_instance_type, deployment_name
from tasks.metrics import GateResult, model_id
from tasks.model import INFERENCE_ALLOW_LIST, allow_list
from tasks.register import JOB_TAG
from tasks.sampling import SampledData
from tasks.teardown import TeardownResult, take_down
from workspaces.base import FoundationModel, JobRef, ModelVersion, Workspace, WorkspaceError
from workspaces.factory import open_chat_flows, open_workspace


class RunStopped(Exception):
    """The run ended early on purpose (gate failed, rejected, smoke failed); the message says why. Not a crash: the
    flow run ends in a Failed state named after the outcome, with this message and no traceback."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def state_name(self) -> str:
        return {"gate_failed": "Gate failed", "rejected": "Rejected", "smoke_failed": "Smoke failed"}[self.status]


DELIBERATE_ENDS = ("Gate failed", "Rejected", "Smoke failed")  # RunStopped.state_name, the start of its message


class QuietDeliberateEnds(logging.Filter):
    """A run started by a worker or runner that ends in a Failed state the flow returned on purpose (gate failed,
    rejected, smoke failed) makes Prefect's engine log "Engine execution exited with unexpected exception" with a
    FailedRun traceback in the run's log. That is an outcome, not an error: its record is dropped. Every other
    error, and every other failure, keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import FailedRun

        error = record.exc_info[1] if record.exc_info else None
        deliberate = isinstance(error, FailedRun) and str(error).startswith(DELIBERATE_ENDS)
        return not (deliberate and record.getMessage() == ENGINE_EXIT_MESSAGE)


ENGINE_EXIT_MESSAGE = "Engine execution exited with unexpected exception"  # prefect/flow_engine.py run_flow
logging.getLogger("prefect.flow_runs").addFilter(QuietDeliberateEnds())  # the logger of flow_run_logger()


@dataclass
class RunState:
    """What this run created so far: what teardown has to take down."""

    endpoint: str | None = None
    deployment: str | None = None


def endpoint_name_for(config: TunegateConfig, run_id: str) -> str:
    # ephemeral runs get their own endpoint, as the notebook appends a timestamp: never touches a live one
    if config.teardown.mode == "ephemeral":
        return f"{config.endpoint.name}-{run_id.replace('-', '')[:8]}".lower()
    return config.endpoint.name


def run_stages(
    config: TunegateConfig, stages: Stages, workspace: Workspace, run_id: str, summary: RunSummary, state: RunState
) -> None:
    store = RunStore(config.workspace.state_dir)
    # before any work: a missing data folder, a GPU size without a GPU
    preflight.check(config, workspace.list_sizes() if workspace.kind == "local" else None, source_problem)
    if config.smoke.promptflow:  # before hours of training, not after
        open_chat_flows().check()

    sampled = stages.sample_data(config.data, str(store.data_dir(run_id)), str(store.datasets_dir))
    summary.record_data(sampled)

    foundation = stages.pick_model(workspace, config.model)
    summary.record_foundation(foundation)
    # the model's serving allow list is known now: a size it cannot serve on is refused before hours of training
    check_instance_type(config.endpoint.instance_type, allow_list(foundation, INFERENCE_ALLOW_LIST))

    compute = stages.validate_compute(
        workspace, config.compute, foundation, model_rules=config.workspace.model_compute_rules
    )

    data_ref = stages.upload_data(workspace, sampled.files["train_sft"], sampled.files["test_sft"], sampled.fingerprint)
    experiment = config.job.experiment_name or f"chat_completion_{foundation.name}"
    registered_name = config.model.registered_name()
    # the champion of now rides along with the job, which evaluates it on the same split where the workspace can
    compare_with, _ = champion_or_error(stages, workspace, registered_name)
    spec = finetune.build_spec(foundation, compute, data_ref, config.finetune, experiment, compare_with)
    # the champion is not part of the key: a rerun finds the same job whatever became champion since
    key = finetune.idempotency_key(foundation, data_ref, compute.name, spec.parameters)
    job = stages.submit_finetune(workspace, spec, key, fresh=config.job.fresh)
    # what the job measured champion_eval_loss on: a job found again says (it may predate the champion of now)
    evaluated = job.evaluated_champion if job.reattached else model_id(compare_with)
    summary.record_job(job, spec)
    stages.wait_for_finetune(workspace, job, config.job)
    curve = draw_loss_curve(stages, workspace, job, foundation, store, run_id, summary)
    note_links(workspace, summary, job=job)

    champion, champion_error = champion_or_error(stages, workspace, registered_name)  # it may have changed meanwhile
    if config.teardown.mode == "keep" and champion is not None and champion.tags.get(JOB_TAG) == job.name:
        finish_earlier_promotion(stages, workspace, config, job, champion, foundation, sampled, summary, state)
        return
    gate = check_gate(stages, workspace, config, job, (champion, champion_error), evaluated, sampled)
    summary.record_gate(gate)
    if not gate.passed:
        raise RunStopped("gate_failed", "Gate failed: " + "; ".join(f.removeprefix("fail: ") for f in gate.failures))

    tags = register.lineage_tags(foundation, job, sampled.fingerprint, gate, run_id, sampled.eval_fingerprint)
    version = stages.register_model(workspace, job, registered_name, tags)
    summary.record_model(version)
    note_links(workspace, summary, job=job, model=version)

    endpoint_name = endpoint_name_for(config, run_id)
    decision = approval_decision(config, summary, version, foundation, gate, job, endpoint_name, curve)
    version = stages.record_decision(workspace, version, decision, gate, summary.links)
    summary.record_decision(decision)
    if not decision.approved:
        who = "approval timed out" if decision.approver == "timeout" else f"by {decision.approver}"
        raise RunStopped(
            "rejected", f"Rejected {who}: {decision.comment or 'no comment'} ({version.name}:{version.version})"
        )

    state.endpoint = endpoint_name
    keep = config.teardown.mode == "keep"
    # a kept endpoint is shared: another run's deploy -> smoke -> promote waits for this one's, and this one's gate
    # is checked again against whatever champion that run left
    with workspace.endpoint_lock(endpoint_name):
        if keep:
            recheck_gate_after_waiting(stages, workspace, config, job, champion, evaluated, sampled, summary)
            stages.reconcile_endpoint(workspace, endpoint_name, registered_name)
        deploy_smoke_promote(stages, workspace, config, endpoint_name, version, foundation, sampled, summary, state)


def check_gate(
    stages: Stages,
    workspace: Workspace,
    config: TunegateConfig,
    job: JobRef,
    champion: tuple[ModelVersion | None, str | None],
    evaluated: str | None,
    sampled: SampledData,
) -> GateResult:
    """The gate against `champion` as champion_or_error gives it; the job evaluated `evaluated` on its split."""
    return stages.check_metrics(
        workspace,
        job,
        config.gate,
        champion[0],
        champion_error=champion[1],
        eval_fingerprint=sampled.eval_fingerprint,
        evaluated_champion=evaluated,
    )


def recheck_gate_after_waiting(
    stages: Stages,
    workspace: Workspace,
    config: TunegateConfig,
    job: JobRef,
    champion: ModelVersion | None,
    evaluated: str | None,
    sampled: SampledData,
    summary: RunSummary,
) -> None:
    """While this run trained or waited for approval, another may have promoted a new champion: the candidate must
    beat that one too, or it does not go live."""
    now, error = champion_or_error(stages, workspace, config.model.registered_name())
    if error is None and model_id(now) == model_id(champion):
        return
    gate = check_gate(stages, workspace, config, job, (now, error), evaluated, sampled)
    summary.record_gate(gate)
    became = f"{model_id(now)} became champion while this run waited"
    if not gate.passed:
        failures = "; ".join(f.removeprefix("fail: ") for f in gate.failures)
        raise RunStopped("gate_failed", f"Gate failed: {became}; {failures}")
    if not gate.comparable and config.approval.policy != "auto":  # approved against another champion than this
        raise RunStopped(
            "gate_failed", f"Gate failed: {became} and this model cannot be compared with it; run again to compare"
        )


def finish_earlier_promotion(
    stages: Stages,
    workspace: Workspace,
    config: TunegateConfig,
    job: JobRef,
    champion: ModelVersion,
    foundation: FoundationModel,
    sampled: SampledData,
    summary: RunSummary,
    state: RunState,
) -> None:
    """The champion is this job's own model: an earlier run of the same inputs promoted it (and was killed before it
    could say so). Nothing is trained, registered or asked again; the endpoint is checked to serve it, and made to
    when it does not."""
    logger = get_run_logger()
    logger.info("%s from job %s is already the champion: an earlier run promoted it", model_id(champion), job.name)
    gate = check_gate(stages, workspace, config, job, (None, None), None, sampled)
    summary.record_gate(
        gate.model_copy(
            update={
                "reasons": [*gate.reasons, f"ok: {model_id(champion)} from this job is already champion"],
                "champion": model_id(champion),
            }
        )
    )
    summary.record_model(champion)
    decision = approval.recorded_decision(champion)
    if decision is not None:
        summary.record_decision(decision)
    state.endpoint = config.endpoint.name
    with workspace.endpoint_lock(config.endpoint.name):
        stages.reconcile_endpoint(workspace, config.endpoint.name, champion.name)
        serving = stages.read_endpoint(workspace, config.endpoint.name)
        if serving is not None and serving.live == [model_id(champion)]:
            live = next(name for name, share in sorted(serving.traffic.items()) if share > 0)
            summary.record_deployment(config.endpoint.name, live)
            summary.record_endpoint(serving)
            note_links(workspace, summary, endpoint=config.endpoint.name)
            return
        logger.warning(
            "%s is champion but not live on %s: deploying it again", model_id(champion), config.endpoint.name
        )
        deploy_smoke_promote(
            stages, workspace, config, config.endpoint.name, champion, foundation, sampled, summary, state
        )


def deploy_smoke_promote(
    stages: Stages,
    workspace: Workspace,
    config: TunegateConfig,
    endpoint_name: str,
    version: ModelVersion,
    foundation: FoundationModel,
    sampled: SampledData,
    summary: RunSummary,
    state: RunState,
) -> None:
    # named before it exists: a deploy that fails half-way still has its candidate taken down (if it serves nothing)
    state.deployment = deployment_name(config.endpoint.deployment_prefix, version)
    deployed = stages.deploy_candidate(
        workspace, config.endpoint, endpoint_name, version, foundation, ephemeral=config.teardown.mode == "ephemeral"
    )
    state.deployment = deployed.deployment
    summary.record_deployment(endpoint_name, deployed.deployment)

    smoke = stages.smoke_invoke(workspace, deployed, config.smoke, sampled.files["test_gen"])
    if smoke.ok and config.smoke.promptflow:
        batch = stages.smoke_promptflow(open_chat_flows(), workspace, deployed, config.smoke, sampled.files["test_gen"])
        summary.record_promptflow(batch)
        if not batch.ok:
            smoke = smoke.model_copy(update={"ok": False, "error": f"through Prompt flow: {batch.error}"})
    summary.record_smoke(smoke)
    if not smoke.ok:
        stages.roll_back(workspace, deployed)
        summary.record_rollback()
        raise RunStopped(
            "smoke_failed",
            f"Smoke failed, rolled back: {deployed.deployment} on {endpoint_name}: {smoke.error}",
        )

    note_links(workspace, summary, endpoint=endpoint_name)
    retired = stages.promote(workspace, deployed, version, set_champion=config.teardown.mode == "keep")
    get_run_logger().info(
        "%s now takes 100%% of %s; retired %s", deployed.deployment, endpoint_name, retired or "nothing"
    )
    summary.record_endpoint(stages.read_endpoint(workspace, endpoint_name))


def draw_loss_curve(
    stages: Stages,
    workspace: Workspace,
    job: JobRef,
    foundation: FoundationModel,
    store: RunStore,
    run_id: str,
    summary: RunSummary,
) -> bytes | None:
    """The loss curve in the run's directory (and wherever the stage stored it); a run without one goes on, the
    summary and the review say why there is none."""
    try:
        report = stages.report_training(workspace, job, foundation.name)
    except Exception as exc:  # noqa: BLE001 - a picture for people; the gate reads the metrics themselves
        get_run_logger().warning("no loss curve for this run: %s", exc)
        summary.record_loss_curve(None, error=f"{type(exc).__name__}: {exc}")
        return None
    path = store.write_report(run_id, finetune.LOSS_CURVE, report.png)
    summary.record_loss_curve(str(path.resolve()), report.stored_at)
    return report.png


def note_links(workspace: Workspace, summary: RunSummary, **about: object) -> None:
    """Pages for the summary; a workspace that cannot make one now is not a reason to stop the run."""
    try:
        summary.record_links(workspace.links(**about))
    except Exception as exc:  # noqa: BLE001 - links are a convenience
        get_run_logger().info("could not make links for the run summary: %s", exc)


def champion_or_error(stages: Stages, workspace: Workspace, name: str) -> tuple[ModelVersion | None, str | None]:
    """(champion, None), or (None, why) when it could not be read after the stage's retries: the gate fails closed
    on that; never mistaken for "no champion"."""
    try:
        return stages.read_champion(workspace, name), None
    except WorkspaceError as exc:
        get_run_logger().warning("could not read the champion of %s: %s", name, exc)
        return None, f"{type(exc).__name__}: {exc}"


def approval_decision(
    config: TunegateConfig,
    summary: RunSummary,
    version: ModelVersion,
    foundation: FoundationModel,
    gate: GateResult,
    job: JobRef,
    endpoint_name: str,
    curve: bytes | None = None,
) -> ApprovalRecord:
    """The policy decides, or a person on the paused run; with no server to ask one, a needed person is a reject."""
    decision = approval.policy_decision(config.approval, gate)
    if decision is not None:
        return decision
    if not approval.has_prefect_server():
        return approval.policy_record(
            config.approval.policy, False, "a person must decide and no Prefect server runs to ask one: rejected"
        )
    facts = {
        "model": f"{version.name}:{version.version} (from {foundation.name}:{foundation.version})",
        "data": f"{sum(summary.data.rows.values())} rows {summary.data.rows}, fingerprint `{summary.data.fingerprint}` "
        f"({config.data.source})",
        "target": f"endpoint `{endpoint_name}`, instance type {config.endpoint.instance_type}, "
        f"teardown {config.teardown.mode}",
        "fine-tune job": f"{job.name} {job.url or ''}",
    }
    facts.update({label: url for label, url in summary.links.items() if label not in facts})
    if summary.loss_curve.path:
        facts["loss curve"] = f"`{summary.loss_curve.path}` (also the run's **loss-curve** artifact)"
    summary.record_waiting_for_approval()
    return approval.ask_a_person(
        approval.review_markdown(version, gate, facts, curve),
        version,
        gate,
        config.approval,
        # a key per flow attempt: a retried run pauses again instead of reusing the previous answer
        key=f"approval-{version.version}-attempt{flow_run.run_count}",
    )


def run_teardown(
    config: TunegateConfig, stages: Stages, workspace: Workspace, summary: RunSummary, state: RunState
) -> None:
    if state.endpoint is None:  # nothing was deployed: nothing to take down
        summary.record_teardown(TeardownResult(mode=config.teardown.mode, done=True, deleted=[]))
        return
    try:
        summary.record_teardown(stages.teardown(workspace, config.teardown.mode, state.endpoint, state.deployment))
    except Exception as exc:  # noqa: BLE001 - a teardown failure is reported, and must not hide the run's own error
        summary.record_teardown_failure(config.teardown.mode, exc)


def _finish(config: TunegateConfig, summary: RunSummary, run_id: str, started: float) -> None:
    summary.seconds = round(time.monotonic() - started, 1)
    RunStore(config.workspace.state_dir).write_summary(run_id, summary.model_dump_json(indent=2))
    try:
        create_markdown_artifact(
            key="run-summary", markdown=summary.markdown(), description=f"tunegate {summary.status}"
        )
    except Exception:  # noqa: BLE001 - the summary file above is the record; the artifact is a convenience
        get_run_logger().warning("could not create the run-summary artifact", exc_info=True)


def resolve_config(
    config: TunegateConfig, profile: str | None, overrides: list[str] | tuple[str, ...] | None
) -> TunegateConfig:
    """The config a run uses: the profile file (+ overrides) when one is named, else the form."""
    return load_profile(profile, list(overrides or [])) if profile else config


def _teardown_on_cancel(flow, flow_run_obj, state) -> None:
    """Runs in the runner when a deployed run is cancelled and its process killed: take down this run's endpoint."""
    parameters = flow_run_obj.parameters or {}
    form = TunegateConfig.model_validate(parameters.get("config") or {})
    config = resolve_config(form, parameters.get("profile"), parameters.get("overrides"))
    if config.teardown.mode == "ephemeral":
        take_down(open_workspace(config.workspace), "ephemeral", endpoint_name_for(config, str(flow_run_obj.id)))


@flow(name="tunegate", on_cancellation=[_teardown_on_cancel], on_crashed=[_teardown_on_cancel])
def tunegate(
    config: TunegateConfig = TunegateConfig(),  # noqa: B008 - the UI form starts from the documented defaults
    profile: str = "",
    overrides: tuple[str, ...] = (),
) -> RunSummary | State:
    """Fine-tune a chat model, check its metrics, ask for approval, deploy it next to the live one, test it, and
    tear down what the run does not keep.

    Args:
        config: The run's settings, section by section (used when no profile is named).
        profile: Run with a profile file of the repository instead of the settings above, e.g. deployments/local.yaml;
            empty: the settings above.
        overrides: Changes to that profile, one per line as section.key=value, e.g. data.percent=5.
    """
    config = resolve_config(config, profile, overrides)
    stages = Stages.with_retries(config.retries)
    started = time.monotonic()
    run_id = str(flow_run.id or "local")
    summary = RunSummary(flow_run_id=run_id, workspace=config.workspace.kind)
    workspace: Workspace | None = None
    state = RunState()
    stopped: RunStopped | None = None
    try:
        require_server_for_manual(config.approval)
        workspace = open_workspace(config.workspace)
        run_stages(config, stages, workspace, run_id, summary, state)
        summary.record_outcome("succeeded")
    except RunStopped as stop:  # a deliberate outcome: reported as such, not raised as a crash
        summary.record_outcome(stop.status, str(stop))
        stopped = stop
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt | SystemExit | TerminationSignal)  # Ctrl-C, SIGTERM
        summary.record_outcome("cancelled" if cancelled else "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if workspace is not None:
            run_teardown(config, stages, workspace, summary, state)
        _finish(config, summary, run_id, started)
    if stopped is not None:
        if retries_left():  # the flow's own retries apply (Prefect retries a raised error in process)
            raise stopped
        get_run_logger().warning("%s", stopped)
        return Failed(name=stopped.state_name, message=str(stopped))
    return summary


def retries_left() -> bool:
    """True when this attempt is not the flow run's last (with_options(retries=...) or a deployment's retries)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    retries = (context.flow.retries or 0) if context and context.flow else 0
    return flow_run.run_count <= retries
