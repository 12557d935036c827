"""Manual approval against a real Prefect server: pause, approve, reject, time out, retry; `prefect deploy --all`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prefect_server import PrefectServer, manual_run_command
from workspaces.local.workspace import LocalWorkspace


@pytest.fixture
def server(prefect_server):
    return prefect_server


pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def tunegate(server: PrefectServer, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", 300),
        cwd=ROOT,
        **kwargs,
    )


def start_run(server: PrefectServer, state_dir: Path, *sets: str) -> subprocess.Popen:
    args = manual_run_command(state_dir, *[part for item in sets for part in ("--set", item)])
    return subprocess.Popen(
        args,
        env=server.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    return output


def model_tags(state_dir: Path) -> dict[str, str]:
    workspace = LocalWorkspace(state_dir / "workspace")
    versions = workspace.registry.client.search_model_versions("name = 'tiny-phi3-chat-ultrachat-200k'")
    return dict(max(versions, key=lambda v: int(v.version)).tags)


class WebhookReceiver:
    """A local stand-in for Slack/Teams: records every JSON body POSTed to it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 60) -> list[dict]:
        import time

        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} notifications came: {self.received}"
            time.sleep(0.2)
        return self.received

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def webhook(server):
    """A Prefect custom-webhook block `custom-webhook/approvers` on the server, pointing at a local receiver."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    receiver = WebhookReceiver()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        CustomWebhookNotificationBlock(
            name="approvers", url=receiver.url, json_data={"subject": "{{subject}}", "text": "{{body}}"}
        ).save("approvers", overwrite=True)
    yield receiver
    receiver.close()


def test_manual_run_pauses_then_approve_deploys_and_tears_down(server, tmp_path, webhook):
    # approvers are told through a Prefect notification block, and reminded before the timeout (72 s, 66 s early)
    process = start_run(
        server,
        tmp_path,
        "approval.notify=[custom-webhook/approvers, custom-webhook/no-such-block]",
        "approval.timeout_hours=0.02",
        "approval.remind_before_minutes=1.1",
    )
    paused = server.wait_for_state("PAUSED", process=process)
    [told, reminded] = webhook.wait_for(2)
    assert told["subject"] == "tunegate: Waiting for your approval of tiny-phi3-chat-ultrachat-200k:1"
    assert f"tunegate approve {paused['name']} --approver <you>" in told["text"]
    assert f"/runs/flow-run/{paused['id']}" in told["text"] and "eval_loss" in told["text"]
    assert "/artifacts/artifact/" in told["text"]  # the review, with the loss curve
    assert reminded["subject"].startswith("tunegate: Reminder: still waiting for your approval")
    listing = tunegate(server, "pending")
    assert paused["id"] in listing.stdout and "Approve tiny-phi3-chat-ultrachat-200k" in listing.stdout
    assert "eval_loss" in listing.stdout and "fingerprint" in listing.stdout
    assert "(in " in listing.stdout  # the timeout as a local time and the time left
    # the loss curve is a picture the terminal cannot show: where to see it, not rich's broken-image placeholder
    assert "loss curve: open the run's approval-review artifact" in listing.stdout and "🌆" not in listing.stdout
    done = tunegate(server, "approve", paused["name"], "--approver", "alice", "--comment", "looks good")  # by name
    assert done.returncode == 0, done.stderr
    assert "The run resumes now: it goes on to deploy" in done.stdout
    assert f"Follow it: {server.url}/runs/flow-run/{paused['id']}" in done.stdout
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    assert "could not notify custom-webhook/no-such-block" in output  # said, and the others were still told
    assert len(webhook.received) == 2  # the decision came: no more reminders
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["approval"] == {"decision": "approved", "approver": "alice", "comment": "looks good"}
    assert summary["smoke"]["ok"] and summary["teardown"]["done"]
    tags = model_tags(tmp_path)
    assert tags["decision"] == "approved" and tags["approver"] == "alice" and tags["decision_comment"] == "looks good"
    assert LocalWorkspace(tmp_path / "workspace").inventory().empty


def test_invalid_answers_are_refused_then_a_reject_deploys_nothing_and_tags_the_model(server, tmp_path):
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    process = start_run(server, tmp_path)
    paused = server.wait_for_state("PAUSED", process=process)
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        for refused in (
            {"decision": "approve", "approver": ""},  # no name
            {"approver": "dave", "comment": "looks fine"},  # no decision chosen: never read as a reject
            {"decision": "yes", "approver": "dave"},  # not one of the choices
        ):
            with pytest.raises(RuntimeError, match="Cannot resume"):  # the server checks it against Decision
                resume_flow_run(paused["id"], run_input=refused)
    assert server.wait_for_state("PAUSED", flow_run_id=paused["id"], timeout_s=10)
    empty = tunegate(server, "reject", paused["id"], "--approver", "  ")
    assert empty.returncode == 2 and "must name a person" in empty.stderr
    unknown = tunegate(server, "reject", "no-such-run", "--approver", "bob")
    assert unknown.returncode == 2 and "tunegate pending" in unknown.stderr
    done = tunegate(server, "reject", paused["id"][:8], "--approver", "bob", "--comment", "answers are too short")
    assert done.returncode == 0, done.stderr
    finish(process)
    assert process.returncode == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "rejected" and "Rejected by bob: answers are too short" in summary["error"]
    assert summary["endpoint"]["deployment"] is None
    tags = model_tags(tmp_path)
    assert tags["decision"] == "rejected" and tags["approver"] == "bob"
    assert LocalWorkspace(tmp_path / "workspace").inventory().empty
    [run] = [r for r in server.flow_runs("FAILED") if r["id"] == paused["id"]]
    assert run["state"]["name"] == "Rejected"
    assert run["state"]["message"].startswith("Rejected by bob: answers are too short")


def test_a_decision_not_made_in_time_is_a_reject(server, tmp_path):
    process = start_run(server, tmp_path, "approval.timeout_hours=0.002")  # 7 s
    server.wait_for_state("PAUSED", process=process)
    output = finish(process)
    assert process.returncode == 1, output[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "rejected" and summary["approval"]["approver"] == "timeout"
    assert model_tags(tmp_path)["decision"] == "rejected"


def test_manual_without_a_server_is_refused_before_any_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        manual_run_command(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "prefect server start" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "workspace").exists()


def test_prefect_deploy_all_registers_the_deployments(server, tmp_path):
    pool = subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", "tunegate", "--type", "process"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        env={**server.env, "TUNEGATE_HOME": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    with server.client() as client:
        deployments = {d["name"]: d for d in client.post("/deployments/filter", json={}).json()}
    assert set(deployments) >= {"retrain-scheduled", "retrain-on-demand", "local-demo"}
    scheduled = deployments["retrain-scheduled"]
    [schedule] = scheduled["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * 1" and schedule["schedule"]["timezone"] == "Europe/Berlin"
    # `prefect deploy --all` on a laptop must not register an active weekly Azure schedule
    assert schedule["active"] is False
    assert scheduled["parameters"]["profile"] == "deployments/azure.yaml"
    assert "approval.policy=manual" in scheduled["parameters"]["overrides"]
    assert deployments["retrain-on-demand"]["schedules"] == []
    assert "config" in deployments["retrain-on-demand"]["parameter_openapi_schema"]["properties"]
    assert deployments["local-demo"]["work_pool_name"] == "tunegate"
    assert deployments["local-demo"]["pull_steps"][0]["prefect.deployments.steps.set_working_directory"][
        "directory"
    ] == str(ROOT)


def test_a_flow_retry_after_the_pause_pauses_again(server, tmp_path):
    """An approval belongs to one attempt: a retried run asks again under a new key instead of reusing it."""
    driver = (
        "from flows.params import load_profile; from flows.tunegate_flow import tunegate; "
        f"config = load_profile(None, ['workspace.state_dir={tmp_path}', 'approval.policy=manual', "
        # decided before deploying; every smoke fails, so the approved attempt fails after the decision
        "'approval.when=before-deploy', 'smoke.max_latency_ms=0.001']); "
        "tunegate.with_options(retries=2, retry_delay_seconds=0)(config=config)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", driver],
        env=server.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = server.wait_for_state("PAUSED", process=process)
    first_key = first["state"]["state_details"]["pause_key"]
    assert tunegate(server, "approve", first["id"], "--approver", "alice").returncode == 0
    server.wait_for_state("RUNNING", flow_run_id=first["id"], timeout_s=30)
    second = server.wait_for_state("PAUSED", flow_run_id=first["id"], process=process)
    second_key = second["state"]["state_details"]["pause_key"]
    assert second_key != first_key  # asked again, not handed the first answer
    assert (
        tunegate(server, "reject", first["id"], "--approver", "alice", "--comment", "smoke keeps failing").returncode
        == 0
    )
    finish(process)
    tags = model_tags(tmp_path)
    assert tags["decision"] == "rejected" and tags["decision_comment"] == "smoke keeps failing"
    assert LocalWorkspace(tmp_path / "workspace").inventory().empty


def test_a_run_killed_while_waiting_is_not_pending_and_cannot_be_approved(server, tmp_path):
    import signal

    process = start_run(server, tmp_path)
    paused = server.wait_for_state("PAUSED", process=process)
    os.kill(process.pid, signal.SIGKILL)  # kill -9 while it waits: nothing is left to act on a decision
    process.communicate(timeout=60)
    listing = tunegate(server, "pending")
    assert listing.returncode == 0 and paused["id"] not in listing.stdout, listing.stdout
    done = tunegate(server, "approve", paused["id"], "--approver", "alice")
    assert done.returncode == 1 and "approved" not in done.stdout, done.stdout
    assert "not waiting for a decision" in done.stderr or "can never resume" in done.stderr, done.stderr
    assert "start the run again" in done.stderr.lower()
    assert server.wait_for_state("CRASHED", flow_run_id=paused["id"], timeout_s=30)
    assert "decision" not in model_tags(tmp_path)  # nothing was recorded as approved
