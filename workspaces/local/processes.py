"""Processes of the local workspace: start one detached, tell whether a pid lives, stop a process group,
write a JSON file so that readers never see half of it, read the tail of a log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from workspaces.errors import InvalidNameError


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def stop_process_group(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace_s`."""
    _stop(pid, os.killpg, grace_s)


def stop_process(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM one process (not a group leader), SIGKILL it after `grace_s`."""
    _stop(pid, os.kill, grace_s)


def _stop(pid: int, send, grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            send(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    return
            except ChildProcessError:  # not our child: poll liveness instead
                if not pid_alive(pid):
                    return
            time.sleep(0.05)


def start_detached(module: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m module args...` in a session of its own (it outlives the flow, like a cloud resource)."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", OWNER_ENV: str(os.getpid()), **(env or {})},
        )


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)  # readers never see half a file


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def checked_name(kind: str, name: str) -> str:
    """A name that becomes a directory: letters, digits, '-', '_', '.', never a path ('../x', '/x', 'a/b')."""
    if not NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"{kind} name {name!r} is not valid: use letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return name


# ---------------------------------------------------------------- processes tunegate leaves behind

OWNER_ENV = "TUNEGATE_OWNER_PID"  # set in the environment of what tunegate starts: who it belongs to
KINDS = {
    "workspaces.local.server": "endpoint server",
    "workspaces.local.trainer": "trainer",
    "prefect.server.api.server:create_app": "temporary Prefect server",
}


@dataclass(frozen=True)
class OwnedProcess:
    pid: int
    kind: str
    argument: str  # the endpoint or job directory, or the Prefect server's port
    owner: int | None  # the tunegate process that started it, when known

    @property
    def orphaned(self) -> bool:
        return self.owner is not None and not pid_alive(self.owner)


def tunegate_processes() -> list[OwnedProcess]:
    """Live processes of this user that tunegate started: endpoint servers, trainers and the temporary Prefect
    servers of `tunegate run` (those carry OWNER_ENV; another project's Prefect server is not ours). Linux /proc;
    elsewhere an empty list."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid != os.getuid():
                continue
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            kind = next((KINDS[arg] for arg in args if arg in KINDS), None)
            if kind is None or not pid_alive(int(proc.name)):
                continue
            environ = dict(
                item.split("=", 1) for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )  # fmt: skip
        except (OSError, ValueError):
            continue  # gone meanwhile, or not readable
        owner = environ.get(OWNER_ENV)
        if kind == "temporary Prefect server" and owner is None:
            continue
        argument = args[args.index("--port") + 1] if "--port" in args[:-1] else next(
            (arg for arg in args[3:] if arg and not arg.startswith("-")), ""
        )  # fmt: skip
        found.append(OwnedProcess(int(proc.name), kind, argument, int(owner) if owner and owner.isdigit() else None))
    return sorted(found, key=lambda process: process.pid)


def stop_with_owner(owner: int, target: int, poll_s: float = 0.5) -> None:
    """Watch `owner`; once it is gone (even by kill -9), stop `target`. Ends when either is gone."""
    while pid_alive(target):
        if not pid_alive(owner):
            stop_process(target)
            return
        time.sleep(poll_s)


def start_reaper(target: int) -> subprocess.Popen:
    """A small watcher process that stops `target` when this process is gone, however it goes."""
    return subprocess.Popen(
        [sys.executable, "-m", "workspaces.local.processes", "reap", str(os.getpid()), str(target)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the terminal's group must not stop the watcher before its work
    )


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "reap":
    stop_with_owner(int(sys.argv[2]), int(sys.argv[3]))
