"""Every port method of the Azure adapter, through the real azure-ai-ml SDK against the HTTP replay."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import responses
from azure.ai.ml import MLClient

from tasks.compute import ValidatedCompute
from tasks.errors import is_transient
from tasks.finetune import build_spec, submit_or_reattach
from tasks.register import register_once
from tasks.settings import FinetuneSettings
from tests.azure_replay import ENDPOINT_KEY, RG, SUB, WS, FakeAzureML, FakeCredential
from workspaces.azure.auth import make_credential
from workspaces.azure.settings import AzureSettings
from workspaces.azure.workspace import AzureWorkspace
from workspaces.ports import (
    ComputeSpec,
    JobState,
    MetricsNotFound,
    ModelVersion,
    NotFoundError,
    TransientWorkspaceError,
    WorkspaceError,
)

SCORING_URI = "http://127.0.0.1:9/score"


@pytest.fixture
def replay():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeAzureML(rsps, SCORING_URI)


@pytest.fixture
def workspace(replay):
    credential = FakeCredential()
    return AzureWorkspace(
        MLClient(credential, subscription_id=SUB, resource_group_name=RG, workspace_name=WS),
        MLClient(credential, registry_name="azureml"),
    )


@pytest.fixture
def job_spec(workspace, tmp_path):
    for name in ("train_sft.jsonl", "test_sft.jsonl"):
        (tmp_path / name).write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    foundation = workspace.registry.get_foundation_model("Phi-3-mini-4k-instruct")
    data = workspace.data.upload(tmp_path / "train_sft.jsonl", tmp_path / "test_sft.jsonl", "fp-1")
    return build_spec(
        foundation,
        ValidatedCompute(name="gpu-cluster", size="Standard_NC24ads_A100_v4", gpus_per_node=1),
        data,
        FinetuneSettings(num_train_epochs=1),
        "chat_completion_Phi-3-mini-4k-instruct",
    )


def test_foundation_model_by_label_or_version(workspace, replay):
    model = workspace.registry.get_foundation_model("Phi-3-mini-4k-instruct")
    assert model.version == "7" and model.id == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7"
    assert "finetune_compute_allow_list" in model.tags
    listed = replay.requests("GET", r"/registries/azureml/models/Phi-3-mini-4k-instruct/versions$")[0]
    assert listed["query"]["$orderBy"] == ["createdtime desc"]  # label "latest" = newest version
    assert workspace.registry.get_foundation_model("Phi-3-mini-4k-instruct", version="7").version == "7"


def test_existing_compute_and_gpu_sizes(workspace, replay):
    compute = workspace.compute.ensure(ComputeSpec(name="gpu-cluster", size="Standard_NC24ads_A100_v4"))
    assert (compute.size, compute.provisioning_state) == ("Standard_NC24ads_A100_v4", "Succeeded")
    sizes = {sku.name: sku.gpus for sku in workspace.compute.list_sizes()}
    assert sizes["Standard_NC24ads_A100_v4"] == 1 and sizes["Standard_DS1_v2"] == 0
    assert not replay.requests("PUT", "/computes/")


def test_missing_compute_is_created_dedicated_then_low_priority(workspace, replay):
    replay.compute_exists = False
    replay.faults["PUT /computes/"] = [400] * 4  # no dedicated quota (the SDK itself tries 4 times)
    compute = workspace.compute.ensure(
        ComputeSpec(name="gpu-cluster", size="Standard_NC24ads_A100_v4", idle_seconds_before_scaledown=300)
    )
    assert compute.name == "gpu-cluster"
    puts = replay.requests("PUT", "/computes/gpu-cluster")
    tiers = [p["json"]["properties"]["properties"]["vmPriority"] for p in puts]
    assert tiers == ["Dedicated"] * 4 + ["LowPriority"]
    scale = puts[-1]["json"]["properties"]["properties"]["scaleSettings"]
    assert scale["minNodeCount"] == 0 and scale["nodeIdleTimeBeforeScaleDown"] == "PT5M"


def test_failed_compute_is_reported_as_failed(workspace, replay):
    replay.compute_state = "Failed"
    assert workspace.compute.ensure(ComputeSpec(name="c", size="x")).provisioning_state == "Failed"


def test_submit_wires_the_notebook_pipeline_and_uploads_data(workspace, replay, job_spec):
    job = submit_or_reattach(workspace.jobs, job_spec, "key-0123456789abcdefghij")
    assert job.name == "tunegate-key-0123456789abcdef" and not job.reattached
    assert job.url.startswith("https://ml.azure.com/runs/")
    [put] = replay.requests("PUT", r"/jobs/tunegate-")
    props = put["json"]["properties"]
    assert props["jobType"] == "Pipeline" and props["experimentName"] == "chat_completion_Phi-3-mini-4k-instruct"
    assert props["settings"]["force_rerun"] is True and props["settings"]["continue_on_step_failure"] is False
    node = props["jobs"]["chat_completion_pipeline"]
    inputs = {name: value.get("value", value.get("uri")) for name, value in node["inputs"].items()}
    assert inputs["mlflow_model_path"] == job_spec.model_id
    assert inputs["number_of_gpu_to_use_finetuning"] == "1" and inputs["deepspeed_stage"] == "2"
    assert inputs["apply_lora"] == "true" and inputs["num_train_epochs"] == "1"
    assert inputs["compute_finetune"] == "gpu-cluster" and inputs["train_file_path"].startswith("azureml://")
    assert node["componentId"].startswith("azureml://registries/azureml/components/chat_completion_pipeline")
    assert props["outputs"]["trained_model"]["jobOutputType"] == "mlflow_model"
    assert sorted(Path(p).name for p in replay.uploads) == ["test_sft.jsonl", "train_sft.jsonl"]


def test_resubmission_reattaches_and_failed_jobs_are_retried_under_a_new_name(workspace, replay, job_spec):
    first = submit_or_reattach(workspace.jobs, job_spec, "same-key")
    again = submit_or_reattach(workspace.jobs, job_spec, "same-key")
    assert again.reattached and again.name == first.name and len(replay.requests("PUT", "/jobs/")) == 1
    replay.jobs[first.name]["_statuses"] = ["Failed"]
    retried = submit_or_reattach(workspace.jobs, job_spec, "same-key")
    assert not retried.reattached and retried.name == f"{first.name}-2"


def test_job_status_mapping_and_cancel(workspace, replay, job_spec):
    replay.job_status_sequence = ["Queued", "Running", "Finalizing", "Completed"]
    job = submit_or_reattach(workspace.jobs, job_spec, "k")
    states = [workspace.jobs.status(job).state for _ in range(4)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.RUNNING, JobState.COMPLETED]
    replay.job_status_sequence = ["Running", "Failed"]
    failing = submit_or_reattach(workspace.jobs, job_spec, "k2")
    workspace.jobs.status(failing)
    status = workspace.jobs.status(failing)
    assert status.state is JobState.FAILED and "ml.azure.com" in status.message
    workspace.jobs.cancel(failing)  # already over: nothing to cancel
    assert not replay.requests("POST", f"/jobs/{failing.name}/cancel")
    replay.job_status_sequence = ["Running"]
    running = submit_or_reattach(workspace.jobs, job_spec, "k3")
    workspace.jobs.cancel(running)
    assert replay.requests("POST", f"/jobs/{running.name}/cancel")
    assert workspace.jobs.status(running).state is JobState.CANCELED


def test_metrics_come_from_the_finetune_step_in_the_nested_run_tree(workspace, replay, job_spec):
    # job run -> chat_completion_pipeline node run -> step runs: the losses are only on chat_completion_finetune
    job = submit_or_reattach(workspace.jobs, job_spec, "k")
    assert workspace.jobs.metrics(job) == {"train_loss": 1.31, "eval_loss": 1.42, "loss": 1.25}
    search = replay.requests("POST", "/api/2.0/mlflow/runs/search")[0]
    assert search["path"].startswith("/mlflow/v2.0/subscriptions/")
    assert search["json"]["filter"] == f"tags.mlflow.rootRunId = '{job.name}'"


def test_metrics_from_the_older_flat_run_tree_and_across_pages(workspace, replay, job_spec):
    replay.run_tree_shape = "flat"
    job = submit_or_reattach(workspace.jobs, job_spec, "k")
    original = FakeAzureML.STEPS
    try:  # more step runs than one page holds: the finetune step is on the second page
        FakeAzureML.STEPS = tuple(f"extra_step_{n}" for n in range(250)) + original
        assert workspace.jobs.metrics(job)["eval_loss"] == 1.42
    finally:
        FakeAzureML.STEPS = original
    assert len(replay.requests("POST", "/api/2.0/mlflow/runs/search")) == 2


def test_missing_eval_metric_lists_the_runs_searched(workspace, replay, job_spec):
    replay.finetune_metrics = {"loss": 1.2, "train_loss": 1.1}  # the trainer logged no evaluation
    job = submit_or_reattach(workspace.jobs, job_spec, "k")
    with pytest.raises(MetricsNotFound) as error:
        workspace.jobs.metrics(job)
    text = str(error.value)
    assert "chat_completion_finetune" in text and "chat_completion_pipeline" in text and "train_loss" in text
    assert "7 run(s)" in text and "rootRunId" in text


def test_a_failed_job_says_why_in_the_services_words(workspace, replay, job_spec):
    replay.job_status_sequence = ["Running", "Failed"]
    replay.run_errors = {"chat_completion_finetune": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"}
    job = submit_or_reattach(workspace.jobs, job_spec, "k")
    workspace.jobs.status(job)
    status = workspace.jobs.status(job)
    assert status.state is JobState.FAILED
    assert "chat_completion_finetune: UserError: torch.OutOfMemoryError: CUDA out of memory" in status.message
    assert "Failed." in status.message and "JobStatus." not in status.message
    assert f"https://ml.azure.com/runs/{job.name}" in status.message


def test_inventory_lists_running_jobs_from_the_service(workspace, replay, job_spec):
    replay.job_status_sequence = ["Running"]
    left_by_a_crashed_run = submit_or_reattach(workspace.jobs, job_spec, "k")
    credential = FakeCredential()
    fresh = AzureWorkspace(  # another process: it never submitted anything
        MLClient(credential, subscription_id=SUB, resource_group_name=RG, workspace_name=WS),
        MLClient(credential, registry_name="azureml"),
    )
    assert fresh.inventory().running_jobs == (left_by_a_crashed_run.name,)
    replay.jobs[left_by_a_crashed_run.name]["_statuses"] = ["Completed"]
    assert fresh.inventory().running_jobs == ()


def test_register_model_from_job_output_with_lineage(workspace, replay, job_spec):
    job = submit_or_reattach(workspace.jobs, job_spec, "k")
    version = workspace.registry.register_model(
        job, "Phi-3-mini-4k-instruct-ultrachat-200k", {"data_fingerprint": "fp-1"}
    )
    [put] = replay.requests("PUT", "/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions/")
    assert put["json"]["properties"]["modelUri"] == f"azureml://jobs/{job.name}/outputs/trained_model"
    assert put["json"]["properties"]["modelType"] == "mlflow_model"
    assert put["json"]["properties"]["tags"]["data_fingerprint"] == "fp-1"
    assert (
        register_once(workspace.registry, job, "Phi-3-mini-4k-instruct-ultrachat-200k", {}).version == version.version
    )  # retried
    tagged = workspace.registry.tag_model(version, {"decision": "approved"})
    assert tagged.tags["decision"] == "approved" and tagged.tags["data_fingerprint"] == "fp-1"
    assert workspace.registry.champion(version.name) is None
    workspace.registry.set_champion(tagged, version.name)
    assert workspace.registry.champion(version.name).version == version.version
    workspace.registry.set_champion(None, version.name)
    assert workspace.registry.champion(version.name) is None


def test_endpoint_deployment_traffic_keys_and_deletes(workspace, replay, caplog):
    caplog.set_level(logging.DEBUG)
    model = ModelVersion(name="phi-ft", version="1700000000")
    endpoint = workspace.endpoints.ensure("chat-1234", description="d", ephemeral=True)
    assert endpoint.deployments == () and endpoint.traffic == {}
    sent = replay.requests("PUT", "/onlineEndpoints/chat-1234$")[0]["json"]
    assert sent["properties"]["authMode"] == "Key" and sent["tags"]["tunegate.ephemeral"] == "true"
    workspace.endpoints.create_deployment("chat-1234", "ft-1700000000", model, "Standard_NC6s_v3")
    dep = replay.requests("PUT", "/deployments/ft-1700000000$")[0]["json"]["properties"]
    assert dep["instanceType"] == "Standard_NC6s_v3" and dep["model"].endswith("/models/phi-ft/versions/1700000000")
    assert dep["livenessProbe"]["initialDelay"] == "PT10M" and dep["requestSettings"]["requestTimeout"] == "PT1M30S"
    workspace.endpoints.set_traffic("chat-1234", {"ft-1700000000": 100})
    assert replay.requests("PUT", "/onlineEndpoints/chat-1234$")[-1]["json"]["properties"]["traffic"] == {
        "ft-1700000000": 100
    }
    assert workspace.endpoints.get("chat-1234").traffic == {"ft-1700000000": 100}
    credentials = workspace.endpoints.credentials("chat-1234")
    assert credentials.scoring_uri == SCORING_URI and credentials.key.get_secret_value() == ENDPOINT_KEY
    assert ENDPOINT_KEY not in caplog.text and ENDPOINT_KEY not in repr(credentials)
    assert workspace.inventory().endpoints == {"chat-1234": ("ft-1700000000",)}
    workspace.endpoints.set_traffic("chat-1234", {"ft-1700000000": 0})
    workspace.endpoints.delete_deployment("chat-1234", "ft-1700000000")
    workspace.endpoints.delete("chat-1234")
    assert replay.requests("DELETE", "/deployments/ft-1700000000$") and replay.requests(
        "DELETE", "/onlineEndpoints/chat-1234$"
    )
    assert workspace.endpoints.get("chat-1234") is None and workspace.inventory().empty


def test_endpoint_identity_from_settings(replay):
    credential = FakeCredential()
    identity = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/phi"
    )
    workspace = AzureWorkspace(
        MLClient(credential, subscription_id=SUB, resource_group_name=RG, workspace_name=WS),
        MLClient(credential, registry_name="azureml"),
        AzureSettings(endpoint_identity=identity),
    )
    workspace.endpoints.ensure("chat-id")
    sent = replay.requests("PUT", "/onlineEndpoints/chat-id$")[0]["json"]
    assert sent["identity"]["type"] == "UserAssigned" and identity in sent["identity"]["userAssignedIdentities"]


def test_throttling_is_transient_and_authorization_is_not(workspace, replay):
    replay.faults["GET /computes/"] = [429] * 4  # more than the SDK's own 3 retries
    with pytest.raises(TransientWorkspaceError) as throttled:
        workspace.compute.ensure(ComputeSpec(name="c", size="x"))
    assert is_transient(throttled.value)
    replay.faults["GET /onlineEndpoints/"] = [403] * 4
    with pytest.raises(WorkspaceError, match="HTTP 403.*injected 403") as refused:
        workspace.endpoints.get("chat")
    assert not is_transient(refused.value)
    with pytest.raises(NotFoundError):
        workspace.endpoints.credentials("missing")


def test_no_credentials_in_a_scheduled_run_says_what_to_configure(monkeypatch):
    class NoCredential:
        def get_token(self, *scopes, **kwargs):
            raise RuntimeError("DefaultAzureCredential failed to retrieve a token")

    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(WorkspaceError, match="az login.*AZURE_CLIENT_ID"):
        make_credential(AzureSettings(), default=NoCredential)


@pytest.fixture
def command_workspace(replay, tmp_path):
    """The E2E guide's path: your training script in finetuning_dir, run as a command job."""
    code = tmp_path / "finetuning_dir"
    code.mkdir()
    (code / "fine_tune.py").write_text("print('your training script')\n")
    credential = FakeCredential()
    settings = AzureSettings(
        finetune_mode="command", command_job={"code_dir": str(code), "environment": "phi-3-training-environment:1"}
    )
    return AzureWorkspace(
        MLClient(credential, subscription_id=SUB, resource_group_name=RG, workspace_name=WS),
        MLClient(credential, registry_name="azureml"),
        settings,
    )


def test_command_job_path_of_the_e2e_guide(replay, command_workspace, job_spec):
    job = submit_or_reattach(command_workspace.jobs, job_spec, "command-key")
    props = replay.requests("PUT", f"/jobs/{job.name}$")[0]["json"]["properties"]
    assert props["jobType"] == "Command" and "${{inputs.train_file}}" in props["command"]
    assert props["environmentId"].endswith("/environments/phi-3-training-environment/versions/1")
    assert props["computeId"].endswith("/computes/gpu-cluster")
    assert props["inputs"]["model_output"] == {"jobInputType": "literal", "value": "model_output"}
    assert "--model_output_dir ${{inputs.model_output}}" in props["command"]
    assert props["environmentVariables"]["TUNEGATE_NUM_TRAIN_EPOCHS"] == "1"
    assert any(path.endswith("/fine_tune.py") for path in replay.uploads)
    assert not replay.requests("GET", "/registries/azureml/components/")  # no registry pipeline on this path


def test_command_job_registers_what_the_script_logged_and_refuses_an_empty_path(replay, command_workspace, job_spec):
    workspace = command_workspace
    job = submit_or_reattach(workspace.jobs, job_spec, "command-key")
    assert workspace.jobs.metrics(job)["eval_loss"] == 1.42  # the script's Trainer logs on the job's own run
    with pytest.raises(WorkspaceError, match=r"logged no MLflow model under 'model_output'.*command_job.model_path"):
        workspace.registry.register_model(job, "phi-3-ft", {})
    assert not replay.requests("PUT", "/models/phi-3-ft/versions/")  # nothing registered from an empty path
    # listed as azureml-mlflow's artifact repository lists them: run history, paged (the MLmodel on page 2)
    replay.run_artifacts[job.name] = ["logs/train.txt", "model_output/model/config.json", "model_output/MLmodel"]
    version = workspace.registry.register_model(job, "phi-3-ft", {})
    listed = replay.requests("GET", rf"/experiments/[^/]+/runs/{job.name}/artifacts$")
    assert len(listed) >= 2 and not replay.requests("GET", "/api/2.0/mlflow/artifacts/list")
    [put] = replay.requests("PUT", "/models/phi-3-ft/versions/")
    assert put["json"]["properties"]["modelUri"] == f"azureml://jobs/{job.name}/outputs/artifacts/paths/model_output"
    assert version.version == "1"


def test_a_running_job_tells_its_status_and_latest_step_metrics_and_the_loss_per_step(workspace, replay, job_spec):
    replay.job_status_sequence = ["Running"]
    job = submit_or_reattach(workspace.jobs, job_spec, "key-progress-0123456789")
    progress = workspace.jobs.progress(job)
    assert progress.state is JobState.RUNNING and progress.status_text == "Running"
    # HF Trainer's keys on the finetune step's run, wherever it sits in the run tree
    assert (progress.train_loss, progress.eval_loss, progress.epoch) == (1.25, 1.42, 3.0)
    history = workspace.jobs.loss_history(job)
    assert history.train[0] == (10, 1.9) and len(history.train) == 10 and history.eval == ((50, 1.6), (100, 1.42))
    assert history.base_eval_loss is None  # the pipeline does not evaluate the base model
    fetched = replay.requests("GET", r"/metrics/get-history")
    assert {call["query"]["run_id"][0] for call in fetched} == {f"{job.name}_chat_completion_finetune"}


def test_links_go_to_studio_and_the_scoring_url_never_with_a_key(workspace, replay, job_spec):
    job = submit_or_reattach(workspace.jobs, job_spec, "key-links-0123456789ab")
    workspace.endpoints.ensure("chat-links")
    version = ModelVersion(name="ft", version="3")
    links = workspace.links(job=job, model=version, endpoint="chat-links")
    wsid = f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
    assert links["model version in Studio"] == f"https://ml.azure.com/model/ft:3/details?wsid={wsid}"
    assert links["endpoint in Studio"] == f"https://ml.azure.com/endpoints/realtime/chat-links/detail?wsid={wsid}"
    assert links["job in Studio"] == job.url and links["scoring URL"] == SCORING_URI
    assert all(ENDPOINT_KEY not in url for url in links.values())
    assert workspace.jobs.attach(job, "loss_curve.png", b"png") is None  # documented: not on Azure


def test_two_registrations_that_read_the_same_next_version_both_end_registered(workspace, replay, job_spec):
    # another run read the same nextVersion and registered it a moment before this one's PUT
    job = submit_or_reattach(workspace.jobs, job_spec, "key-race-0123456789")
    replay.rival_registrations = 1
    version = workspace.registry.register_model(
        job, "Phi-3-mini-4k-instruct-ultrachat-200k", {"data_fingerprint": "fp-1"}
    )
    assert version.version == "2"  # the next number, not a permanent "Asset paths cannot be updated"
    puts = replay.requests("PUT", "/models/Phi-3-mini-4k-instruct-ultrachat-200k/versions/")
    assert [put["path"].rsplit("/", 1)[-1] for put in puts] == ["1", "2"]
    stored = replay.models["Phi-3-mini-4k-instruct-ultrachat-200k"]
    assert stored["1"]["properties"]["modelUri"] == "azureml://jobs/rival-job/outputs/trained_model"  # untouched
    assert stored["2"]["properties"]["modelUri"] == f"azureml://jobs/{job.name}/outputs/trained_model"


def test_mirror_traffic_steps_and_the_deployments_metrics_from_azure_monitor(workspace, replay):
    """The safe-rollout guide's calls: mirror_traffic on the endpoint (one deployment, <= 50%, not one that takes
    live traffic), traffic in steps, and each deployment's RequestsPerMinute / RequestLatency_P95 from Azure
    Monitor (Metrics - List on the deployment's resource, PT1M, average, split by envoy_response_code)."""
    from tasks.rollout_traffic import restore_live, shift_traffic

    endpoints = workspace.endpoints
    endpoints.ensure("chat-keep")
    for name, version in (("blue", "1"), ("green", "2")):
        endpoints.create_deployment("chat-keep", name, ModelVersion(name="phi-ft", version=version), "Standard_NC6s_v3")
    endpoints.set_traffic("chat-keep", {"blue": 100})
    assert shift_traffic.fn(endpoints, "chat-keep", "blue", "green", 0, mirror=20) == {"blue": 100}
    sent = replay.requests("PUT", "/onlineEndpoints/chat-keep$")[-1]["json"]["properties"]
    assert sent["mirrorTraffic"] == {"green": 20} and sent["traffic"] == {"blue": 100}
    assert endpoints.get("chat-keep").mirror == {"green": 20}
    with pytest.raises(WorkspaceError, match="50%"):
        endpoints.set_mirror("chat-keep", {"green": 60})  # the service's cap, said in its words
    assert shift_traffic.fn(endpoints, "chat-keep", "blue", "green", 25) == {"blue": 75, "green": 25}
    sent = replay.requests("PUT", "/onlineEndpoints/chat-keep$")[-1]["json"]["properties"]
    assert sent["traffic"] == {"blue": 75, "green": 25} and not sent.get("mirrorTraffic")
    replay.served = {"blue": [(60, 0, 120.0), (30, 0, 80.0)], "green": [(20, 4, 300.0), (10, 1, 600.0)]}
    before = endpoints.traffic("chat-keep")
    after = endpoints.traffic("chat-keep", since=before)
    green, blue = after.deployments["green"], after.deployments["blue"]
    assert (green.requests, green.errors, green.p95_ms) == (30, 5, 400.0)  # p95 weighted by each minute's requests
    assert (blue.requests, blue.errors) == (90, 0) and blue.p95_ms == pytest.approx(106.7)
    query = replay.requests("GET", "(?i)/deployments/green/providers/microsoft.insights/metrics")[-1]["query"]
    assert query["interval"] == ["PT1M"] and "envoy_response_code eq '*'" in query["$filter"][0]
    assert set(query["metricnames"][0].split(",")) == {"RequestsPerMinute", "RequestLatency_P95"}
    assert restore_live.fn(endpoints, "chat-keep", "blue", "green") == {"blue": 100}
    assert endpoints.get("chat-keep").deployments == ("blue",)
