"""The scoring client: one HTTP client for every workspace's endpoints (the notebook's contract).

Request `{"input_data": {"input_string": [conversation], "parameters": {...}}, "params": {}}` with the headers
`Authorization: Bearer <key>` and `azureml-model-deployment: <name>` (to reach one deployment, also one at 0%
traffic); the answer is `{"output": "<text>"}`. The adapters' `invoke` call this; tasks never speak HTTP.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workspaces.errors import TransientWorkspaceError

DEPLOYMENT_HEADER = "azureml-model-deployment"


class Credentials(BaseModel):
    model_config = ConfigDict(frozen=True)

    scoring_uri: str
    key: SecretStr  # SecretStr: a repr, log line or summary never shows it
    openai_base_url: str | None = None  # where the endpoint answers OpenAI's API too (local endpoints: .../v1)


MAX_NEW_TOKENS = 4096  # the contract's ceiling; a server may cap lower
# below this a sampling temperature overflows the logits (x / 1e-300 is inf in float32: NaN probabilities); it
# samples like greedy decoding long before that, which do_sample false says
MIN_SAMPLING_TEMPERATURE = 1e-4


def no_lone_surrogates(text: str) -> str:
    """Text a tokenizer can encode: JSON can carry a lone UTF-16 surrogate ("\\ud800"), UTF-8 cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains an unpaired UTF-16 surrogate at character {exc.start} ({text[exc.start]!r}): not text"
        ) from None
    return text


def error_words(response: httpx.Response) -> str:
    """What an error answer says, for a person: a JSON `detail` (FastAPI, the local endpoint) or `message` (Azure)
    as its text, anything else as the first 300 characters of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    said = body.get("detail", body.get("message")) if isinstance(body, dict) else None
    if isinstance(said, str):
        return said[:300]
    return response.text[:300]


class ScoringParameters(BaseModel):
    """Generation settings of a scoring request; the defaults are the notebook's. Values that can only fail at
    generation time (a zero temperature with sampling, NaN, a negative length) are refused here, naming the field:
    in a profile before anything is trained, at the endpoint as a 422."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    do_sample: bool = Field(True, description="Sample (true) or decode greedily (false).")
    temperature: float = Field(0.6, ge=0, le=100, description="Sampling temperature (> 0 when do_sample is true).")
    top_p: float = Field(
        0.9, gt=0, le=1, description="Nucleus sampling: keep the smallest token set with this probability."
    )
    max_new_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate at most.")

    @field_validator("temperature")
    @classmethod
    def _sampling_needs_a_temperature(cls, value: float, info: ValidationInfo) -> float:
        # do_sample is declared first so that it is known here, and the error carries temperature's name
        if value < MIN_SAMPLING_TEMPERATURE and info.data.get("do_sample", True):
            raise ValueError(
                f"must be at least {MIN_SAMPLING_TEMPERATURE:g} when do_sample is true (got {value:g}); for greedy "
                "decoding set do_sample false"
            )
        return value


def merged_parameters(*layers: Mapping[str, object] | None) -> ScoringParameters:
    """Generation settings: the contract's defaults, then each layer in turn (later wins), checked as the contract
    checks them. None means "not given" (MLflow sends the params a caller left out as None)."""
    given: dict[str, object] = {}
    for layer in layers:
        given.update({key: value for key, value in (layer or {}).items() if value is not None})
    return ScoringParameters.model_validate(given)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StrictStr

    @field_validator("content")
    @classmethod
    def _encodable(cls, value: str) -> str:
        return no_lone_surrogates(value)


class ScoringInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_string: list[list[ChatMessage]] = Field(
        ..., min_length=1, description="Conversations; each is answered (local: as one batch)."
    )
    parameters: ScoringParameters = Field(default_factory=ScoringParameters)

    @field_validator("input_string")
    @classmethod
    def _conversations_not_empty(cls, value: list[list[ChatMessage]]) -> list[list[ChatMessage]]:
        if any(not conversation for conversation in value):
            raise ValueError("every conversation needs at least one message")
        return value


class ScoringBody(BaseModel):
    """The scoring contract as an endpoint validates it: `{"input_data": {"input_string": [[{role, content}]],
    "parameters": {...}}, "params": {}}`."""

    model_config = ConfigDict(extra="forbid")

    input_data: ScoringInput
    params: dict[str, object] = Field(default_factory=dict)


class MlflowServingBody(BaseModel):
    """The requests `mlflow models serve` takes for a tunegate model (its signature, workspaces/local/model.py):
    `{"dataframe_records": [{"input_string": [...], "parameters": {...}}], "params": {...}}`, or `{"inputs":
    {"input_string": [...], ...}, "params": {...}}` (MLflow turns `inputs` into numpy arrays first, so there the
    conversations must have equally many messages). Local endpoints take both and answer as MLflow does,
    `{"predictions": [answer, ...]}`: a client of one works with the other."""

    model_config = ConfigDict(extra="forbid")

    inputs: ScoringInput | None = None
    dataframe_records: list[ScoringInput] | None = Field(None, min_length=1)
    params: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_input(self) -> MlflowServingBody:
        if (self.inputs is None) == (self.dataframe_records is None):
            raise ValueError("give exactly one of inputs or dataframe_records")
        return self

    @property
    def records(self) -> list[ScoringInput]:
        if self.dataframe_records is not None:
            return self.dataframe_records
        return [self.inputs] if self.inputs is not None else []  # _one_input: one of the two is given

    @property
    def conversations(self) -> list[list[ChatMessage]]:
        return [conversation for record in self.records for conversation in record.input_string]

    def parameters(self) -> ScoringParameters:
        """The contract's defaults, then the (first) record's `parameters`, then `params` (None: not given, as
        MLflow sends them); the model's predict merges them the same way."""
        return merged_parameters(self.records[0].parameters.model_dump(exclude_unset=True), self.params)


class TextParameters(BaseModel):
    """Generation settings of a text-generation request (HF pipeline names); not given: the contract's defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    return_full_text: bool = Field(False, description="Answer with the prompt followed by the generated text.")

    def scoring_parameters(self) -> ScoringParameters:
        return merged_parameters(self.model_dump(exclude={"return_full_text"}))


class TextScoringBody(BaseModel):
    """The request an MLflow text-generation model deployed on Azure ML takes, as the E2E guide's Prompt flow tool
    sends it: `{"input_data": ["text", ...], "params": {...}}`, answered `["answer", ...]` (the guide reads
    `response.json()[0]`). Local endpoints take it too: each text is one user message."""

    model_config = ConfigDict(extra="forbid")

    input_data: list[StrictStr] = Field(..., min_length=1)
    params: TextParameters = Field(default_factory=TextParameters)

    @field_validator("input_data")
    @classmethod
    def _encodable(cls, value: list[str]) -> list[str]:
        return [no_lone_surrogates(text) for text in value]

    @property
    def conversations(self) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": text}] for text in self.input_data]

    def answers(self, outputs: list[str]) -> list[str]:
        if not self.params.return_full_text:
            return outputs
        return [f"{text}\n{output}" for text, output in zip(self.input_data, outputs, strict=True)]


class ScoringRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: list[dict[str, str]]
    parameters: ScoringParameters = Field(default_factory=ScoringParameters)
    # more conversations answered in the same request (an endpoint whose batch_limit is over 1): `outputs`
    more: list[list[dict[str, str]]] = Field(default_factory=list)

    def body(self) -> dict:
        return {
            "input_data": {"input_string": [self.messages, *self.more], "parameters": self.parameters.model_dump()},
            "params": {},
        }


class ScoreResult(BaseModel):
    status_code: int
    output: str | None
    latency_ms: float
    error: str | None = None
    deployment: str | None = None  # the deployment that answered, when the endpoint says
    outputs: list[str] = []  # every answer when the request held several conversations (local endpoints)


@functools.cache
def _shared_client() -> httpx.Client:
    """One pooled client per process (thread-safe): a new httpx.Client per request cost ~20 ms of set-up (its TLS
    context) on every smoke request and chat turn. Connect errors are retried once, on a fresh connection."""
    return httpx.Client(transport=httpx.HTTPTransport(retries=1))


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
        if transport is None:  # the shared client: its connections are kept alive between requests
            response = _shared_client().post(
                credentials.scoring_uri, json=request.body(), headers=headers, timeout=timeout_s
            )
        else:
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
            error=f"HTTP {response.status_code}: {error_words(response)}",
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
    outputs = body.get("outputs")
    every = outputs if isinstance(outputs, list) and all(isinstance(o, str) for o in outputs) else [body["output"]]
    return ScoreResult(
        status_code=200, output=body["output"], latency_ms=latency_ms, deployment=answered_by, outputs=every
    )
