"""A local endpoint under abuse: its server's memory while clients send oversize and hostile requests, and what 50
clients at once see (errors, p50/p99). Trains one tiny model first (about a minute on 2 cores).

python -m bench.bench_endpoint_abuse [--clients 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import PeakRss, rss_tree_mib, trained_job
from tasks.register import register_once
from tasks.settings import DataSettings
from workspaces.local.workspace import LocalWorkspace


def trained_endpoint(root: Path) -> tuple[LocalWorkspace, str, dict[str, str], int]:
    workspace, job, _ = trained_job(root, DataSettings(percent=10, synthetic_rows=1000))
    version = register_once(workspace.registry, job, "bench-ft", {})
    workspace.endpoints.ensure("bench")
    workspace.endpoints.create_deployment("bench", "blue", version, "local-cpu")
    workspace.endpoints.set_traffic("bench", {"blue": 100})
    credentials = workspace.endpoints.credentials("bench")
    headers = {"Authorization": f"Bearer {credentials.key.get_secret_value()}", "Content-Type": "application/json"}
    pid = json.loads((workspace.root / "endpoints" / "bench" / "server.json").read_text())["pid"]
    return workspace, credentials.scoring_uri, headers, pid


def ask(text: str, max_new_tokens: int = 16) -> bytes:
    conversation = [{"role": "user", "content": text}]
    parameters = {"max_new_tokens": max_new_tokens, "do_sample": False}
    return json.dumps({"input_data": {"input_string": [conversation], "parameters": parameters}}).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace, url, headers, pid = trained_endpoint(Path(tmp))
        try:
            idle = rss_tree_mib(pid)
            print(f"server RSS idle with one deployment: {idle:.0f} MiB")
            hostile = {
                "50 MB body": b"x" * (50 * 1024 * 1024),
                "256 KiB one-word prompt": ask("word" * 65536),
                "100k-deep JSON": b'{"input_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            }
            for name, body in hostile.items():
                with PeakRss(pid) as peak:
                    started = time.perf_counter()
                    answer = httpx.post(url, content=body, headers=headers, timeout=120)
                    took = time.perf_counter() - started
                print(f"{name:26} HTTP {answer.status_code} in {took:.2f} s; server peak RSS {peak.peak:.0f} MiB")

            def one(i: int) -> tuple[int, float]:
                started = time.perf_counter()
                try:
                    code = httpx.post(url, content=ask(f"hello {i}"), headers=headers, timeout=120).status_code
                except httpx.HTTPError:
                    code = -1
                return code, (time.perf_counter() - started) * 1000

            with PeakRss(pid) as peak, ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one, range(args.clients * 4)))
            latencies = sorted(ms for _, ms in results)
            errors = sum(1 for code, _ in results if code != 200)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(
                f"{args.clients} concurrent clients, {len(results)} requests: {errors} errors, "
                f"p50 {statistics.median(latencies):.0f} ms, p99 {p99:.0f} ms; server peak RSS {peak.peak:.0f} MiB"
            )
            after = httpx.post(url, content=ask("hi"), headers=headers, timeout=60)
            print(f"still answering: HTTP {after.status_code}")
        finally:
            workspace.endpoints.delete("bench")


if __name__ == "__main__":
    main()
