"""Checks before any work starts: pure rules, then `tunegate run` refusing in one line per problem (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from data.sources import source_problem
from flows.params import load_profile
from tasks.preflight import problems
from workspaces.ports import Sku

CPU_ONLY = [Sku(name="local-cpu", gpus=0)]
WITH_GPU = [*CPU_ONLY, Sku(name="local-cuda", gpus=1)]


def test_a_missing_source_and_a_gpu_size_without_a_gpu_are_each_one_line(tmp_path):
    config = load_profile(None, ["data.source=/nope", "compute.size=local-cuda", "endpoint.instance_type=local-cuda"])
    found = problems(config, CPU_ONLY, source_problem)
    assert len(found) == 3
    assert found[0].startswith("data.source '/nope': no such folder")
    assert "compute.size local-cuda needs a CUDA GPU" in found[1] and "compute.size=local-cpu" in found[1]
    assert "endpoint.instance_type local-cuda needs a CUDA GPU" in found[2]
    assert problems(config.model_copy(update={"data": load_profile().data}), WITH_GPU, source_problem) == []


def test_a_source_folder_without_the_splits_or_a_file_is_refused_naming_what_is_missing(tmp_path):
    (tmp_path / "train_sft.jsonl").write_text("{}\n")
    why = source_problem(str(tmp_path), ("train_sft", "test_sft", "test_gen"))
    assert "no file for split(s) test_sft, test_gen" in why
    assert "is a file" in source_problem(str(tmp_path / "train_sft.jsonl"), ("train_sft",))
    assert source_problem("synthetic", ("train_sft",)) is None and source_problem("hf:org/x", ("train_sft",)) is None


def test_on_azure_the_local_sizes_are_not_asked():
    config = load_profile(None, ["compute.size=Standard_NC24ads_A100_v4"])
    assert problems(config, None, source_problem) == []


def test_tunegate_run_refuses_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--set", f"workspace.state_dir={tmp_path / 'state'}",
         "--set", "data.source=/nope", "--set", "compute.size=local-cuda"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    print(f"refused in {time.monotonic() - started:.1f} s")
    from workspaces.local.compute import list_sizes

    has_gpu = "local-cuda" in {sku.name for sku in list_sizes()}
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == (1 if has_gpu else 2), lines
    assert "Traceback" not in done.stderr and "None" not in done.stderr + done.stdout
    assert "data.source '/nope'" in lines[0] and (has_gpu or "local-cuda needs a CUDA GPU" in lines[1])
    assert "local-local-cpu" not in done.stderr
    assert not (tmp_path / "state" / "runs").exists()  # nothing sampled, no Prefect server started


def test_a_temporary_server_that_does_not_start_in_time_is_one_line_with_the_fix(tmp_path):
    # as on a laptop under load: the temporary Prefect server does not answer within the time it is given
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "1"  # Prefect reads whole seconds
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--set", f"workspace.state_dir={tmp_path / 'state'}"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    [said] = [line for line in done.stderr.splitlines() if "temporary Prefect server" in line]
    assert "did not answer within 1 s" in said and "PREFECT_API_URL=" in said
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600" in said
    assert not (tmp_path / "state" / "runs").exists()


def test_the_temporary_server_gets_minutes_to_start_unless_told_otherwise(monkeypatch):
    from flows.ephemeral import STARTUP_TIMEOUT_S, TIMEOUT_SETTING, startup_timeout

    monkeypatch.delenv(TIMEOUT_SETTING, raising=False)
    assert startup_timeout() == STARTUP_TIMEOUT_S >= 120  # Prefect's own 20 s fails under a load of 10
