"""A real local endpoint answering OpenAI's chat-completions API, driven with the official `openai` client: the
traffic split or one deployment by `model`, streaming token by token, stop texts, OpenAI's errors, the same key,
limits and metrics as `/score`, and `tunegate chat` streaming from it. The model is the local registry's tiny
foundation (untrained: greedy answers are deterministic nonsense that runs to max_tokens, long enough to stream)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from workspaces.local.settings import EndpointLimits
from workspaces.local.traffic_metrics import counters
from workspaces.local.workspace import LocalWorkspace
from workspaces.openai_chat import base_url
from workspaces.ports import ScoringRequest
from workspaces.scoring import ScoringParameters

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "oai-chat"
HI = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = LocalWorkspace(tmp_path_factory.mktemp("openai") / "workspace", EndpointLimits(max_new_tokens=128))
    foundation = ws.registry.get_foundation_model("tiny-phi3-chat")
    ws.endpoints.ensure(ENDPOINT)
    for name in ("blue", "green"):
        ws.endpoints.create_deployment(ENDPOINT, name, foundation, "local-cpu")
    ws.endpoints.set_traffic(ENDPOINT, {"blue": 100})
    yield ws
    for name in ws.inventory().endpoints:
        ws.endpoints.delete(name)


@pytest.fixture(scope="module")
def client(workspace) -> openai.OpenAI:
    credentials = workspace.endpoints.credentials(ENDPOINT)
    # no retries: a 429 or 5xx must show here, not be retried away
    return openai.OpenAI(base_url=base_url(credentials), api_key=credentials.key.get_secret_value(), max_retries=0)


def scored(workspace, tokens: int, deployment: str | None = None) -> str:
    """The same question through the seed's `/score` contract, greedily."""
    request = ScoringRequest(messages=HI, parameters=ScoringParameters(do_sample=False, max_new_tokens=tokens))
    result = workspace.endpoints.invoke(ENDPOINT, request, deployment)
    assert result.error is None, result.error
    return result.output


def scrape(credentials) -> str:
    """The endpoint's /metrics text."""
    return httpx.get(
        credentials.scoring_uri.removesuffix("/score") + "/metrics",
        headers={"Authorization": f"Bearer {credentials.key.get_secret_value()}"},
    ).text


def metrics(workspace) -> dict:
    return counters(scrape(workspace.endpoints.credentials(ENDPOINT)))


def test_the_openai_sdk_is_answered_by_the_traffic_split_as_score_answers(workspace, client):
    answer = client.chat.completions.create(model=ENDPOINT, messages=HI, max_tokens=12, temperature=0)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == "blue"  # the deployment that answered: blue takes all the traffic
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == scored(workspace, 12)
    assert answer.usage.completion_tokens <= 12 and answer.usage.prompt_tokens > 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert choice.finish_reason == ("length" if answer.usage.completion_tokens == 12 else "stop")
    # no model at all: the traffic split too (the SDK always sends one; other clients may not)
    bare = httpx.post(
        f"{client.base_url}chat/completions",
        json={"messages": HI, "max_tokens": 12, "temperature": 0},
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    assert bare.status_code == 200 and bare.json()["choices"][0]["message"]["content"] == choice.message.content
    assert bare.headers["azureml-model-deployment"] == "blue"


def test_model_names_one_deployment_even_at_zero_traffic(workspace, client):
    before = metrics(workspace).get("green", {}).get("requests", 0)
    answer = client.chat.completions.create(model="green", messages=HI, max_tokens=6, temperature=0)
    assert answer.model == "green" and answer.choices[0].message.content == scored(workspace, 6, "green")
    assert metrics(workspace)["green"]["requests"] == before + 2  # this one and the /score comparison
    listed = [model.id for model in client.models.list()]
    assert listed == [ENDPOINT, "blue", "green"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="ft-nothing-9", messages=HI)
    error = missing.value.body
    assert error["code"] == "model_not_found" and "ft-nothing-9" in error["message"] and ENDPOINT in error["message"]


def test_a_stream_comes_token_by_token_and_adds_up_to_the_answer(workspace, client):
    whole = client.chat.completions.create(model=ENDPOINT, messages=HI, max_tokens=40, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=ENDPOINT,
            messages=HI,
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert len({chunk.id for chunk in chunks}) == 1
    pieces = [
        chunk.choices[0].delta.content for chunk in chunks[1:] if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(pieces) > 5, pieces  # a piece per token or word as generated, not the answer in one piece
    assert "".join(pieces).strip() == whole.choices[0].message.content
    finals = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # the wire itself: server-sent events ending in [DONE]
    with httpx.stream(
        "POST",
        f"{client.base_url}chat/completions",
        json={"model": ENDPOINT, "messages": HI, "max_tokens": 5, "stream": True},
        headers={"Authorization": f"Bearer {client.api_key}"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_a_stop_text_ends_the_answer_before_it_in_both_ways(workspace, client):
    whole = client.chat.completions.create(model=ENDPOINT, messages=HI, max_tokens=40, temperature=0)
    text = whole.choices[0].message.content
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    expected = text[: text.index(stop)].strip()
    stopped = client.chat.completions.create(model=ENDPOINT, messages=HI, max_tokens=40, temperature=0, stop=[stop])
    assert stopped.choices[0].message.content == expected and stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=ENDPOINT, messages=HI, max_tokens=40, temperature=0, stop=stop, stream=True
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == expected
    assert stop not in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_bad_requests_get_openais_errors_naming_what_to_fix(workspace, client):
    def refused(**asked):
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(**{"model": ENDPOINT, "messages": HI, **asked})
        return bad.value.body

    assert refused(extra_body={"temprature": 0.5})["message"] == "Unrecognized request argument supplied: temprature"
    over = refused(max_tokens=1000)
    assert over["param"] == "max_tokens" and "limit 128" in over["message"]
    assert "workspace.local.endpoint_limits.max_new_tokens" in over["message"]
    assert refused(n=2)["param"] == "n"
    assert refused(temperature=3)["param"] == "temperature"
    assert refused(messages=[])["param"] == "messages"
    assert refused(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])["param"].startswith("messages.0")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert refused(tools=tools)["param"] == "tools"
    assert (
        refused(max_tokens=4, max_completion_tokens=4)["message"] == "give one of max_tokens and max_completion_tokens"
    )
    long = [{"role": "user", "content": "word " * 3000}]
    too_long = refused(messages=long, max_tokens=4)
    assert too_long["code"] == "context_length_exceeded" and "tokens" in too_long["message"]
    # the body itself: too big, not JSON, not an object -- OpenAI's error shape, never a 500
    auth = {"Authorization": f"Bearer {client.api_key}"}
    url = f"{client.base_url}chat/completions"
    huge = httpx.post(url, content=b"{" + b" " * 2_000_000 + b"}", headers=auth)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    garbled = httpx.post(url, content=b"{not json", headers=auth)
    assert garbled.status_code == 400 and "not JSON" in garbled.json()["error"]["message"]
    listed = httpx.post(url, json=[HI], headers=auth)
    assert listed.status_code == 400 and listed.json()["error"]["type"] == "invalid_request_error"
    # what SDKs, LangChain and Prompt flow send by default is accepted at its neutral value
    fine = client.chat.completions.create(
        model=ENDPOINT,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        max_tokens=3,
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
        logit_bias={},
        user="someone",
        stop=None,
    )
    assert fine.choices[0].finish_reason in {"stop", "length"}


def test_the_endpoint_key_is_required_and_never_echoed(workspace, client):
    stranger = openai.OpenAI(base_url=str(client.base_url), api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.chat.completions.create(model=ENDPOINT, messages=HI, max_tokens=2)
    assert denied.value.body["code"] == "invalid_api_key" and "not-the-key" not in str(denied.value.body)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_split_requests_are_counted_and_mirrored_like_score_requests(workspace, client):
    workspace.endpoints.set_mirror(ENDPOINT, {"green": 50})
    try:
        before = metrics(workspace)
        for _ in range(16):
            client.chat.completions.create(model=ENDPOINT, messages=HI, max_tokens=2, temperature=0)
        deadline = time.monotonic() + 120  # the copies are scored in the background
        while (after := metrics(workspace))["green"].get("mirrored", 0) == before["green"].get("mirrored", 0):
            assert time.monotonic() < deadline, "no request was mirrored to green"
            time.sleep(0.5)
    finally:
        workspace.endpoints.set_mirror(ENDPOINT, {})
    assert after["blue"]["requests"] >= before["blue"]["requests"] + 16


def test_a_client_that_leaves_mid_stream_frees_its_slot(tmp_path):
    """One scoring slot: a stream abandoned after its first piece gives it back (its generation stopped), so the
    next request is answered, and the endpoint counts the abandoned one as the client's (499), not an error."""
    ws = LocalWorkspace(tmp_path / "ws", EndpointLimits(max_concurrent_requests=1, max_new_tokens=512))
    ws.endpoints.ensure("oai-one")
    ws.endpoints.create_deployment("oai-one", "blue", ws.registry.get_foundation_model("tiny-phi3-chat"), "local-cpu")
    ws.endpoints.set_traffic("oai-one", {"blue": 100})
    try:
        credentials = ws.endpoints.credentials("oai-one")
        client = openai.OpenAI(base_url=base_url(credentials), api_key=credentials.key.get_secret_value())
        stream = client.chat.completions.create(
            model="oai-one", messages=HI, max_tokens=512, temperature=0, stream=True
        )
        next(iter(stream))
        stream.close()
        answer = client.chat.completions.create(model="oai-one", messages=HI, max_tokens=3, temperature=0)
        assert answer.choices[0].message.content
        deadline = time.monotonic() + 60
        while 'code="499"' not in (scraped := scrape(credentials)):
            assert time.monotonic() < deadline, scraped
            time.sleep(0.5)
        assert counters(scraped)["blue"]["errors"] == 0
    finally:
        ws.endpoints.delete("oai-one")


def test_endpoint_streams_to_the_workspace_port_and_tunegate_chat(workspace, client):
    request = ScoringRequest(messages=HI, parameters=ScoringParameters(do_sample=False, max_new_tokens=30))
    pieces = list(workspace.endpoints.stream(ENDPOINT, request))
    assert len(pieces) > 3 and "".join(pieces).strip() == scored(workspace, 30)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "chat", "--endpoint", ENDPOINT, "--greedy", "--max-new-tokens", "30",
         "-m", HI[0]["content"], "--set", f"workspace.state_dir={workspace.root.parent}",
         "--set", "workspace.local.endpoint_limits.max_new_tokens=128"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.split("model> ", 1)[1].rsplit("  (", 1)[0]
    assert printed.strip() == scored(workspace, 30)


def readme_python_lines() -> str:
    """The README's Python lines for the OpenAI SDK, as written."""
    section = (ROOT / "README.md").read_text().split("## Talk to it with the OpenAI SDK", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_lines_work_as_written(workspace):
    state = f"workspace.state_dir={workspace.root.parent}"
    exports = subprocess.run(
        [sys.executable, "-m", "flows.cli", "endpoint", "openai", ENDPOINT, "--set", state],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert exports.returncode == 0, exports.stderr[-2000:]
    key = workspace.endpoints.credentials(ENDPOINT).key.get_secret_value()
    assert key in exports.stdout and key not in exports.stderr and "secret" in exports.stderr
    code = readme_python_lines()
    assert len([line for line in code.splitlines() if line.strip()]) == 3 and 'model="tunegate-chat"' in code
    script = f'eval "$(cat)"\nexec {sys.executable} -c {shlex.quote(code.replace("tunegate-chat", ENDPOINT))}'
    done = subprocess.run(
        ["bash", "-c", script], input=exports.stdout, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()  # the model's answer
    missing = subprocess.run(
        [sys.executable, "-m", "flows.cli", "endpoint", "openai", "no-such", "--set", state],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert missing.returncode == 2 and "no endpoint 'no-such'" in missing.stderr


def test_langchain_chat_openai_works_unchanged(workspace):
    from langchain_openai import ChatOpenAI

    credentials = workspace.endpoints.credentials(ENDPOINT)
    chat = ChatOpenAI(
        model=ENDPOINT, base_url=base_url(credentials), api_key=credentials.key.get_secret_value(),
        temperature=0, max_tokens=12, max_retries=0,
    )  # fmt: skip
    answer = chat.invoke("What is the capital of France?")
    assert answer.content == scored(workspace, 12) and answer.response_metadata["model_name"] == "blue"
    streamed = [chunk.content for chunk in chat.stream("What is the capital of France?")]
    assert len([piece for piece in streamed if piece]) > 1 and "".join(streamed).strip() == answer.content


PROMPTFLOW_FLOW = ROOT / "tests" / "fixtures" / "openai_promptflow"


def test_prompt_flows_own_llm_tool_over_an_openai_connection_works_unchanged(workspace, tmp_path):
    """A built-in `llm` node (promptflow-tools) over an OpenAIConnection whose base_url is the endpoint's /v1."""
    home = tmp_path / "pf"
    home.mkdir()
    # no traces: collecting them starts Prompt flow's service daemon (test_promptflow checks none is left running)
    (home / "pf.yaml").write_text("telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
    env = {**os.environ, "PF_HOME_DIRECTORY": str(home), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    pf = str(Path(sys.executable).parent / "pf")
    credentials = workspace.endpoints.credentials(ENDPOINT)
    connection = tmp_path / "connection.yaml"
    connection.write_text("name: tunegate_openai\ntype: open_ai\napi_key: placeholder\nbase_url: placeholder\n")
    created = subprocess.run(
            [pf, "connection", "create", "--file", str(connection), "--set",
             f"api_key={credentials.key.get_secret_value()}", f"base_url={base_url(credentials)}"],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    assert created.returncode == 0, created.stderr[-2000:]
    flow = shutil.copytree(PROMPTFLOW_FLOW, tmp_path / "flow")
    done = subprocess.run(
        [pf, "flow", "test", "--flow", str(flow)], capture_output=True, text=True, timeout=300, env=env, cwd=flow
    )
    assert "Start prompt flow service" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = json.loads((flow / ".promptflow" / "flow.output.json").read_text())
    assert output["answer"] == scored(workspace, 12)
