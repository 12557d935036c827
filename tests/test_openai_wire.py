"""OpenAI's chat-completions wire format without a server: the request as it is validated, the stop texts held
back across pieces, and the streaming client reading server-sent events (through httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from workspaces.errors import TransientWorkspaceError, WorkspaceError
from workspaces.local.streaming import StopTexts
from workspaces.openai_chat import ChatCompletionRequest, Completion, request_problem, stream_reply
from workspaces.scoring import Credentials, ScoringParameters, ScoringRequest

HI = [{"role": "user", "content": "hi"}]
CREDENTIALS = Credentials(
    scoring_uri="http://endpoint.test/score", key=SecretStr("k-123"), openai_base_url="http://endpoint.test/v1"
)


def problem(**body) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as bad:
        ChatCompletionRequest.model_validate({"messages": HI, **body})
    return request_problem(bad.value)


def test_a_request_becomes_a_conversation_and_generation_settings():
    asked = ChatCompletionRequest.model_validate(
        {
            "model": "chat",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
                {"role": "assistant", "content": "Hi!", "name": "bot"},
            ],
            "max_completion_tokens": 9,
            "top_p": 0.5,
        }
    )
    assert asked.conversation() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
    ]
    # OpenAI's defaults (temperature 1), the length asked for
    assert asked.parameters(512) == ScoringParameters(do_sample=True, temperature=1.0, top_p=0.5, max_new_tokens=9)
    greedy = ChatCompletionRequest.model_validate({"messages": HI, "temperature": 0})
    assert greedy.parameters(512).do_sample is False and greedy.parameters(512).max_new_tokens == 512
    assert ChatCompletionRequest.model_validate({"messages": HI, "stop": "\n"}).stops == ["\n"]


def test_neutral_values_are_accepted_and_what_cannot_be_honoured_is_refused_by_name():
    neutral = {
        "n": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "logprobs": False,
        "response_format": {"type": "text"},
        "tool_choice": "none",
        "tools": [],
        "user": "u",
        "stream": False,
        "stop": None,
        "seed": None,
    }
    ChatCompletionRequest.model_validate({"messages": HI, **neutral})
    assert problem(n=3) == ("n: 3 is not supported by this endpoint; ask once per answer", "n")
    assert problem(seed=7)[1] == "seed" and "temperature 0" in problem(seed=7)[0]
    assert problem(response_format={"type": "json_object"})[1] == "response_format"
    assert problem(logprobs=True)[1] == "logprobs"
    assert problem(temprature=1) == ("Unrecognized request argument supplied: temprature", "temprature")
    assert problem(temperature=2.5)[1] == "temperature"
    assert problem(temperature=float("nan"))[1] == "temperature"
    assert problem(max_tokens=0)[1] == "max_tokens"
    assert problem(stop=["a", "b", "c", "d", "e"])[0] == "stop takes at most 4 sequences"
    assert problem(stream_options={"include_usage": True})[0] == "stream_options is only allowed when stream is true"
    assert problem(messages=[{"role": "tool", "content": "x"}])[1].startswith("messages.0")
    assert problem(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])[1].startswith(
        "messages.0.content"
    )
    assert problem(messages=[{"role": "user", "content": "\ud800"}])[1].startswith("messages.0.content")
    assert problem(messages=[])[1] == "messages"


def test_stop_texts_are_held_back_across_pieces_and_never_sent():
    stops = StopTexts(["END", "\n\n"])
    assert stops.feed("Hello E") == "Hello "  # "E" may start END: held back
    assert stops.feed("very") == "Every"  # it did not
    assert stops.feed(" day EN") == " day "
    assert stops.feed("D and more") == "" and stops.hit
    assert stops.feed("later") == "" and stops.flush() == ""
    tail = StopTexts(["END"])
    assert tail.feed("almost EN") == "almost " and tail.flush() == "EN" and not tail.hit
    assert StopTexts([]).feed("anything") == "anything"
    first = StopTexts(["b", "abc"])
    assert first.feed("xxabc") == "xx"  # the stop text that starts first wins ("abc" before "b")


def test_an_answer_and_its_chunks_have_openais_shape():
    completion = Completion("blue")
    body = completion.answer("Paris.", "stop", {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    assert body["object"] == "chat.completion" and body["model"] == "blue"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris.", "refusal": None}
    event = completion.chunk({"content": "Par"})
    assert event.startswith("data: ") and event.endswith("\n\n")
    chunk = json.loads(event.removeprefix("data: "))
    assert chunk["id"] == body["id"] and chunk["object"] == "chat.completion.chunk" and "usage" not in chunk
    assert json.loads(completion.chunk({}, "stop", usage=True).removeprefix("data: "))["usage"] is None


def sse_server(events: list[str], status: int = 200, seen: list | None = None) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "deployment 'x' is busy", "type": "e"}})
        return httpx.Response(200, content="".join(events).encode(), headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(answer)


def test_the_streaming_client_reads_pieces_until_done_and_says_what_went_wrong():
    completion = Completion("blue")
    events = [completion.chunk({"role": "assistant", "content": ""}), completion.chunk({"content": "Par"})]
    events += [
        ": keep-alive\n\n",
        completion.chunk({"content": "is."}),
        completion.chunk({}, "stop"),
        "data: [DONE]\n\n",
    ]
    seen: list[httpx.Request] = []
    request = ScoringRequest(messages=HI, parameters=ScoringParameters(do_sample=False, max_new_tokens=7))
    pieces = list(stream_reply(CREDENTIALS, request, "green", transport=sse_server(events, seen=seen)))
    assert pieces == ["Par", "is."]
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://endpoint.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer k-123"
    assert sent == {"messages": HI, "stream": True, "max_tokens": 7, "temperature": 0, "top_p": 0.9, "model": "green"}
    with pytest.raises(WorkspaceError, match="ended before its answer"):
        list(stream_reply(CREDENTIALS, request, transport=sse_server(events[:3])))
    failed = [events[0], 'data: {"error": {"message": "generation failed: RuntimeError: boom"}}\n\n']
    with pytest.raises(WorkspaceError, match="boom"):
        list(stream_reply(CREDENTIALS, request, transport=sse_server(failed)))
    with pytest.raises(WorkspaceError, match=r"HTTP 429: deployment 'x' is busy"):
        list(stream_reply(CREDENTIALS, request, transport=sse_server([], status=429)))

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientWorkspaceError, match="no answer from"):
        list(stream_reply(CREDENTIALS, request, transport=httpx.MockTransport(refused)))
