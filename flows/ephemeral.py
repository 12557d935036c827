"""The temporary Prefect server of `tunegate run` without PREFECT_API_URL dies with the run, and only with it.

Prefect starts that server (uvicorn, ~200 MB, listening) as a plain child and stops it from an atexit hook, which
never runs after kill -9: the server would serve on forever. We start it ourselves, the way Prefect's client would
(the same singleton, so the flow finds it running), with the run's pid in its environment (`tunegate inventory`
recognises it by that), and hand its pid to a small watcher process that stops it once the run is gone.

It runs in a session of its own: as a plain child it shares the terminal's process group, so a Ctrl-C meant for the
run killed it first, and the run then spent minutes retrying a dead port instead of cancelling and tearing down.
"""

from __future__ import annotations

import os

# a loaded laptop (load 10 on 2 cores) needs far more than Prefect's 20 s to import and start the server
STARTUP_TIMEOUT_S = 180
TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


class TemporaryServerError(RuntimeError):
    """The temporary Prefect server did not start; the message says what to do instead."""


def startup_timeout() -> float:
    """Prefect's setting when the user set it, else STARTUP_TIMEOUT_S."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() if TIMEOUT_SETTING in os.environ else STARTUP_TIMEOUT_S
    )


def start_temporary_server() -> int | None:
    """Start the temporary server (when no PREFECT_API_URL is set) tied to this process; its pid, else None.
    TemporaryServerError when it does not answer in time."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    from workspaces.local.prefect_server import detached_server_class
    from workspaces.local.processes import OWNER_ENV, start_reaper

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    os.environ[OWNER_ENV] = str(os.getpid())  # the server inherits the environment of the process that starts it
    existing = SubprocessASGIServer._instances.get(None)
    server = existing if existing is not None else detached_server_class()()  # the instance get_client() uses
    timeout = startup_timeout()
    try:
        server.start(timeout=int(timeout))
    except RuntimeError as exc:
        if server.server_process is not None and server.server_process.poll() is None:
            server.stop()
        raise TemporaryServerError(
            f"the temporary Prefect server did not answer within {timeout:g} s ({str(exc).splitlines()[0][:200]}). "
            f"Start one yourself and point tunegate at it: `prefect server start` in another terminal, then "
            f"PREFECT_API_URL=http://127.0.0.1:4200/api tunegate run ...; or wait longer: {TIMEOUT_SETTING}=600"
        ) from None
    if server.server_process is None:
        return None
    start_reaper(server.server_process.pid)
    return server.server_process.pid
