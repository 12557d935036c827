"""A local online endpoint: `python -m workspaces.local.server ENDPOINT_DIR [--owner-pid PID]`.

One process per endpoint on 127.0.0.1 and a free port, serving several deployments with traffic weights:
- POST /score: key auth (`Authorization: Bearer <key>`), the notebook's scoring contract, header
  `azureml-model-deployment` to target one deployment (also one at 0%: that is how a new one is smoked);
- GET /health;
- /admin/...: add or remove a deployment and set traffic, with a separate admin token.
Keys come in through the environment, never argv (argv shows in `ps`). The endpoint's deployments and traffic
are saved in ENDPOINT_DIR/endpoint.json so a restarted server comes back as it was. With --owner-pid the server
exits when that process is gone, so an ephemeral endpoint cannot outlive the run that made it.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

# imported at module level: FastAPI resolves the handlers' (string) annotations in this module's globals
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from workspaces.local.processes import write_json
from workspaces.scoring import DEPLOYMENT_HEADER

KEY_ENV, ADMIN_ENV = "TUNEGATE_ENDPOINT_KEY", "TUNEGATE_ADMIN_TOKEN"


def create_app(endpoint_dir: Path, key: str, admin_token: str):
    from workspaces.local.model import load_chat_model

    state_file = endpoint_dir / "endpoint.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    state.setdefault("deployments", {})
    state.setdefault("traffic", {})
    models: dict[str, Any] = {
        name: load_chat_model(Path(dep["model_dir"])) for name, dep in state["deployments"].items()
    }
    lock = threading.Lock()
    app = FastAPI(title=f"tunegate endpoint {endpoint_dir.name}", docs_url=None, redoc_url=None)

    def save() -> None:
        write_json(state_file, state)

    def check(expected: str, authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(token.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="missing or invalid key")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "deployments": sorted(models), "traffic": state["traffic"]}

    @app.post("/score")
    async def score(request: Request, authorization: str | None = Header(None)) -> JSONResponse:
        check(key, authorization)
        target = request.headers.get(DEPLOYMENT_HEADER)
        if target:
            if target not in models:
                raise HTTPException(status_code=404, detail=f"deployment {target!r} not found on this endpoint")
        else:
            weighted = [(name, pct) for name, pct in state["traffic"].items() if pct > 0 and name in models]
            if not weighted:
                raise HTTPException(status_code=404, detail="no deployment takes traffic on this endpoint")
            target = random.choices([n for n, _ in weighted], weights=[p for _, p in weighted])[0]
        try:
            body = await request.json()
            conversations = body["input_data"]["input_string"]
            parameters = body["input_data"].get("parameters") or {}
            if not isinstance(conversations, list) or not conversations or not isinstance(conversations[0], list):
                raise ValueError("input_string must be a list of conversations")
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(status_code=400, detail=f"bad scoring request: {exc}") from None
        from starlette.concurrency import run_in_threadpool

        outputs = await run_in_threadpool(models[target].chat, conversations[:1], parameters)
        return JSONResponse({"output": outputs[0]}, headers={DEPLOYMENT_HEADER: target})

    @app.post("/admin/deployments/{name}")
    def add_deployment(name: str, payload: dict, authorization: str | None = Header(None)) -> dict:
        check(admin_token, authorization)
        model = load_chat_model(Path(payload["model_dir"]))  # load before touching state: a bad model changes nothing
        with lock:
            models[name] = model
            state["deployments"][name] = payload
            state["traffic"].setdefault(name, 0)
            save()
        return health()

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
            save()
        return health()

    @app.put("/admin/traffic")
    def set_traffic(traffic: dict[str, int], authorization: str | None = Header(None)) -> dict:
        check(admin_token, authorization)
        unknown = sorted(set(traffic) - set(models))
        if unknown:
            raise HTTPException(status_code=404, detail=f"unknown deployments {unknown}")
        if any(pct < 0 for pct in traffic.values()) or sum(traffic.values()) not in (0, 100):
            raise HTTPException(status_code=400, detail=f"traffic must be >= 0 and sum to 100 (or 0): {traffic}")
        with lock:
            state["traffic"] = {name: traffic.get(name, 0) for name in models}
            save()
        return health()

    return app


def _watch_owner(pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)  # the run that owns this ephemeral endpoint is gone
        except PermissionError:
            pass


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint_dir", type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args()
    app = create_app(args.endpoint_dir, os.environ.pop(KEY_ENV), os.environ.pop(ADMIN_ENV))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # the port is known only once bound: publish it for the workspace, which then polls /health
    write_json(args.endpoint_dir / "server.json", {"pid": os.getpid(), "port": sock.getsockname()[1]})
    if args.owner_pid:
        threading.Thread(target=_watch_owner, args=(args.owner_pid,), daemon=True).start()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
