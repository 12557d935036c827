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
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
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
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})},
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
