"""The whole flow on the Azure adapter: the real SDK against the HTTP replay, smoke requests to a loopback server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses
from azure.ai.ml import MLClient

from flows.params import config_from_dict
from flows.tunegate_flow import tunegate
from tasks.deploy import deployment_name
from tests.azure_replay import ENDPOINT_KEY, RG, SUB, WS, FakeAzureML, FakeCredential
from tests.fakes import ScoringServer
from workspaces.azure.workspace import AzureWorkspace
from workspaces.factory import use_workspace
from workspaces.ports import ModelVersion

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def scoring():
    server = ScoringServer(key=ENDPOINT_KEY)
    yield server
    server.close()


@pytest.fixture
def replay(scoring):
    scoring.mode, scoring.unreachable_first = "ok", 0
    scoring.requests.clear()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        replay = FakeAzureML(rsps, scoring.url)
        replay.scoring = scoring  # Azure Monitor's numbers: what the scoring server answered
        yield replay


@pytest.fixture
def workspace(replay):
    credential = FakeCredential()
    return AzureWorkspace(
        MLClient(credential, subscription_id=SUB, resource_group_name=RG, workspace_name=WS),
        MLClient(credential, registry_name="azureml"),
    )


def make_config(tmp_path, **sections):
    document = {
        "workspace": {"kind": "azure", "state_dir": str(tmp_path / "state")},
        "data": {"percent": 20, "synthetic_rows": 200},
        "model": {"name": "Phi-3-mini-4k-instruct"},
        "compute": {"name": "gpu-cluster", "size": "Standard_NC24ads_A100_v4"},
        "finetune": {"num_train_epochs": 1},
        "gate": {"compare_with_base": False, "max_eval_loss": 2.0},
        "endpoint": {"name": "ultrachat", "instance_type": "Standard_NC6s_v3"},
        "smoke": {"max_new_tokens": 8},
        "job": {"poll_initial_s": 0.01, "poll_max_s": 0.01},
        "retries": {"attempts": 1, "delay_s": 0},
        "rollout": {"window_s": 0.5, "mirror_window_s": 0.5, "probe_rate": 40, "min_requests": 3, "mirror_percent": 20},
    }
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    return config_from_dict(document)


def run(workspace, config, flow=tunegate):
    with use_workspace(workspace):
        state = flow(config=config, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    summary = json.loads((Path(config.workspace.state_dir) / "runs" / run_id / "summary.json").read_text())
    return state, summary


def test_happy_path_on_azure(tmp_path, workspace, replay, scoring):
    state, summary = run(workspace, make_config(tmp_path))
    assert state.is_completed(), summary
    assert summary["status"] == "succeeded" and summary["job"]["url"].startswith("https://ml.azure.com/runs/")
    endpoint, deployment = summary["endpoint"]["name"], summary["endpoint"]["deployment"]
    put = replay.requests("PUT", f"/onlineEndpoints/{endpoint}/deployments/{deployment}$")[0]["json"]["properties"]
    assert put["instanceType"] == "Standard_NC6s_v3"
    traffic = [c["json"]["properties"]["traffic"] for c in replay.requests("PUT", f"/onlineEndpoints/{endpoint}$")]
    assert traffic[-2].get(deployment, 0) == 0 and traffic[-1] == {deployment: 100}  # 0% while smoked, then all of it
    assert scoring.requests and scoring.requests[0]["deployment"] == deployment
    # the evaluation: every prompt through the scoring URI to the candidate at 0%, one conversation per request
    # (Azure's chat-completion contract), greedy; the key only in the Authorization header
    evaluation = summary["evaluation"]
    assert evaluation["passed"] is True and evaluation["samples"] >= 5
    asked = [r for r in scoring.requests if r["body"]["input_data"]["parameters"]["do_sample"] is False]
    assert len(asked) == evaluation["samples"] and {r["deployment"] for r in asked} == {deployment}
    assert all(len(r["body"]["input_data"]["input_string"]) == 1 for r in asked)
    assert all(r["auth"] == f"Bearer {ENDPOINT_KEY}" for r in asked)
    records = (Path(tmp_path) / "state").rglob("*")
    assert not any(ENDPOINT_KEY in path.read_text(errors="replace") for path in records if path.is_file())
    assert replay.requests("DELETE", f"/onlineEndpoints/{endpoint}$") and workspace.inventory().empty
    model = replay.models[summary["model"]["name"]][summary["model"]["version"]]["properties"]
    assert model["modelUri"] == f"azureml://jobs/{summary['job']['name']}/outputs/trained_model"
    assert (
        model["tags"]["decision"] == "approved" and model["tags"]["data_fingerprint"] == summary["data"]["fingerprint"]
    )
    assert summary["metrics"]["eval_loss"] == 1.42
    assert ENDPOINT_KEY not in json.dumps(summary)


def test_nc6_from_the_official_example_is_rejected_by_the_deny_list(tmp_path, workspace, replay):
    replay.foundation_tags = {}  # no allow list: the notebook's deny list decides
    replay.compute_size = "STANDARD_NC6"  # what Compute_get_AmlCompute returns
    state, summary = run(workspace, make_config(tmp_path, compute={"size": "Standard_NC24ads_A100_v4"}))
    assert state.is_failed()
    error = summary["error"]
    assert "compute cluster 'gpu-cluster' is STANDARD_NC6" in error
    assert "compute.size=Standard_NC24ads_A100_v4 does not change it" in error
    assert "VM size STANDARD_NC6 is on the notebook's deny list for fine-tuning" in error
    assert "Allowed sizes: " in error and "Standard_NC24ads_A100_v4" in error.split("Allowed sizes: ")[1]
    assert "--set compute.name=gpu-cluster-" in error and "--set compute.size=" in error


def test_a_deny_listed_size_asked_for_is_refused_naming_the_cluster_and_the_accepted_sizes(tmp_path, workspace, replay):
    replay.foundation_tags = {}  # no allow list: the notebook's deny list decides, before any cluster is made
    state, summary = run(workspace, make_config(tmp_path, compute={"name": "nc6-cluster", "size": "STANDARD_NC6"}))
    assert state.is_failed()
    error = summary["error"]
    assert "compute cluster 'nc6-cluster' is STANDARD_NC6" in error and "on the notebook's deny list" in error
    accepted = error.split("Allowed sizes: ")[1]
    assert "Standard_NC24ads_A100_v4" in accepted and "STANDARD_NC6," not in accepted
    assert not replay.requests("PUT", "/computes/") and not replay.requests("PUT", "/jobs/")


def test_command_mode_trains_the_users_script_on_a_size_outside_the_models_allow_list(tmp_path, workspace, replay):
    # seed 004: the guide's own script on Standard_NC6s_v3, which the registry model's pipeline allow list leaves out
    replay.compute_size = "Standard_NC6s_v3"
    code = tmp_path / "finetuning_dir"
    code.mkdir()
    (code / "fine_tune.py").write_text("print('training')\n")
    azure = {
        "finetune_mode": "command",
        "command_job": {"code_dir": str(code), "environment": "phi-3-training-environment:1"},
    }
    config = make_config(tmp_path, compute={"size": "Standard_NC6s_v3"})
    config = config.model_copy(
        update={
            "workspace": config.workspace.model_copy(update={"azure": config.workspace.azure.model_validate(azure)})
        }
    )
    state, summary = run(workspace, config)
    assert "allow-listed" not in (summary["error"] or "")
    assert replay.requests("PUT", "/jobs/tunegate-"), summary  # submitted: the allow list is the pipeline's rule


def test_an_existing_cluster_outside_the_models_allow_list_names_the_allowed_sizes(tmp_path, workspace, replay):
    replay.compute_size = "Standard_NC6s_v3"  # allowed for inference, not in the finetune allow list
    state, summary = run(workspace, make_config(tmp_path, compute={"size": "Standard_NC24ads_A100_v4"}))
    assert state.is_failed()
    error = summary["error"]
    assert "'gpu-cluster' is Standard_NC6s_v3" in error and "not in the allow-listed computes" in error
    assert "Allowed sizes: Standard_NC24ads_A100_v4, Standard_NC48ads_A100_v4, Standard_ND96asr_v4" in error
    assert "--set compute.size=Standard_NC24ads_A100_v4" in error
    assert not replay.requests("PUT", "/jobs/")


def test_a_resubmitted_run_reattaches_to_its_job(tmp_path, workspace, replay):
    replay.faults["PUT /models/.*/versions/"] = [403] * 4  # the first attempt fails after the job ran
    retrying = tunegate.with_options(retries=1, retry_delay_seconds=0)
    state, summary = run(workspace, make_config(tmp_path), flow=retrying)
    assert state.is_completed(), summary
    assert len(replay.requests("PUT", "/jobs/tunegate-")) == 1  # one GPU job, found again by its name
    assert summary["job"]["reattached"] is True


def test_a_rerun_from_the_cli_reuses_the_completed_job_of_the_same_inputs(tmp_path, workspace, replay):
    _, first = run(workspace, make_config(tmp_path))
    _, again = run(workspace, make_config(tmp_path))  # another flow run, as after a crash: same data, same settings
    assert again["status"] == "succeeded" and again["job"]["name"] == first["job"]["name"]
    assert again["job"]["reused"] is True
    assert len(replay.requests("PUT", "/jobs/tunegate-")) == 1  # the GPU job ran once
    assert again["model"]["version"] == first["model"]["version"]  # the version that job registered
    _, fresh = run(workspace, make_config(tmp_path, job={"fresh": True}))
    assert fresh["job"]["name"] == f"{first['job']['name']}-2" and not fresh["job"]["reattached"]
    assert len(replay.requests("PUT", "/jobs/tunegate-")) == 2
    listed = {info.name for info in workspace.jobs.list()}
    assert {first["job"]["name"], fresh["job"]["name"]} <= listed


def test_smoke_failure_rolls_back_and_keeps_the_live_deployment(tmp_path, workspace, replay, scoring):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    _, first = run(workspace, config)
    assert first["status"] == "succeeded"
    live = first["endpoint"]["deployment"]
    replay.finetune_metrics = {"train_loss": 1.0, "eval_loss": 1.1}  # a better candidate
    scoring.mode = "error"
    state, second = run(
        workspace, make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": 1}, approval={"policy": "auto"})
    )  # a new job
    assert state.is_failed() and second["status"] == "smoke_failed"
    new = second_deployment = deployment_name(
        "ft-", ModelVersion(name=second["model"]["name"], version=second["model"]["version"])
    )
    assert second_deployment != live
    assert replay.requests("DELETE", f"/onlineEndpoints/ultrachat/deployments/{new}$")
    assert workspace.endpoints.get("ultrachat").traffic == {live: 100}
    assert not replay.requests("DELETE", "/onlineEndpoints/ultrachat$")
    assert workspace.registry.champion(first["model"]["name"]).version == first["model"]["version"]


def test_smoke_waits_for_a_new_endpoint_to_become_reachable(tmp_path, workspace, replay, scoring):
    scoring.unreachable_first = 2  # a new scoring URI answers 502 for a while
    state, summary = run(workspace, make_config(tmp_path))
    assert state.is_completed(), summary
    assert summary["smoke"]["ok"] is True and len(scoring.requests) >= 3


def test_an_endpoint_never_reachable_fails_smoke_and_rolls_back_explicitly(tmp_path, workspace, replay, scoring):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    _, first = run(workspace, config)
    live = first["endpoint"]["deployment"]
    replay.finetune_metrics = {"train_loss": 1.0, "eval_loss": 1.1}
    scoring.mode = "unreachable"
    # new data: a new job (its loss is not comparable with the champion's: approved by the policy, not a person)
    again = make_config(tmp_path, teardown={"mode": "keep"}, smoke={"timeout_s": 2}, data={"seed": 1})
    again = again.model_copy(update={"approval": again.approval.model_copy(update={"policy": "auto"})})
    state, second = run(workspace, again)
    assert state.is_failed() and second["status"] == "smoke_failed"
    assert (
        "not reachable within smoke.timeout_s=2 s" in second["smoke"]["error"]
        and "HTTP 502" in second["smoke"]["error"]
    )
    candidate = deployment_name("ft-", ModelVersion(name=second["model"]["name"], version=second["model"]["version"]))
    # the rollback path deleted the candidate (keep mode: teardown deletes nothing)
    assert replay.requests("DELETE", f"/onlineEndpoints/ultrachat/deployments/{candidate}$")
    assert workspace.endpoints.get("ultrachat").traffic == {live: 100}
    assert second["teardown"]["deleted"] == []


def test_keep_mode_promotion_on_azure_moves_traffic_in_one_update(tmp_path, workspace, replay, scoring):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    _, first = run(workspace, config)
    replay.finetune_metrics = {"train_loss": 1.0, "eval_loss": 1.1}  # a better candidate, from new data
    state, second = run(
        workspace, make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": 1}, approval={"policy": "auto"})
    )
    assert state.is_completed(), second
    old, new = first["endpoint"]["deployment"], second["endpoint"]["deployment"]
    assert old != new
    puts = [c["json"]["properties"] for c in replay.requests("PUT", "/onlineEndpoints/ultrachat$")]
    traffic = [put["traffic"] for put in puts]
    live_from = next(i for i, t in enumerate(traffic) if sum(t.values()) == 100)
    assert all(sum(t.values()) == 100 for t in traffic[live_from:])  # never a moment with nothing live
    # smoked and evaluated at 0%, then the mirror (20% of live traffic copied), then the 25% step, then all of it
    mirrored = next(i for i, put in enumerate(puts) if put.get("mirrorTraffic"))
    assert puts[mirrored]["mirrorTraffic"] == {new: 20} and traffic[mirrored].get(new, 0) == 0
    assert traffic[-2] == {old: 75, new: 25} and not puts[-2].get("mirrorTraffic")
    assert traffic[-1] == {new: 100}
    steps = second["rollout"]["steps"]
    assert second["rollout"]["outcome"] == "promoted" and [s["traffic"] for s in steps] == [20, 25]
    assert all(s["requests"]["candidate"] >= 3 and s["requests"]["live"] >= 3 for s in steps), steps
    assert replay.requests("GET", f"(?i)/deployments/{new}/providers/microsoft.insights/metrics")
    assert second["endpoint"]["live"] == [f"{second['model']['name']}:{second['model']['version']}"]


def test_a_window_shorter_than_azure_monitors_delay_is_no_evidence_and_rolls_back(tmp_path, workspace, replay):
    """Azure Monitor publishes a minute's numbers minutes late: a window that ends before they arrive has none, and
    the rollout fails closed (rollout.window_s must be minutes long on Azure ML; README says so)."""
    config = make_config(tmp_path, teardown={"mode": "keep"}, rollout={"mirror_percent": 0})
    run(workspace, config)
    replay.finetune_metrics = {"train_loss": 1.0, "eval_loss": 1.1}
    replay.metrics_lag_s = 180
    state, second = run(
        workspace, make_config(tmp_path, teardown={"mode": "keep"}, data={"seed": 1}, approval={"policy": "auto"},
                               rollout={"mirror_percent": 0})
    )  # fmt: skip
    assert second["status"] == "rolled_back" and "no evidence" in second["error"], second
    old = second["rollout"]["live"].split(" ")[0]
    assert workspace.endpoints.get("ultrachat").traffic == {old: 100}
