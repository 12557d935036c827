"""A real `prefect server start` on a free loopback port, for tests of pauses, resumes, deployments and the UI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServer:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        self.log = home / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server did not answer in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def flow_runs(self, state: str | None = None) -> list[dict]:
        body: dict = {"sort": "START_TIME_DESC", "limit": 50}
        if state:
            body["flow_runs"] = {"state": {"type": {"any_": [state]}}}
        with self.client() as client:
            return client.post("/flow_runs/filter", json=body).json()

    def artifacts(self, flow_run_id: str) -> list[dict]:
        """The artifacts of a flow run (its tasks' too), oldest first."""
        with self.client() as client:
            response = client.post(
                "/artifacts/filter",
                json={
                    "artifacts": {"flow_run_id": {"any_": [flow_run_id]}},
                    "sort": "CREATED_DESC",
                    "limit": 200,
                    "offset": 0,
                },
            )
        response.raise_for_status()
        return list(reversed(response.json()))

    def wait_for_state(self, state: str, timeout_s: float = 240, flow_run_id: str | None = None, process=None) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for run in self.flow_runs(state):
                if flow_run_id is None or run["id"] == flow_run_id:
                    return run
            if process is not None and process.poll() is not None:
                raise AssertionError(
                    f"the run exited {process.returncode} before reaching {state}:\n"
                    + (process.stdout.read() if process.stdout else "")
                )
            time.sleep(0.5)
        raise AssertionError(f"no flow run reached {state} in {timeout_s} s")


def manual_run_command(state_dir: Path, *extra: str) -> list[str]:
    """`tunegate run` on the local workspace with manual approval, its state and summary under `state_dir`."""
    sets = ["--set", f"workspace.state_dir={state_dir}", "--set", "approval.policy=manual"]
    return [sys.executable, "-m", "flows.cli", "run", *sets, "--summary-json", str(state_dir / "summary.json"), *extra]
