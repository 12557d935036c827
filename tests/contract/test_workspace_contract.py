"""What the Workspace port promises, stated once and run on every workspace (tests/contract/conftest.py):
the in-memory fake the flow tests use, the Azure adapter through the real SDK on the replay, and the real local
workspace. An adapter that fails here is not done."""

from __future__ import annotations

import uuid

import pytest

from tasks.errors import is_transient
from tasks.finetune import submit_or_reattach
from tasks.model import FINETUNE_ALLOW_LIST, INFERENCE_ALLOW_LIST, allow_list
from tasks.register import register_once
from tasks.teardown import take_down
from workspaces.base import (
    ConflictError,
    JobRef,
    JobState,
    NotFoundError,
    ScoringRequest,
    TransientWorkspaceError,
    WorkspaceError,
)
from workspaces.scoring import ScoringParameters

HI = ScoringRequest(
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    parameters=ScoringParameters(max_new_tokens=8, do_sample=False),
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ catalogue


def test_a_foundation_model_carries_the_registry_tags(harness):
    model = harness.workspace.get_foundation_model(harness.foundation)
    assert model.name == harness.foundation and model.version and model.id
    assert allow_list(model, FINETUNE_ALLOW_LIST) and allow_list(model, INFERENCE_ALLOW_LIST)


def test_an_unknown_foundation_model_is_not_found(harness):
    with pytest.raises(NotFoundError):
        harness.workspace.get_foundation_model("no-such-model")


# ------------------------------------------------------------------ jobs


def test_an_unknown_job_is_none_and_has_no_status(harness):
    assert harness.workspace.get_job("tunegate-no-such-job") is None
    with pytest.raises(NotFoundError):
        harness.workspace.job_status(JobRef(name="tunegate-no-such-job"))


def test_submit_starts_one_job_found_by_its_name_and_never_replaces_it(harness):
    name, key = unique("tunegate-contract"), unique("key")
    job = harness.workspace.submit_finetune(harness.spec(long=True), name, key)
    try:
        assert job.name == name and not job.reattached
        found = harness.workspace.get_job(name)
        assert found is not None and found.name == name and found.idempotency_key == key
        assert harness.workspace.job_status(job).state in (JobState.QUEUED, JobState.RUNNING)
        with pytest.raises(ConflictError):
            harness.workspace.submit_finetune(harness.spec(long=True), name, key)
    finally:
        harness.workspace.cancel_job(job)
    harness.wait(job, timeout_s=60)
    assert harness.workspace.job_status(job).state is JobState.CANCELED
    harness.workspace.cancel_job(job)  # cancelling an ended job leaves it as it is
    assert harness.workspace.job_status(job).state is JobState.CANCELED


def test_the_reattach_policy_submits_the_same_work_once(harness):
    key = unique("key")
    first = submit_or_reattach(harness.workspace, harness.spec(long=True), key)
    try:
        again = submit_or_reattach(harness.workspace, harness.spec(long=True), key)
        assert again.reattached and again.name == first.name
        assert harness.workspace.get_job(f"{first.name}-2") is None
    finally:
        harness.workspace.cancel_job(first)
    harness.wait(first, timeout_s=60)
    retried = submit_or_reattach(harness.workspace, harness.spec(long=True), key)  # cancelled: a new attempt
    try:
        assert not retried.reattached and retried.name == f"{first.name}-2"
    finally:
        harness.workspace.cancel_job(retried)
    harness.wait(retried, timeout_s=60)


def test_a_completed_job_is_reused_and_listed_with_the_others(harness):
    job = harness.completed_job()
    again = submit_or_reattach(harness.workspace, harness.spec(), f"contract-done-{harness.name}")
    assert again.name == job.name and again.reattached and again.reused
    listed = {info.name: info for info in harness.workspace.list_jobs()}
    assert listed[job.name].state is JobState.COMPLETED
    assert listed[job.name].idempotency_key == f"contract-done-{harness.name}"


def test_a_completed_job_reports_its_losses(harness):
    job = harness.completed_job()
    assert harness.workspace.job_status(job).state is JobState.COMPLETED
    metrics = harness.workspace.job_metrics(job)
    assert {"train_loss", "eval_loss"} <= set(metrics) and all(isinstance(v, float) for v in metrics.values())


def test_a_completed_job_tells_its_progress_and_loss_per_step(harness):
    job = harness.completed_job()
    progress = harness.workspace.job_progress(job)
    assert progress.state is JobState.COMPLETED
    if progress.step is not None and progress.total_steps:
        assert 0 < progress.step <= progress.total_steps
    history = harness.workspace.loss_history(job)
    assert history.train and history.eval, "a finished training logs train and eval loss per step"
    steps = [step for step, _ in history.train]
    assert steps == sorted(set(steps)) and all(isinstance(value, float) for _, value in history.train + history.eval)
    with pytest.raises(NotFoundError):
        harness.workspace.job_progress(JobRef(name="no-such-job-anywhere"))


def test_links_name_pages_and_an_attachment_lands_or_says_none(harness):
    job = harness.completed_job()
    links = harness.workspace.links(job=job)
    assert links and all(isinstance(url, str) and url for url in links.values())
    stored = harness.workspace.attach_to_job(job, "loss_curve.png", b"\x89PNG fake")
    assert stored is None or "loss_curve.png" in stored


# ------------------------------------------------------------------ registry


def test_registration_is_idempotent_per_job_and_versions_are_unique(harness):
    job, name = harness.completed_job(), unique("contract-model")
    assert harness.workspace.find_model_version(name, job) is None
    first = register_once(harness.workspace, job, name, {"data_fingerprint": "fp"})
    assert first.name == name and first.tags["data_fingerprint"] == "fp"
    assert register_once(harness.workspace, job, name, {}).version == first.version
    assert harness.workspace.find_model_version(name, job).version == first.version
    second = harness.workspace.register_model(job, name, {})  # asked explicitly: a new, different version
    assert second.version != first.version


def test_tags_merge_and_the_champion_can_be_set_and_cleared(harness):
    name = unique("contract-champion")
    version = register_once(harness.workspace, harness.completed_job(), name, {"a": "1"})
    tagged = harness.workspace.tag_model(version, {"b": "2"})
    assert tagged.tags["a"] == "1" and tagged.tags["b"] == "2" and tagged.version == version.version
    assert harness.workspace.champion(name) is None
    harness.workspace.set_champion(tagged, name)
    assert harness.workspace.champion(name).version == version.version
    harness.workspace.set_champion(None, name)
    assert harness.workspace.champion(name) is None
    assert harness.workspace.champion(unique("never-registered")) is None


# ------------------------------------------------------------------ serving


def test_endpoint_lifecycle_traffic_rules_invoke_and_idempotent_teardown(harness):
    ws, endpoint = harness.workspace, unique("contract-ep")
    model = register_once(ws, harness.completed_job(), unique("contract-served"), {})
    assert ws.get_endpoint(endpoint) is None
    assert ws.ensure_endpoint(endpoint).deployments == ()
    assert ws.ensure_endpoint(endpoint).name == endpoint  # again: the same endpoint
    try:
        ws.create_deployment(endpoint, "blue", model, harness.instance_type)
        ws.create_deployment(endpoint, "green", model, harness.instance_type)
        assert ws.get_deployment(endpoint, "green").model == f"{model.name}:{model.version}"  # what it serves
        assert ws.get_deployment(endpoint, "nope") is None
        assert ws.set_traffic(endpoint, {"blue": 100}).traffic == {"blue": 100, "green": 0}
        with pytest.raises(NotFoundError):
            ws.set_traffic(endpoint, {"nope": 100})
        with pytest.raises(WorkspaceError) as bad_sum:
            ws.set_traffic(endpoint, {"blue": 50})
        assert not is_transient(bad_sum.value)
        assert ws.get_endpoint(endpoint).traffic == {"blue": 100, "green": 0}  # a refused change changed nothing
        with pytest.raises(ConflictError):
            ws.delete_deployment(endpoint, "blue")  # it takes traffic

        served = ws.invoke(endpoint, HI)
        assert served.error is None and isinstance(served.output, str), served
        targeted = ws.invoke(endpoint, HI, deployment="green")  # a 0% deployment answers when named
        assert targeted.error is None and isinstance(targeted.output, str), targeted

        ws.delete_deployment(endpoint, "green")
        ws.delete_deployment(endpoint, "green")  # already gone: not an error
        assert ws.get_endpoint(endpoint).deployments == ("blue",)
        assert endpoint in ws.inventory().endpoints
    finally:
        take_down(ws, "ephemeral", endpoint)
    assert ws.get_endpoint(endpoint) is None
    ws.delete_endpoint(endpoint)  # already gone: not an error
    assert take_down(ws, "ephemeral", endpoint).done
    assert endpoint not in ws.inventory().endpoints


def test_credentials_never_show_the_key(harness):
    endpoint = unique("contract-key")
    ws = harness.workspace
    ws.ensure_endpoint(endpoint)
    try:
        credentials = ws.endpoint_credentials(endpoint)
        secret = credentials.key.get_secret_value()
        assert secret and secret not in repr(credentials) and secret not in credentials.model_dump_json()
    finally:
        ws.delete_endpoint(endpoint)


# ------------------------------------------------------------------ errors


def test_transient_and_permanent_errors_are_told_apart(harness):
    with pytest.raises(TransientWorkspaceError) as transient:
        harness.transient_failure()()
    assert is_transient(transient.value)
    with pytest.raises(WorkspaceError) as permanent:
        harness.permanent_failure()()
    assert not isinstance(permanent.value, TransientWorkspaceError) and not is_transient(permanent.value)
