"""The local workspace for real, on tiny sizes: trainer subprocess, MLflow registry, endpoint server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tasks.compute import validate
from tasks.finetune import build_spec, submit_or_reattach
from tasks.model import allow_list, model_specific_defaults
from tasks.register import register_once
from tasks.sampling import sample_to_directory
from tasks.settings import DataSettings, FinetuneSettings
from workspaces.local.processes import pid_alive
from workspaces.local.workspace import LocalWorkspace
from workspaces.ports import ComputeSpec, JobRef, JobState, ScoringRequest, TransientWorkspaceError, WorkspaceError
from workspaces.scoring import ScoringParameters

pytestmark = pytest.mark.slow
PARAMS = ScoringParameters(max_new_tokens=8, do_sample=False)
HI = ScoringRequest(messages=[{"role": "user", "content": "hi"}], parameters=PARAMS)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = LocalWorkspace(tmp_path_factory.mktemp("local") / "workspace")
    yield ws
    for name in ws.inventory().endpoints:
        ws.endpoints.delete(name)
    assert ws.inventory().empty


@pytest.fixture(scope="module")
def spec(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sampled = sample_to_directory(DataSettings(percent=10, synthetic_rows=1000), root / "run", root / "cache")
    foundation = workspace.registry.get_foundation_model("tiny-phi3-chat")
    compute = validate(
        workspace.compute.ensure(ComputeSpec(name="local", size="local-cpu")),
        foundation,
        workspace.compute.list_sizes(),
    )
    data = workspace.data.upload(Path(sampled.files["train_sft"]), Path(sampled.files["test_sft"]), sampled.fingerprint)
    return build_spec(foundation, compute, data, FinetuneSettings(), "tunegate-tests")


def wait(workspace, job, timeout=180):
    deadline = time.monotonic() + timeout
    while not (status := workspace.jobs.status(job)).state.terminal:
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.3)
    return status


@pytest.fixture(scope="module")
def finished_job(workspace, spec):
    job = submit_or_reattach(workspace.jobs, spec, "module-job")
    status = wait(workspace, job)
    assert status.state is JobState.COMPLETED, status.message
    return job


@pytest.fixture(scope="module")
def registered(workspace, finished_job):
    return register_once(workspace.registry, finished_job, "tiny-ft", {"data_fingerprint": "abc", "eval_loss": "1.0"})


def test_foundation_model_is_created_once_with_registry_tags(workspace):
    first = workspace.registry.get_foundation_model("tiny-phi3-chat")
    again = workspace.registry.get_foundation_model("tiny-phi3-chat", version="1")
    assert first.id == again.id == "models:/tiny-phi3-chat/1"
    assert allow_list(first, "finetune_compute_allow_list") == ["local-cpu", "local-cuda"]
    assert model_specific_defaults(first)["apply_lora"] == "true"
    with pytest.raises(WorkspaceError, match="not in the local registry"):
        workspace.registry.get_foundation_model("Phi-3-mini-4k-instruct")


def test_unknown_local_size_is_refused(workspace):
    with pytest.raises(WorkspaceError, match="not a local size"):
        workspace.compute.ensure(ComputeSpec(name="x", size="Standard_NC6"))


def test_trainer_logs_losses_and_writes_a_merged_mlflow_model(workspace, finished_job):
    metrics = workspace.jobs.metrics(finished_job)
    assert metrics["eval_loss"] < metrics["base_eval_loss"] - 1.0, metrics  # visibly learned
    assert "train_loss" in metrics
    outputs = Path(finished_job.url.removeprefix("file://")) / "outputs"
    assert (outputs / "mlflow_model_folder" / "MLmodel").exists()
    hf = outputs / "hf_model"
    assert not (hf / "adapter_config.json").exists() and (hf / "config.json").exists()  # LoRA merged, not adapters
    assert "lora" not in (hf / "model.safetensors").read_bytes()[:20000].decode("latin-1")


def test_the_same_seed_trains_the_same_losses_and_the_final_eval_loss_is_the_saved_models(
    workspace, spec, finished_job
):
    """Issue 26's speed-ups change no number: a second job of the same spec (seed) logs the same loss curve and
    metrics within noise, and the final eval_loss it reports (the last epoch's evaluation, not run again) is what the
    saved model scores on the test split."""
    from transformers import TrainingArguments

    from workspaces.local.training_parts import evaluate_model, read_rows

    again = submit_or_reattach(workspace.jobs, spec, "seed-check")
    assert wait(workspace, again).state is JobState.COMPLETED
    first, second = workspace.jobs.loss_history(finished_job), workspace.jobs.loss_history(again)
    assert [step for step, _ in first.train] == [step for step, _ in second.train] and len(first.eval) >= 2
    # within noise: CPU training is not bitwise repeatable (torch's thread count follows the machine's load)
    for (_, a), (_, b) in zip(first.train + first.eval, second.train + second.eval, strict=True):
        assert abs(a - b) <= 0.01 * abs(a), (first, second)
    metrics = workspace.jobs.metrics(again)
    assert abs(metrics["eval_loss"] - second.eval[-1][1]) < 1e-9  # the curve ends where the reported metric is
    saved = Path(again.url.removeprefix("file://")) / "outputs" / "hf_model"
    params = spec.parameters
    args = TrainingArguments(
        output_dir=str(saved.parent / "check"),
        per_device_eval_batch_size=int(params.get("per_device_eval_batch_size", 1)),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    max_len = int(params.get("max_seq_length", -1))
    rescored = evaluate_model(saved, read_rows(spec.data.test), args, max_len if max_len > 0 else 256, True)
    assert abs(rescored - metrics["eval_loss"]) < 1e-3, (rescored, metrics["eval_loss"])


def test_same_idempotency_key_reattaches(workspace, spec, finished_job):
    again = submit_or_reattach(workspace.jobs, spec, "module-job")
    assert again.reattached and again.name == finished_job.name
    assert len(list((workspace.root / "jobs").glob(f"{finished_job.name}*"))) == 1


def test_cancel_kills_the_trainer(workspace, spec):
    long = spec.model_copy(update={"parameters": {**spec.parameters, "num_train_epochs": 200}})
    job = submit_or_reattach(workspace.jobs, long, "to-cancel")
    pid = json.loads((workspace.root / "jobs" / job.name / "status.json").read_text())["pid"]
    time.sleep(1.0)
    workspace.jobs.cancel(job)
    assert workspace.jobs.status(job).state is JobState.CANCELED
    assert not pid_alive(pid)
    # a failed or cancelled job under the same key is started again, not re-attached
    retry = submit_or_reattach(workspace.jobs, long, "to-cancel")
    assert not retry.reattached and retry.name == f"{job.name}-2"
    workspace.jobs.cancel(retry)


def test_a_killed_trainer_is_reported_failed_not_waited_on(workspace, spec):
    long = spec.model_copy(update={"parameters": {**spec.parameters, "num_train_epochs": 200}})
    job = submit_or_reattach(workspace.jobs, long, "to-kill")
    pid = json.loads((workspace.root / "jobs" / job.name / "status.json").read_text())["pid"]
    time.sleep(0.5)
    os.killpg(pid, signal.SIGKILL)
    status = wait(workspace, job, timeout=10)
    assert status.state is JobState.FAILED and "died" in status.message


def test_registry_lineage_idempotency_and_champion(workspace, finished_job, registered):
    assert registered.version == "1" and registered.tags["finetune_job"] == finished_job.name
    # a retried registration gets the same version
    assert register_once(workspace.registry, finished_job, "tiny-ft", {"x": "y"}).version == "1"
    tagged = workspace.registry.tag_model(registered, {"decision": "approved"})
    assert tagged.tags["decision"] == "approved" and tagged.tags["data_fingerprint"] == "abc"
    assert workspace.registry.champion("tiny-ft") is None
    workspace.registry.set_champion(tagged, "tiny-ft")
    assert workspace.registry.champion("tiny-ft").version == "1"
    workspace.registry.set_champion(None, "tiny-ft")
    assert workspace.registry.champion("tiny-ft") is None


def test_endpoint_key_auth_traffic_split_and_targeting(workspace, registered):
    endpoint = workspace.endpoints.ensure("ep-split")
    assert endpoint.deployments == ()
    workspace.endpoints.create_deployment("ep-split", "blue", registered, "local-cpu")
    workspace.endpoints.create_deployment("ep-split", "green", registered, "local-cpu")
    workspace.endpoints.set_traffic("ep-split", {"blue": 70, "green": 30})
    credentials = workspace.endpoints.credentials("ep-split")
    body = {
        "input_data": {
            "input_string": [[{"role": "user", "content": "What is 2 plus 2?"}]],
            "parameters": PARAMS.model_dump(),
        }
    }
    assert httpx.post(credentials.scoring_uri, json=body).status_code == 401
    assert httpx.post(credentials.scoring_uri, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    key = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
    served = Counter(
        httpx.post(credentials.scoring_uri, json=body, headers=key, timeout=30).headers["azureml-model-deployment"]
        for _ in range(100)  # at 70/30, blue <= green in 100 draws has odds of 3e-5 (in 40: 0.6%, seen in CI)
    )
    assert set(served) == {"blue", "green"} and served["blue"] > served["green"], served
    workspace.endpoints.set_traffic("ep-split", {"blue": 100, "green": 0})
    targeted = workspace.endpoints.invoke("ep-split", HI, deployment="green")
    assert targeted.error is None and isinstance(targeted.output, str)  # a 0% deployment answers when targeted
    assert targeted.deployment == "green"
    assert workspace.endpoints.invoke("ep-split", HI, deployment="nope").status_code == 404
    health = credentials.scoring_uri.replace("/score", "/health")
    assert httpx.get(health).json() == {"status": "ok"}  # details only with a key
    assert httpx.get(health, headers=key).json()["traffic"] == {"blue": 100, "green": 0}
    assert httpx.get(credentials.scoring_uri.replace("/score", "/openapi.json")).status_code == 404
    with pytest.raises(WorkspaceError, match="takes 100%"):
        workspace.endpoints.delete_deployment("ep-split", "blue")
    with pytest.raises(WorkspaceError, match="sum to 100"):
        workspace.endpoints.set_traffic("ep-split", {"blue": 50})
    workspace.endpoints.delete_deployment("ep-split", "green")
    assert workspace.endpoints.get("ep-split").deployments == ("blue",)
    secret = credentials.key.get_secret_value()
    assert (
        secret not in repr(credentials)
        and secret not in (workspace.root / "endpoints" / "ep-split" / "server.log").read_text()
    )
    pid = workspace.inventory().processes[0]
    workspace.endpoints.delete("ep-split")
    assert not pid_alive(pid) and workspace.endpoints.get("ep-split") is None


def test_a_crashed_server_is_detected_and_restarted_with_its_deployments(workspace, registered):
    workspace.endpoints.ensure("ep-crash")
    workspace.endpoints.create_deployment("ep-crash", "only", registered, "local-cpu")
    workspace.endpoints.set_traffic("ep-crash", {"only": 100})
    pid = json.loads((workspace.root / "endpoints" / "ep-crash" / "server.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.3)
    with pytest.raises(TransientWorkspaceError, match="not running"):  # said at once: the pid is checked
        workspace.endpoints.credentials("ep-crash")
    assert workspace.endpoints.get("ep-crash").running is False
    assert workspace.endpoints.ensure("ep-crash").traffic == {"only": 100}
    assert workspace.endpoints.invoke("ep-crash", HI).error is None
    workspace.endpoints.delete("ep-crash")


def test_a_dead_keep_endpoint_is_shown_down_refused_by_chat_and_started_again_by_the_cli(workspace, registered):
    from tests.test_cli_e2e import tunegate

    state_dir = f"workspace.state_dir={workspace.root.parent}"
    workspace.endpoints.ensure("ep-dead")
    workspace.endpoints.create_deployment("ep-dead", "blue", registered, "local-cpu")
    workspace.endpoints.set_traffic("ep-dead", {"blue": 100})
    pid = json.loads((workspace.root / "endpoints" / "ep-dead" / "server.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)
    listed = tunegate("inventory", "--json", "--set", state_dir)
    assert listed.returncode == 0 and "ep-dead" in json.loads(listed.stdout)["endpoints_down"]
    table = tunegate("inventory", "--set", state_dir)
    assert "tunegate endpoint start ep-dead" in table.stdout
    chat = tunegate("chat", "--endpoint", "ep-dead", "-m", "hi", "--set", state_dir)
    assert chat.returncode == 1 and "Traceback" not in chat.stderr
    said = "endpoint ep-dead is down (its server is not running): `tunegate endpoint start ep-dead`"
    assert chat.stderr.strip() == said
    started = tunegate("endpoint", "start", "ep-dead", "--set", state_dir)
    assert started.returncode == 0, started.stderr
    assert workspace.endpoints.get("ep-dead").traffic == {"blue": 100} and workspace.endpoints.get("ep-dead").running
    chat = tunegate("chat", "--endpoint", "ep-dead", "-m", "hi", "--max-new-tokens", "4", "--set", state_dir)
    assert chat.returncode == 0 and "model>" in chat.stdout, chat.stderr
    # temperature 0 is greedy decoding (and --greedy says so): the same answer twice, no traceback
    greedy = [
        tunegate("chat", "--endpoint", "ep-dead", "-m", "hi", "--temperature", "0", "--max-new-tokens", "6", "--set",
                 state_dir)
        for _ in range(2)
    ]  # fmt: skip
    assert all(g.returncode == 0 and "Traceback" not in g.stderr for g in greedy), greedy[0].stderr
    answers = [g.stdout.split("model> ", 1)[1].rsplit("  (", 1)[0] for g in greedy]
    assert answers[0] == answers[1]
    flagged = tunegate("chat", "--endpoint", "ep-dead", "-m", "hi", "--greedy", "--max-new-tokens", "6", "--set",
                       state_dir)  # fmt: skip
    assert flagged.returncode == 0 and flagged.stdout.split("model> ", 1)[1].rsplit("  (", 1)[0] == answers[0]
    # over the endpoint's limit: the limit and the profile key that raises it, not a raw JSON body
    over = tunegate("chat", "--endpoint", "ep-dead", "-m", "hi", "--max-new-tokens", "2000", "--set", state_dir)
    assert over.returncode == 1 and "{" not in over.stderr, over.stderr
    assert "max_tokens 2000 is over this endpoint's limit 512" in over.stderr  # chat asks through the OpenAI route
    assert "workspace.local.endpoint_limits.max_new_tokens" in over.stderr
    negative = tunegate("chat", "--endpoint", "ep-dead", "-m", "hi", "--temperature", "-1", "--set", state_dir)
    assert negative.returncode == 2 and "--temperature" in negative.stderr
    interactive = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "chat",
            "--endpoint",
            "ep-dead",
            "--max-new-tokens",
            "4",
            "--set",
            state_dir,
        ],
        input="/help\nhi\n/reset\nhello again\n/quit\nnever sent\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert interactive.returncode == 0, interactive.stderr
    out = interactive.stdout
    assert out.startswith("chatting with ep-dead: /help") and out.count("/reset start a new conversation") == 2
    assert out.count("model>") == 2 and "(a new conversation)" in out
    workspace.endpoints.delete("ep-dead")


def test_two_creations_of_one_endpoint_at_once_start_one_server_and_teardown_leaves_none(workspace):
    from concurrent.futures import ThreadPoolExecutor

    from workspaces.local.processes import tunegate_processes

    code = (
        "import sys; from pathlib import Path; from workspaces.local.workspace import LocalWorkspace; "
        f"LocalWorkspace(Path({str(workspace.root)!r})).endpoints.ensure('ep-twice')"
    )
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: subprocess.run([sys.executable, "-c", code], timeout=180), range(2)))
    assert [d.returncode for d in done] == [0, 0]
    directory = str(workspace.root / "endpoints" / "ep-twice")
    servers = [p.pid for p in tunegate_processes() if p.kind == "endpoint server" and p.argument == directory]
    assert len(servers) == 1, servers
    # an orphan server of this endpoint that server.json does not name (as a crashed creation could leave)
    orphan = subprocess.Popen(
        [sys.executable, "-m", "workspaces.local.server", directory],
        env={**os.environ, "TUNEGATE_ENDPOINT_KEY": "k", "TUNEGATE_ADMIN_TOKEN": "a"},
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while orphan.pid not in [p.pid for p in tunegate_processes()] and time.monotonic() < deadline:
        time.sleep(0.1)
    workspace.endpoints.delete("ep-twice")
    orphan.wait(timeout=30)
    assert not [p for p in tunegate_processes() if p.argument == directory]


def test_an_ephemeral_endpoint_dies_with_the_process_that_made_it(workspace):
    code = (
        "import sys; from pathlib import Path; from workspaces.local.workspace import LocalWorkspace; "
        f"LocalWorkspace(Path({str(workspace.root)!r})).endpoints.ensure('ep-orphan', ephemeral=True)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    pid = json.loads((workspace.root / "endpoints" / "ep-orphan" / "server.json").read_text())["pid"]
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(pid)
    workspace.endpoints.delete("ep-orphan")


def test_job_status_of_unknown_job(workspace):
    with pytest.raises(WorkspaceError, match="does not exist"):
        workspace.jobs.status(JobRef(name="ft-nope", idempotency_key="x"))
    assert workspace.jobs.get("ft-nope") is None


def test_a_broken_registry_is_an_error_never_no_champion(tmp_path):
    broken = LocalWorkspace(tmp_path / "workspace")
    (tmp_path / "workspace").mkdir(parents=True, exist_ok=True)
    (tmp_path / "workspace" / "mlflow.db").write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(WorkspaceError, match="champion of tiny-ft"):
        broken.registry.champion("tiny-ft")


def test_hostile_scoring_requests_get_4xx_naming_the_problem_and_the_server_keeps_answering(workspace, registered):
    workspace.endpoints.ensure("ep-hostile")
    workspace.endpoints.create_deployment("ep-hostile", "blue", registered, "local-cpu")
    workspace.endpoints.set_traffic("ep-hostile", {"blue": 100})
    credentials = workspace.endpoints.credentials("ep-hostile")
    key = {"Authorization": f"Bearer {credentials.key.get_secret_value()}", "Content-Type": "application/json"}

    def post(body: object, raw: bytes | None = None, timeout: float = 30) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(credentials.scoring_uri, content=content, headers=key, timeout=timeout)

    def ask(messages: object = None, **parameters: object) -> dict:
        messages = [{"role": "user", "content": "hi"}] if messages is None else messages
        return {"input_data": {"input_string": [messages], "parameters": {"max_new_tokens": 4, **parameters}}}

    assert post(None, raw=b"x" * (2 * 1024 * 1024)).status_code == 413  # refused before it is read or parsed

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(40):
            yield b" " * 65536

    chunked = httpx.post(credentials.scoring_uri, content=chunks(), headers=key, timeout=30)
    assert chunked.status_code == 413
    long_prompt = post(ask([{"role": "user", "content": "word" * 65536}]))
    assert long_prompt.status_code == 413 and "max_prompt_tokens" in long_prompt.text

    cases = {
        "temperature": ask(temperature=0, do_sample=True),
        "max_new_tokens": ask(max_new_tokens=-5),
        "top_p": ask(top_p=7),
        "content": ask([{"role": "user", "content": 42}]),
        "role": ask([{"content": "hi"}]),
        "parameters": {"input_data": {"input_string": [[{"role": "user", "content": "hi"}]], "parameters": [1]}},
        "input_string": {"input_data": {"input_string": "hi"}},
    }
    for field, body in cases.items():
        answer = post(body)
        assert answer.status_code == 422, (field, answer.text)
        assert any(field in error["field"] for error in answer.json()["errors"]), (field, answer.json())
    assert post(ask(max_new_tokens="abc")).status_code == 422
    nan = post(None, raw=b'{"input_data": {"input_string": [[{"role": "user", "content": "hi"}]], '
               b'"parameters": {"temperature": NaN}}}')  # fmt: skip
    assert nan.status_code == 422 and "temperature" in nan.text
    over_cap = post(ask(max_new_tokens=2000))
    assert over_cap.status_code == 422 and "limit 512" in over_cap.text
    deep = post(None, raw=b'{"input_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert deep.status_code == 400
    assert post(None, raw=b"not json").status_code == 400
    greedy = post(ask(do_sample="false", temperature=0))  # "false" is false: greedy, temperature unused
    assert greedy.status_code == 200, greedy.text
    assert workspace.endpoints.invoke("ep-hostile", HI).error is None  # still serving
    workspace.endpoints.delete("ep-hostile")


def test_every_conversation_is_answered_in_one_batch_as_it_would_be_alone(workspace, registered):
    workspace.endpoints.ensure("ep-batch")
    workspace.endpoints.create_deployment("ep-batch", "blue", registered, "local-cpu")
    workspace.endpoints.set_traffic("ep-batch", {"blue": 100})
    credentials = workspace.endpoints.credentials("ep-batch")
    key = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Spell river."}],
        [
            {"role": "user", "content": "What is 3 plus 4?"},
            {"role": "assistant", "content": "7."},
            {"role": "user", "content": "hi"},
        ],
    ]

    def answer(batch: list) -> httpx.Response:
        body = {"input_data": {"input_string": batch, "parameters": {"max_new_tokens": 12, "do_sample": False}}}
        return httpx.post(credentials.scoring_uri, json=body, headers=key, timeout=60)

    together = answer(conversations)
    assert together.status_code == 200, together.text
    alone = [answer([conversation]).json() for conversation in conversations]
    assert all(set(single) == {"output"} for single in alone)  # one conversation: the seed's shape, unchanged
    # left padding does not change a greedy answer: the batch says what each request alone says
    assert together.json()["outputs"] == [single["output"] for single in alone]
    assert together.json()["output"] == alone[0]["output"]
    too_many = answer(conversations * 6)
    assert too_many.status_code == 422 and "at most 16" in too_many.text
    workspace.endpoints.delete("ep-batch")


def test_profile_limits_reach_the_server_and_extra_requests_wait_then_get_429(workspace, registered):
    from concurrent.futures import ThreadPoolExecutor

    from workspaces.local.settings import EndpointLimits

    tight = EndpointLimits(max_concurrent_requests=1, max_queue_wait_s=0.05, max_new_tokens=300)
    narrow = LocalWorkspace(workspace.root, tight)
    narrow.endpoints.ensure("ep-limits")
    narrow.endpoints.create_deployment("ep-limits", "blue", registered, "local-cpu")
    narrow.endpoints.set_traffic("ep-limits", {"blue": 100})
    credentials = narrow.endpoints.credentials("ep-limits")
    key = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
    # each request keeps the server busy for a while whatever the model answers (a trained model may end its reply
    # at once): 16 long conversations to read in; eight such requests at the same moment, one scored at a time
    body = {
        "input_data": {
            "input_string": [[{"role": "user", "content": "tell me everything " * 40}]] * 16,
            "parameters": {"max_new_tokens": 300, "do_sample": False},
        }
    }
    start = threading.Barrier(8)

    def ask(_: int) -> httpx.Response:
        with httpx.Client(timeout=120) as client:  # a connection of its own
            start.wait()
            return client.post(credentials.scoring_uri, json=body, headers=key)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    codes = Counter(answer.status_code for answer in answers)
    assert codes[200] >= 1 and codes[429] >= 1, [(a.status_code, a.elapsed.total_seconds()) for a in answers]
    busy = next(answer for answer in answers if answer.status_code == 429)
    assert "endpoint busy" in busy.text and busy.headers["Retry-After"] == "1"

    # the profile changes a limit: the running server takes it on the next ensure, no restart
    pid = json.loads((workspace.root / "endpoints" / "ep-limits" / "server.json").read_text())["pid"]
    LocalWorkspace(workspace.root, EndpointLimits(max_new_tokens=16)).endpoints.ensure("ep-limits")
    over = narrow.endpoints.invoke(
        "ep-limits", ScoringRequest(messages=HI.messages, parameters=ScoringParameters(max_new_tokens=32))
    )
    assert over.status_code == 422 and "limit 16" in (over.error or "")
    assert json.loads((workspace.root / "endpoints" / "ep-limits" / "server.json").read_text())["pid"] == pid
    workspace.endpoints.delete("ep-limits")


# ---------------------------------------------------------------- a hostile user (issue 21)


def _bare(workspace, name, registered):
    workspace.endpoints.ensure(name)
    workspace.endpoints.create_deployment(name, "blue", registered, "local-cpu")
    workspace.endpoints.set_traffic(name, {"blue": 100})
    return workspace.endpoints.credentials(name)


def test_text_no_tokenizer_can_take_a_temperature_that_overflows_and_a_bare_key_are_4xx(workspace, registered):
    credentials = _bare(workspace, "ep-input", registered)
    key = credentials.key.get_secret_value()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(raw: bytes, auth: dict | None = None) -> httpx.Response:
        return httpx.post(credentials.scoring_uri, content=raw, headers=auth or headers, timeout=60)

    surrogate = post(b'{"input_data": {"input_string": [[{"role": "user", "content": "hi \\ud800"}]]}}')
    assert surrogate.status_code == 422 and "surrogate" in surrogate.text, surrogate.text
    assert any("content" in error["field"] for error in surrogate.json()["errors"])
    text_shape = post(b'{"input_data": ["\\udfff"], "params": {"max_new_tokens": 2}}')
    assert text_shape.status_code == 422 and "input_data" in text_shape.text
    for tiny in (b"1e-300", b"5e-324"):
        body = b'{"input_data": {"input_string": [[{"role": "user", "content": "hi"}]], "parameters": '
        answer = post(body + b'{"do_sample": true, "temperature": ' + tiny + b', "max_new_tokens": 4}}}')
        assert answer.status_code == 422 and "temperature" in answer.text, (tiny, answer.text)
    ok = b'{"input_data": {"input_string": [[{"role": "user", "content": "hi"}]], "parameters": {"max_new_tokens": 2}}}'
    for bare in (key, f"Token {key}", f"Bearer{key}", f"Basic {key}"):
        refused = post(ok, {"Authorization": bare, "Content-Type": "application/json"})
        assert refused.status_code == 401 and "Bearer <key>" in refused.text, bare
    assert post(ok, {"Authorization": f"bearer {key}", "Content-Type": "application/json"}).status_code == 200
    health = httpx.get(credentials.scoring_uri.replace("/score", "/health"), headers={"Authorization": key}).json()
    assert health == {"status": "ok"}  # a bare key shows nothing more either
    workspace.endpoints.delete("ep-input")


def test_clients_that_never_finish_their_bodies_hold_no_scoring_slot(workspace, registered):
    import socket
    from urllib.parse import urlsplit

    from workspaces.local.settings import EndpointLimits

    default = workspace.endpoints.limits
    workspace.endpoints.limits = EndpointLimits(body_timeout_s=20)  # room for a loaded machine's answer below
    try:
        credentials = _bare(workspace, "ep-slow", registered)
    finally:
        workspace.endpoints.limits = default
    port = urlsplit(credentials.scoring_uri).port
    key = credentials.key.get_secret_value()
    stalled = []
    for _ in range(4):  # as many as there are scoring slots (max_concurrent_requests 4)
        client = socket.create_connection(("127.0.0.1", port), timeout=60)
        client.sendall(
            f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{".encode()
        )
        stalled.append(client)
    time.sleep(0.5)
    answered = workspace.endpoints.invoke("ep-slow", HI, timeout_s=120)  # not 429 after 30 s: they hold no slot
    assert answered.error is None, answered.error
    for client in stalled:  # nothing for them yet: the answer above came while they still held their connections
        client.settimeout(0.01)
        with pytest.raises(TimeoutError):
            client.recv(1)
    for client in stalled:  # then each gets 408 after body_timeout_s, and the connection ends
        client.settimeout(60)
        assert client.recv(200).startswith(b"HTTP/1.1 408"), "a stalled body must get 408"
        client.close()
    workspace.endpoints.delete("ep-slow")


def _stranger() -> subprocess.Popen:
    """Somebody else's process, whose pid a hostile state file names."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)


def test_a_pid_on_disk_that_is_not_ours_is_never_signalled(workspace, registered):
    from tests.test_cli_e2e import tunegate

    state_dir = f"workspace.state_dir={workspace.root.parent}"
    _bare(workspace, "ep-pid", registered)
    directory = workspace.root / "endpoints" / "ep-pid"
    real = json.loads((directory / "server.json").read_text())["pid"]
    stranger = _stranger()
    try:
        (directory / "server.json").write_text(json.dumps({"pid": stranger.pid, "port": 1}))
        assert not workspace.endpoints.get("ep-pid").running  # the record does not name a server of this endpoint
        gone = tunegate("teardown", "--endpoint", "ep-pid", "--set", state_dir)
        assert gone.returncode == 0, gone.stderr
        assert stranger.poll() is None, "teardown killed a process that is not tunegate's"
        assert f"not stopping pid {stranger.pid}" in gone.stderr and "not tunegate's" in gone.stderr
        assert not pid_alive(real) and not directory.exists()  # the real server, found by what it serves, is gone

        # a job whose status.json names the stranger: `jobs --cancel` does not signal it
        job_dir = workspace.root / "jobs" / "tunegate-forged"
        job_dir.mkdir(parents=True)
        (job_dir / "spec.json").write_text(json.dumps({"idempotency_key": "x", "display_name": "forged"}))
        (job_dir / "status.json").write_text(json.dumps({"state": "running", "pid": stranger.pid}))
        cancel = tunegate("jobs", "--cancel", "tunegate-forged", "--set", state_dir)
        assert cancel.returncode == 0 and stranger.poll() is None, cancel.stderr
        assert "already ended failed" in cancel.stdout  # the trainer on record is gone: the job died
        assert workspace.jobs.status(JobRef(name="tunegate-forged")).message.count("not tunegate's") == 1
    finally:
        stranger.kill()
        shutil.rmtree(workspace.root / "jobs" / "tunegate-forged", ignore_errors=True)


def test_damaged_state_files_are_named_and_teardown_still_stops_the_server(workspace, registered):
    from tests.test_cli_e2e import tunegate

    state_dir = f"workspace.state_dir={workspace.root.parent}"
    _bare(workspace, "ep-torn", registered)
    directory = workspace.root / "endpoints" / "ep-torn"
    pid = json.loads((directory / "server.json").read_text())["pid"]

    # a truncated server.json: the endpoint reads as down, `endpoint start` replaces the stale server
    (directory / "server.json").write_text('{"pid": 12')
    chat = tunegate("chat", "--endpoint", "ep-torn", "-m", "hi", "--set", state_dir)
    assert chat.returncode == 1 and "Traceback" not in chat.stderr and "tunegate endpoint start ep-torn" in chat.stderr
    started = tunegate("endpoint", "start", "ep-torn", "--set", state_dir)
    assert started.returncode == 0, started.stderr
    assert not pid_alive(pid)  # one server per endpoint: the one whose record was lost is stopped
    assert workspace.endpoints.invoke("ep-torn", HI).error is None

    # a truncated secrets.json: named, with what to do
    secrets = (directory / "secrets.json").read_text()
    (directory / "secrets.json").write_text(secrets[:10])
    chat = tunegate("chat", "--endpoint", "ep-torn", "-m", "hi", "--set", state_dir)
    assert chat.returncode == 1 and "Traceback" not in chat.stderr
    assert "secrets.json is damaged" in chat.stderr and "tunegate teardown --endpoint ep-torn" in chat.stderr
    (directory / "secrets.json").write_text(secrets)

    # a truncated endpoint.json: inventory names it and goes on; teardown stops the server and deletes it
    (directory / "endpoint.json").write_text('{"name": "ep-torn", "deploy')
    listed = tunegate("inventory", "--set", state_dir)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "endpoint.json is damaged" in listed.stderr and "ep-torn" in listed.stdout
    as_json = json.loads(tunegate("inventory", "--json", "--set", state_dir).stdout)
    assert any("endpoint.json is damaged" in problem for problem in as_json["problems"])
    running = json.loads((directory / "server.json").read_text())["pid"]
    gone = tunegate("teardown", "--endpoint", "ep-torn", "--set", state_dir)
    assert gone.returncode == 0 and "Traceback" not in gone.stderr, gone.stderr
    assert not pid_alive(running) and not directory.exists()

    # a job's status.json with a word tunegate never writes
    job_dir = workspace.root / "jobs" / "tunegate-odd"
    job_dir.mkdir(parents=True)
    (job_dir / "spec.json").write_text("{}")
    (job_dir / "status.json").write_text('{"state": "exploded"}')
    jobs = tunegate("jobs", "--set", state_dir)
    assert jobs.returncode == 0 and "Traceback" not in jobs.stderr and "unknown state 'exploded'" in jobs.stdout
    shutil.rmtree(job_dir)


def test_the_endpoint_of_an_ephemeral_run_that_died_is_deleted_not_revived(workspace):
    from tests.test_cli_e2e import tunegate

    state_dir = f"workspace.state_dir={workspace.root.parent}"
    code = (
        "import sys; from pathlib import Path; from workspaces.local.workspace import LocalWorkspace; "
        f"LocalWorkspace(Path({str(workspace.root)!r})).endpoints.ensure('ep-died', ephemeral=True)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)  # the "run" ends without its teardown
    directory = workspace.root / "endpoints" / "ep-died"
    listed = tunegate("inventory", "--set", state_dir)
    assert "tunegate endpoint start ep-died" not in listed.stdout
    assert "ephemeral endpoint of a run that has ended" in listed.stderr
    revived = tunegate("endpoint", "start", "ep-died", "--set", state_dir)
    assert revived.returncode == 1 and "deleted it" in revived.stderr, revived.stderr
    assert not directory.exists()  # and its key with it
