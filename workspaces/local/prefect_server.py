"""Prefect's temporary server as `tunegate run` starts it (flows/ephemeral.py): the command and environment of
prefect 3.8's own SubprocessASGIServer._run_uvicorn_command, started without importing Prefect's server package in
the run's process (1.5 s) so that the server boots while the run imports the rest; in a session of its own, so that
a Ctrl-C meant for the run does not kill the server the run still needs for its cancellation and teardown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


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
