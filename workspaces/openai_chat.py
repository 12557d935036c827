"""OpenAI's chat-completions wire format (`POST /v1/chat/completions`), as local endpoints answer it and `tunegate
chat` streams from it: the request as OpenAI validates it (stricter where unsure: what this endpoint cannot honour
is refused, naming the field, never silently ignored), the answers and stream chunks in OpenAI's shapes, its error
body, and a client that reads the server-sent events.

https://platform.openai.com/docs/api-reference/chat/create: `model`, `messages`, `temperature` 0..2 (default 1),
`top_p` (default 1), `max_tokens` / `max_completion_tokens`, `n`, `stop`, `stream` + `stream_options`; an
argument the API does not know is a 400 "Unrecognized request argument supplied".
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workspaces.errors import TransientWorkspaceError, WorkspaceError
from workspaces.scoring import (
    Credentials,
    ScoringParameters,
    ScoringRequest,
    error_words,
    no_lone_surrogates,
)

OPENAI_PATH = "/v1/chat/completions"
# an OpenAI role -> the chat template's; "developer" is OpenAI's newer name for system instructions
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    """A message as OpenAI takes it: content a string or a list of text parts; `name` is kept by OpenAI for the
    model's eyes and has no place in a chat template, so it is accepted and not used."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None

    @field_validator("content")
    @classmethod
    def _encodable(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        if isinstance(value, str):
            return no_lone_surrogates(value)
        for part in value:
            no_lone_surrogates(part.text)
        return value

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": ROLES[self.role], "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


# arguments a local model cannot honour: accepted at their neutral value (or null), refused otherwise, with a hint
NEUTRAL: dict[str, tuple[object, str]] = {
    "n": (1, "ask once per answer"),
    "presence_penalty": (0, ""),
    "frequency_penalty": (0, ""),
    "logit_bias": ({}, ""),
    "logprobs": (False, ""),
    "response_format": ({"type": "text"}, "ask for the format in the messages"),
    "seed": (None, "temperature 0 decodes greedily: the same answer every time"),
    "tools": ([], ""),
    "tool_choice": ("none", ""),
    "store": (False, ""),
}


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body. `model`: a deployment of this endpoint (that one answers, also at 0% traffic), the
    endpoint's own name or nothing (the traffic split chooses). Arguments that only change the answer in ways a
    local model cannot (tools, logprobs, n > 1, penalties) are refused when asked for, accepted at their neutral
    value (what SDKs, LangChain and Prompt flow send by default)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    messages: list[Message] = Field(..., min_length=1)
    model: StrictStr | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @field_validator(*NEUTRAL)
    @classmethod
    def _what_this_endpoint_honours(cls, value: object, info: ValidationInfo) -> object:
        neutral, hint = NEUTRAL[str(info.field_name)]
        if value is not None and value != neutral:
            raise ValueError(f"{value!r} is not supported by this endpoint{'; ' + hint if hint else ''}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give one of max_tokens and max_completion_tokens")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if len(self.stops) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def conversation(self) -> list[dict[str, str]]:
        return [message.plain() for message in self.messages]

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def parameters(self, default_max_tokens: int) -> ScoringParameters:
        """Temperature 0 decodes greedily (OpenAI's "deterministic"); the defaults are OpenAI's (1 and 1), the
        length the endpoint's limit when none is asked for."""
        temperature = 1.0 if self.temperature is None else self.temperature
        asked = self.max_new_tokens
        sampled = temperature > 0
        return ScoringParameters(
            do_sample=sampled,
            temperature=temperature if sampled else ScoringParameters().temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_new_tokens=asked or default_max_tokens,
        )


def request_problem(exc: ValidationError) -> tuple[str, str | None]:
    """OpenAI's words for a bad body: an unknown argument, or the first field that is wrong and why."""
    error = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return f"Unrecognized request argument supplied: {location}", location
    message = str(error["msg"]).removeprefix("Value error, ")
    return (f"{location}: {message}" if location else message), (location or None)


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Completion:
    """The ids and times one answer's body and chunks share."""

    def __init__(self, model: str) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}

    def answer(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage}

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None, usage: bool = False) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body = {**self._head("chat.completion.chunk"), "choices": [choice]}
        if usage:  # stream_options.include_usage: every chunk carries usage null, the last one the counts
            body["usage"] = None
        return sse(body)

    def usage_chunk(self, usage: dict[str, int]) -> str:
        return sse({**self._head("chat.completion.chunk"), "choices": [], "usage": usage})


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(body: object) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


def base_url(credentials: Credentials) -> str:
    """The endpoint's OpenAI base URL; WorkspaceError for an endpoint that has none (Azure's scoring contract)."""
    if credentials.openai_base_url is None:
        raise WorkspaceError(
            f"{credentials.scoring_uri} answers only the scoring contract, not OpenAI's API (local endpoints do both)"
        )
    return credentials.openai_base_url.rstrip("/")


def stream_reply(
    credentials: Credentials,
    request: ScoringRequest,
    deployment: str | None = None,
    timeout_s: float = 120,
    transport: httpx.BaseTransport | None = None,
) -> Iterator[str]:
    """The answer to `request.messages`, piece by piece as the endpoint streams it. An HTTP error, an error event
    or a cut stream raise WorkspaceError with the endpoint's words; no answer at all, TransientWorkspaceError."""
    parameters = request.parameters
    body: dict[str, Any] = {
        "messages": request.messages,
        "stream": True,
        "max_tokens": parameters.max_new_tokens,
        "temperature": parameters.temperature if parameters.do_sample else 0,
        "top_p": parameters.top_p,
    }
    if deployment:
        body["model"] = deployment
    headers = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
    url = base_url(credentials) + OPENAI_PATH.removeprefix("/v1")
    try:
        with (
            httpx.Client(timeout=timeout_s, transport=transport) as client,
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            if response.status_code != 200:
                response.read()
                raise WorkspaceError(f"HTTP {response.status_code}: {openai_error_words(response)}")
            finished = False
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    finished = True
                    break
                event = json.loads(data)
                if "error" in event:
                    raise WorkspaceError(f"the endpoint stopped answering: {event['error'].get('message')}")
                for choice in event.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
            if not finished:
                raise WorkspaceError("the endpoint's stream ended before its answer did")
    except httpx.TransportError as exc:
        raise TransientWorkspaceError(f"no answer from {url}: {type(exc).__name__}: {exc}") from exc


def openai_error_words(response: httpx.Response) -> str:
    try:
        said = response.json().get("error", {}).get("message")
    except (ValueError, AttributeError):
        said = None
    return said[:300] if isinstance(said, str) else error_words(response)
