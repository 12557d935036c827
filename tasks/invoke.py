"""Score a chat request against an endpoint: plain HTTP, the same for every workspace (the notebook's contract)."""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel

from workspaces.base import Credentials


class ScoringParameters(BaseModel):
    temperature: float = 0.6
    top_p: float = 0.9
    do_sample: bool = True
    max_new_tokens: int = 200


def scoring_request(messages: list[dict[str, str]], parameters: ScoringParameters) -> dict:
    return {"input_data": {"input_string": [messages], "parameters": parameters.model_dump()}, "params": {}}


class ScoreResult(BaseModel):
    status_code: int
    output: str | None
    latency_ms: float
    error: str | None = None


def score(
    credentials: Credentials,
    messages: list[dict[str, str]],
    parameters: ScoringParameters,
    deployment: str | None = None,
    timeout_s: float = 120,
    transport: httpx.BaseTransport | None = None,
) -> ScoreResult:
    headers = {"Authorization": f"Bearer {credentials.key.get_secret_value()}", "Content-Type": "application/json"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    started = time.perf_counter()
    with httpx.Client(timeout=timeout_s, transport=transport) as client:
        response = client.post(credentials.scoring_uri, json=scoring_request(messages, parameters), headers=headers)
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return ScoreResult(status_code=response.status_code, output=None, latency_ms=latency_ms,
                           error=f"HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError:
        return ScoreResult(status_code=200, output=None, latency_ms=latency_ms, error="response is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return ScoreResult(status_code=200, output=None, latency_ms=latency_ms,
                           error=f'response is not {{"output": str}}: {str(body)[:200]}')
    return ScoreResult(status_code=200, output=body["output"], latency_ms=latency_ms)
