"""The tunegate flow, in the order of the notebook's table of contents (flows/phases.py):

    prepare data -> train -> check and register -> decide (approval) -> release (deploy at 0%, smoke, promote or
    roll back) -> teardown

Each stage is a task in tasks/ (retried on transient errors, flows/stages.py); the phases chain them on one run
context (flows/run.py), the summary records what each returned, and this module makes sure teardown runs whatever
happens (success, failure, Ctrl-C, cancellation).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import Flow, flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import TerminationSignal
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from data.runs import RunStore
from flows.params import TunegateConfig, load_profile
from flows.phases import PHASES
from flows.rollout_control import restore_rollout_of
from flows.run import DELIBERATE_ENDS, Run, RunState, RunStopped, endpoint_name_for
from flows.stages import Stages
from flows.summary import RunStatus, RunSummary
from tasks.approval import require_server_for_manual
from tasks.teardown import TeardownResult, take_down
from workspaces.factory import open_workspace


class QuietDeliberateEnds(logging.Filter):
    """A run started by a worker or runner that ends in a Failed state the flow returned on purpose (gate failed,
    rejected, smoke failed) makes Prefect's engine log "Engine execution exited with unexpected exception" with a
    FailedRun traceback in the run's log. That is an outcome, not an error: its record is dropped. Every other
    error, and every other failure, keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import FailedRun

        error = record.exc_info[1] if record.exc_info else None
        deliberate = isinstance(error, FailedRun) and str(error).startswith(tuple(DELIBERATE_ENDS.values()))
        return not (deliberate and record.getMessage() == ENGINE_EXIT_MESSAGE)


ENGINE_EXIT_MESSAGE = "Engine execution exited with unexpected exception"  # prefect/flow_engine.py run_flow
logging.getLogger("prefect.flow_runs").addFilter(QuietDeliberateEnds())  # the logger of flow_run_logger()


def run_phases(run: Run) -> None:
    for phase in PHASES:
        phase(run)


def run_teardown(run: Run) -> None:
    mode, state = run.config.teardown.mode, run.state
    if state.endpoint is None:  # nothing was deployed: nothing to take down
        run.observe("teardown", TeardownResult(mode=mode, done=True, deleted=[]))
        return
    try:
        run.stage("teardown", run.workspace.endpoints, mode, state.endpoint, state.deployment)
    except Exception as exc:  # noqa: BLE001 - a teardown failure is reported, and must not hide the run's own error
        run.summary.record_teardown_failure(mode, exc)


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


def _teardown_on_cancel(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:  # Prefect's hook names
    """Runs in the runner when a deployed run is cancelled and its process killed: take down this run's endpoint."""
    parameters = flow_run.parameters or {}
    form = TunegateConfig.model_validate(parameters.get("config") or {})
    config = resolve_config(form, parameters.get("profile"), parameters.get("overrides"))
    if config.teardown.mode == "ephemeral":
        endpoints = open_workspace(config.workspace).endpoints
        take_down(endpoints, "ephemeral", endpoint_name_for(config, str(flow_run.id)))
    else:  # a rollout it was in the middle of: the live model gets all traffic back
        restore_rollout_of(RunStore(config.workspace.state_dir), open_workspace(config.workspace).endpoints,
                           config.endpoint.name, str(flow_run.id))  # fmt: skip


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
    run: Run | None = None
    stopped: RunStopped | None = None
    try:
        require_server_for_manual(config.approval)
        store = RunStore(config.workspace.state_dir)
        run = Run(config, stages, open_workspace(config.workspace), store, summary, run_id, RunState())
        run_phases(run)
        summary.record_outcome(RunStatus.SUCCEEDED)
    except RunStopped as stop:  # a deliberate outcome: reported as such, not raised as a crash
        summary.record_outcome(stop.status, str(stop))
        stopped = stop
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt | SystemExit | TerminationSignal)  # Ctrl-C, SIGTERM
        status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
        summary.record_outcome(status, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if run is not None:
            run.release_held()  # the endpoint lock, when a phase still held it: teardown takes it itself
            run_teardown(run)
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
