"""The README's demo, in the README's order, run as written in a copy of the repository: a keep-mode run makes a
champion, then the approvals section's commands (work pool, `prefect deploy --all`, a worker, the local-demo run)
must reach the approval form, and `tunegate approve` must take the run live."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
NOT_COPIED = {".git", ".venv", ".tunegate", "test-output", ".mypy_cache", ".ruff_cache", ".pytest_cache", "mlruns"}


def readme_block(after_heading: str) -> list[str]:
    """The commands of the first ```bash block after a heading, comments and continuation lines dropped."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(after_heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block after {after_heading!r}"
    commands = []
    for line in block.group(1).splitlines():
        command = line.split("  #")[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def argv(command: str, clone: Path) -> tuple[list[str], dict[str, str]]:
    """A README line as this interpreter runs it: `tunegate`/`prefect` from this environment; VAR=value prefixes."""
    words, extra = shlex.split(command.replace("$PWD", str(clone))), {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, value = words.pop(0).split("=", 1)
        extra[key] = value
    program = {"tunegate": [sys.executable, "-m", "flows.cli"], "prefect": [sys.executable, "-m", "prefect"]}
    return program[words[0]] + words[1:], extra


def run_line(command: str, clone: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    args, extra = argv(command, clone)
    done = subprocess.run(
        args, cwd=clone, env={**env, **extra}, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    return done


@pytest.fixture
def clone(tmp_path) -> Path:
    """The repository as a user has it after `git clone` (no state, no venv beside it)."""
    target = tmp_path / "tunegate"
    shutil.copytree(ROOT, target, ignore=lambda _dir, names: [n for n in names if n in NOT_COPIED])
    return target


def test_the_readme_demo_reaches_the_approval_form_after_a_keep_mode_run(prefect_server: PrefectServer, clone):
    no_server = {k: v for k, v in prefect_server.env.items() if k != "PREFECT_API_URL"}
    using = readme_block("## Using it")
    keep = next(line for line in using if "teardown.mode=keep" in line)
    first = run_line(keep, clone, no_server)  # as written: no server yet, tunegate starts a temporary one
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    approvals = readme_block("## Approvals, schedules and the Prefect UI")
    assert approvals[0] == "prefect server start" and approvals[1].startswith("export PREFECT_API_URL=")
    env = prefect_server.env  # the README's server, on a free port (the README's "On another port")
    worker = None
    try:
        for line in approvals[2:]:
            if line.startswith("prefect worker start"):
                args, extra = argv(line, clone)
                worker_log = (clone / "worker.log").open("w")
                worker = subprocess.Popen(
                    args, cwd=clone, env={**env, **extra}, stdout=worker_log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
                continue
            done = run_line(line, clone, env)
            already = "already exists" in done.stdout + done.stderr  # the session's server may have the pool
            assert done.returncode == 0 or (line.startswith("prefect work-pool create") and already), (
                f"{line}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        created = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
        assert created, done.stdout
        flow_run_id = created.group(1)
        paused = prefect_server.wait_for_state("PAUSED", timeout_s=900, flow_run_id=flow_run_id)
        assert paused["state"]["name"] == "Awaiting approval"

        deciding = readme_block("From a\nterminal:")
        pending = run_line(deciding[0], clone, env)
        assert pending.returncode == 0 and flow_run_id in pending.stdout, pending.stdout + pending.stderr
        said = " ".join(pending.stdout.split())  # as a person reads it, whatever the terminal's line breaks
        assert "does NOT beat the champion" in said, said  # the person sees what the gate would have stopped
        approve = deciding[1].replace("<flow-run-id>", flow_run_id)
        approved = run_line(approve, clone, env)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        told = " ".join(approved.stdout.split())
        assert f"/runs/flow-run/{flow_run_id}" in told and "The run resumes now" in told, told
        finished = prefect_server.wait_for_state("COMPLETED", timeout_s=900, flow_run_id=flow_run_id)
        assert finished["id"] == flow_run_id
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
    inventory = run_line("tunegate inventory", clone, env)
    assert "tunegate-chat" in inventory.stdout  # the keep-mode endpoint stays; the demo's own is gone
    teardown = run_line("tunegate teardown --endpoint tunegate-chat", clone, env)
    assert teardown.returncode == 0, teardown.stdout + teardown.stderr
