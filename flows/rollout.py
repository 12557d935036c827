"""The rollout phase, between the decision and promote: on a kept endpoint where another model serves, the approved
candidate goes live in steps (`rollout.steps`, after an optional mirror phase), each held for a window of live
traffic plus probes and judged against the live model on the same window (tasks/rollout.judge_window).

A breach, an abort (`tunegate rollout abort`), a cancelled run or any error gives the live model all traffic back
and deletes the candidate; the champion label never moved. All windows passed: promote does the last step (100%,
old deployment retired, champion label moved), as it does without a rollout. An ephemeral endpoint has no live
traffic, and a first model has nothing to be judged against: both switch in one step.
"""

from __future__ import annotations

import dataclasses
import time

from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from flows.rollout_control import RolloutControl, as_rollout, interrupted
from flows.run import Run, RunStatus, RunStopped
from tasks import evaluation
from tasks.approval import is_approved
from tasks.deploy import DeploymentRefused
from tasks.rollout import Rollout, StepReport
from tasks.rollout_report import rollout_png, timeline_markdown

CANCEL_CHECK_S = 2.0  # how often a window asks the Prefect server whether its run was cancelled
PROBE_PROMPTS = 64  # held-out prompts the probes cycle through
ROLLOUT_PNG = "rollout.png"


def roll_out(run: Run) -> None:
    deployed, settings = run.deployed, run.config.rollout
    if deployed is None or not run.keep or not settings.enabled:
        return
    live = next((name for name, share in sorted(deployed.previous_traffic.items()) if share == 100), None)
    if live is None or live == deployed.deployment or (len(settings.steps) == 1 and not settings.mirror_percent):
        return  # nothing served before (or a split by hand): promote switches in one step
    version = run.candidate_().version
    if not is_approved(version):  # as promote refuses: no traffic to an undecided model
        raise DeploymentRefused(f"{version.name}:{version.version} has no recorded approval; not giving it traffic")
    endpoints, endpoint = run.workspace.endpoints, deployed.endpoint
    rollout = Rollout(
        endpoint=endpoint,
        candidate=deployed.deployment,
        live=live,
        candidate_model=f"{version.name}:{version.version}",
        live_model=run.stage("live_model_of", endpoints, endpoint, live),
    )
    control = RolloutControl(run.store, endpoint)
    control.start(rollout, run.run_id)
    run.rollout = rollout
    sides = {"candidate": deployed.deployment, "live": live}
    test_gen = run.prepared_().sampled.files["test_gen"]
    prompts = evaluation.evaluation_prompts(test_gen, PROBE_PROMPTS, run.config.evaluate.seed + 1)
    parameters = evaluation.generation_parameters(run.config.evaluate)
    stop = stop_check(control)
    windows: list[tuple[str, int]] = [("mirror", settings.mirror_percent)] if settings.mirror_percent else []
    windows += [("step", share) for share in settings.steps[:-1]]
    try:
        for phase, share in windows:
            if phase == "mirror":
                run.stage("shift_traffic", endpoints, endpoint, live, deployed.deployment, 0, mirror=share)
            else:
                run.stage("shift_traffic", endpoints, endpoint, live, deployed.deployment, share)
            rollout.share = share if phase == "step" else 0
            control.save(rollout)  # a run killed during this window leaves the share it set
            get_run_logger().info("rollout on %s: %s at %d%%, held %s s", endpoint, phase, share, window_of(run, phase))
            report = run.stage(
                "watch_window", endpoints, endpoint, sides, settings, prompts, parameters, phase, share, stop
            )
            rollout.steps.append(report)
            control.save(rollout)
            if not report.passed:
                undo(run, rollout, control, report)
        if windows[-1][0] == "mirror":  # mirror off; the steps begin with promote's 100%
            run.stage("shift_traffic", endpoints, endpoint, live, deployed.deployment, 0)
    except RunStopped:
        raise
    except BaseException as exc:  # an error, Ctrl-C, SIGTERM, a cancelled run: never leave the endpoint split
        get_run_logger().warning("rollout on %s interrupted (%s): the live model gets all traffic back", endpoint, exc)
        restore(run, rollout, control, "restored", f"interrupted: {type(exc).__name__}: {exc}")
        raise
    control.save(rollout)
    run.observe("rollout", rollout)


def window_of(run: Run, phase: str) -> float:
    settings = run.config.rollout
    return settings.mirror_window_s if phase == "mirror" else settings.window_s


def undo(run: Run, rollout: Rollout, control: RolloutControl, report: StepReport) -> None:
    """A window failed (or was aborted): the live model back to 100%, the candidate deleted, the run stopped."""
    outcome = "aborted" if report.verdict == "aborted" else "rolled back"
    where = f"mirror at {report.traffic}%" if report.phase == "mirror" else f"the {report.traffic}% step"
    reason = f"{where}: {'; '.join(report.failures)}"
    restore(run, rollout, control, outcome, reason)
    raise RunStopped(
        RunStatus.ROLLED_BACK,
        f"Rolled back at {reason}; {rollout.live} ({rollout.live_model}) serves all traffic, "
        f"{rollout.candidate} deleted",
    )


def restore(run: Run, rollout: Rollout, control: RolloutControl, outcome: str, reason: str) -> None:
    try:
        run.stage("restore_live", run.workspace.endpoints, rollout.endpoint, rollout.live, rollout.candidate)
    finally:
        updated = rollout.model_copy(update={"outcome": outcome, "reason": reason})
        run.rollout = updated
        control.save(updated)
        run.observe("rollout", updated)
        run.observe("roll_back", None)
        report_rollout(run, updated)
    run.deployed = None


def finish_promoted(run: Run) -> None:
    """After promote: the rollout went all the way."""
    if run.rollout is None:
        return
    done = run.rollout.model_copy(update={"outcome": "promoted", "reason": None})
    run.rollout = done
    RolloutControl(run.store, done.endpoint).save(done)
    run.observe("rollout", done)
    report_rollout(run, done)


def report_rollout(run: Run, rollout: Rollout) -> None:
    """The timeline and its picture: in the run's directory and as the run's `rollout` artifact; how far it got on
    the candidate's model version."""
    if run.candidate is not None:
        try:
            version = run.stage("record_rollout", run.workspace.registry, run.candidate.version, rollout)
            run.candidate = dataclasses.replace(run.candidate, version=version)
        except Exception as exc:  # noqa: BLE001 - the summary and the artifact have it
            get_run_logger().warning("could not record the rollout on the model version: %s", exc)
    try:
        png = rollout_png(rollout)
        path = run.store.write_report(run.run_id, ROLLOUT_PNG, png)
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key="rollout",
            markdown=timeline_markdown(rollout, png) + f"\n\nPicture: `{path.resolve()}`\n",
            description=rollout.words()[:200],
        )
    except Exception as exc:  # noqa: BLE001 - a record for people: the summary has the numbers
        get_run_logger().warning("could not draw the rollout timeline: %s", exc)


def stop_check(control: RolloutControl):
    """Between probes: an abort written to the rollout record, or this flow run cancelled in the Prefect UI."""
    asked = {"at": 0.0}

    def stop() -> str | None:
        reason = control.abort_reason()
        if reason:
            return reason
        now = time.monotonic()
        if now - asked["at"] >= CANCEL_CHECK_S:
            asked["at"] = now
            if run_cancelled():
                return "the flow run was cancelled"
        return None

    return stop


def run_cancelled() -> bool:
    """The Prefect server says this run is cancelling (the UI's Cancel): the runner may never get to kill an
    in-process run, so the rollout asks itself."""
    run_id = flow_run.id
    if not run_id:
        return False
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType

        with get_client(sync_client=True) as client:
            found = client.read_flow_run(run_id)
    except Exception:  # noqa: BLE001 - no server to ask: the run cannot have been cancelled there
        return False
    return found.state is not None and found.state.type in (StateType.CANCELLING, StateType.CANCELLED)


def recover_interrupted_rollout(run: Run, endpoint: str) -> None:
    """Before this run changes a kept endpoint: a rollout whose run died mid-way is undone (live model to 100%,
    candidate deleted), said in the log."""
    control = RolloutControl(run.store, endpoint)
    record = control.read()
    if record is not None and "damaged" in record:
        get_run_logger().warning("rollout record of %s is damaged (%s): not used", endpoint, record["damaged"])
        return
    if not interrupted(record):
        return
    assert record is not None
    found = as_rollout(record)
    get_run_logger().warning(
        "the rollout of %s on %s (run %s) was interrupted at %d%%: giving %s all traffic back",
        found.candidate, endpoint, record.get("run_id"), found.reached, found.live,
    )  # fmt: skip
    run.stage("restore_live", run.workspace.endpoints, endpoint, found.live, found.candidate)
    reason = f"its run {record.get('run_id')} ended mid-way; restored by run {run.run_id}"
    control.save(found.model_copy(update={"outcome": "restored", "reason": reason}))
