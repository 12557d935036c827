"""Prompt flow against a real local endpoint (the promptflow extra), run as a user runs it: a kept run whose smoke
also goes through a `pf run` batch, `tunegate promptflow` asking once, then `--serve` chatted with in headless
Chromium. The endpoint's key never lands in a file of the repository or of Prompt flow, nor in any command's output.

Prompt flow's home (connections, runs, config) and the keyring file live in a temporary folder; telemetry is off."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.test_approval_ui import OUTPUT, ROOT, browser  # noqa: F401 - browser is a fixture used below
from tests.test_cli_e2e import tunegate
from workspaces.local.workspace import LocalWorkspace

pytestmark = pytest.mark.slow
ENDPOINT = "pf-chat"


@pytest.fixture(scope="module")
def pf_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("promptflow")
    (root / "pf").mkdir()
    (root / "pf" / "pf.yaml").write_text("telemetry:\n  enabled: false\n")
    isolated = {"PF_HOME_DIRECTORY": str(root / "pf"), "XDG_DATA_HOME": str(root / "xdg")}
    before = {name: os.environ.get(name) for name in isolated}
    os.environ.update(isolated)  # the CLI's subprocesses inherit them
    yield root
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def kept(pf_home, tmp_path_factory):
    """One kept run on the real local workspace whose smoke also went through a Prompt flow batch run."""
    tmp = tmp_path_factory.mktemp("kept")
    state = tmp / "state"
    summary_path = tmp / "summary.json"
    done = tunegate(
        "run",
        "--set", f"workspace.state_dir={state}",
        "--set", "teardown.mode=keep",
        "--set", f"endpoint.name={ENDPOINT}",
        "--set", "smoke.promptflow=true",
        "--set", "smoke.samples=2",
        "--set", "smoke.max_new_tokens=8",
        "--summary-json", str(summary_path),
    )  # fmt: skip
    assert summary_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    workspace = LocalWorkspace(state / "workspace")
    outputs = [done.stdout, done.stderr]
    yield SimpleNamespace(
        summary=json.loads(summary_path.read_text()), state=state, workspace=workspace, outputs=outputs
    )
    workspace.endpoints.delete(ENDPOINT)


def ask(kept, *args: str) -> subprocess.CompletedProcess:
    done = tunegate("promptflow", "--endpoint", ENDPOINT, "--set", f"workspace.state_dir={kept.state}", *args)
    kept.outputs += [done.stdout, done.stderr]
    return done


def test_the_smoke_also_goes_through_a_prompt_flow_batch_run(kept, pf_home):
    summary = kept.summary
    assert summary["status"] == "succeeded", summary["error"]
    batch = summary["smoke"]["promptflow"]
    assert batch["ok"] is True and len(batch["rows"]) == 2, batch
    assert all(row["answer"] and row["error"] is None for row in batch["rows"]), batch
    assert batch["outputs_at"].startswith(str(pf_home / "pf")) and batch["run"].startswith(f"tunegate_{ENDPOINT}_")
    report = (kept.state / "runs" / summary["flow_run_id"] / "summary.json").read_text()
    assert batch["rows"][0]["question"] in report
    # the batch's own connection is gone again: only `tunegate promptflow` leaves one, by name
    assert not list((pf_home / "pf").glob("**/tunegate_smoke_*"))


def test_tunegate_promptflow_asks_through_the_chat_flow(kept):
    # greedy, and a question like its training data (data/synthetic.py): the tiny test model, sampled or asked
    # something else, may well pick its end token first and answer nothing
    done = ask(kept, "--question", "What is the capital of France?", "--max-new-tokens", "6", "--greedy")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Prompt flow connection tunegate_endpoint -> {ENDPOINT} (http://127.0.0.1:")
    answer = next(line for line in lines if line.startswith("model> "))
    assert answer.removeprefix("model> ").strip(), done.stdout
    # one deployment by name, as the smoke test reaches a new one at 0% traffic
    deployment = kept.summary["endpoint"]["deployment"]
    targeted = ask(kept, "--question", "Hi", "--deployment", deployment, "--max-new-tokens", "4")
    assert targeted.returncode == 0 and f"-> {ENDPOINT}/{deployment} " in targeted.stdout, targeted.stderr[-2000:]
    wrong = ask(kept, "--question", "Hi", "--deployment", "ft-nothing-9")
    assert wrong.returncode == 1 and "HTTP 404" in wrong.stderr and "ft-nothing-9" in wrong.stderr, wrong.stderr


GUIDE_FLOW = ROOT / "tests" / "fixtures" / "guide_promptflow"


def test_the_guides_own_flow_runs_unchanged_against_a_local_endpoint(kept, tmp_path):
    """The E2E guide's flow.dag.yml and integrate_with_promptflow.py, byte for byte, with its config.py pointing at
    the local endpoint: the text-generation request shape in, `response.json()[0]` out."""
    flow = shutil.copytree(GUIDE_FLOW, tmp_path / "guide")
    credentials = kept.workspace.endpoints.credentials(ENDPOINT)
    (flow / "config.py").write_text(  # the guide's way (a key in a file): here only in a temporary folder
        f"AZURE_ML_ENDPOINT = {credentials.scoring_uri!r}\nAZURE_ML_API_KEY = {credentials.key.get_secret_value()!r}\n"
    )
    pf = Path(sys.executable).parent / "pf"
    try:
        done = subprocess.run(
            [str(pf), "flow", "test", "--flow", str(flow), "--inputs", "input_data=Who founded Microsoft?"],
            capture_output=True, text=True, timeout=300, cwd=flow,
        )  # fmt: skip
    finally:  # pf run by hand starts its trace service, as it does for any user; stop it
        subprocess.run([str(pf), "service", "stop"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = json.loads((flow / ".promptflow" / "flow.output.json").read_text())
    # return_full_text: the prompt, a newline, then the answer
    assert output["answer"].startswith("Who founded Microsoft?\n"), output


def test_bad_requests_are_refused_with_what_to_fix(kept):
    missing = tunegate("promptflow", "--endpoint", "no-such-endpoint", "--set", f"workspace.state_dir={kept.state}")
    assert missing.returncode == 2 and "no endpoint 'no-such-endpoint'" in missing.stderr
    cold = ask(kept, "--temperature", "-1")
    assert cold.returncode == 2 and "--temperature" in cold.stderr and "greater than or equal to 0" in cold.stderr
    both = ask(kept, "--serve", "--interactive")
    assert both.returncode == 2 and "one of --serve and --interactive" in both.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pf_flow_serve_chats_in_the_browser(kept, browser):  # noqa: F811 - the fixture imported above
    port = free_port()
    log = kept.state / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    command = [sys.executable, "-m", "flows.cli", "promptflow", "--endpoint", ENDPOINT, "--serve", "--port", str(port)]
    command += ["--max-new-tokens", "12", "--set", f"workspace.state_dir={kept.state}"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_healthy(f"http://localhost:{port}/health", server, log)
        # the served flow's own API, as a client of `pf flow serve` calls it
        answered = httpx.post(f"http://localhost:{port}/score", json={"question": "Hello?", "chat_history": []})
        assert answered.status_code == 200 and answered.json()["answer"].strip(), answered.text

        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"http://localhost:{port}/")
        page.wait_for_load_state("networkidle", timeout=120_000)  # the chat app's handlers are attached
        question = page.get_by_label("question")
        for turn, text in enumerate(["What is the capital of France?", "And of Italy?"], start=1):
            ask_in_page(page, question, text)
            # each answer ends with its duration; the second turn carries the first in its chat history
            try:
                page.wait_for_function(f"document.body.innerText.split('Duration:').length > {turn}", timeout=300_000)
            except PlaywrightTimeout:
                raise AssertionError(
                    f"turn {turn} not answered in 300 s; the page says {page.inner_text('body')[-1500:]!r}; "
                    f"the server logged {log.read_text()[-2000:]}"
                ) from None
        assert page.get_by_text("And of Italy?").count() >= 1
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "promptflow-chat.png"))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    served = log.read_text()
    kept.outputs.append(served)
    assert f"chat page: http://localhost:{port}/" in served


def ask_in_page(page, question, text: str) -> None:
    """Type and send a question; Enter is pressed again while the box still holds it (a page still starting can
    drop the first key press)."""
    question.fill(text)
    question.press("Enter")
    for _ in range(30):
        if question.input_value() != text:
            return
        page.wait_for_timeout(2000)
        question.press("Enter")
    raise AssertionError(f"the chat page did not take the question {text!r}: {page.inner_text('body')[-1500:]!r}")


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"pf flow serve did not answer {url} in {timeout_s:.0f} s: {log.read_text()[-3000:]}")


def test_the_key_is_in_no_file_and_no_output(kept, pf_home):
    """Last in this module: every command above has run, every file they wrote is there to search."""
    key = kept.workspace.endpoints.credentials(ENDPOINT).key.get_secret_value()
    assert len(key) >= 16
    said = "\n".join(kept.outputs)
    assert "Prompt flow connection" in said and key not in said
    searched = [pf_home, ROOT / "promptflows", kept.state / "runs"]  # Prompt flow's store, the flow's folder, runs
    files = [path for folder in searched for path in folder.rglob("*") if path.is_file()]
    assert any(path.name == "pf.sqlite" for path in files), "Prompt flow's connection store was not searched"
    holding = [str(path) for path in files if key.encode() in path.read_bytes()]
    assert holding == [], holding
    tracked = subprocess.run(["git", "grep", "-l", "--untracked", key], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout == "", tracked.stdout


def test_no_prompt_flow_service_is_left_running(kept):
    """tunegate asks Prompt flow to collect no traces, so no `pf service` daemon outlives its commands."""
    if shutil.which("pgrep") is None:
        pytest.skip("no pgrep on this machine")
    found = subprocess.run(["pgrep", "-f", "promptflow._cli._pf._service"], capture_output=True, text=True)
    assert found.stdout.strip() == "", found.stdout
