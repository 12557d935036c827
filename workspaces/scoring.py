"""The scoring client: one HTTP client for every workspace's endpoints (the notebook's contract).

Request `{"input_data": {"input_string": [conversation], "parameters": {...}}, "params": {}}` with the headers
`Authorization: Bearer <key>` and `azureml-model-deployment: <name>` (to reach one deployment, also one at 0%
traffic); the answer is `{"output": "<text>"}`. The adapters' `invoke` call this; tasks never speak HTTP.
"""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from workspaces.errors import TransientWorkspaceError

DEPLOYMENT_HEADER = "azureml-model-deployment"


class Credentials(BaseModel):
    model_config = ConfigDict(frozen=True)

    scoring_uri: str
    key: SecretStr  # SecretStr: a repr, log line or summary never shows it


class ScoringParameters(BaseModel):
    """Generation settings of a scoring request; the defaults are the notebook's."""

    temperature: float = Field(0.6, description="Sampling temperature.")
    top_p: float = Field(0.9, description="Nucleus sampling: keep the smallest token set with this probability.")
    do_sample: bool = Field(True, description="Sample (true) or decode greedily (false).")
    max_new_tokens: int = Field(200, ge=1, description="Tokens to generate at most.")


class ScoringRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: list[dict[str, str]]
    parameters: ScoringParameters = Field(default_factory=ScoringParameters)

    def body(self) -> dict:
        return {
            "input_data": {"input_string": [self.messages], "parameters": self.parameters.model_dump()},
            "params": {},
        }


class ScoreResult(BaseModel):
    status_code: int
    output: str | None
    latency_ms: float
    error: str | None = None
    deployment: str | None = None  # the deployment that answered, when the endpoint says


def score(
    credentials: Credentials,
    request: ScoringRequest,
    deployment: str | None = None,
    timeout_s: float = 120,
    transport: httpx.BaseTransport | None = None,
) -> ScoreResult:
    """One scoring request. Every HTTP answer is a ScoreResult (a caller decides what an error means for it);
    no answer at all (refused, DNS, timeout) is a TransientWorkspaceError."""
    headers = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
    if deployment:
        headers[DEPLOYMENT_HEADER] = deployment
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            response = client.post(credentials.scoring_uri, json=request.body(), headers=headers)
    except httpx.TransportError as exc:
        raise TransientWorkspaceError(f"no answer from {credentials.scoring_uri}: {type(exc).__name__}: {exc}") from exc
    latency_ms = (time.perf_counter() - started) * 1000
    answered_by = response.headers.get(DEPLOYMENT_HEADER)
    if response.status_code != 200:
        return ScoreResult(
            status_code=response.status_code,
            output=None,
            latency_ms=latency_ms,
            error=f"HTTP {response.status_code}: {response.text[:300]}",
            deployment=answered_by,
        )
    try:
        body = response.json()
    except ValueError:
        return ScoreResult(status_code=200, output=None, latency_ms=latency_ms, error="response is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return ScoreResult(
            status_code=200,
            output=None,
            latency_ms=latency_ms,
            error=f'response is not {{"output": str}}: {str(body)[:200]}',
        )
    return ScoreResult(status_code=200, output=body["output"], latency_ms=latency_ms, deployment=answered_by)
