"""Prefect's temporary server as `tunegate run` starts it (flows/ephemeral.py): in a session of its own, so that a
Ctrl-C meant for the run does not kill the server the run still needs for its cancellation and teardown."""

from __future__ import annotations

import os
import subprocess
from typing import Any


def detached_server_class() -> type:
    import sys

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class DetachedServer(SubprocessASGIServer):
        """Prefect's temporary server (the command and environment of prefect 3.8's own _run_uvicorn_command), in a
        session of its own (see this module's docstring)."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
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
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],  # fmt: skip
                env={
                    **os.environ,
                    **server_env,
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
                start_new_session=True,
            )

    return DetachedServer
