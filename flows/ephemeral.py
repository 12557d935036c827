"""The temporary Prefect server of `tunegate run` without PREFECT_API_URL dies with the run.

Prefect starts that server (uvicorn, ~200 MB, listening) as a plain child and stops it from an atexit hook, which
never runs after kill -9: the server would serve on forever. We start it ourselves, the way Prefect's client would
(the same singleton, so the flow finds it running), with the run's pid in its environment (`tunegate inventory`
recognises it by that), and hand its pid to a small watcher process that stops it once the run is gone.
"""

from __future__ import annotations

import os


def start_temporary_server() -> int | None:
    """Start the temporary server (when no PREFECT_API_URL is set) tied to this process; its pid, else None."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    from workspaces.local.processes import OWNER_ENV, start_reaper

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    os.environ[OWNER_ENV] = str(os.getpid())  # the server inherits the environment of the process that starts it
    server = SubprocessASGIServer()  # the instance get_client() uses in ephemeral mode
    server.start()
    if server.server_process is None:
        return None
    start_reaper(server.server_process.pid)
    return server.server_process.pid
