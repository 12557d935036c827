"""The flow on the in-memory workspace: ordering, gates, blue/green, retries, teardown on every path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.params import config_from_dict
from flows.tunegate_flow import tunegate
from tasks.deploy import deployment_name
from tests.fakes import FAKE_KEY, FakeChatFlows, FakeJobs, FakeRegistry, FakeWorkspace, ScoringServer, fair_answer
from workspaces.factory import use_chat_flows, use_workspace
from workspaces.ports import JobState, ModelVersion, TransientWorkspaceError, WorkspaceError

pytestmark = pytest.mark.usefixtures("prefect_harness")


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


REGISTERED = "Phi-3-mini-4k-instruct-ultrachat-200k"


def dep(version: str) -> str:
    """The deployment name of version `version` of the registered model."""
    return deployment_name("ft-", ModelVersion(name=REGISTERED, version=version))


def make_config(tmp_path, **sections):
    document = {
        "workspace": {"state_dir": str(tmp_path / "state")},
        "data": {"percent": 20, "synthetic_rows": 200},
        "model": {"name": "Phi-3-mini-4k-instruct"},
        "compute": {"name": "gpu-cluster", "size": "Standard_NC24ads_A100_v4"},
        "endpoint": {"name": "chat", "instance_type": "Standard_NC6s_v3"},
        "smoke": {"max_new_tokens": 8},
        # the fake's models restate the prompt (ROUGE-L ~0.3 on average, as low as 0.14 on a sample of 6 prompts):
        # where the bar for real models stands is not what these tests are about
        "evaluate": {"min_similarity": 0.1},
        "job": {"poll_initial_s": 0.01, "poll_max_s": 0.01},
        "retries": {"attempts": 2, "delay_s": 0},
        # keep mode's rollout in a blink: a mirror and one step, a second of probes each -- long enough for a few
        # probes on a loaded machine (with 0.3 s a CI run saw 1 request and rolled back for "no evidence")
        "rollout": {"window_s": 1.0, "mirror_window_s": 1.0, "probe_rate": 50, "min_requests": 2, "mirror_percent": 20},
    }
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    return config_from_dict(document)


def new_data(config):
    """The same profile on another sample of the data: another fine-tune job (the same inputs reuse the job)."""
    return config.model_copy(update={"data": config.data.model_copy(update={"seed": config.data.seed + 1})})


def run(workspace, config, chat_flows=None):
    with use_workspace(workspace), use_chat_flows(chat_flows or FakeChatFlows()):
        return tunegate(config=config, return_state=True)


def read_summary(config, state):
    from pathlib import Path

    run_id = str(state.state_details.flow_run_id)
    return json.loads((Path(config.workspace.state_dir) / "runs" / run_id / "summary.json").read_text())


def test_happy_path_ephemeral_deploys_smokes_and_tears_down(tmp_path, workspace, scoring):
    config = make_config(tmp_path)
    state = run(workspace, config)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.status == "succeeded"
    assert summary.model.version == "1" and summary.approval.decision == "approved"
    assert summary.approval.approver == "policy:auto-if-better"  # the default policy; no champion yet
    assert summary.smoke.ok and summary.teardown.done and summary.teardown.mode == "ephemeral"
    assert summary.endpoint.name.startswith("chat-") and summary.endpoint.traffic == {summary.endpoint.deployment: 100}
    # the smoke request went to the new deployment by header, with the key
    assert scoring.requests[0]["deployment"] == summary.endpoint.deployment
    assert scoring.requests[0]["body"]["input_data"]["parameters"]["max_new_tokens"] == 8
    # the stages ran in the order of the design
    order = [
        workspace.calls.index(m)
        for m in (
            "registry.get_foundation_model",
            "compute.ensure",
            "jobs.submit",
            "jobs.metrics",
            "registry.register_model",
            "endpoints.create_deployment",
            "endpoints.credentials",
            "registry.record_evaluation",
            "registry.tag_model",  # the decision, made after the evaluation
            "endpoints.delete",
        )
    ]
    assert order == sorted(order)
    assert workspace.inventory().empty
    # the model version carries lineage and the decision
    tags = workspace.models[summary.model.name][0].tags
    assert tags["decision"] == "approved" and tags["data_fingerprint"] == summary.data.fingerprint
    assert tags["finetune_job"] == summary.job.name and tags["eval_loss"] == "1.5"
    # eval_loss is the one metric a later gate reads from the version; the others and the scores are the run's
    assert not {"train_loss", "base_eval_loss"} & set(tags) and not any(key.startswith("evaluation") for key in tags)
    # the job got the merged parameters: deepspeed stage as the string, the model's defaults in
    spec = workspace.job_records[summary.job.name]["spec"]
    assert spec.parameters["deepspeed_stage"] == "2" and spec.gpus_per_node == 1
    assert spec.display_name.startswith("Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora")
    # the written summary is the same and holds no secret
    written = read_summary(config, state)
    assert written["status"] == "succeeded" and FAKE_KEY not in json.dumps(written)
    # the loss curve: in the run directory, stored with the job, shown as an artifact; progress as an artifact
    curve = Path(written["loss_curve"]["path"])
    assert curve.read_bytes().startswith(b"\x89PNG") and curve.parent.name == str(state.state_details.flow_run_id)
    assert workspace.attachments[(summary.job.name, "loss_curve.png")] == curve.read_bytes()
    assert written["links"]["job"] == f"mem://jobs/{summary.job.name}"
    artifacts = flow_run_artifacts(state)
    assert artifacts["training-progress"].type == "progress" and artifacts["training-progress"].data == 100.0
    assert "data:image/png;base64," in artifacts["loss-curve"].data
    report = artifacts["run-summary"].data
    assert "| train_sft |" in report and "{'" not in report and FAKE_KEY not in report
    decided = artifacts["approval-decision"].data
    assert (
        "| decision | approved |" in decided and "| model version | `mem://models/" in decided and "{'" not in decided
    )


def flow_run_artifacts(state) -> dict:
    """key -> the latest artifact of that key created by the run's tasks."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in sorted(found, key=lambda a: a.created) if artifact.key}


def test_keep_mode_blue_green_retires_old_and_sets_champion(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    first = run(workspace, config).result()
    assert workspace.champions[first.model.name].version == "1"
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}  # a better candidate
    second = run(workspace, make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": 1})).result()  # new data
    assert second.status == "succeeded" and second.model.version == "2"
    endpoint = workspace.endpoints.get("chat")
    assert endpoint.traffic == {dep("2"): 100} and endpoint.deployments == (dep("2"),)
    assert f"chat/{dep('1')}" in workspace.deleted and workspace.champions[first.model.name].version == "2"


def test_gate_failure_deploys_nothing(tmp_path, workspace):
    workspace.metrics = {"train_loss": 3.0, "eval_loss": 2.6, "base_eval_loss": 2.5}  # worse than base
    state = run(workspace, make_config(tmp_path))
    assert state.is_failed()
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "gate_failed" and summary["gate"]["passed"] is False
    assert any("does not beat base" in r and r.startswith("fail") for r in summary["gate"]["reasons"])
    beats_base = next(check for check in summary["gate"]["checks"] if check["name"] == "beats_base")
    assert beats_base["passed"] is False and beats_base["observed"] == 2.6 and beats_base["threshold"] == 2.5
    assert "registry.register_model" not in workspace.calls and "endpoints.create_deployment" not in workspace.calls
    assert workspace.endpoint_records == {} and summary["teardown"]["done"] is True


def test_candidate_not_better_than_champion_is_not_deployed(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()
    other_data = make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": 1})  # a new job
    state = run(workspace, other_data)  # same metrics as the champion: not better
    assert state.is_failed()
    assert read_summary(config, state)["status"] == "gate_failed"
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}


def test_smoke_failure_rolls_back_and_old_deployment_keeps_traffic(tmp_path, workspace, scoring):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    scoring.mode = "error"
    state = run(workspace, new_data(config))
    assert state.is_failed()
    summary = read_summary(config, state)
    assert (
        summary["status"] == "smoke_failed"
        and summary["smoke"]["ok"] is False
        and "HTTP 500" in summary["smoke"]["error"]
    )
    endpoint = workspace.endpoints.get("chat")
    assert endpoint.traffic == {dep("1"): 100} and endpoint.deployments == (dep("1"),)
    assert f"chat/{dep('2')}" in workspace.deleted and workspace.champions[summary["model"]["name"]].version == "1"


def test_bad_response_shape_fails_smoke(tmp_path, workspace, scoring):
    scoring.mode = "bad-shape"
    state = run(workspace, make_config(tmp_path))
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "smoke_failed" and "output" in summary["smoke"]["error"]
    assert workspace.inventory().empty


def test_smoke_through_prompt_flow_answers_every_prompt_and_shows_the_table(tmp_path, workspace, scoring):
    config = make_config(tmp_path, smoke={"promptflow": True, "samples": 3})
    chat_flows = FakeChatFlows()
    state = run(workspace, config, chat_flows)
    summary = state.result()
    assert summary.status == "succeeded", summary.error
    [batch] = chat_flows.batches  # the new deployment, by name, before it took traffic; the smoke's own prompts
    assert batch["deployment"] == summary.endpoint.deployment and batch["endpoint"] == summary.endpoint.name
    smoke_prompts = [r["body"]["input_data"]["input_string"][0][0]["content"] for r in scoring.requests[:3]]
    assert batch["questions"] == smoke_prompts and len(set(smoke_prompts)) == 3
    through = summary.smoke.promptflow
    assert through.ok and [row.question for row in through.rows] == smoke_prompts
    assert all(row.answer == fair_answer(row.question, summary.endpoint.deployment) for row in through.rows)
    artifacts = flow_run_artifacts(state)
    table = json.loads(artifacts["promptflow-batch"].data)
    assert [row["prompt"] for row in table] == smoke_prompts and table[0]["answer"] == fair_answer(
        table[0]["prompt"], None
    )
    assert "## Through Prompt flow" in artifacts["run-summary"].data and FAKE_KEY not in str(summary.model_dump())


def test_unanswered_prompts_through_prompt_flow_fail_the_smoke_and_roll_back(tmp_path, workspace):
    config = make_config(tmp_path, smoke={"promptflow": True}, teardown={"mode": "keep"})
    run(workspace, config).result()  # version 1 live
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    chat_flows = FakeChatFlows()
    chat_flows.mode = "unanswered"
    state = run(workspace, new_data(config), chat_flows)
    summary = read_summary(config, state)
    assert summary["status"] == "smoke_failed" and "through Prompt flow" in summary["smoke"]["error"]
    assert "HTTP 500" in summary["smoke"]["promptflow"]["rows"][0]["error"]
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}  # the candidate never took traffic


def test_a_batch_run_that_cannot_start_fails_the_smoke_with_its_reason(tmp_path, workspace):
    chat_flows = FakeChatFlows()
    chat_flows.mode = "broken"
    state = run(workspace, make_config(tmp_path, smoke={"promptflow": True}), chat_flows)
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "smoke_failed" and "no keyring" in summary["smoke"]["error"]
    assert workspace.inventory().empty


def test_smoke_through_prompt_flow_without_prompt_flow_fails_before_training(tmp_path, workspace):
    state = run(workspace, make_config(tmp_path, smoke={"promptflow": True}), FakeChatFlows(installed=False))
    assert state.is_failed()
    summary = read_summary(make_config(tmp_path), state)
    assert 'pip install -e ".[promptflow]"' in summary["error"]
    assert "jobs.submit" not in workspace.calls


# every port method x transient/permanent fault: tests/test_fault_matrix.py


def test_a_permanent_fault_fails_at_once_and_teardown_still_runs(tmp_path, workspace):
    workspace.faults["endpoints.set_traffic"] = [WorkspaceError("AuthorizationFailed: no permission on endpoint")] * 5
    state = run(workspace, make_config(tmp_path))
    assert state.is_failed()
    assert workspace.calls.count("endpoints.set_traffic") == 1  # not retried
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "failed" and "AuthorizationFailed" in summary["error"]
    assert summary["teardown"]["done"] and workspace.inventory().empty


def test_failed_job_fails_the_run_without_registering(tmp_path, workspace):
    workspace.job_states = [JobState.RUNNING, JobState.FAILED]
    state = run(workspace, make_config(tmp_path))
    assert state.is_failed()
    summary = read_summary(make_config(tmp_path), state)
    assert "ended failed" in summary["error"] and "CUDA out of memory" in summary["error"]
    assert "registry.register_model" not in workspace.calls


def test_interrupted_wait_cancels_the_job(tmp_path, workspace):
    workspace.job_states = [JobState.RUNNING]
    workspace.faults["jobs.status"] = [KeyboardInterrupt()]  # Ctrl-C while polling
    with pytest.raises(KeyboardInterrupt):
        with use_workspace(workspace):
            tunegate(config=make_config(tmp_path))
    assert "jobs.cancel" in workspace.calls and workspace.inventory().empty


def test_compute_on_deny_list_is_rejected_before_training(tmp_path, workspace):
    workspace.foundation_tags = {}  # no allow list: the notebook's deny list applies
    workspace.compute_size = "STANDARD_NC6"
    state = run(workspace, make_config(tmp_path, compute={"size": "Standard_NC24ads_A100_v4"}))
    assert state.is_failed()
    summary = read_summary(make_config(tmp_path), state)
    assert "on the notebook's deny list for fine-tuning" in summary["error"]
    assert workspace.calls.count("compute.ensure") == 1 and "jobs.submit" not in workspace.calls


def test_instance_type_outside_inference_allow_list_is_refused(tmp_path, workspace):
    state = run(workspace, make_config(tmp_path, endpoint={"instance_type": "Standard_DS3_v2"}))
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "failed" and "inference_compute_allow_list" in summary["error"]
    assert "endpoints.create_deployment" not in workspace.calls and workspace.inventory().empty
    assert "jobs.submit" not in workspace.calls  # refused before training, not after


def test_auto_if_better_without_champion_approves_and_says_why(tmp_path, workspace):
    summary = run(workspace, make_config(tmp_path, approval={"policy": "auto-if-better"})).result()
    assert summary.approval.approver == "policy:auto-if-better" and "no champion" in summary.approval.comment


def test_cancelling_a_deployed_run_takes_its_ephemeral_endpoint_down(tmp_path, workspace):
    """The on_cancellation hook runs in the runner after the flow process is killed: it finds the run's endpoint."""
    from types import SimpleNamespace
    from uuid import uuid4

    from flows.tunegate_flow import _teardown_on_cancel, endpoint_name_for

    config = make_config(tmp_path)
    run_id = uuid4()
    name = endpoint_name_for(config, str(run_id))
    workspace.endpoints.ensure(name, ephemeral=True)
    workspace.endpoints.ensure("someone-elses-endpoint")
    flow_run = SimpleNamespace(id=run_id, parameters={"config": config.model_dump(mode="json")})
    with use_workspace(workspace):
        _teardown_on_cancel(None, flow_run, None)
    assert set(workspace.endpoint_records) == {"someone-elses-endpoint"}


# ---------------------------------------------------------------- the gate fails closed and compares like with like


def test_a_registry_error_reading_the_champion_fails_the_gate_after_retries(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()  # a champion exists now
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}  # a better candidate
    outage = [WorkspaceError("registry: HTTP 403 forbidden")] * 6  # every read, before and after the job
    workspace.faults["registry.champion"] = list(outage)
    state = run(workspace, config)
    summary = read_summary(config, state)
    assert summary["status"] == "gate_failed"
    assert any("could not read the champion" in r and "HTTP 403" in r for r in summary["gate"]["reasons"])
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}  # nothing new went live


def test_a_transient_registry_error_is_retried_before_the_gate_decides(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    workspace.faults["registry.champion"] = [TransientWorkspaceError("registry: HTTP 503")]
    summary = run(workspace, new_data(config)).result()
    assert summary.status == "succeeded" and summary.model.version == "2"


def test_a_champion_is_compared_on_the_candidates_split_when_the_workspace_can(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()
    # recorded 1.5 on its own data; re-evaluated on this run's split it scores 1.9: a 1.6 candidate is better
    champion = workspace.champions["Phi-3-mini-4k-instruct-ultrachat-200k"]
    workspace.champions[champion.name] = champion.model_copy(
        update={"tags": {**champion.tags, "eval_fingerprint": "another-sample"}}
    )
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.6, "base_eval_loss": 2.5}
    workspace.champion_on_this_split = 1.9
    summary = run(workspace, new_data(config)).result()
    assert summary.status == "succeeded" and summary.approval.approver == "policy:auto-if-better"
    assert any("(1.9000, re-evaluated on this run's test split)" in r for r in summary.gate.reasons)
    job_spec = workspace.job_records[summary.job.name]["spec"]
    assert job_spec.compare_with.version == "1"  # the job was asked to evaluate the champion


def test_a_champion_measured_on_other_data_makes_auto_if_better_ask_a_person(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"}, approval={"timeout_hours": 0.001})
    run(workspace, config).result()
    champion = workspace.champions["Phi-3-mini-4k-instruct-ultrachat-200k"]
    workspace.champions[champion.name] = champion.model_copy(
        update={"tags": {**champion.tags, "eval_fingerprint": "another-sample"}}
    )
    workspace.evaluates_champion = False  # as Azure's pipeline: it cannot evaluate the champion
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 0.2, "base_eval_loss": 2.5}  # "better" on paper
    state = run(workspace, new_data(config))
    summary = read_summary(config, state)
    assert summary["gate"]["passed"] is True
    assert any("not comparable" in r for r in summary["gate"]["reasons"])
    # the policy did not approve on its own: the run paused for a person (nobody answered in 3.6 s here)
    assert summary["status"] == "rejected" and summary["approval"]["approver"] == "timeout"
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}


# ---------------------------------------------------------------- blue/green: what is live is what was approved


def test_two_model_names_on_one_keep_mode_endpoint_get_their_own_deployments(tmp_path, workspace):
    first = run(workspace, make_config(tmp_path, teardown={"mode": "keep"}, model={"finetuned_name": "fc"})).result()
    second = run(workspace, make_config(tmp_path, teardown={"mode": "keep"}, model={"finetuned_name": "fd"})).result()
    assert (first.model.version, second.model.version) == ("1", "1")
    assert first.endpoint.deployment == "ft-fc-1" and second.endpoint.deployment == "ft-fd-1"
    endpoint = workspace.endpoints.get("chat")
    assert endpoint.traffic == {"ft-fd-1": 100}
    assert workspace.endpoints.get_deployment("chat", "ft-fd-1").model == "fd:1"
    # the summary is read back from the endpoint: deployment -> model version -> traffic
    assert second.endpoint.models == {"ft-fd-1": "fd:1"} and second.endpoint.live == ["fd:1"]
    assert second.endpoint.traffic == {"ft-fd-1": 100}


def test_a_deployment_name_serving_another_model_is_refused(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"}, model={"finetuned_name": "fc"})
    run(workspace, config).result()
    # someone put another model under the name the next version would get
    impostor = ModelVersion(name="other", version="9")
    workspace.endpoints.create_deployment("chat", "ft-fc-2", impostor, "Standard_NC6s_v3")
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    state = run(workspace, new_data(config))
    summary = read_summary(config, state)
    assert summary["status"] == "failed"
    assert "ft-fc-2 exists and serves other:9, not fc:2" in summary["error"]
    assert workspace.endpoints.get("chat").traffic == {"ft-fc-1": 100} and workspace.champions["fc"].version == "1"


def test_rollback_refuses_to_delete_a_deployment_that_takes_traffic(workspace):
    from tasks.deploy import DeploymentRefused, DeployResult
    from tasks.promote import roll_back

    workspace.endpoints.ensure("chat")
    workspace.endpoints.create_deployment("chat", "ft-fc-1", ModelVersion(name="fc", version="1"), "Standard_NC6s_v3")
    workspace.endpoints.set_traffic("chat", {"ft-fc-1": 100})
    with pytest.raises(DeploymentRefused, match="takes 100% of traffic"):
        roll_back.fn(workspace.endpoints, DeployResult(endpoint="chat", deployment="ft-fc-1", previous_traffic={}))
    assert workspace.endpoints.get("chat").deployments == ("ft-fc-1",)


def test_smoke_retries_while_the_endpoint_name_does_not_resolve_yet(tmp_path, workspace):
    dns = TransientWorkspaceError(
        "no answer from https://new.eastus.inference.ml.azure.com/score: ConnectError: "
        "[Errno -2] Name or service not known"
    )
    workspace.faults["endpoints.invoke"] = [dns, dns]
    summary = run(workspace, make_config(tmp_path)).result()
    assert summary.status == "succeeded" and summary.smoke.ok is True
    assert workspace.calls.count("endpoints.invoke") >= 3


# ---------------------------------------------------------------- deliberate outcomes are not crashes


def run_logs(state) -> str:
    """What the run logged to the Prefect server."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    flow_run_id = state.state_details.flow_run_id
    for _ in range(20):  # the log worker ships in batches: wait for the run's last lines
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        text = "\n".join(log.message for log in logs)
        if "Finished in state" in text:
            return text
        time.sleep(0.5)
    return text


def test_a_gate_failure_ends_in_a_named_state_without_a_traceback(tmp_path, workspace):
    workspace.metrics = {"train_loss": 3.0, "eval_loss": 2.6, "base_eval_loss": 2.5}
    state = run(workspace, make_config(tmp_path))
    assert state.is_failed() and state.name == "Gate failed"
    assert state.message.startswith("Gate failed: eval_loss 2.6000 does not beat base 2.5000")
    logs = run_logs(state)
    assert "Gate failed" in logs and "Traceback" not in logs and "RunStopped" not in logs


def test_a_smoke_failure_ends_in_a_named_state_without_a_traceback(tmp_path, workspace, scoring):
    scoring.mode = "error"
    state = run(workspace, make_config(tmp_path))
    assert state.is_failed() and state.name == "Smoke failed"
    assert state.message.startswith("Smoke failed, rolled back:") and "HTTP 500" in state.message
    assert "Traceback" not in run_logs(state)


def test_a_real_error_keeps_its_traceback(tmp_path, workspace):
    workspace.faults["jobs.submit"] = [WorkspaceError("quota exceeded for Standard_NC24ads_A100_v4")] * 3
    state = run(workspace, make_config(tmp_path))
    assert state.is_failed() and state.name == "Failed"
    assert "Traceback" in run_logs(state)


def test_with_flow_retries_the_last_attempt_still_ends_in_the_named_state(tmp_path, workspace):
    workspace.metrics = {"train_loss": 3.0, "eval_loss": 2.6, "base_eval_loss": 2.5}
    with use_workspace(workspace):
        state = tunegate.with_options(retries=1, retry_delay_seconds=0)(config=make_config(tmp_path), return_state=True)
    assert state.is_failed() and state.name == "Gate failed" and state.message.startswith("Gate failed:")
    assert workspace.submissions == 1  # the retried attempt re-attached to the job; no second fine-tune


def test_a_rerun_with_the_same_inputs_reuses_the_completed_job_and_says_so(tmp_path, workspace):
    first = run(workspace, make_config(tmp_path)).result()
    again = run(workspace, make_config(tmp_path)).result()  # another flow run: the key does not depend on it
    assert workspace.submissions == 1
    assert again.job.name == first.job.name and again.job.reused and again.status == "succeeded"
    assert again.model.version == first.model.version  # the version that job registered, not a second one
    assert "not trained again" in again.markdown()


def test_a_rerun_while_the_job_still_trains_reattaches_to_it(tmp_path, workspace):
    first = run(workspace, make_config(tmp_path)).result()
    record = workspace.job_records[first.job.name]  # as after kill -9 of the first run: its job trains on
    record["states"], record["last"] = [JobState.RUNNING, JobState.COMPLETED], JobState.RUNNING
    again = run(workspace, make_config(tmp_path)).result()
    assert workspace.submissions == 1
    assert again.job.reattached and not again.job.reused and again.job.name == first.job.name


def test_other_inputs_or_job_fresh_train_again(tmp_path, workspace):
    first = run(workspace, make_config(tmp_path)).result()
    fresh = run(workspace, make_config(tmp_path, job={"fresh": True})).result()
    assert workspace.submissions == 2 and fresh.job.name == f"{first.job.name}-2" and not fresh.job.reattached
    other_seed = run(workspace, make_config(tmp_path, data={"seed": 7})).result()
    assert workspace.submissions == 3 and not other_seed.job.name.startswith(first.job.name)
    names = [info.name for info in workspace.jobs.list()]
    assert set(names) == {first.job.name, fresh.job.name, other_seed.job.name}


class RivalPromotesRegistry(FakeRegistry):
    def champion(self, name):
        found = super().champion(name)
        self.ws.reads_left -= 1
        if self.ws.reads_left == 0:
            tags = {"eval_loss": self.ws.rival_loss, "decision": "approved", "eval_fingerprint": self.ws.rival_split}
            rival = ModelVersion(name=name, version="9", tags=tags)
            self.ws.models[name].append(rival)
            self.ws.champions[name] = rival
        return found


class RivalPromotes(FakeWorkspace):
    """Another run promotes a much better champion right after this run's gate read the champion."""

    def __init__(self, scoring, after_reads: int) -> None:
        super().__init__(scoring)
        self.reads_left = after_reads
        self.rival_loss = "0.01"
        self.rival_split = ""
        self.registry = RivalPromotesRegistry(self)


def test_a_champion_promoted_while_this_run_waited_is_beaten_or_nothing_goes_live(tmp_path, scoring):
    workspace = RivalPromotes(scoring, after_reads=2)  # read 1: before submit, read 2: the gate's
    state = run(workspace, make_config(tmp_path, teardown={"mode": "keep"}))
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "gate_failed", summary
    assert "became champion while this run waited" in summary["error"] and f"{REGISTERED}:9" in summary["error"]
    assert "endpoints.create_deployment" not in workspace.calls and workspace.champions[REGISTERED].version == "9"


def test_a_better_candidate_still_goes_live_over_a_champion_promoted_meanwhile(tmp_path, scoring):
    workspace = RivalPromotes(scoring, after_reads=2)
    from tasks.sampling import sample_to_directory

    config = make_config(tmp_path, teardown={"mode": "keep"})
    workspace.rival_loss = "3.5"  # the rival is worse; measured on this run's split, so comparable
    workspace.rival_split = sample_to_directory(config.data, tmp_path / "x", tmp_path / "cache").eval_fingerprint
    state = run(workspace, config)
    summary = read_summary(make_config(tmp_path), state)
    assert summary["status"] == "succeeded", summary
    assert workspace.champions[REGISTERED].version == summary["model"]["version"] != "9"


def test_two_keep_mode_runs_at_once_end_with_one_champion_that_is_live(tmp_path, workspace):
    import threading

    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    results = {}

    errors = {}

    def one(seed: int) -> None:
        config = make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": seed})
        try:
            results[seed] = run(workspace, config)
        except BaseException as exc:  # noqa: BLE001 - said by the assertion below, not lost in a thread
            errors[seed] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and len(results) == 2, (errors, sorted(results), [t.is_alive() for t in threads])
    statuses = sorted(read_summary(make_config(tmp_path), state)["status"] for state in results.values())
    # the second to deploy waited for the first and must beat its champion: equal metrics do not
    assert statuses == ["gate_failed", "succeeded"], statuses
    endpoint = workspace.endpoints.get("chat")
    champion = workspace.champions[REGISTERED]
    assert endpoint.traffic == {dep(champion.version): 100} and endpoint.deployments == (dep(champion.version),)


class TwinSubmitsFirst(FakeJobs):
    """Another run with the same inputs submits the job between this run's lookup and its own submission."""

    def submit(self, spec, name, idempotency_key):
        if not self.ws.job_records:
            super().submit(spec, name, idempotency_key)  # the twin's
        return super().submit(spec, name, idempotency_key)


def test_two_runs_submitting_the_same_job_at_once_share_it(tmp_path, scoring):
    workspace = FakeWorkspace(scoring)
    workspace.jobs = TwinSubmitsFirst(workspace)
    summary = run(workspace, make_config(tmp_path)).result()
    assert summary.status == "succeeded" and summary.job.reattached and workspace.submissions == 1


# ---------------------------------------------------------------- crashes between steps (issue 21)


def test_the_same_inputs_find_the_same_job_whatever_became_champion_since(tmp_path, workspace):
    # kill -9 after promote in keep mode: the rerun of the same command trains nothing and registers nothing
    config = make_config(tmp_path, teardown={"mode": "keep"})
    first = run(workspace, config).result()
    assert workspace.champions[REGISTERED].version == "1"  # the champion changed after the job was keyed
    again = run(workspace, config).result()
    assert workspace.submissions == 1 and again.job.name == first.job.name and again.job.reused
    assert [v.version for v in workspace.models[REGISTERED]] == ["1"]  # no v2 from the same data
    assert again.status == "succeeded" and again.model.version == "1"
    assert any("already champion" in reason for reason in again.gate.reasons)
    assert workspace.endpoints.get("chat").traffic == {dep("1"): 100}  # live as it was, never set to 0 meanwhile
    assert again.approval.decision == "approved"
    assert (again.endpoint.name, again.endpoint.deployment, again.endpoint.live) == (
        "chat",
        dep("1"),
        [f"{REGISTERED}:1"],
    )


def test_a_reattached_job_is_compared_with_the_champion_it_evaluated(tmp_path, workspace):
    # the job evaluated no champion (there was none); a champion promoted since is not taken for "same split"
    config = make_config(tmp_path, data={"seed": 3}, approval={"policy": "auto"})
    first = run(workspace, config).result()
    workspace.champions[REGISTERED] = ModelVersion(name=REGISTERED, version="7", tags={"eval_loss": "0.5"})
    workspace.metrics = {**workspace.metrics, "champion_eval_loss": 9.0}  # a number that is not v7's
    again = run(workspace, config).result()
    assert again.job.name == first.job.name
    assert not any("re-evaluated on this run's test split" in reason for reason in again.gate.reasons)


def test_a_run_after_a_promotion_killed_half_way_puts_live_and_champion_back_together(tmp_path, workspace):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()  # v1 live and champion
    # as after kill -9 inside promote: v2 takes 100% while the champion alias still names v1
    v2 = ModelVersion(name=REGISTERED, version="2", tags={"decision": "approved"})
    workspace.models[REGISTERED].append(v2)
    workspace.endpoints.create_deployment("chat", dep("2"), v2, "Standard_NC6s_v3")
    workspace.endpoints.set_traffic("chat", {dep("2"): 100})
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    third = run(workspace, make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": 5})).result()
    assert third.status == "succeeded" and third.model.version == "3"
    endpoint = workspace.endpoints.get("chat")
    assert endpoint.traffic == {dep("3"): 100} and workspace.champions[REGISTERED].version == "3"
    # compared with the champion, not with what served by accident
    assert any(f"{REGISTERED}:1" in reason for reason in third.gate.reasons), third.gate.reasons


def test_repair_rule_for_live_and_champion():
    from tasks.promote import ServingState, repair_for

    v1, v2 = (ModelVersion(name="m", version=v) for v in ("1", "2"))
    both = ServingState(name="e", traffic={"d1": 0, "d2": 100}, models={"d1": "m:1", "d2": "m:2"})
    assert repair_for(both, v1).traffic_to == "d1"  # the champion still has its deployment: traffic goes back
    only_new = ServingState(name="e", traffic={"d2": 100}, models={"d2": "m:2"})
    assert repair_for(only_new, v1).champion == "m:2" and repair_for(only_new, None).champion == "m:2"
    assert not repair_for(only_new, v2).needed and not repair_for(None, v1).needed
    split = ServingState(name="e", traffic={"d2": 50, "d3": 50}, models={"d2": "m:2", "d3": "m:3"})
    assert repair_for(split, v1).needed and "by hand" in repair_for(split, v1).why


def run_as_a_worker_does(workspace, config):
    """The flow run created on the server, then executed as a runner or worker executes it (prefect/engine.py):
    run_flow with the run's own logger as error_logger."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import flow_run_logger, run_flow

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(tunegate, parameters={"config": config.model_dump(mode="json")})
    with use_workspace(workspace), use_chat_flows(FakeChatFlows()):
        try:
            run_flow(tunegate, flow_run=flow_run, error_logger=flow_run_logger(flow_run=flow_run))
        except Exception as exc:  # noqa: BLE001 - the engine re-raises a failed run's exception; the log is the test
            raised = exc
        else:
            raised = None
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run.id).state, raised


def test_deliberate_ends_under_a_worker_log_no_engine_error_and_real_errors_still_do(tmp_path, workspace):
    workspace.metrics = {"train_loss": 3.0, "eval_loss": 2.6, "base_eval_loss": 2.5}
    state, raised = run_as_a_worker_does(workspace, make_config(tmp_path))
    assert state.name == "Gate failed" and raised is not None
    logs = run_logs(state)
    assert "Engine execution exited" not in logs and "Traceback" not in logs, logs[-2000:]
    workspace.metrics = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}
    workspace.faults["jobs.submit"] = [WorkspaceError("quota exceeded for Standard_NC24ads_A100_v4")] * 3
    state, _ = run_as_a_worker_does(workspace, make_config(tmp_path, data={"seed": 9}))
    assert state.name == "Failed" and "Traceback" in run_logs(state)
