"""Faults in the port methods the flow calls, on the in-memory workspace.

The retry policy is stated once for every method: each is called inside a stage (a Prefect task) that retries
transient errors and only those (test_every_port_call_is_inside_a_stage_that_retries_transient_errors_only, one run
per mode that records the task around every call). End to end, a representative cell per phase: transient (a 503,
once): the stage retries and the run succeeds, training paid for once. Permanent (a 403, every call): the run fails
cleanly with the error named, teardown runs, nothing is left running; in keep mode what is live is always the
champion (every method that touches the live endpoint). The table of outcomes is printed at the end of the pytest
run (conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks.errors import is_transient
from tests.fakes import FakeWorkspace
from tests.test_flow import make_config, read_summary, run
from workspaces.ports import TransientWorkspaceError, WorkspaceError

pytestmark = pytest.mark.usefixtures("prefect_harness")

# the methods one run calls (asserted below, so a new call cannot escape the matrix)
EPHEMERAL = [
    "registry.get_foundation_model",
    "compute.ensure",
    "compute.list_sizes",
    "data.upload",
    "registry.champion",
    "jobs.get",
    "jobs.submit",
    "jobs.status",
    "jobs.metrics",
    "registry.find_model_version",
    "registry.register_model",
    "registry.tag_model",
    "endpoints.ensure",
    "endpoints.get",
    "endpoints.create_deployment",
    "endpoints.get_deployment",
    "endpoints.set_traffic",
    "endpoints.credentials",
    "endpoints.invoke",
    "endpoints.delete",
    "jobs.progress",
    "jobs.loss_history",
    "jobs.attach",
    "registry.record_evaluation",
]
# what people read (progress, the loss curve): a permanent fault there is said in the run's log and summary, and the
# run goes on
INFORMATIONAL = {"jobs.progress", "jobs.loss_history", "jobs.attach", "registry.record_evaluation"}
# called when a champion is replaced (the rollout's mirror and its windows' traffic readings too)
KEEP_ONLY = ["registry.set_champion", "endpoints.delete_deployment", "endpoints.set_mirror", "endpoints.traffic"]
# keep mode: the methods of the stages that touch a live endpoint and its champion (earlier ones fail alike)
KEEP = [
    "registry.champion",
    "endpoints.ensure",
    "endpoints.get",
    "endpoints.create_deployment",
    "endpoints.get_deployment",
    "endpoints.set_traffic",
    "endpoints.credentials",
    "endpoints.invoke",
    *KEEP_ONLY,
]
BETTER = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
ROWS: list[tuple[str, ...]] = []  # mode, method, fault, outcome, left running


@pytest.fixture(scope="module")
def scoring():
    from tests.fakes import ScoringServer

    server = ScoringServer()
    yield server
    server.close()


def live_models(workspace: FakeWorkspace) -> dict[str, list[str]]:
    return {
        name: [dep for dep, pct in record["traffic"].items() if pct > 0]
        for name, record in workspace.endpoint_records.items()
    }


class RecordingWorkspace(FakeWorkspace):
    """Records, for every port call, the stage (task) it is made in and that task's retry policy."""

    def __init__(self, scoring) -> None:
        super().__init__(scoring)
        self.policies: dict[str, set[tuple[str, int, bool, bool]]] = {}

    def enter(self, method: str) -> None:
        from prefect.context import TaskRunContext

        context = TaskRunContext.get()
        task = context.task if context else None
        condition = task.retry_condition_fn if task else None
        policy = (
            task.name if task else "(no stage)",
            task.retries if task else 0,
            bool(condition and condition(task, None, _failed_with(TransientWorkspaceError("503")))),
            bool(condition and condition(task, None, _failed_with(WorkspaceError("403")))),
        )
        self.policies.setdefault(method, set()).add(policy)
        super().enter(method)


def _failed_with(error: BaseException):
    """A Failed state holding `error`, as Prefect hands it to a task's retry condition."""
    from prefect.states import Failed

    return Failed(data=error)


def test_every_port_call_is_inside_a_stage_that_retries_transient_errors_only(tmp_path, scoring):
    ephemeral = RecordingWorkspace(scoring)
    assert run(ephemeral, make_config(tmp_path / "a")).is_completed()
    keep = RecordingWorkspace(scoring)
    assert run(keep, make_config(tmp_path / "b", teardown={"mode": "keep"})).is_completed()
    keep.metrics = dict(BETTER)
    assert run(keep, make_config(tmp_path / "b", teardown={"mode": "keep"}, data={"seed": 1})).is_completed()
    attempts = make_config(tmp_path).retries.attempts
    for workspace in (ephemeral, keep):
        for method, policies in workspace.policies.items():
            for stage, retries, retries_transient, retries_permanent in policies:
                where = f"{method} called in {stage}"
                assert stage != "(no stage)", where + ": outside any stage, it would not be retried"
                assert retries == attempts, f"{where} with {retries} retries, not the profile's {attempts}"
                assert retries_transient and not retries_permanent, f"{where}: its retry condition is not is_transient"
    assert set(ephemeral.policies) == set(EPHEMERAL)  # the lists above name every method a run calls
    assert set(keep.policies) - set(EPHEMERAL) == set(KEEP_ONLY)
    assert is_transient(TransientWorkspaceError("503")) and not is_transient(WorkspaceError("403"))


# end to end: per phase, a method whose fault shows what a fault there does (every method of a stage shares its
# policy, asserted above); in keep mode every method that touches the live endpoint and its champion
TRANSIENT = ["jobs.submit", "jobs.status", "registry.register_model", "endpoints.create_deployment",
             "endpoints.invoke", "endpoints.delete"]  # fmt: skip
PERMANENT = ["registry.get_foundation_model", "compute.ensure", "data.upload", "registry.champion", "jobs.submit",
             "jobs.status", "jobs.metrics", "registry.register_model", "registry.tag_model", "endpoints.ensure",
             "endpoints.create_deployment", "endpoints.credentials", "endpoints.invoke", "endpoints.set_traffic",
             "endpoints.delete", *sorted(INFORMATIONAL)]  # fmt: skip
CASES = (
    [("ephemeral", method, "transient") for method in TRANSIENT]
    + [("ephemeral", method, "permanent") for method in PERMANENT]
    + [("keep", method, "transient") for method in ("endpoints.set_traffic", "registry.set_champion")]
    + [("keep", method, "permanent") for method in KEEP]
)


@pytest.mark.slow  # end to end, cell by cell; the policy test above is the fast loop's
@pytest.mark.parametrize(("mode", "method", "fault"), CASES, ids=["-".join(case) for case in CASES])
def test_fault(tmp_path, scoring, mode, method, fault):
    workspace = FakeWorkspace(scoring)
    config = make_config(tmp_path, teardown={"mode": mode})
    if mode == "keep":  # a champion is live; this run's better candidate (new data: a new job) replaces it
        assert run(workspace, config).is_completed()
        workspace.metrics = dict(BETTER)
        workspace.calls.clear()
        config = make_config(tmp_path, teardown={"mode": mode}, data={"seed": 1})
    before = workspace.submissions
    if fault == "transient":
        workspace.faults[method] = [TransientWorkspaceError(f"503 from {method}")]
    else:
        workspace.faults[method] = [WorkspaceError(f"403 from {method}")] * 50
    state = run(workspace, config)
    summary = read_summary(config, state)
    inventory = workspace.inventory()
    left = ", ".join(f"{name}: {deps}" for name, deps in inventory.endpoints.items()) or "-"
    record_row(mode, method, fault, summary["status"] + ("" if summary["teardown"]["done"] else " (teardown failed)"),
               left)  # fmt: skip

    assert not inventory.running_jobs  # never a job left training
    assert workspace.submissions - before <= 1  # never paid twice
    if fault == "transient":
        assert summary["status"] == "succeeded", summary["error"]
        assert workspace.calls.count(method) >= 2  # it was retried
    elif method == "registry.champion":
        assert summary["status"] == "gate_failed" and "failing closed" in summary["error"]
    elif method in INFORMATIONAL:
        assert summary["status"] == "succeeded", summary["error"]
        if method == "registry.record_evaluation":
            assert (
                summary["evaluation"]["passed"] and "not recorded in the registry" in summary["evaluation"]["notes"][-1]
            )
        elif method != "jobs.progress":
            assert summary["loss_curve"]["error" if method == "jobs.loss_history" else "path"]
    elif method == "endpoints.delete":  # the run itself succeeded; the endpoint it could not delete is reported
        assert summary["status"] == "succeeded" and not summary["teardown"]["done"]
        assert "teardown failed" in summary["error"] and list(inventory.endpoints) == [summary["endpoint"]["name"]]
    else:
        assert summary["status"] == "failed" and f"403 from {method}" in summary["error"]
    if mode == "keep":  # what serves is the champion, whatever failed
        champion = workspace.champions[config.model.registered_name()]
        [serving] = live_models(workspace)["chat"]
        assert workspace.endpoint_records["chat"]["deployments"][serving].model == f"{champion.name}:{champion.version}"
        if method != "endpoints.get":  # keep-mode teardown reads the endpoint to find the candidate it left at 0%
            assert summary["teardown"]["done"]
    elif method != "endpoints.delete" or fault == "transient":
        assert summary["teardown"]["done"] and inventory.empty


ROWS_FILE = "TUNEGATE_FAULT_MATRIX_ROWS"  # set by conftest.py: one file that every xdist worker appends to


def record_row(*row: str) -> None:
    ROWS.append(row)
    if os.environ.get(ROWS_FILE):
        with open(os.environ[ROWS_FILE], "a") as rows:
            rows.write(json.dumps(row) + "\n")


def matrix_markdown(rows: list[tuple[str, ...]] | None = None) -> str:
    if rows is None and os.environ.get(ROWS_FILE) and Path(os.environ[ROWS_FILE]).exists():
        rows = [tuple(json.loads(line)) for line in Path(os.environ[ROWS_FILE]).read_text().splitlines()]
    lines = ["| mode | method | fault | outcome | left behind |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in sorted(rows if rows is not None else ROWS)]
    return "\n".join(lines)
