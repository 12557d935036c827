"""A workspace kind is one entry of workspaces/factory.KINDS: the profile's choice, the Prefect form and
open_workspace all follow from it. Proved by registering the in-memory fake as users would register a backend,
in a process of its own (the table is read when flows.params builds the profile model)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from tests.fakes import FAKES, FakeWorkspace, ScoringServer, register_memory_kind

    register_memory_kind()  # before the profile model is built

    from prefect.testing.utilities import prefect_test_harness
    from flows.params import TunegateConfig, config_from_dict
    from flows.tunegate_flow import tunegate
    from workspaces.factory import open_workspace

    schema = TunegateConfig.model_json_schema()
    choices = [option["$ref"].rsplit("/", 1)[1] for option in schema["properties"]["workspace"]["anyOf"]]
    fake = FAKES["kinds-test"] = FakeWorkspace(ScoringServer())
    config = config_from_dict({
        "workspace": {"kind": "memory", "name": "kinds-test", "state_dir": sys.argv[1]},
        "data": {"percent": 20, "synthetic_rows": 200},
        "model": {"name": "Phi-3-mini-4k-instruct"},
        "compute": {"name": "gpu-cluster", "size": "Standard_NC24ads_A100_v4"},
        "endpoint": {"name": "chat", "instance_type": "Standard_NC6s_v3"},
        "job": {"poll_initial_s": 0.01, "poll_max_s": 0.01},
        "retries": {"attempts": 2, "delay_s": 0},
    })
    opened = open_workspace(config.workspace) is fake
    with prefect_test_harness(server_startup_timeout=180):
        summary = tunegate(config=config)
    print(json.dumps({"choices": choices, "opened": opened, "status": summary.status, "workspace": summary.workspace,
                      "submissions": fake.submissions, "left": fake.inventory().empty}))
    """
)


def test_a_registered_kind_is_a_choice_of_the_profile_and_opens_its_workspace(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "state")], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["choices"] == ["LocalWorkspaceSettings", "AzureWorkspaceSettings", "MemoryWorkspaceSettings"]
    assert found["opened"] and found["workspace"] == "memory"
    assert found["status"] == "succeeded" and found["submissions"] == 1 and found["left"]


def test_a_kind_whose_settings_do_not_name_it_is_refused():
    from pydantic import ConfigDict

    from workspaces.factory import WorkspaceKind, register_kind
    from workspaces.forms import FormModel

    class Misnamed(FormModel):
        model_config = ConfigDict(extra="forbid")
        state_dir: str = ".tunegate"

    with pytest.raises(ValueError, match="needs a field kind"):
        register_kind(WorkspaceKind("misnamed", Misnamed, lambda settings: None))
