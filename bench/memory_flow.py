"""The flow's own cost: the whole tunegate flow on the in-memory workspace (tests/fakes.py: no training, no server
processes) against a bare Prefect flow of as many empty tasks, both called in this process on one temporary server.

    python -m bench.memory_flow [--reps 5]

Prints one JSON line: {"ours": [seconds...], "bare": [seconds...], "task_runs": N}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tunegate-bench-prefect-"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from bench.bare_flow import bare
    from bench.common import interleaved, median
    from flows.params import config_from_dict
    from flows.tunegate_flow import tunegate
    from tests.fakes import FakeChatFlows, FakeWorkspace, ScoringServer
    from workspaces.factory import use_chat_flows, use_workspace

    state_dir = Path(tempfile.mkdtemp(prefix="tunegate-bench-memory-"))
    config = config_from_dict(
        {  # tests/test_flow.py's profile: the Azure-shaped defaults on the fake, an ephemeral endpoint
            "workspace": {"state_dir": str(state_dir)},
            "data": {"percent": 20, "synthetic_rows": 200},
            "model": {"name": "Phi-3-mini-4k-instruct"},
            "compute": {"name": "gpu-cluster", "size": "Standard_NC24ads_A100_v4"},
            "endpoint": {"name": "chat", "instance_type": "Standard_NC6s_v3"},
            "smoke": {"max_new_tokens": 8},
            "evaluate": {"min_similarity": 0.1},
            "job": {"poll_initial_s": 0.01, "poll_max_s": 0.01},
        }
    )
    scoring = ScoringServer()
    with prefect_test_harness(server_startup_timeout=300):

        def ours() -> float:
            with use_workspace(FakeWorkspace(scoring)), use_chat_flows(FakeChatFlows()):
                started = time.perf_counter()
                state = tunegate(config=config, return_state=True)
                seconds = time.perf_counter() - started
            if not state.is_completed():
                raise RuntimeError(f"the in-memory run failed: {state.message}")
            ours.last = str(state.state_details.flow_run_id)  # type: ignore[attr-defined]
            return seconds

        ours()  # warm: the first call imports and compiles what every later one reuses
        with get_client(sync_client=True) as client:
            runs = FlowRunFilter(id=FlowRunFilterId(any_=[ours.last]))  # type: ignore[attr-defined]
            task_runs = len(client.read_task_runs(flow_run_filter=runs))

        def anchor() -> float:
            started = time.perf_counter()
            bare(task_runs)
            return time.perf_counter() - started

        anchor()
        results = interleaved({"ours": ours, "bare": anchor}, args.reps)
    scoring.close()
    print(json.dumps({**results, "task_runs": task_runs, "medians": {k: median(v) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
