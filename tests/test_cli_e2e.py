"""One full `tunegate run` on the real local workspace, as a user runs it, plus the CLI's error paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.hf_models import write_tiny_llama
from workspaces.local.processes import pid_alive, tunegate_processes
from workspaces.local.workspace import LocalWorkspace

pytestmark = pytest.mark.slow


def tunegate(*args: str, timeout: int = 400, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # ephemeral Prefect, as a newcomer
    env["PREFECT_HOME"] = os.environ.get("PREFECT_HOME_E2E", env.get("HOME", "/tmp") + "/.prefect-e2e")
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=stdin,
    )


def test_full_run_end_to_end_then_nothing_left(tmp_path):
    """On a model the user brings: a Llama-architecture chat folder with its own (ChatML) template, imported first;
    the built-in foundation model runs in the other end-to-end tests."""
    state_dir = tmp_path / "state"
    summary_path = tmp_path / "summary.json"
    folder = write_tiny_llama(tmp_path / "my-chat-model")
    state = f"workspace.state_dir={state_dir}"
    imported = tunegate("model", "import", str(folder), "--name", "tiny-llama", "--set", state)
    assert imported.returncode == 0, imported.stderr[-2000:]
    # its weights are random: trained whole (not LoRA), hard and long enough to learn to reply, which the answer
    # evaluation checks (with the LoRA defaults of a pretrained model it answers noise and ends evaluation_failed)
    done = tunegate(
        "run", "--set", f"workspace.state_dir={state_dir}", "--set", "model.name=tiny-llama",
        "--set", "finetune.apply_lora=false", "--set", "finetune.learning_rate=0.003",
        "--set", "finetune.num_train_epochs=12", "--summary-json", str(summary_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "succeeded"
    assert summary["model"]["foundation"] == "tiny-llama:1"
    assert summary["model"]["name"] == "tiny-llama-ultrachat-200k" and summary["model"]["version"] == "1"
    assert summary["approval"]["decision"] == "approved" and summary["approval"]["approver"].startswith("policy:auto")
    assert summary["smoke"]["ok"] is True and summary["smoke"]["latency_ms"] > 0
    assert summary["teardown"] == {"mode": "ephemeral", "done": True, "deleted": [summary["endpoint"]["name"]]}
    assert summary["metrics"]["eval_loss"] < summary["metrics"]["base_eval_loss"]
    assert set(summary["data"]["rows"]) == {"train_sft", "test_sft", "test_gen"} and summary["data"]["fingerprint"]
    assert summary["gate"]["passed"] is True and summary["evaluation"]["passed"] is True
    assert "tunegate run succeeded" in done.stdout
    assert "passed in" in done.stdout and "ephemeral: done" in done.stdout  # words, not Python reprs
    assert "ok=True" not in done.stdout and "{'" not in done.stdout and "tunegate chat --endpoint" not in done.stdout
    # where things are: the summary, the loss curve, and that the temporary server took its UI pages with it
    run_dir = state_dir / "runs" / summary["flow_run_id"]
    assert f"summary: {run_dir / 'summary.json'}" in done.stdout and f"loss curve: {run_dir}" in done.stdout
    assert "temporary server, gone now that the run ended" in done.stdout and "prefect server start" in done.stdout
    assert "scoring URL" not in done.stdout  # the ephemeral endpoint is deleted: no link to it
    for noise in ("Writing model shards", "mlflow.store", "CloudPickle", "Add type hints", "input example"):
        assert noise not in done.stderr, noise
    assert LocalWorkspace(state_dir / "workspace").inventory().empty  # no server or trainer left running
    # no endpoint key anywhere a person reads: output, summary, logs of the run
    assert "secrets.json" not in done.stdout and "Bearer" not in done.stdout + done.stderr


def test_a_barely_trained_candidate_fails_its_evaluation_and_nothing_goes_live(tmp_path):
    """0.02 epochs: the loss is below the base's only a little, with the base comparison off and the auto policy
    nothing but the answers stands between it and users; they are not replies."""
    state_dir, summary_path = tmp_path / "state", tmp_path / "summary.json"
    done = tunegate(
        "run", "--set", f"workspace.state_dir={state_dir}", "--set", "finetune.num_train_epochs=0.02",
        "--set", "gate.compare_with_base=false", "--set", "approval.policy=auto", "--summary-json", str(summary_path),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "evaluation_failed" and summary["gate"]["passed"] is True
    evaluation = summary["evaluation"]
    assert evaluation["passed"] is False and evaluation["samples"] >= 10 and evaluation["failures"]
    assert evaluation["degenerate_rate"]["candidate"] > 0.25 or evaluation["similarity"]["candidate"] < 0.2
    assert summary["endpoint"]["traffic"] == {} and summary["endpoint"]["live"] == []
    assert summary["teardown"]["done"] and LocalWorkspace(state_dir / "workspace").inventory().empty
    assert "tunegate run evaluation_failed" in done.stdout and "evaluate.m" in done.stdout


def test_bad_profile_value_fails_before_any_work(tmp_path):
    done = tunegate("run", "--set", f"workspace.state_dir={tmp_path}", "--set", "finetune.lr_scheduler_type=sometimes")
    assert done.returncode == 2
    assert "finetune.lr_scheduler_type" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_chat_with_an_unknown_endpoint_says_so(tmp_path):
    done = tunegate("chat", "--endpoint", "nope", "--set", f"workspace.state_dir={tmp_path}", "-m", "hi")
    assert done.returncode == 2 and "no endpoint 'nope'" in done.stderr


def test_teardown_refuses_a_path_as_an_endpoint_name(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    state = tmp_path / "a" / "b"
    done = tunegate("teardown", "--endpoint", "../../victim", "--set", f"workspace.state_dir={state}")
    assert done.returncode == 2 and "is not valid" in done.stderr and "Traceback" not in done.stderr
    assert (victim / "precious.txt").read_text() == "keep me"


def start_run(state_dir, summary_path, *sets: str, own_group: bool = False) -> subprocess.Popen:
    """`tunegate run` as a user starts it; own_group: in a process group of its own, as a terminal's foreground job
    (Ctrl-C there is SIGINT to the whole group)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = os.environ.get("PREFECT_HOME_E2E", env.get("HOME", "/tmp") + "/.prefect-e2e")
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--set", f"workspace.state_dir={state_dir}",
         *[arg for setting in sets for arg in ("--set", setting)], "--summary-json", str(summary_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0 if own_group else None,
    )  # fmt: skip


def wait_for_training(state_dir, process: subprocess.Popen) -> None:
    jobs = state_dir / "workspace" / "jobs"
    deadline = time.monotonic() + 240
    while not (jobs.exists() and any(jobs.glob("*/status.json"))):
        assert time.monotonic() < deadline and process.poll() is None, "training never started"
        time.sleep(0.5)
    time.sleep(3)


def processes_of(state_dir, *owners: int) -> list:
    """tunegate processes left that belong to this state dir or were started by one of `owners`."""
    root = str(state_dir)
    return [p for p in tunegate_processes() if p.argument.startswith(root) or p.owner in owners]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_during_training_is_recorded_as_cancelled_with_teardown_done(tmp_path, signum):
    state_dir = tmp_path / "state"
    summary_path = tmp_path / "summary.json"
    process = start_run(state_dir, summary_path, "finetune.num_train_epochs=50", own_group=True)
    jobs = state_dir / "workspace" / "jobs"
    wait_for_training(state_dir, process)
    if signum == signal.SIGINT:  # Ctrl-C: the terminal signals the whole foreground group, the temporary server too
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signum)
    sent = time.monotonic()
    output, _ = process.communicate(timeout=120)
    print(f"ended {time.monotonic() - sent:.1f} s after the signal, {len(output.splitlines())} lines of output")
    assert process.returncode == 130, output[-3000:]
    assert "ConnectError" not in output and "could not mark the run cancelled" not in output, output[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "cancelled" and summary["teardown"]["done"] is True
    [status] = [json.loads(p.read_text()) for p in jobs.glob("*/status.json")]
    assert status["state"] == "canceled"  # the trainer was stopped, not left training
    assert LocalWorkspace(state_dir / "workspace").inventory().empty
    assert "Traceback" not in output.split("interrupted")[-1]
    wait_gone(lambda: processes_of(state_dir, process.pid))


def wait_gone(leftovers, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left


def test_kill_9_during_training_then_a_rerun_trains_once_and_leaves_no_process(tmp_path):
    state_dir = tmp_path / "state"
    killed = start_run(state_dir, tmp_path / "killed.json")
    wait_for_training(state_dir, killed)
    server = [p for p in tunegate_processes() if p.owner == killed.pid and p.kind == "temporary Prefect server"]
    assert server, "the run's temporary Prefect server was not found"
    killed.kill()
    killed.communicate(timeout=30)
    wait_gone(lambda: [p for p in processes_of(state_dir, killed.pid) if p.kind != "trainer"])  # Prefect server
    [trainer] = processes_of(state_dir, killed.pid)  # the job trains on, as a cloud job would

    rerun = start_run(state_dir, tmp_path / "rerun.json")
    output, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "rerun.json").read_text())
    assert summary["job"]["reattached"] is True and summary["status"] == "succeeded"
    assert len(list((state_dir / "workspace" / "jobs").glob("*/spec.json"))) == 1  # trained once
    assert not pid_alive(trainer.pid)
    wait_gone(lambda: processes_of(state_dir, killed.pid, rerun.pid))
    assert LocalWorkspace(state_dir / "workspace").inventory().empty

    listed = tunegate("jobs", "--json", "--set", f"workspace.state_dir={state_dir}")
    [job] = json.loads(listed.stdout)
    assert job["name"] == summary["job"]["name"] and job["state"] == "completed"
    ended = tunegate("jobs", "--cancel", job["name"], "--set", f"workspace.state_dir={state_dir}")
    assert ended.returncode == 0 and "already ended completed" in ended.stdout
    unknown = tunegate("jobs", "--cancel", "tunegate-nope", "--set", f"workspace.state_dir={state_dir}")
    assert unknown.returncode == 2 and "no job 'tunegate-nope'" in unknown.stderr


def test_two_runs_at_once_on_a_fresh_state_dir_both_finish(tmp_path):
    state_dir = tmp_path / "state"
    runs = [start_run(state_dir, tmp_path / f"run{i}.json") for i in range(2)]
    outputs = [run.communicate(timeout=500)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [out[-2000:] for out in outputs]
    summaries = [json.loads((tmp_path / f"run{i}.json").read_text()) for i in range(2)]
    assert {s["status"] for s in summaries} == {"succeeded"}
    assert len({s["job"]["name"] for s in summaries}) == 1  # the same inputs: one job, shared
    assert len(list((state_dir / "workspace" / "jobs").glob("*/spec.json"))) == 1
    wait_gone(lambda: processes_of(state_dir, *(run.pid for run in runs)))
    assert LocalWorkspace(state_dir / "workspace").inventory().empty
