"""Processes of the local workspace: start one detached, tell whether a pid lives, stop a process group,
write a JSON file so that readers never see half of it, read the tail of a log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from workspaces.errors import WorkspaceError


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


def write_json(path: Path, payload: dict, mode: int = 0o644, durable: bool = True) -> None:
    """Write the whole file or nothing: a temporary file of this process and thread, flushed to disk, then renamed
    over the old one. Readers (and a kill -9 at any moment) never see half of it. `durable=False` leaves out the
    flush to disk (an fsync, milliseconds to tens of them on a busy disk) for what the next write replaces anyway
    (a trainer's progress): the rename alone keeps the file whole for every reader; only a power cut may lose it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = json.dumps(payload, indent=2).encode()
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DamagedStateFile(WorkspaceError):
    """A state file tunegate wrote cannot be read back (truncated, edited, not ours); the message names it and what
    the user can do."""

    def __init__(self, path: Path, why: str, advice: str = "") -> None:
        super().__init__(
            f"{path} is damaged ({why}); "
            + (advice or "tunegate did not write it this way: restore it from a backup or remove what it describes")
        )
        self.path = path


def read_json(path: Path, advice: str = "") -> dict:
    """The JSON object in `path`; {} when there is no such file; DamagedStateFile when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedStateFile(path, f"unreadable: {type(exc).__name__}", advice) from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise DamagedStateFile(path, f"not JSON: {exc}", advice) from None
    if not isinstance(document, dict):
        raise DamagedStateFile(path, "not a JSON object", advice)
    return document


def read_json_or_empty(path: Path) -> dict:
    """read_json for a clean-up that must go on whatever the file says: a damaged file reads as {}."""
    try:
        return read_json(path)
    except DamagedStateFile:
        return {}


# ---------------------------------------------------------------- which process a recorded pid is

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/PID/stat field 22); None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def this_host() -> str:
    return socket.gethostname()


def identity(pid: int) -> dict:
    """What to record beside a pid so that it can be told apart later from another process given the same number
    (pids are reused, and after a reboot every one is), and on which machine it runs."""
    return {"pid": pid, "pid_started": start_ticks(pid), "boot_id": boot_id(), "host": this_host()}


def process_matches(record: dict) -> bool:
    """The process `record` (from identity()) names still runs: same pid, started at the same time, same boot."""
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not pid_alive(pid):
        return False
    if record.get("host") and record["host"] != this_host():
        return False
    if record.get("boot_id") and boot_id() and record["boot_id"] != boot_id():
        return False
    return record.get("pid_started") is None or record["pid_started"] == start_ticks(pid)


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def not_ours(record: dict, module: str, argument: Path | None = None) -> str | None:
    """None when the process `record` names is provably the one tunegate started: alive, started when recorded (on
    this boot) and running `python -m module` on `argument`; else why not, in words. Only such a process is ever
    signalled: a pid from a file may be anyone's by now."""
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        return f"the recorded pid {pid!r} is not a process id"
    if record.get("host") and record["host"] != this_host():
        return f"pid {pid} was recorded on another machine ({record['host']})"
    if not pid_alive(pid):
        return f"process {pid} is not running"
    if record.get("boot_id") and boot_id() and record["boot_id"] != boot_id():
        return f"pid {pid} was recorded before the machine restarted"
    if record.get("pid_started") is not None and record["pid_started"] != start_ticks(pid):
        return f"process {pid} started at another time than the one recorded: the pid was reused"
    args = command_line(pid)
    if not args or os.stat(f"/proc/{pid}").st_uid != os.getuid():
        return f"process {pid} is not this user's"
    if module not in args or (argument is not None and not _names(args, argument)):
        shown = " ".join(arg for arg in args if arg)[:120]
        return f"process {pid} is not tunegate's ({shown!r})"
    return None


def _names(args: list[str], argument: Path) -> bool:
    wanted = argument.resolve()
    for arg in args:
        try:
            if arg and Path(arg).resolve() == wanted:
                return True
        except (OSError, RuntimeError):
            continue
    return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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
    """Watch `owner`; once it is gone (even by kill -9), stop `target`. Ends when either is gone, or when the pid
    `target` is no longer the process it was when the watch began (it ended and the number was reused)."""
    target_started = start_ticks(target)
    while pid_alive(target) and start_ticks(target) == target_started:
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
