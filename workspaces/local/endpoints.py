"""Local online endpoints: one server process per endpoint (`python -m workspaces.local.server DIR`) and the
admin client that changes its deployments and traffic.

    <root>/endpoints/<name>/endpoint.json    deployments and traffic (the server saves them; a restart reloads)
    <root>/endpoints/<name>/server.json      pid and port of the running server
    <root>/endpoints/<name>/secrets.json     scoring key and admin token (0600); never logged
    <root>/endpoints/<name>/server.log
    <root>/endpoints/.locks/<name>.lock     held while one process changes the endpoint (create, deploy, delete)

Changes to one endpoint are serialised across processes by that lock: two runs creating the same endpoint at once
start one server, and a run's deploy -> smoke -> promote is not interleaved with another's (tasks hold it through
`lock`). The lock lives outside the endpoint's directory so that deleting the endpoint does not delete it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from filelock import FileLock, Timeout
from pydantic import SecretStr

from workspaces import openai_chat
from workspaces.local.compute import LOCAL_SIZES, list_sizes
from workspaces.local.endpoint_process import SERVER_MODULE, pids_serving, server_of, start_server
from workspaces.local.processes import (
    DamagedStateFile,
    identity,
    not_ours,
    pid_alive,
    process_matches,
    read_json,
    read_json_or_empty,
    stop_process_group,
    write_json,
)
from workspaces.local.registry import MlflowRegistry
from workspaces.local.settings import EndpointLimits
from workspaces.local.traffic_metrics import counters, window
from workspaces.names import checked_name
from workspaces.ports import (
    ConflictError,
    Credentials,
    Deployment,
    Endpoint,
    ModelVersion,
    NotFoundError,
    ScoringRequest,
    ServingBase,
    TrafficReading,
    TransientWorkspaceError,
    WorkspaceError,
)

logger = logging.getLogger("tunegate")
LOCK_TIMEOUT_S = 1800  # another run's deploy, smoke (with its retries) and promote fit well inside this


class EndpointServers(ServingBase):
    def __init__(self, root: Path, registry: MlflowRegistry, limits: EndpointLimits | None = None) -> None:
        self.root = root
        self.registry = registry
        self.limits = limits or EndpointLimits()

    @property
    def batch_limit(self) -> int:
        return self.limits.max_conversations  # a local endpoint answers one request's conversations as one batch

    def _dir(self, name: str) -> Path:
        return self.root / "endpoints" / checked_name("endpoint", name)

    @contextmanager
    def lock(self, name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the endpoint's lock. Re-entrant within this process (the flow holds it while its tasks change the
        endpoint); another process waits, up to `timeout_s`."""
        folder = self.root / "endpoints" / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / f"{checked_name('endpoint', name)}.lock", is_singleton=True, thread_local=False)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise TransientWorkspaceError(
                f"endpoint {name} is busy: another process held its lock for {timeout_s:.0f} s"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def running(self, name: str) -> bool:
        try:
            self._server(name)
        except WorkspaceError:
            return False
        return True

    def _secrets(self, name: str) -> dict[str, str]:
        path = self._dir(name) / "secrets.json"
        advice = f"its key is lost: `tunegate teardown --endpoint {name}` deletes the endpoint, a run makes a new one"
        tokens = read_json(path, advice)
        if not all(isinstance(tokens.get(field), str) and tokens[field] for field in ("key", "admin")):
            raise DamagedStateFile(path, "no key or admin token in it" if tokens else "missing", advice)
        return tokens

    def _server(self, name: str) -> tuple[int, int]:
        return server_of(name, self._dir(name))

    def _pids_serving(self, directory: Path) -> list[int]:
        return pids_serving(directory)

    def _start_server(self, name: str, owner_pid: int | None) -> None:
        start_server(name, self._dir(name), self._secrets(name), owner_pid)

    def server_pids(self) -> list[int]:
        return sorted({pid for name in self.names() for pid in self._pids_serving(self._dir(name))})

    def problems(self) -> list[str]:
        """What a person must look at: damaged state files, endpoints left by runs that ended."""
        found = []
        for name in self.names():
            try:
                self.get(name)
                self._secrets(name)
                read_json(self._dir(name) / "server.json")
            except DamagedStateFile as exc:
                found.append(str(exc))
                continue
            if self.orphaned(name):
                found.append(
                    f"{name} was the ephemeral endpoint of a run that has ended: `tunegate teardown --endpoint {name}` "
                    "deletes it (it is not brought back)"
                )
        return found

    def orphaned(self, name: str) -> bool:
        """An ephemeral endpoint whose run is gone (kill -9 before its teardown): to delete, never to revive."""
        try:
            state = read_json(self._dir(name) / "endpoint.json")
        except DamagedStateFile:
            return False
        owner = state.get("owner")
        if not state.get("ephemeral"):
            return False
        return not (isinstance(owner, dict) and process_matches(owner))

    def names(self) -> list[str]:
        folder = self.root / "endpoints"
        return sorted(d.name for d in folder.glob("*") if (d / "endpoint.json").exists()) if folder.exists() else []

    def ensure(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        with self.lock(name):  # of two processes creating it at once, the second finds the first's server
            return self._ensure(name, description, ephemeral)

    def _ensure(self, name: str, description: str, ephemeral: bool) -> Endpoint:
        directory = self._dir(name)
        if not (directory / "endpoint.json").exists():
            directory.mkdir(parents=True, exist_ok=True)
            tokens = {"key": secrets.token_urlsafe(32), "admin": secrets.token_urlsafe(32)}
            write_json(directory / "secrets.json", tokens, mode=0o600)
            state = {"name": name, "description": description, "ephemeral": ephemeral, "deployments": {}, "traffic": {}}
            if ephemeral:  # the run it belongs to: once that is gone, the endpoint is deleted, never revived
                state["owner"] = identity(os.getpid())
            write_json(directory / "endpoint.json", state)  # last: an endpoint exists once this file does
        elif not ephemeral and self.orphaned(name):
            self.delete(name)  # its run is gone, and its teardown with it: done now, with its key
            raise ConflictError(
                f"endpoint {name} was the ephemeral endpoint of a run that has ended: deleted it (and its key) "
                "instead of bringing it back"
            )
        limits = self.limits.model_dump()
        try:
            self._server(name)
        except WorkspaceError:  # new, or its server crashed: (re)start it from endpoint.json, with these limits
            state = read_json(directory / "endpoint.json")
            if state.get("limits") != limits:
                write_json(directory / "endpoint.json", {**state, "limits": limits})
            self._start_server(name, owner_pid=os.getpid() if ephemeral else None)
        else:
            if read_json(directory / "endpoint.json").get("limits") != limits:  # the profile changed them
                self._admin(name, "PUT", "/admin/limits", limits)
        return self.existing(name)

    def _state(self, name: str) -> dict:
        return read_json(
            self._dir(name) / "endpoint.json",
            f"its deployments and traffic are unknown: `tunegate teardown --endpoint {name}` stops its server and "
            "deletes it",
        )

    def get(self, name: str) -> Endpoint | None:
        state = self._state(name)
        if not state:
            return None
        return Endpoint(
            name=name,
            traffic=dict(state.get("traffic", {})),
            deployments=tuple(state.get("deployments", {})),
            running=self.running(name),
            mirror=dict(state.get("mirror") or {}),
        )

    def get_deployment(self, endpoint: str, name: str) -> Deployment | None:
        checked_name("deployment", name)
        state = self._state(endpoint)
        found = (state.get("deployments") or {}).get(name)
        if not found:
            return None
        return Deployment(endpoint=endpoint, name=name, model=found["model"], instance_type=found["instance_type"])

    def _admin(self, name: str, method: str, path: str, payload: object | None = None, timeout: float = 30) -> dict:
        if self.get(name) is None:
            raise NotFoundError(f"endpoint {name} does not exist")
        _, port = self._server(name)
        headers = {"Authorization": f"Bearer {self._secrets(name)['admin']}"}
        try:
            response = httpx.request(
                method, f"http://127.0.0.1:{port}{path}", json=payload, timeout=timeout, headers=headers
            )
        except httpx.TransportError as exc:
            raise TransientWorkspaceError(f"endpoint {name}: {exc}") from exc
        if response.status_code >= 500:
            raise TransientWorkspaceError(f"endpoint {name}: HTTP {response.status_code} {response.text[:300]}")
        if response.status_code >= 400:
            detail = response.json().get("detail", response.text)
            error = {404: NotFoundError, 409: ConflictError}.get(response.status_code, WorkspaceError)
            raise error(f"endpoint {name}: HTTP {response.status_code} {detail}")
        return response.json()

    def create_deployment(
        self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1
    ) -> Deployment:
        if instance_type.lower() not in LOCAL_SIZES:
            raise WorkspaceError(
                f"endpoint.instance_type {instance_type!r} is not a local size; use one of {', '.join(LOCAL_SIZES)}"
            )
        if instance_type.lower() == "local-cuda" and "local-cuda" not in {sku.name for sku in list_sizes()}:
            raise WorkspaceError(
                "endpoint.instance_type local-cuda needs a CUDA GPU, and torch sees none on this machine; use "
                "endpoint.instance_type=local-cpu"
            )
        if self.get(endpoint) is None:
            raise NotFoundError(f"endpoint {endpoint} does not exist")
        folder = self.registry.model_folder(
            f"models:/{model.name}/{model.version}", self._dir(endpoint) / "models" / checked_name("deployment", name)
        )
        payload = {
            "model_dir": str(folder),
            "model": f"{model.name}:{model.version}",
            "instance_type": instance_type.lower(),
            "instance_count": instance_count,
        }
        with self.lock(endpoint):
            self._admin(endpoint, "POST", f"/admin/deployments/{name}", payload, timeout=180)
        return Deployment(endpoint=endpoint, name=name, model=payload["model"], instance_type=instance_type)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        with self.lock(endpoint):
            self._admin(endpoint, "PUT", "/admin/traffic", traffic)
            return self.existing(endpoint)

    def set_mirror(self, endpoint: str, mirror: dict[str, int]) -> Endpoint:
        with self.lock(endpoint):
            self._admin(endpoint, "PUT", "/admin/mirror", mirror)
            return self.existing(endpoint)

    def traffic(self, endpoint: str, since: TrafficReading | None = None) -> TrafficReading:
        """Two scrapes of the server's `/metrics` make a window (traffic_metrics.window)."""
        if self.get(endpoint) is None:
            raise NotFoundError(f"endpoint {endpoint} does not exist")
        _, port = self._server(endpoint)
        headers = {"Authorization": f"Bearer {self._secrets(endpoint)['admin']}"}
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=30)
        except httpx.TransportError as exc:
            raise TransientWorkspaceError(f"endpoint {endpoint}: {exc}") from exc
        if response.status_code != 200:
            raise TransientWorkspaceError(f"endpoint {endpoint}: /metrics answered HTTP {response.status_code}")
        now = counters(response.text)
        before = since.mark.get("counters") if since is not None else None
        return TrafficReading(at=time.time(), deployments=window(now, before), mark={"counters": now})

    def credentials(self, endpoint: str) -> Credentials:
        if self.get(endpoint) is None:
            raise NotFoundError(f"endpoint {endpoint} does not exist")
        _, port = self._server(endpoint)
        return Credentials(
            scoring_uri=f"http://127.0.0.1:{port}/score",
            key=SecretStr(self._secrets(endpoint)["key"]),
            openai_base_url=f"http://127.0.0.1:{port}/v1",
        )

    def stream(self, endpoint: str, request: ScoringRequest, deployment: str | None = None) -> Iterator[str]:
        """Token by token, through the endpoint's OpenAI-compatible route (its errors, a damaged key file's
        included, come while it is read)."""
        yield from openai_chat.stream_reply(self.credentials(endpoint), request, deployment)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        checked_name("deployment", name)
        with self.lock(endpoint):
            current = self.get(endpoint)
            if current is None or name not in current.deployments:
                return  # already gone: a retried teardown must not fail
            self._admin(endpoint, "DELETE", f"/admin/deployments/{name}")
        shutil.rmtree(self._dir(endpoint) / "models" / checked_name("deployment", name), ignore_errors=True)

    def delete(self, endpoint: str) -> None:
        """Stop every server of the endpoint (the one server.json names and any other serving its directory, e.g. one
        a crashed creation left), then delete its directory: its key dies with it."""
        directory = self._dir(endpoint)
        with self.lock(endpoint):
            record = read_json_or_empty(directory / "server.json")  # damaged or not: what can be identified stops
            why = not_ours(record, SERVER_MODULE, directory) if record else None
            recorded_pid = record.get("pid")
            if why is not None and pid_alive(recorded_pid if isinstance(recorded_pid, int) else 0):
                logger.warning(
                    "not stopping pid %s that %s names: %s", record.get("pid"), directory / "server.json", why
                )
            for pid in self._pids_serving(directory):
                stop_process_group(pid)
            shutil.rmtree(directory, ignore_errors=True)
