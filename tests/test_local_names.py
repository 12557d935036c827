"""Names are names, not paths: an endpoint, deployment or job name never reaches outside the state directory."""

from __future__ import annotations

import pytest

from workspaces.local.workspace import LocalWorkspace
from workspaces.ports import ModelVersion, WorkspaceError

HOSTILE = ["../../victim", "../victim", "/etc", "a/b", "..", ".hidden", "", "x" * 200, "name with space"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_endpoint_and_job_names_are_refused_and_touch_nothing(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    workspace = LocalWorkspace(tmp_path / "state" / "workspace")
    with pytest.raises(WorkspaceError, match="name .* is not valid"):
        workspace.endpoints.delete(name)
    with pytest.raises(WorkspaceError, match="name .* is not valid"):
        workspace.endpoints.get(name)
    with pytest.raises(WorkspaceError, match="name .* is not valid"):
        workspace.jobs.get(name)
    with pytest.raises(WorkspaceError, match="name .* is not valid"):
        workspace.endpoints.delete_deployment("fine", name) if name else workspace.endpoints.get_deployment(name, "x")
    assert (victim / "precious.txt").read_text() == "keep me"


def test_ordinary_names_pass(tmp_path):
    workspace = LocalWorkspace(tmp_path / "workspace")
    assert workspace.endpoints.get("tunegate-chat-1a2b3c4d") is None
    assert workspace.jobs.get("tunegate-0123456789abcdef0123-2") is None
    assert workspace.endpoints.get_deployment("tunegate-chat", "ft-phi-3.5_mini-1") is None
    assert ModelVersion(name="m", version="1")  # the value types are untouched
