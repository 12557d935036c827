"""The flow in phases, named after the notebook's contents; each is a function of the run (flows/run.py):

    prepare_data        sample the data, pick the foundation model, validate the compute, upload the files
    train               submit (or find again) the fine-tune job, wait for it, draw its loss curve
    check_and_register  the metric gate against the champion of now, then register the model with its lineage
    decide_before_deploy     the approval, when approval.when is before-deploy
    deploy_and_smoke    deploy next to the live model at 0%, smoke it (or roll it back)   flows/release.py
    evaluate_answers    candidate and champion answer held-out prompts; the scores gate   flows/evaluation.py
    decide_after_evaluation  the approval policy, or a person on the paused run, with the answers in view
    roll_out            keep mode: traffic in steps judged on live traffic, or back to the live model   flows/rollout.py
    promote             all traffic to it in one update, the champion label, old deployments retired

A phase reads what earlier phases left on the run (`run.prepared`, `run.trained`, `run.candidate`) and leaves its
own; a new phase (an answer evaluation between deploy_and_smoke and promote, a canary) is one more function in
PHASES.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from data.sources import source_problem
from flows.evaluation import evaluate_answers
from flows.release import deploy_and_smoke, promote
from flows.results import Candidate, Prepared, Trained
from flows.rollout import roll_out
from flows.run import Run, RunStatus, RunStopped
from tasks import approval, finetune, preflight, register, training
from tasks.approval import ApprovalRecord
from tasks.deploy import check_instance_type
from tasks.evaluation_report import evaluation_line
from tasks.gate import GateCheck, model_id
from tasks.gate_advice import stop_message
from tasks.model import INFERENCE_ALLOW_LIST, allow_list
from tasks.register import JOB_TAG
from workspaces.factory import KINDS, open_chat_flows
from workspaces.ports import JobRef, ModelVersion


def prepare_data(run: Run) -> None:
    config, workspace = run.config, run.workspace
    # before any work: a missing data folder, a GPU size without a GPU
    kind = KINDS.get(workspace.kind)  # None: a workspace handed in (use_workspace) that the table does not name
    machine_sizes = workspace.compute.list_sizes() if kind is not None and kind.on_this_machine else None
    preflight.check(config, machine_sizes, source_problem)
    if config.smoke.promptflow:  # before hours of training, not after
        open_chat_flows().check()
    sampled = run.stage("sample_data", config.data, str(run.store.data_dir(run.run_id)), str(run.store.datasets_dir))
    foundation = run.stage("pick_model", workspace.registry, config.model)
    # the model's serving allow list is known now: a size it cannot serve on is refused before hours of training
    check_instance_type(config.endpoint.instance_type, allow_list(foundation, INFERENCE_ALLOW_LIST))
    compute = run.stage(
        "validate_compute",
        workspace.compute,
        config.compute,
        foundation,
        model_rules=config.workspace.model_compute_rules,
    )
    files = sampled.files
    data_ref = run.stage("upload_data", workspace.data, files["train_sft"], files["test_sft"], sampled.fingerprint)
    run.prepared = Prepared(sampled=sampled, foundation=foundation, compute=compute, data=data_ref)


def train(run: Run) -> None:
    config, jobs, prepared = run.config, run.workspace.jobs, run.prepared_()
    experiment = config.job.experiment_name or f"chat_completion_{prepared.foundation.name}"
    # the champion of now rides along with the job, which evaluates it on the same split where the workspace can
    compare_with, _ = run.champion_or_error()
    spec = finetune.build_spec(
        prepared.foundation, prepared.compute, prepared.data, config.finetune, experiment, compare_with
    )
    # the champion is not part of the key: a rerun finds the same job whatever became champion since
    key = finetune.idempotency_key(prepared.foundation, prepared.data, prepared.compute.name, spec.parameters)
    job = run.stage("submit_finetune", jobs, spec, key, fresh=config.job.fresh)
    run.observe("job", (job, spec))
    run.stage("wait_for_finetune", jobs, job, config.job)
    curve = draw_loss_curve(run, job)
    run.note_links(job=job)
    # what the job measured champion_eval_loss on: a job found again says (it may predate the champion of now)
    evaluated = job.evaluated_champion if job.reattached else model_id(compare_with)
    run.trained = Trained(job=job, spec=spec, evaluated_champion=evaluated, loss_curve=curve)


def check_and_register(run: Run) -> None:
    prepared, trained = run.prepared_(), run.trained_()
    champion, champion_error = run.champion_or_error()  # it may have changed while the job trained
    if run.keep and champion is not None and champion.tags.get(JOB_TAG) == trained.job.name:
        already_champion(run, champion)
        return
    gate = run.gate(champion, champion_error, trained.evaluated_champion)
    if not gate.passed:
        raise RunStopped(RunStatus.GATE_FAILED, stop_message(gate))
    sampled = prepared.sampled
    tags = register.lineage_tags(
        prepared.foundation, trained.job, sampled.fingerprint, gate, run.run_id, sampled.eval_fingerprint
    )
    version = run.stage("register_model", run.workspace.registry, trained.job, run.registered_name, tags)
    run.note_links(job=trained.job, model=version)
    run.candidate = Candidate(gate=gate, version=version, champion=champion)


def already_champion(run: Run, champion: ModelVersion) -> None:
    """The champion is this job's own model: an earlier run of the same inputs promoted it (and was killed before it
    could say so). Nothing is registered or asked again; release checks the endpoint serves it."""
    job = run.trained_().job
    get_run_logger().info(
        "%s from job %s is already the champion: an earlier run promoted it", model_id(champion), job.name
    )
    gate = run.gate(None, None, None).with_check(
        GateCheck(
            name="already_champion", passed=True, message=f"{model_id(champion)} from this job is already champion"
        ),
        champion=model_id(champion),
    )
    run.observe("check_metrics", gate)
    run.observe("register_model", champion)
    decision = approval.recorded_decision(champion)
    if decision is not None:
        run.observe("decision", decision)
    run.candidate = Candidate(gate=gate, version=champion, champion=champion, already_champion=True)


def decide_before_deploy(run: Run) -> None:
    """approval.when before-deploy: decided on the losses, and only an approved version is deployed."""
    if run.config.approval.when == "before-deploy":
        decide(run)


def decide_after_evaluation(run: Run) -> None:
    """approval.when after-evaluation: decided with the answers in view; the candidate waits at 0%, serving nothing,
    and a reject (or a timeout) deletes it."""
    if run.config.approval.when != "after-evaluation":
        return
    try:
        decide(run)
    except RunStopped:
        if run.deployed is not None:
            run.stage("roll_back", run.workspace.endpoints, run.deployed)
            run.deployed = None
        raise


def decide(run: Run) -> None:
    candidate = run.candidate_()
    if candidate.already_champion:  # decided when it was promoted
        return
    decision = approval_decision(run, candidate)
    version = run.stages.record_decision(
        run.workspace.registry, candidate.version, decision, candidate.gate, run.summary.links
    )
    run.observe("decision", decision)
    run.candidate = dataclasses.replace(candidate, version=version)
    if not decision.approved:
        who = "approval timed out" if decision.approver == "timeout" else f"by {decision.approver}"
        raise RunStopped(
            RunStatus.REJECTED,
            f"Rejected {who}: {decision.comment or 'no comment'} ({version.name}:{version.version})",
        )


def approval_decision(run: Run, candidate: Candidate) -> ApprovalRecord:
    """The policy decides, or a person on the paused run; with no server to ask one, a needed person is a reject."""
    config, summary, version, gate = run.config, run.summary, candidate.version, candidate.gate
    evaluated = run.evaluation
    decision = approval.policy_decision(config.approval, gate, evaluated)
    if decision is not None:
        return decision
    if not approval.has_prefect_server():
        return approval.policy_record(
            config.approval.policy, False, "a person must decide and no Prefect server runs to ask one: rejected"
        )
    foundation, job = run.prepared_().foundation, run.trained_().job
    facts = {
        "model": f"{version.name}:{version.version} (from {foundation.name}:{foundation.version})",
        "data": f"{sum(summary.data.rows.values())} rows {summary.data.rows}, fingerprint `{summary.data.fingerprint}` "
        f"({config.data.source})",
        "target": f"endpoint `{run.endpoint_name}`, instance type {config.endpoint.instance_type}, "
        f"teardown {config.teardown.mode}",
        "fine-tune job": f"{job.name} {job.url or ''}",
    }
    facts.update({label: url for label, url in summary.links.items() if label not in facts})
    if summary.loss_curve.path:
        facts["loss curve"] = f"`{summary.loss_curve.path}` (also the run's **loss-curve** artifact)"
    run.observe("waiting", None)
    return approval.ask_a_person(
        approval.review_markdown(version, gate, facts, run.trained_().loss_curve, evaluated, config.approval.when),
        version,
        gate,
        config.approval,
        # a key per flow attempt: a retried run pauses again instead of reusing the previous answer
        key=f"approval-{version.version}-attempt{flow_run.run_count}",
        answers=evaluation_line(evaluated),
    )


def draw_loss_curve(run: Run, job: JobRef) -> bytes | None:
    """The loss curve in the run's directory (and wherever the stage stored it); a run without one goes on, the
    summary and the review say why there is none."""
    try:
        report = run.stages.report_training(run.workspace.jobs, job, run.prepared_().foundation.name)
    except Exception as exc:  # noqa: BLE001 - a picture for people; the gate reads the metrics themselves
        get_run_logger().warning("no loss curve for this run: %s", exc)
        run.observe("loss_curve", (None, None, f"{type(exc).__name__}: {exc}"))
        return None
    path = run.store.write_report(run.run_id, training.LOSS_CURVE, report.png)
    run.observe("loss_curve", (str(path.resolve()), report.stored_at, None))
    return report.png


PHASES: tuple[Callable[[Run], None], ...] = (
    prepare_data,
    train,
    check_and_register,
    decide_before_deploy,
    deploy_and_smoke,
    evaluate_answers,
    decide_after_evaluation,
    roll_out,
    promote,
)
