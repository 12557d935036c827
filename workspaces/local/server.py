"""A local online endpoint: `python -m workspaces.local.server ENDPOINT_DIR [--owner-pid PID]`.

One process per endpoint on 127.0.0.1 and a free port, serving several deployments with traffic weights:
- POST /score: key auth (`Authorization: Bearer <key>`), the notebook's scoring contract, header
  `azureml-model-deployment` to target one deployment (also one at 0%: that is how a new one is smoked);
- GET /health;
- /admin/...: add or remove a deployment and set traffic, with a separate admin token.
Keys come in through the environment, never argv (argv shows in `ps`). The endpoint's deployments and traffic
are saved in ENDPOINT_DIR/endpoint.json so a restarted server comes back as it was. With --owner-pid the server
exits when that process is gone, so an ephemeral endpoint cannot outlive the run that made it.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from pathlib import Path

from workspaces.local.processes import identity, pid_alive, write_json
from workspaces.local.scoring_app import create_app

KEY_ENV, ADMIN_ENV = "TUNEGATE_ENDPOINT_KEY", "TUNEGATE_ADMIN_TOKEN"


def _watch_owner(pid: int) -> None:
    while True:
        time.sleep(1.0)
        if not pid_alive(pid):  # gone, or a zombie nobody reaped: the run that owns this ephemeral endpoint is over
            os._exit(0)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint_dir", type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args()
    app = create_app(args.endpoint_dir, os.environ.pop(KEY_ENV), os.environ.pop(ADMIN_ENV))
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) on accepted connections only for sockets whose proto
    # says TCP; with proto 0 every small answer waited ~40 ms for a delayed ACK (/health: 44 ms -> under 1 ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    # the port is known only once bound: publish it for the workspace, which then polls /health
    write_json(args.endpoint_dir / "server.json", {**identity(os.getpid()), "port": sock.getsockname()[1]})
    if args.owner_pid:
        threading.Thread(target=_watch_owner, args=(args.owner_pid,), daemon=True).start()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
