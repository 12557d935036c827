"""The server process of a local endpoint: start it, find it (the one its server.json names when that provably is
it, and any other serving its directory), and say why there is none (workspaces/local/endpoints.py uses these)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from workspaces.local.processes import (
    not_ours,
    read_json,
    read_json_or_empty,
    start_detached,
    stop_process_group,
    tail,
    tunegate_processes,
)
from workspaces.ports import (
    NotFoundError,
    TransientWorkspaceError,
    WorkspaceError,
)

SERVER_MODULE = "workspaces.local.server"
SERVER_START_TIMEOUT_S = 90


def server_of(name: str, directory: Path) -> tuple[int, int]:
    """(pid, port) of the endpoint's running server, or an error that says why there is none: no record, a
    damaged one, or a pid that is not this endpoint's server (dead, reused, or a stranger's)."""
    info = read_json(directory / "server.json", f"`tunegate endpoint start {name}` starts its server again")
    if not info:
        raise NotFoundError(f"endpoint {name} has no server")
    why = not_ours(info, SERVER_MODULE, directory)
    port = info.get("port")
    if why is None and not (isinstance(port, int) and 0 < port < 65536):
        why = f"its port {port!r} is not a port"
    if why is not None or not isinstance(port, int):
        raise TransientWorkspaceError(
            f"endpoint {name}'s server is not running ({why}); log tail:\n{tail(directory / 'server.log')}"
        )
    return int(info["pid"]), port


def pids_serving(directory: Path) -> list[int]:
    """Servers of the endpoint in `directory`: the one server.json names when it provably is one, and any other
    process serving that directory (one a crashed creation left, or one whose record was damaged)."""
    pids = set(server_processes(directory))
    record = read_json_or_empty(directory / "server.json")
    if record and not_ours(record, SERVER_MODULE, directory) is None:
        pids.add(record["pid"])
    return sorted(pids)


def server_processes(directory: Path) -> list[int]:
    here = str(directory.resolve())
    return [
        found.pid
        for found in tunegate_processes()
        if found.kind == "endpoint server" and str(Path(found.argument).resolve()) == here
    ]


def start_server(name: str, directory: Path, tokens: dict[str, str], owner_pid: int | None) -> None:
    for stale in pids_serving(directory):  # one server per endpoint: a stale one (lost record) goes
        stop_process_group(stale)
    (directory / "server.json").unlink(missing_ok=True)
    # keys through the environment, never argv (argv shows in `ps`)
    env = {"TUNEGATE_ENDPOINT_KEY": tokens["key"], "TUNEGATE_ADMIN_TOKEN": tokens["admin"]}
    args = [str(directory)] + (["--owner-pid", str(owner_pid)] if owner_pid else [])
    process = start_detached(SERVER_MODULE, args, directory / "server.log", env=env)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:  # crashed at start: say why, do not wait out the timeout
            raise WorkspaceError(
                f"endpoint {name}'s server exited with {process.returncode}:\n{tail(directory / 'server.log')}"
            )
        port = read_json(directory / "server.json").get("port")
        if port:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    stop_process_group(process.pid)
    raise TransientWorkspaceError(f"endpoint {name}'s server did not answer /health in {SERVER_START_TIMEOUT_S} s")
