"""Which process a pid on disk is (issue 21): only a process that is provably tunegate's is ever signalled, and a
state file is written whole or not at all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workspaces.local.processes import (
    DamagedStateFile,
    identity,
    not_ours,
    process_matches,
    read_json,
    read_json_or_empty,
    write_json,
)


@pytest.fixture
def sleeper(tmp_path):
    """A process that looks like tunegate's endpoint server for `tmp_path` (its command line says so)."""
    code = "import sys, time; time.sleep(600)"
    process = subprocess.Popen([sys.executable, "-c", code, "-m", "workspaces.local.server", str(tmp_path)])
    yield process
    process.kill()
    process.wait()


def test_a_process_is_ours_only_when_alive_started_when_recorded_and_running_our_module_on_our_folder(
    sleeper, tmp_path
):
    record = identity(sleeper.pid)
    assert not_ours(record, "workspaces.local.server", tmp_path) is None
    assert "not tunegate's" in not_ours(record, "workspaces.local.trainer", tmp_path)
    assert "not tunegate's" in not_ours(record, "workspaces.local.server", tmp_path / "other")
    assert "reused" in not_ours(
        {**record, "pid_started": record["pid_started"] + 1}, "workspaces.local.server", tmp_path
    )
    assert "restarted" in not_ours({**record, "boot_id": "another-boot"}, "workspaces.local.server", tmp_path)
    assert "not tunegate's" in not_ours(identity(os.getpid()), "workspaces.local.server", tmp_path)
    for forged in ({"pid": 1}, {"pid": "12"}, {"pid": True}, {}):
        assert not_ours(forged, "workspaces.local.server", tmp_path) is not None
    assert process_matches(record) and not process_matches({**record, "pid_started": 1})
    sleeper.kill()
    sleeper.wait()
    assert "not running" in not_ours(record, "workspaces.local.server", tmp_path)


def test_state_files_are_written_whole_and_a_damaged_one_is_named(tmp_path):
    path = tmp_path / "endpoint.json"
    write_json(path, {"a": 1}, mode=0o600)
    assert read_json(path) == {"a": 1} and (path.stat().st_mode & 0o777) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left beside it
    assert read_json(tmp_path / "missing.json") == {}
    for damaged, why in (('{"a": ', "not JSON"), ("[1, 2]", "not a JSON object"), (b"\xff\xfe", "unreadable")):
        path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
        with pytest.raises(DamagedStateFile, match=why) as caught:
            read_json(path, "delete it")
        assert str(path) in str(caught.value) and "delete it" in str(caught.value)
        assert read_json_or_empty(path) == {}
