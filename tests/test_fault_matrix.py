"""Every port method the flow calls x {transient, permanent} fault, on the in-memory workspace.

Transient (a 503, once): the stage retries and the run succeeds, training paid for once. Permanent (a 403, every
call): the run fails cleanly with the error named, teardown runs, nothing is left running; in keep mode what is live
is always the champion. The table of outcomes is printed at the end of the pytest run (conftest.py)."""

from __future__ import annotations

import pytest

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
]
# what people read (progress, the loss curve): a permanent fault there is said in the run's log and summary, and the
# run goes on
INFORMATIONAL = {"jobs.progress", "jobs.loss_history", "jobs.attach"}
KEEP_ONLY = ["registry.set_champion", "endpoints.delete_deployment"]  # called when a champion is replaced
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
ROWS: list[tuple[str, str, str, str, str]] = []  # mode, method, fault, outcome, left running


def test_the_matrix_covers_every_method_a_run_calls(tmp_path, scoring):
    workspace = FakeWorkspace(scoring)
    run(workspace, make_config(tmp_path / "a"))
    assert set(workspace.calls) == set(EPHEMERAL)
    keep = FakeWorkspace(scoring)
    config = make_config(tmp_path / "b", teardown={"mode": "keep"})
    run(keep, config)
    keep.calls.clear()
    keep.metrics = dict(BETTER)
    run(keep, make_config(tmp_path / "b", teardown={"mode": "keep"}, data={"seed": 1}))  # new data, a new job
    assert set(keep.calls) - set(EPHEMERAL) == set(KEEP_ONLY)


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


CASES = [("ephemeral", m) for m in EPHEMERAL] + [("keep", m) for m in KEEP]


@pytest.mark.parametrize("fault", ["transient", "permanent"])
@pytest.mark.parametrize(("mode", "method"), CASES, ids=[f"{mode}-{method}" for mode, method in CASES])
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
    ROWS.append((mode, method, fault, summary["status"] + ("" if summary["teardown"]["done"] else " (teardown failed)"),
                 left))  # fmt: skip

    assert not inventory.running_jobs  # never a job left training
    assert workspace.submissions - before <= 1  # never paid twice
    if fault == "transient":
        assert summary["status"] == "succeeded", summary["error"]
        assert workspace.calls.count(method) >= 2  # it was retried
    elif method == "registry.champion":
        assert summary["status"] == "gate_failed" and "failing closed" in summary["error"]
    elif method in INFORMATIONAL:
        assert summary["status"] == "succeeded", summary["error"]
        if method != "jobs.progress":
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


def matrix_markdown() -> str:
    lines = ["| mode | method | fault | outcome | left behind |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in sorted(ROWS)]
    return "\n".join(lines)
