"""The training jobs role (TrainingJobs): submit, find again, follow, measure.
Stated once and run on every workspace (conftest.py):
the in-memory fake, the Azure adapter through the real SDK on the replay, and the real local workspace."""

from __future__ import annotations

import pytest

from tasks.finetune import submit_or_reattach
from tests.contract.common import unique
from workspaces.ports import (
    ConflictError,
    JobRef,
    JobState,
    NotFoundError,
)


def test_an_unknown_job_is_none_and_has_no_status(harness):
    assert harness.workspace.jobs.get("tunegate-no-such-job") is None
    with pytest.raises(NotFoundError):
        harness.workspace.jobs.status(JobRef(name="tunegate-no-such-job"))


def test_submit_starts_one_job_found_by_its_name_and_never_replaces_it(harness):
    name, key = unique("tunegate-contract"), unique("key")
    job = harness.workspace.jobs.submit(harness.spec(long=True), name, key)
    try:
        assert job.name == name and not job.reattached
        found = harness.workspace.jobs.get(name)
        assert found is not None and found.name == name and found.idempotency_key == key
        assert harness.workspace.jobs.status(job).state in (JobState.QUEUED, JobState.RUNNING)
        with pytest.raises(ConflictError):
            harness.workspace.jobs.submit(harness.spec(long=True), name, key)
    finally:
        harness.workspace.jobs.cancel(job)
    harness.wait(job, timeout_s=60)
    assert harness.workspace.jobs.status(job).state is JobState.CANCELED
    harness.workspace.jobs.cancel(job)  # cancelling an ended job leaves it as it is
    assert harness.workspace.jobs.status(job).state is JobState.CANCELED


def test_the_reattach_policy_submits_the_same_work_once(harness):
    key = unique("key")
    first = submit_or_reattach(harness.workspace.jobs, harness.spec(long=True), key)
    try:
        again = submit_or_reattach(harness.workspace.jobs, harness.spec(long=True), key)
        assert again.reattached and again.name == first.name
        assert harness.workspace.jobs.get(f"{first.name}-2") is None
    finally:
        harness.workspace.jobs.cancel(first)
    harness.wait(first, timeout_s=60)
    retried = submit_or_reattach(harness.workspace.jobs, harness.spec(long=True), key)  # cancelled: a new attempt
    try:
        assert not retried.reattached and retried.name == f"{first.name}-2"
    finally:
        harness.workspace.jobs.cancel(retried)
    harness.wait(retried, timeout_s=60)


def test_a_completed_job_is_reused_and_listed_with_the_others(harness):
    job = harness.completed_job()
    again = submit_or_reattach(harness.workspace.jobs, harness.spec(), f"contract-done-{harness.name}")
    assert again.name == job.name and again.reattached and again.reused
    listed = {info.name: info for info in harness.workspace.jobs.list()}
    assert listed[job.name].state is JobState.COMPLETED
    assert listed[job.name].idempotency_key == f"contract-done-{harness.name}"


def test_a_completed_job_reports_its_losses(harness):
    job = harness.completed_job()
    assert harness.workspace.jobs.status(job).state is JobState.COMPLETED
    metrics = harness.workspace.jobs.metrics(job)
    assert {"train_loss", "eval_loss"} <= set(metrics) and all(isinstance(v, float) for v in metrics.values())


def test_a_completed_job_tells_its_progress_and_loss_per_step(harness):
    job = harness.completed_job()
    progress = harness.workspace.jobs.progress(job)
    assert progress.state is JobState.COMPLETED
    if progress.step is not None and progress.total_steps:
        assert 0 < progress.step <= progress.total_steps
    history = harness.workspace.jobs.loss_history(job)
    assert history.train and history.eval, "a finished training logs train and eval loss per step"
    steps = [step for step, _ in history.train]
    assert steps == sorted(set(steps)) and all(isinstance(value, float) for _, value in history.train + history.eval)
    with pytest.raises(NotFoundError):
        harness.workspace.jobs.progress(JobRef(name="no-such-job-anywhere"))
