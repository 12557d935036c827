"""The local endpoint's ASGI app (FastAPI): scoring with key auth and traffic weights, health, and the admin API
that adds and removes deployments and sets traffic (workspaces/local/server.py runs it)."""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# imported at module level: FastAPI resolves the handlers' (string) annotations in this module's globals
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from workspaces.local.http_parts import bearer_token, read_json_body, watch_disconnect
from workspaces.local.model import PromptTooLong
from workspaces.local.openai_routes import EndpointServing, add_openai_routes
from workspaces.local.processes import write_json
from workspaces.local.settings import EndpointLimits
from workspaces.local.traffic_metrics import MIRROR_MAX_PERCENT, TrafficMetrics
from workspaces.scoring import DEPLOYMENT_HEADER, MlflowServingBody, ScoringBody, TextScoringBody

READERS_PER_SLOT = 4  # request bodies read at once per scoring slot


def create_app(endpoint_dir: Path, key: str, admin_token: str):
    from workspaces.local.devices import DeviceFacts, device_facts, serving_device
    from workspaces.local.model import load_chat_model

    def load(deployment: dict) -> Any:
        # a local-cuda deployment's model on the GPU (refused, naming the fix, where torch sees none)
        instance_type = deployment.get("instance_type", "local-cpu")
        facts = device_facts() if instance_type == "local-cuda" else DeviceFacts()  # a CPU model never asks CUDA
        return load_chat_model(Path(deployment["model_dir"]), serving_device(instance_type, facts))

    state_file = endpoint_dir / "endpoint.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    state.setdefault("deployments", {})
    state.setdefault("traffic", {})
    state.setdefault("mirror", {})
    metrics = TrafficMetrics()
    mirroring: set[asyncio.Task] = set()  # copies in flight (a reference each, so none is collected mid-way)
    models: dict[str, Any] = {name: load(deployment) for name, deployment in state["deployments"].items()}
    limits = EndpointLimits.model_validate(state.get("limits") or {})
    # requests scored at once; the others wait in line with their bodies read. Bodies are read first, each within
    # body_timeout_s and at most READERS_PER_SLOT per scoring slot at once (memory stays bounded): a client that
    # declares a body and never sends it holds a reader for seconds, never a scoring slot
    in_flight = asyncio.Semaphore(limits.max_concurrent_requests)
    readers = asyncio.Semaphore(limits.max_concurrent_requests * READERS_PER_SLOT)
    lock = threading.Lock()
    # no schema or docs routes: they would show the admin API to anyone who can reach the port
    app = FastAPI(title=f"tunegate endpoint {endpoint_dir.name}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ValidationError)
    async def invalid_request(request: Request, exc: ValidationError) -> JSONResponse:
        # a client's mistake, with the field it is in: never a 500
        errors = [
            {"field": ".".join(str(part) for part in error["loc"]) or "body", "error": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)[:20]
        ]
        return JSONResponse({"detail": "bad scoring request", "errors": errors}, status_code=422)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse({"detail": "request nested too deeply"}, status_code=400)

    def save() -> None:
        write_json(state_file, state)

    def check(expected: str, authorization: str | None) -> None:
        token = bearer_token(authorization)
        if not token or not hmac.compare_digest(token.encode(), expected.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or invalid key: send the header 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def details() -> dict:
        return {"status": "ok", "deployments": sorted(models), "traffic": state["traffic"], "mirror": state["mirror"]}

    @app.get("/health")
    async def health(authorization: str | None = Header(None)) -> dict:  # async: no hop to the thread pool
        """Status for anyone; deployments and traffic only with the scoring key or the admin token."""
        token = bearer_token(authorization).encode()
        if token and any(hmac.compare_digest(token, secret.encode()) for secret in (key, admin_token)):
            return details()
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus_metrics(authorization: str | None = Header(None)) -> Response:
        """Each deployment's requests and latency, for tunegate's rollout and any Prometheus (with the scoring key or
        the admin token as its bearer credentials)."""
        token = bearer_token(authorization).encode()
        if not (token and any(hmac.compare_digest(token, secret.encode()) for secret in (key, admin_token))):
            check(key, authorization)  # 401, with the header to send
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/score")
    async def score(request: Request, authorization: str | None = Header(None)) -> JSONResponse:
        check(key, authorization)
        body = await read_body_in_time(request)
        gate = await take_slot()
        try:
            return await scored(request, body)
        finally:
            gate.release()

    async def take_slot() -> asyncio.Semaphore:
        """A scoring slot, waited for in line (429 after max_queue_wait_s); release the one returned."""
        gate = in_flight  # set_limits may replace it meanwhile: the one taken is the one released
        await wait_in_line(gate, f"{limits.max_concurrent_requests} requests in progress")
        return gate

    async def wait_in_line(gate: asyncio.Semaphore, what: str) -> None:
        try:
            await asyncio.wait_for(gate.acquire(), timeout=limits.max_queue_wait_s)
        except TimeoutError:
            raise HTTPException(
                status_code=429,
                detail=f"endpoint busy: {what} and this one waited {limits.max_queue_wait_s:g} s; retry later",
                headers={"Retry-After": "1"},
            ) from None

    async def read_body_in_time(request: Request) -> object:
        reading = readers
        await wait_in_line(reading, f"{limits.max_concurrent_requests * READERS_PER_SLOT} request bodies arriving")
        try:
            return await asyncio.wait_for(read_json_body(request, limits.max_body_bytes), timeout=limits.body_timeout_s)
        except TimeoutError:
            raise HTTPException(
                status_code=408, detail=f"request body not received within {limits.body_timeout_s:g} s"
            ) from None
        finally:
            reading.release()

    async def scored(request: Request, body: object) -> JSONResponse:
        mlflow_shape = isinstance(body, dict) and not {"inputs", "dataframe_records"}.isdisjoint(body)
        text_shape = isinstance(body, dict) and isinstance(body.get("input_data"), list)
        texts = None
        given: Sequence[Sequence[Any]]
        if mlflow_shape:  # `mlflow models serve`'s request; answered in its shape below
            served = MlflowServingBody.model_validate(body)
            given, parameters = served.conversations, served.parameters()
        elif text_shape:  # a text-generation model's request (the E2E guide's Prompt flow tool); a list answers it
            texts = TextScoringBody.model_validate(body)
            given, parameters = texts.conversations, texts.params.scoring_parameters()
        else:
            scoring_input = ScoringBody.model_validate(body).input_data
            given, parameters = scoring_input.input_string, scoring_input.parameters
        if parameters.max_new_tokens > limits.max_new_tokens:
            raise HTTPException(
                status_code=422,
                detail=f"parameters.max_new_tokens {parameters.max_new_tokens} is over this endpoint's limit "
                f"{limits.max_new_tokens}; ask for fewer, or raise workspace.local.endpoint_limits.max_new_tokens "
                "in the profile (it applies when the endpoint starts)",
            )
        target, kind = choose(request.headers.get(DEPLOYMENT_HEADER))
        conversations = [[dict(message) for message in c] for c in given]
        if len(conversations) > limits.max_conversations:
            raise HTTPException(
                status_code=422,
                detail=f"input_string has {len(conversations)} conversations; this endpoint answers at "
                f"most {limits.max_conversations} in one request",
            )
        if kind == "split":
            mirror_a_copy(target, conversations, parameters.model_dump())
        client_gone = threading.Event()
        watcher = asyncio.create_task(watch_disconnect(request, client_gone))
        started, code = asyncio.get_running_loop().time(), 500
        try:
            outputs = await run_in_threadpool(
                models[target].chat,
                conversations,
                parameters.model_dump(),
                max_prompt_tokens=limits.max_prompt_tokens,
                max_time_s=limits.generation_timeout_s,
                stop=client_gone,
            )
            code = 200
        except PromptTooLong as exc:
            code = 413
            raise HTTPException(status_code=413, detail=str(exc)) from None
        finally:
            watcher.cancel()
            metrics.observe(target, kind, code, asyncio.get_running_loop().time() - started)
        # one conversation: the seed's {"output": text}; several: also every answer, in order, under "outputs"
        answer: Any = {"output": outputs[0]} if len(outputs) == 1 else {"output": outputs[0], "outputs": outputs}
        if mlflow_shape:
            answer = {"predictions": outputs}
        elif texts is not None:
            answer = texts.answers(outputs)
        return JSONResponse(answer, headers={DEPLOYMENT_HEADER: target})

    def choose(target: str | None) -> tuple[str, str]:
        """The deployment that answers, and how it was chosen: the one named ("targeted", also at 0% traffic), or
        one the traffic split draws ("split")."""
        if target:
            if target not in models:
                raise HTTPException(status_code=404, detail=f"deployment {target!r} not found on this endpoint")
            return target, "targeted"
        weighted = [(name, pct) for name, pct in state["traffic"].items() if pct > 0 and name in models]
        if not weighted:
            raise HTTPException(status_code=404, detail="no deployment takes traffic on this endpoint")
        return random.choices([n for n, _ in weighted], weights=[p for _, p in weighted])[0], "split"

    def mirror_a_copy(live: str, conversations: list, parameters: dict) -> None:
        """Copy this request to the mirrored deployment (state["mirror"]) with its probability, in the background:
        the live answer never waits for it, and a copy that finds no free scoring slot is dropped, never queued."""
        for name, share in state["mirror"].items():
            if name == live or name not in models or random.random() * 100 >= share:
                continue
            if in_flight.locked():
                metrics.dropped.labels(name).inc()
                continue
            copy = asyncio.create_task(score_a_copy(name, conversations, parameters))
            mirroring.add(copy)
            copy.add_done_callback(mirroring.discard)

    async def score_a_copy(name: str, conversations: list, parameters: dict) -> None:
        gate = in_flight
        if gate.locked():  # taken since the copy was made: the live requests have it
            metrics.dropped.labels(name).inc()
            return
        await gate.acquire()  # free: taken without waiting
        started, code = asyncio.get_running_loop().time(), 500
        try:
            await run_in_threadpool(
                models[name].chat,
                conversations,
                parameters,
                max_prompt_tokens=limits.max_prompt_tokens,
                max_time_s=limits.generation_timeout_s,
            )
            code = 200
        except PromptTooLong:
            code = 413
        except Exception:  # noqa: BLE001 - a copy's failure is counted, never the live request's
            code = 500
        finally:
            gate.release()
            if name in models:
                metrics.observe(name, "mirror", code, asyncio.get_running_loop().time() - started)

    @app.put("/admin/mirror")
    def set_mirror(mirror: dict[str, int], authorization: str | None = Header(None)) -> dict:
        check(admin_token, authorization)
        unknown = sorted(set(mirror) - set(models))
        if unknown:
            raise HTTPException(status_code=404, detail=f"unknown deployments {unknown}")
        wanted = {name: share for name, share in mirror.items() if share}
        if len(wanted) > 1 or any(not 0 < share <= MIRROR_MAX_PERCENT for share in wanted.values()):
            raise HTTPException(
                status_code=400,
                detail=f"mirror one deployment at 1..{MIRROR_MAX_PERCENT}% of live traffic (or none): {mirror}",
            )
        serving = sorted(name for name in wanted if state["traffic"].get(name, 0) > 0)
        if serving:
            raise HTTPException(status_code=409, detail=f"{serving} take live traffic: a mirror must take none")
        with lock:
            state["mirror"] = wanted
            save()
        return details()

    @app.post("/admin/deployments/{name}")
    def add_deployment(name: str, payload: dict, authorization: str | None = Header(None)) -> dict:
        check(admin_token, authorization)
        model = load(payload)  # load before touching state: a bad model changes nothing
        with lock:
            models[name] = model
            state["deployments"][name] = payload
            state["traffic"].setdefault(name, 0)
            save()
        return details()

    @app.delete("/admin/deployments/{name}")
    def delete_deployment(name: str, authorization: str | None = Header(None)) -> dict:
        check(admin_token, authorization)
        with lock:
            if state["traffic"].get(name, 0) > 0:
                raise HTTPException(
                    status_code=409, detail=f"deployment {name} takes {state['traffic'][name]}% of traffic"
                )
            models.pop(name, None)
            state["deployments"].pop(name, None)
            state["traffic"].pop(name, None)
            state["mirror"].pop(name, None)
            save()
        return details()

    @app.put("/admin/limits")
    def set_limits(payload: dict, authorization: str | None = Header(None)) -> dict:
        nonlocal limits, in_flight, readers
        check(admin_token, authorization)
        new = EndpointLimits.model_validate(payload)
        with lock:
            if new.max_concurrent_requests != limits.max_concurrent_requests:
                in_flight = asyncio.Semaphore(new.max_concurrent_requests)  # requests in flight release the old one
                readers = asyncio.Semaphore(new.max_concurrent_requests * READERS_PER_SLOT)
            limits = new
            state["limits"] = new.model_dump()
            save()
        return details()

    @app.put("/admin/traffic")
    def set_traffic(traffic: dict[str, int], authorization: str | None = Header(None)) -> dict:
        check(admin_token, authorization)
        unknown = sorted(set(traffic) - set(models))
        if unknown:
            raise HTTPException(status_code=404, detail=f"unknown deployments {unknown}")
        if any(pct < 0 for pct in traffic.values()) or sum(traffic.values()) not in (0, 100):
            raise HTTPException(status_code=400, detail=f"traffic must be >= 0 and sum to 100 (or 0): {traffic}")
        mirrored = sorted(name for name in state["mirror"] if traffic.get(name, 0) > 0)
        if mirrored:
            raise HTTPException(status_code=409, detail=f"{mirrored} mirror live traffic: stop the mirror first")
        with lock:
            state["traffic"] = {name: traffic.get(name, 0) for name in models}
            save()
        return details()

    add_openai_routes(
        app,
        EndpointServing(
            name=endpoint_dir.name,
            models=models,
            metrics=metrics,
            limits=lambda: limits,
            check_key=lambda authorization: check(key, authorization),
            read_body=read_body_in_time,
            take_slot=take_slot,
            choose=choose,
            mirror_a_copy=mirror_a_copy,
        ),
    )
    return app
