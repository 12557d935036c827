"""The bundle (Workspace): its roles, links for people, and errors told apart.
Stated once and run on every workspace (conftest.py):
the in-memory fake, the Azure adapter through the real SDK on the replay, and the real local workspace."""

from __future__ import annotations

import pytest

from tasks.errors import is_transient
from workspaces.ports import (
    ComputeTargets,
    DataStore,
    ModelImports,
    ModelRegistry,
    ServingEndpoints,
    TrainingJobs,
    TransientWorkspaceError,
    Workspace,
    WorkspaceError,
)


def test_links_name_pages_and_an_attachment_lands_or_says_none(harness):
    job = harness.completed_job()
    links = harness.workspace.links(job=job)
    assert links and all(isinstance(url, str) and url for url in links.values())
    stored = harness.workspace.jobs.attach(job, "loss_curve.png", b"\x89PNG fake")
    assert stored is None or "loss_curve.png" in stored


def test_transient_and_permanent_errors_are_told_apart(harness):
    with pytest.raises(TransientWorkspaceError) as transient:
        harness.transient_failure()()
    assert is_transient(transient.value)
    with pytest.raises(WorkspaceError) as permanent:
        harness.permanent_failure()()
    assert not isinstance(permanent.value, TransientWorkspaceError) and not is_transient(permanent.value)


def test_a_workspace_is_a_bundle_of_the_roles(harness):
    workspace = harness.workspace
    assert isinstance(workspace, Workspace)
    for role, protocol in (
        ("registry", ModelRegistry),
        ("compute", ComputeTargets),
        ("data", DataStore),
        ("jobs", TrainingJobs),
        ("endpoints", ServingEndpoints),
    ):
        assert isinstance(getattr(workspace, role), protocol), f"{workspace.kind}.{role} is not a {protocol.__name__}"
    assert workspace.imports is None or isinstance(workspace.imports, ModelImports)
