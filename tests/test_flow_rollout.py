"""The progressive rollout in the flow, on the in-memory workspace: a keep-mode candidate goes live through a mirror
and a 25% step with both deployments measured; one that fails under live traffic, or is slower than the limit, is
rolled back at its first step with the champion at 100%; an abort or a cancelled run restores the champion; a run
killed mid-rollout is found and undone by the next run and by `abort`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from data.runs import RunStore
from flows.rollout_control import abort_rollout, interrupted, rollout_status
from tests.fakes import FakeWorkspace, ScoringServer
from tests.test_flow import REGISTERED, dep, make_config, read_summary, run
from workspaces.local.processes import identity
from workspaces.ports import ModelVersion

pytestmark = pytest.mark.usefixtures("prefect_harness")

BETTER = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}


@pytest.fixture(scope="module")
def scoring():
    server = ScoringServer()
    yield server
    server.close()


@pytest.fixture
def workspace(scoring):
    scoring.mode, scoring.unreachable_first = "ok", 0
    scoring.requests.clear()
    return FakeWorkspace(scoring)


def keep(tmp_path, **sections):
    return make_config(tmp_path, teardown={"mode": "keep"}, **sections)


def with_champion(workspace, tmp_path):
    """Version 1 live and champion (a first model switches in one step: nothing to judge it against)."""
    first = run(workspace, keep(tmp_path)).result()
    assert first.status == "succeeded" and first.rollout.outcome is None
    workspace.metrics = dict(BETTER)  # the next run's candidate beats it
    return first


def test_a_better_candidate_goes_live_through_the_mirror_and_its_steps_measured_on_both(tmp_path, workspace):
    with_champion(workspace, tmp_path)
    config = keep(tmp_path, data={"seed": 1})
    summary = run(workspace, config).result()
    assert summary.status == "succeeded", summary.error
    rollout = summary.rollout
    assert rollout.outcome == "promoted" and [(s.phase, s.traffic) for s in rollout.steps] == [
        ("mirror", 20),
        ("step", 25),
    ]
    for step in rollout.steps:
        assert step.verdict == "passed" and step.requests["candidate"] >= 3 and step.requests["live"] >= 3
        assert step.errors == {"candidate": 0, "live": 0} and step.p95_ms["candidate"] > 0
    assert workspace.endpoints.get("chat").traffic == {dep("2"): 100} and workspace.champions[REGISTERED].version == "2"
    # the record, the picture and the tag on the model version say it went all the way
    store = RunStore(config.workspace.state_dir)
    assert store.read_rollout("chat")["outcome"] == "promoted"
    assert (store.run_dir(summary.flow_run_id) / "rollout.png").read_bytes().startswith(b"\x89PNG")
    tagged = workspace.models[REGISTERED][-1]
    assert tagged.tags["rollout"].startswith("rollout promoted (20% mirror passed, 25% passed")
    assert "## Rollout: promoted" in summary.markdown()


def test_a_candidate_that_fails_under_live_traffic_is_rolled_back_at_its_first_step(tmp_path, workspace):
    with_champion(workspace, tmp_path)
    workspace.fails_under_traffic[f"{REGISTERED}:2"] = 1.0  # smoke and evaluation (at 0%) pass; live traffic fails
    config = keep(tmp_path, data={"seed": 1})
    state = run(workspace, config)
    assert state.is_failed() and state.name == "Rolled back"
    summary = read_summary(config, state)
    assert (
        summary["status"] == "rolled_back" and "Rolled back at the 25% step: candidate error rate" in summary["error"]
    )
    last = summary["rollout"]["steps"][-1]
    assert last["traffic"] == 25 and last["verdict"] == "rolled back" and last["errors"]["candidate"] >= 3
    assert summary["rollout"]["outcome"] == "rolled back"
    # the champion serves everything, the candidate is gone, the champion label never moved
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}
    assert workspace.endpoints.get("chat").deployments == (dep("1"),)
    assert workspace.champions[REGISTERED].version == "1"
    assert workspace.models[REGISTERED][-1].tags["rollout"].startswith("rollout rolled back")


def test_a_latency_regression_beyond_the_limit_rolls_back(tmp_path, workspace):
    with_champion(workspace, tmp_path)
    workspace.extra_latency_ms[f"{REGISTERED}:2"] = 400.0
    config = keep(tmp_path, data={"seed": 1}, rollout={"mirror_percent": 0})
    state = run(workspace, config)
    summary = read_summary(config, state)
    assert summary["status"] == "rolled_back" and "p95 latency" in summary["error"]
    assert summary["rollout"]["steps"][-1]["p95_ratio"] > 3
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}


def when_candidate_takes_traffic(workspace, then) -> threading.Thread:
    """Run `then()` in a thread once the candidate takes a share of live traffic (the 25% step)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = workspace.endpoint_records.get("chat", {})
            if record.get("traffic", {}).get(dep("2"), 0) == 25:
                then()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_abort_during_a_step_gives_the_champion_all_traffic_back(tmp_path, workspace):
    with_champion(workspace, tmp_path)
    config = keep(tmp_path, data={"seed": 1}, rollout={"window_s": 60, "mirror_percent": 0})
    store, said = RunStore(config.workspace.state_dir), []
    thread = when_candidate_takes_traffic(
        workspace, lambda: said.append(abort_rollout(store, workspace.endpoints, "chat", "tester", "answers look off"))
    )
    started = time.monotonic()
    state = run(workspace, config)
    thread.join(30)
    summary = read_summary(config, state)
    assert time.monotonic() - started < 50  # not the 60 s window
    assert summary["status"] == "rolled_back" and "aborted by tester: answers look off" in summary["error"]
    assert said and "rolled back" in said[0]
    assert summary["rollout"]["outcome"] == "aborted" and summary["rollout"]["steps"][-1]["verdict"] == "aborted"
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100} and workspace.champions[REGISTERED].version == "1"


def test_cancelling_the_flow_run_during_a_step_restores_the_champion(tmp_path, workspace):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with_champion(workspace, tmp_path)
    config = keep(tmp_path, data={"seed": 1}, rollout={"window_s": 60, "mirror_percent": 0})
    store = RunStore(config.workspace.state_dir)

    def cancel() -> None:
        run_id = store.read_rollout("chat")["run_id"]
        with get_client(sync_client=True) as client:  # what the UI's Cancel does
            client.set_flow_run_state(run_id, Cancelling(), force=True)

    thread = when_candidate_takes_traffic(workspace, cancel)
    state = run(workspace, config)
    thread.join(30)
    summary = read_summary(config, state)
    assert summary["rollout"]["outcome"] == "aborted" and "the flow run was cancelled" in summary["rollout"]["reason"]
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100} and workspace.champions[REGISTERED].version == "1"


def dead_owner() -> dict:
    """The identity of a process that has exited (as a run killed with -9 leaves it)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    found = identity(child.pid)
    child.wait()
    return found


def leave_a_killed_rollout(workspace, store) -> str:
    """The endpoint as a run killed at its 25% step leaves it: split 75/25, its record saying "in progress"."""
    candidate = "ft-killed-candidate"
    workspace.endpoints.create_deployment("chat", candidate, ModelVersion(name=REGISTERED, version="1"), "x")
    workspace.endpoints.set_traffic("chat", {dep("1"): 75, candidate: 25})
    record = {
        "endpoint": "chat", "candidate": candidate, "live": dep("1"), "candidate_model": f"{REGISTERED}:9",
        "live_model": f"{REGISTERED}:1", "steps": [], "outcome": "in progress", "run_id": "killed-run",
        "owner": dead_owner(),
    }  # fmt: skip
    store.rollout_path("chat").parent.mkdir(parents=True, exist_ok=True)
    store.rollout_path("chat").write_text(json.dumps(record))
    return candidate


def test_a_run_killed_mid_rollout_is_restored_by_the_next_run(tmp_path, workspace):
    with_champion(workspace, tmp_path)
    config = keep(tmp_path, data={"seed": 1})
    store = RunStore(config.workspace.state_dir)
    candidate = leave_a_killed_rollout(workspace, store)
    status = rollout_status(store, workspace.endpoints, "chat")
    assert status["run"] == "gone" and status["interrupted"] and status["traffic_now"][candidate] == 25
    summary = run(workspace, config).result()  # the next run undoes it before it touches the endpoint
    assert summary.status == "succeeded" and summary.rollout.outcome == "promoted"
    assert f"chat/{candidate}" in workspace.deleted
    assert workspace.endpoints.get("chat").traffic == {dep("2"): 100}


def test_abort_undoes_a_rollout_whose_run_is_gone_by_itself(tmp_path, workspace):
    with_champion(workspace, tmp_path)
    store = RunStore(keep(tmp_path).workspace.state_dir)
    candidate = leave_a_killed_rollout(workspace, store)
    assert interrupted(store.read_rollout("chat"))
    said = abort_rollout(store, workspace.endpoints, "chat", "tester", "cleanup", wait_s=1)
    assert "serves all traffic of chat again" in said and candidate in said
    assert (
        workspace.endpoints.get("chat").traffic == {dep("1"): 100}
        and candidate not in workspace.endpoint_records["chat"]["deployments"]
    )
    assert store.read_rollout("chat")["outcome"] == "aborted" and not interrupted(store.read_rollout("chat"))
    assert "nothing to abort" in abort_rollout(store, workspace.endpoints, "chat", "tester", "again")


def test_ephemeral_runs_and_rollout_off_switch_in_one_step(tmp_path, workspace):
    assert run(workspace, make_config(tmp_path)).result().rollout.outcome is None
    with_champion(workspace, tmp_path / "keep")
    summary = run(workspace, keep(tmp_path / "keep", data={"seed": 1}, rollout={"enabled": False})).result()
    assert summary.status == "succeeded" and summary.rollout.outcome is None
    assert "endpoints.traffic" not in workspace.calls


def test_the_runners_cancel_hook_undoes_its_own_rollout_and_only_its_own(tmp_path, workspace):
    from flows.rollout_control import restore_rollout_of

    with_champion(workspace, tmp_path)
    store = RunStore(keep(tmp_path).workspace.state_dir)
    candidate = leave_a_killed_rollout(workspace, store)
    assert restore_rollout_of(store, workspace.endpoints, "chat", "another-run") is None  # not that run's
    assert workspace.endpoints.get("chat").traffic[candidate] == 25
    assert "serves all traffic" in restore_rollout_of(store, workspace.endpoints, "chat", "killed-run")
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}


def test_a_damaged_rollout_record_is_named_and_never_trusted(tmp_path, workspace, caplog):
    with_champion(workspace, tmp_path)
    config = keep(tmp_path, data={"seed": 1})
    store = RunStore(config.workspace.state_dir)
    store.rollout_path("chat").parent.mkdir(parents=True, exist_ok=True)
    store.rollout_path("chat").write_text('{"endpoint": "chat", "outcome": "in prog')  # cut by a full disk
    with pytest.raises(Exception, match="rollout record is damaged .*tunegate endpoint start chat"):
        rollout_status(store, workspace.endpoints, "chat")
    summary = run(workspace, config).result()  # the next run says so and goes on (its own record replaces it)
    assert summary.status == "succeeded" and summary.rollout.outcome == "promoted"
    assert store.read_rollout("chat")["outcome"] == "promoted"
