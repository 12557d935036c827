"""A registered tunegate model is a standard MLflow model: stock `mlflow models serve --env-manager local` serves a
registered version with the seed's contract (input_string + parameters) and MLflow's params, and a local endpoint
answers the very same request the same way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from workspaces.local.workspace import LocalWorkspace
from workspaces.ports import ModelVersion

pytestmark = pytest.mark.slow

FOUNDATION = "tiny-phi3-chat"
CONVERSATIONS = [
    [{"role": "user", "content": "Name three colours."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a river?"}],
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    workspace = LocalWorkspace(tmp_path_factory.mktemp("serve") / "workspace")
    workspace.registry.get_foundation_model(FOUNDATION)  # built and registered as version 1, as every local run does
    yield workspace
    for endpoint in workspace.inventory().endpoints:
        workspace.endpoints.delete(endpoint)


@pytest.fixture(scope="module")
def mlflow_server(workspace):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": workspace.registry.tracking_uri}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{FOUNDATION}/1"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = (workspace.root / "mlflow-serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, (workspace.root / "mlflow-serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 180 s"
        time.sleep(0.5)
    yield url
    os.killpg(process.pid, 15)
    process.wait(30)
    log.close()


@pytest.fixture(scope="module")
def endpoint(workspace):
    workspace.endpoints.ensure("serve-compare")
    workspace.endpoints.create_deployment(
        "serve-compare", "blue", ModelVersion(name=FOUNDATION, version="1"), "local-cpu"
    )
    workspace.endpoints.set_traffic("serve-compare", {"blue": 100})
    credentials = workspace.endpoints.credentials("serve-compare")
    return credentials.scoring_uri, {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}


def test_mlflow_serve_and_the_local_endpoint_answer_one_request_alike(mlflow_server, endpoint):
    scoring_uri, headers = endpoint
    request = {
        "dataframe_records": [
            {"input_string": CONVERSATIONS, "parameters": {"do_sample": False, "max_new_tokens": 24}}
        ],
        "params": {"max_new_tokens": 6},  # params win over the record's parameters
    }
    served = httpx.post(f"{mlflow_server}/invocations", json=request, timeout=120)
    assert served.status_code == 200, served.text
    local = httpx.post(scoring_uri, json=request, headers=headers, timeout=120)
    assert local.status_code == 200, local.text
    assert served.json() == local.json()
    answers = served.json()["predictions"]
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)
    # the seed's own request to the local endpoint gives the same first answer
    contract = {
        "input_data": {"input_string": CONVERSATIONS[:1], "parameters": {"do_sample": False, "max_new_tokens": 6}}
    }
    seed = httpx.post(scoring_uri, json=contract, headers=headers, timeout=120)
    assert seed.status_code == 200 and seed.json() == {"output": answers[0]}
    # MLflow's `inputs` form (conversations of equal length: MLflow makes numpy arrays of them first)
    same_length = {"inputs": {"input_string": [CONVERSATIONS[0], CONVERSATIONS[0]]}, "params": {"do_sample": False}}
    served = httpx.post(f"{mlflow_server}/invocations", json=same_length, timeout=120)
    local = httpx.post(scoring_uri, json=same_length, headers=headers, timeout=120)
    assert served.status_code == local.status_code == 200 and served.json() == local.json()


def test_parameters_reach_predict_through_mlflow_serve(mlflow_server):
    def answer(**where) -> str:
        body = {"inputs": {"input_string": CONVERSATIONS[:1]}, **where}
        response = httpx.post(f"{mlflow_server}/invocations", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    long = answer(params={"do_sample": False, "max_new_tokens": 24})
    short = answer(params={"do_sample": False, "max_new_tokens": 2})
    assert len(short) < len(long) and long.startswith(short)
    inside = {"inputs": {"input_string": CONVERSATIONS[:1], "parameters": {"do_sample": False, "max_new_tokens": 2}}}
    response = httpx.post(f"{mlflow_server}/invocations", json=inside, timeout=120)
    assert response.json()["predictions"][0] == short  # the seed's place for them works as well
    bad = httpx.post(
        f"{mlflow_server}/invocations",
        json={"inputs": {"input_string": CONVERSATIONS[:1]}, "params": {"do_sample": True, "temperature": 0}},
        timeout=60,
    )
    assert bad.status_code >= 400 and "temperature" in bad.text  # checked as the endpoint checks it


def test_the_registered_model_declares_its_signature_with_params(workspace):
    import mlflow

    info = mlflow.models.get_model_info(f"{workspace.root}/foundation/{FOUNDATION}/mlflow_model")
    assert {param.name for param in info.signature.params.params} == {
        "do_sample",
        "temperature",
        "top_p",
        "max_new_tokens",
    }
    assert Path(workspace.root / "foundation" / FOUNDATION / "mlflow_model" / "MLmodel").read_text().count("params")


def test_the_e2e_guides_request_shape_is_answered_as_a_list(endpoint):
    """The E2E guide's Prompt flow tool posts a text-generation request and reads `response.json()[0]`."""
    scoring_uri, headers = endpoint
    guide = {
        "input_data": ["Who founded Microsoft?"],
        "params": {"temperature": 0.7, "max_new_tokens": 128, "do_sample": True, "return_full_text": True},
    }
    answered = httpx.post(scoring_uri, json=guide, headers=headers, timeout=120)
    assert answered.status_code == 200, answered.text
    [text] = answered.json()
    assert text.startswith("Who founded Microsoft?\n")  # return_full_text: the prompt, then the answer
    greedy = {"input_data": ["Name three colours.", "What is a river?"], "params": {"do_sample": False}}
    both = httpx.post(scoring_uri, json=greedy, headers=headers, timeout=120).json()
    alone = httpx.post(
        scoring_uri,
        json={**greedy, "input_data": greedy["input_data"][:1]},
        headers=headers,
        timeout=120,
    ).json()
    assert len(both) == 2 and both[0] == alone[0]
    unknown = httpx.post(scoring_uri, json={"input_data": ["hi"], "params": {"top_k": 5}}, headers=headers, timeout=60)
    assert unknown.status_code == 422 and "top_k" in unknown.text
    too_long = httpx.post(
        scoring_uri, json={"input_data": ["hi"], "params": {"max_new_tokens": 100_000}}, headers=headers, timeout=60
    )
    assert too_long.status_code == 422 and "max_new_tokens" in too_long.text
