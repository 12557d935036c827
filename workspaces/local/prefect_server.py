"""Prefect's temporary server as `tunegate run` starts it (flows/ephemeral.py): the command and environment of
prefect 3.8's own SubprocessASGIServer._run_uvicorn_command, started without importing Prefect's server package in
the run's process (1.5 s) so that the server boots while the run imports the rest; in a session of its own, so that
a Ctrl-C meant for the run does not kill the server the run still needs for its cancellation and teardown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_prefect_server(port: int) -> subprocess.Popen:
    import prefect
    from prefect.settings import get_current_settings

    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return subprocess.Popen(
        args=[
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(prefect.__module_path__.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],  # fmt: skip
        env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


class ServerDidNotStart(RuntimeError):
    """Why the temporary server does not answer (it exited, or the time ran out)."""


class TemporaryServer:
    """A temporary Prefect server on a free loopback port, started now and not waited for (wait_ready waits)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = start_prefect_server(self.port)
        self.api_url = f"http://127.0.0.1:{self.port}/api"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise ServerDidNotStart(f"it exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerDidNotStart("Timed out while attempting to connect")
            time.sleep(0.1)

    def stop(self) -> None:
        """At the run's exit (Prefect's own exit hooks, which send the last logs, have run): told to stop, not waited
        for (a second at the end of every run); its reaper kills it should it linger."""
        if self.process.poll() is None:
            self.process.terminate()
