"""The local endpoint's OpenAI-compatible routes: `POST /v1/chat/completions` (with `stream: true` as server-sent
events, token by token from the model) and `GET /v1/models`, under the same key, limits, traffic split, mirror and
metrics as `/score`, every error in OpenAI's shape, so that the openai SDK, LangChain and Prompt flow's OpenAI
connection work against a fine-tuned model unchanged."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from workspaces.local.http_parts import watch_disconnect
from workspaces.local.model import PromptTooLong
from workspaces.local.settings import EndpointLimits
from workspaces.local.streaming import ReplyStream, StopTexts
from workspaces.local.traffic_metrics import TrafficMetrics
from workspaces.openai_chat import (
    DONE,
    ChatCompletionRequest,
    Completion,
    error_body,
    request_problem,
    sse,
    usage,
)
from workspaces.scoring import DEPLOYMENT_HEADER

ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 413: "request_too_large", 429: "rate_limit_exceeded"}


@dataclass(frozen=True)
class EndpointServing:
    """What the endpoint's routes share (scoring_app.create_app makes it): its models, metrics, limits as they are
    now, the key check, the bounded body read, a scoring slot, the deployment choice and the mirror."""

    name: str
    models: dict[str, Any]
    metrics: TrafficMetrics
    limits: Callable[[], EndpointLimits]
    check_key: Callable[[str | None], None]
    read_body: Callable[[Request], Awaitable[object]]
    take_slot: Callable[[], Awaitable[asyncio.Semaphore]]
    choose: Callable[[str | None], tuple[str, str]]
    mirror_a_copy: Callable[[str, list, dict], None]


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None, **headers: str):
    return JSONResponse(error_body(message, status, param, code or ERROR_CODES.get(status)), status, headers or None)


def from_http(exc: HTTPException) -> JSONResponse:
    return openai_error(exc.status_code, str(exc.detail), **dict(exc.headers or {}))


class EventStream(StreamingResponse):
    """Server-sent events whose generator is always closed when the response ends, the client gone included:
    closing it stops the generation and gives back the scoring slot at once."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            self.on_close()  # also when the client left before the first event (the generator never ran)


def add_openai_routes(app: FastAPI, serving: EndpointServing) -> None:
    def model_asked(model: str | None, header: str | None) -> str | None:
        """The deployment named by `model` (or the deployment header); None: the traffic split chooses."""
        named = None if model in (None, serving.name) else model
        if named and header and named != header:
            raise HTTPException(400, f"model {named!r} and header {DEPLOYMENT_HEADER} {header!r} name two deployments")
        named = named or header
        if named and named not in serving.models:
            raise HTTPException(
                404,
                f"The model `{named}` does not exist on endpoint {serving.name}: ask for one of its deployments "
                f"{sorted(serving.models)}, or `{serving.name}` (or no model) for its traffic split",
            )
        return named

    @app.get("/v1/models")
    async def list_models(authorization: str | None = Header(None)) -> Response:
        try:
            serving.check_key(authorization)
        except HTTPException as exc:
            return from_http(exc)
        names = [serving.name, *sorted(serving.models)]  # the endpoint (its traffic split), then each deployment
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": n, "object": "model", "created": 0, "owned_by": "tunegate"} for n in names],
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, authorization: str | None = Header(None)) -> Response:
        try:
            serving.check_key(authorization)
            body = await serving.read_body(request)
            limits = serving.limits()
            try:
                asked = ChatCompletionRequest.model_validate(body)
                if (asked.max_new_tokens or 0) > limits.max_new_tokens:
                    return openai_error(
                        400,
                        f"max_tokens {asked.max_new_tokens} is over this endpoint's limit {limits.max_new_tokens}; "
                        "ask for fewer, or raise workspace.local.endpoint_limits.max_new_tokens in the profile (it "
                        "applies when the endpoint starts)",
                        "max_tokens",
                    )
                parameters = asked.parameters(limits.max_new_tokens)
            except ValidationError as exc:
                message, param = request_problem(exc)
                return openai_error(400, message, param)
            target, kind = serving.choose(model_asked(asked.model, request.headers.get(DEPLOYMENT_HEADER)))
            gate = await serving.take_slot()
        except HTTPException as exc:
            return from_http(exc)
        answering = Answering(serving, target, kind, gate)
        try:
            conversation = asked.conversation()
            if kind == "split":
                serving.mirror_a_copy(target, [conversation], parameters.model_dump())
            loop = asyncio.get_running_loop()
            reply = await run_in_threadpool(
                partial(
                    serving.models[target].stream,
                    conversation,
                    parameters.model_dump(),
                    loop=loop,
                    max_prompt_tokens=limits.max_prompt_tokens,
                    max_time_s=limits.generation_timeout_s,
                )
            )
        except PromptTooLong as exc:
            answering.done(413)
            return openai_error(400, str(exc), "messages", "context_length_exceeded")
        except BaseException:
            answering.done(500)
            raise
        reply.start()
        headers = {DEPLOYMENT_HEADER: target}
        completion = Completion(target)
        if asked.stream:
            include_usage = bool(asked.stream_options and asked.stream_options.include_usage)
            events = answering.events(reply, StopTexts(asked.stops), completion, include_usage)

            def closed() -> None:
                reply.close()
                answering.done(499)  # a no-op when the events ended the answer themselves

            return EventStream(events, closed, headers={**headers, "Cache-Control": "no-cache"})
        gone = threading.Event()
        watcher = asyncio.create_task(watch_disconnect(request, gone))
        watcher.add_done_callback(lambda _: reply.close() if gone.is_set() else None)
        try:
            text, finish_reason = await answering.whole(reply, StopTexts(asked.stops))
        except Exception as exc:  # noqa: BLE001 - generation failed: OpenAI's 500, in its shape
            return openai_error(500, f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            watcher.cancel()
        return JSONResponse(
            completion.answer(text, finish_reason, usage(reply.prompt_tokens, reply.completion_tokens)),
            headers=headers,
        )


class Answering:
    """One answer in progress: it holds a scoring slot until `done`, which also records the request's metrics."""

    def __init__(self, serving: EndpointServing, target: str, kind: str, gate: asyncio.Semaphore) -> None:
        self.serving, self.target, self.kind, self.gate = serving, target, kind, gate
        self.started = asyncio.get_running_loop().time()
        self.finished = False

    def done(self, code: int) -> None:
        if self.finished:
            return
        self.finished = True
        self.gate.release()
        if self.target in self.serving.models:
            latency = asyncio.get_running_loop().time() - self.started
            self.serving.metrics.observe(self.target, self.kind, code, latency)

    async def whole(self, reply: ReplyStream, stops: StopTexts) -> tuple[str, str]:
        code = 500
        text = ""
        try:
            async for piece in reply.pieces():
                text += stops.feed(piece)
                if stops.hit:
                    reply.close()
                    break
            text += stops.flush()
            code = 200
        finally:
            self.done(code)
        return text.strip(), finish_reason(reply, stops)

    async def events(
        self, reply: ReplyStream, stops: StopTexts, completion: Completion, include_usage: bool
    ) -> AsyncIterator[str]:
        """OpenAI's chunks: the role first, then each piece of text as the model makes it, then the finish reason
        (and the usage when asked for), then [DONE]. A failure mid-way is an error event, as OpenAI sends one."""
        code = 499  # until the answer is complete: the client left (the generator was closed at a yield)
        try:
            yield completion.chunk({"role": "assistant", "content": ""}, usage=include_usage)
            started = False  # the answer's leading whitespace is dropped, as /score strips its answers
            async for piece in reply.pieces():
                sent = stops.feed(piece)
                if not started:
                    sent = sent.lstrip()
                    started = bool(sent)
                if sent:
                    yield completion.chunk({"content": sent}, usage=include_usage)
                if stops.hit:
                    reply.close()
                    break
            rest = stops.flush()
            if rest and (started or rest.strip()):
                yield completion.chunk({"content": rest if started else rest.lstrip()}, usage=include_usage)
            yield completion.chunk({}, finish_reason(reply, stops), usage=include_usage)
            if include_usage:
                yield completion.usage_chunk(usage(reply.prompt_tokens, reply.completion_tokens))
            yield DONE
            code = 200
        except Exception as exc:  # noqa: BLE001 - the headers are sent: the failure can only be an event
            code = 500
            yield sse(error_body(f"generation failed: {type(exc).__name__}: {exc}", 500))
        finally:
            reply.close()  # the client left or the answer is complete: the generation thread stops
            self.done(code)


def finish_reason(reply: ReplyStream, stops: StopTexts) -> str:
    """OpenAI's: "stop" at a stop text or the model's own end, "length" at max_tokens (or the endpoint's time)."""
    return "stop" if stops.hit or reply.ended_by_model else "length"
