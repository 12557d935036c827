"""The temporary Prefect server of `tunegate run` without PREFECT_API_URL dies with the run, and only with it.

Prefect starts that server (uvicorn, ~200 MB, listening) as a plain child and stops it from an atexit hook, which
never runs after kill -9: the server would serve on forever. We start it ourselves, the way Prefect's client would
(the same singleton, so the flow finds it running), with the run's pid in its environment (`tunegate inventory`
recognises it by that), and hand its pid to a small watcher process that stops it once the run is gone.

It runs in a session of its own: as a plain child it shares the terminal's process group, so a Ctrl-C meant for the
run killed it first, and the run then spent minutes retrying a dead port instead of cancelling and tearing down.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any

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


class TemporaryServer:
    """The run's temporary Prefect server: started by start_temporary_server, then ready() before the flow runs."""

    def __init__(self, server: Any) -> None:
        self.server = server  # workspaces.local.prefect_server.TemporaryServer
        self.pid: int = server.pid

    def ready(self) -> contextlib.AbstractContextManager:
        """Wait until the server answers, then the settings under which the run's Prefect client talks to it (as
        to any server, which its PREFECT_API_URL names; tasks/approval still knows it for a temporary one).
        TemporaryServerError when it does not answer in time."""
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        from tasks.approval.asking import TEMPORARY_API_ENV
        from workspaces.local.prefect_server import ServerDidNotStart

        timeout = startup_timeout()
        try:
            self.server.wait_ready(timeout)
        except ServerDidNotStart as exc:
            raise TemporaryServerError(
                f"the temporary Prefect server did not answer within {timeout:g} s ({exc}). Start one yourself and "
                f"point tunegate at it: `prefect server start` in another terminal, then "
                f"PREFECT_API_URL=http://127.0.0.1:4200/api tunegate run ...; or wait longer: {TIMEOUT_SETTING}=600"
            ) from None
        os.environ[TEMPORARY_API_ENV] = self.server.api_url
        # no UI on it (PREFECT_UI_ENABLED=0): no "View at" links to pages that are not there
        return temporary_settings(updates={PREFECT_API_URL: self.server.api_url, PREFECT_UI_URL: ""})


def start_temporary_server() -> TemporaryServer | None:
    """Start the temporary server (when no PREFECT_API_URL is set) tied to this process, without waiting for it:
    it boots while the run imports the rest (TemporaryServer.ready waits). None when a server is configured."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    from workspaces.local.prefect_server import TemporaryServer as Server
    from workspaces.local.processes import OWNER_ENV, start_reaper

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    os.environ[OWNER_ENV] = str(os.getpid())  # the server inherits the environment of the process that starts it
    server = Server()
    start_reaper(server.pid)  # from now on it dies with this process, even after kill -9
    atexit.register(server.stop)
    return TemporaryServer(server)
