"""Every performance figure of the README, each beside what a user would use instead, in one command:

    python -m bench [--reps 5] [--rows 207865] [--only sample,...,memory] [--out bench-results.md]

Interleaved repetitions (the order rotates each round), medians, ratios; a markdown table at the end. Nothing here
is a test: CI runs only a tiny smoke of this harness (tests/test_bench_harness.py, --quick).

| row | tunegate | anchor |
|---|---|---|
| sample 5%, published layout | `tunegate sample` (3 splits a run reads) | the seed's download-dataset.py, cold cache |
| sample 5%, train_sft alone | the same sampler on one split | `load_dataset(split="train_sft[0%:5%]")` + `to_json` |
| sample 5%, 4x rows | the same sampler | its own 1x run (memory must stay flat, time linear) |
| trainer tokens/s | the local trainer's job process | bench/bare_trainer.py (bare PyTorch loop) |
| endpoint p50, 16 tokens | the local endpoint | `mlflow models serve` on the same registered version |
| /health round trip | the local endpoint | mlflow's /ping |
| deploy to a first answer | new endpoint, deployment, traffic, one call | `mlflow models serve`, to its first answer |
| warm `tunegate run` | default profile, warm state dir | bench/bare_flow.py: 20 empty tasks (a run's count) |
| in-memory flow call | the flow on tests/fakes.py's workspace | bare_flow with as many tasks, same process |
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.bare_flow import STAGES
from bench.common import PeakRss, interleaved, median
from workspaces.local.prefect_server import free_port
from workspaces.ports import ModelVersion

CACHE = Path(os.environ.get("TUNEGATE_BENCH_CACHE", Path.home() / ".cache" / "tunegate" / "bench"))
PYTHON = sys.executable


def with_tools(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a measured command: this interpreter's scripts first on PATH, so that a tool a command
    starts by name (`mlflow models serve` starts `uvicorn`) is found without an activated venv."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "")])
    return env


def timed(command: list[str], unset: tuple[str, ...] = ()) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB of the process tree, stdout) of one command run to completion."""
    env = with_tools({name: value for name, value in os.environ.items() if name not in unset})
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with PeakRss(process.pid) as peak:
        out, err = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{err[-2000:]}")
    return seconds, peak.peak, out


def dataset(rows: int, splits: list[str]) -> Path:
    """An ultrachat_200k-sized dataset, generated once and kept in the bench cache."""
    target = CACHE / f"ultrachat-{rows}-{'-'.join(splits)}"
    if not (target / "data").is_dir():
        from data.ultrachat_scale import write_ultrachat_scale

        print(f"generating {rows:,} train_sft rows ({', '.join(splits)}) into {target} ...", flush=True)
        write_ultrachat_scale(target, rows, splits=splits)
    return target


SEED_SCRIPT = """
import os, sys, tempfile
from datasets import disable_progress_bars, get_dataset_split_names, load_dataset
disable_progress_bars()
source, percent, out, cache = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
# azureml-examples .../chat-completion/download-dataset.py, with a cold cache of its own
for split in get_dataset_split_names(source, cache_dir=cache):
    dataset = load_dataset(source, split=split + f"[0%:{percent}%]", cache_dir=cache)
    dataset.to_json(os.path.join(out, f"{split}.jsonl"))
"""

SEED_ONE_SPLIT = """
import glob, sys
from datasets import disable_progress_bars, load_dataset
disable_progress_bars()
source, percent, out, cache = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
files = sorted(glob.glob(source + "/data/train_sft-*.parquet"))
dataset = load_dataset("parquet", data_files={"train_sft": files}, split=f"train_sft[0%:{percent}%]", cache_dir=cache)
dataset.to_json(out + "/train_sft.jsonl")
"""

OURS_ONE_SPLIT = """
import sys
from pathlib import Path
from tasks.sampling import _sample_split_into, default_workers
from tasks.settings import DataSettings
source, percent, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
settings = DataSettings(source=source, percent=percent)
with open(out / "train_sft.jsonl", "wb") as handle:
    _sample_split_into(handle, "train_sft", settings, out, None, default_workers())
"""


def bench_sampling(rows: int, reps: int) -> list[dict]:
    published = dataset(rows, ["train_sft", "test_sft", "train_gen", "test_gen"])
    big = dataset(rows * 4, ["train_sft"])
    scratch = Path(tempfile.mkdtemp(prefix="tunegate-bench-"))
    results: dict[str, list[tuple[float, float]]] = {}

    def run(name: str, command: Callable[[Path], list[str]]) -> float:
        out = scratch / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        seconds, peak, _ = timed(command(out))
        results.setdefault(name, []).append((seconds, peak))
        shutil.rmtree(out, ignore_errors=True)
        return seconds

    def seed(script: str, source: Path) -> Callable[[Path], list[str]]:
        return lambda out: [PYTHON, "-c", script, str(source), "5", str(out), str(out / "cache")]

    def ours_one(source: Path) -> Callable[[Path], list[str]]:
        return lambda out: [PYTHON, "-c", OURS_ONE_SPLIT, str(source), "5", str(out)]

    def ours_cli(out: Path) -> list[str]:
        return [PYTHON, "-m", "flows.cli", "sample", "--percent", "5", "--source", str(published), "--out", str(out)]

    runs = {
        "seed-published": lambda: run("seed-published", seed(SEED_SCRIPT, published)),
        "ours-published": lambda: run("ours-published", ours_cli),
        "seed-train_sft": lambda: run("seed-train_sft", seed(SEED_ONE_SPLIT, published)),
        "ours-train_sft": lambda: run("ours-train_sft", ours_one(published)),
        "ours-train_sft-4x": lambda: run("ours-train_sft-4x", ours_one(big)),
    }
    interleaved(runs, reps)
    shutil.rmtree(scratch, ignore_errors=True)

    def med(name: str, index: int) -> float:
        return median([r[index] for r in results[name]])

    def timing(figure: str, ours: str, anchor: str, anchor_name: str, extra: str) -> dict:
        return row(figure, med(ours, 0), med(anchor, 0), "s", anchor_name, extra=extra)

    def parquet_mb(dataset: Path) -> float:
        return sum(p.stat().st_size for p in (dataset / "data").glob("train_sft-*")) / 2**20

    def rss(ours: str, anchor: str) -> str:
        return f"peak RSS {med(ours, 1):.0f} vs {med(anchor, 1):.0f} MiB"

    growth = med("ours-train_sft-4x", 1) / med("ours-train_sft", 1)
    return [
        timing(
            f"sample 5% of the published layout (4 splits, {rows:,} train_sft rows)",
            "ours-published",
            "seed-published",
            "the seed's download-dataset.py, cold datasets cache",
            rss("ours-published", "seed-published"),
        ),
        timing(
            f"sample 5% of train_sft ({rows:,} rows, {parquet_mb(published):.0f} MB parquet), cold",
            "ours-train_sft",
            "seed-train_sft",
            'load_dataset(..., split="train_sft[0%:5%]") + to_json',
            rss("ours-train_sft", "seed-train_sft"),
        ),
        timing(
            f"same, 4x the rows ({rows * 4:,} rows, {parquet_mb(big):.0f} MB)",
            "ours-train_sft-4x",
            "ours-train_sft",
            "tunegate at 1x (time should be <= 4x)",
            f"peak RSS {med('ours-train_sft-4x', 1):.0f} MiB = {growth:.2f}x of the 1x run",
        ),
    ]


def bench_trainer(reps: int) -> list[dict]:
    from bench.common import trained_job

    root = Path(tempfile.mkdtemp(prefix="tunegate-bench-trainer-"))
    _, _, job_dir = trained_job(root)
    ours: list[float] = []
    bare: list[float] = []
    process = {"ours": [], "bare": []}  # the whole process, wall: what a user waits for

    def run_ours() -> float:
        copy = root / f"again-{len(ours)}"
        copy.mkdir()
        shutil.copy(job_dir / "spec.json", copy / "spec.json")
        process["ours"].append(timed([PYTHON, "-m", "workspaces.local.trainer", str(copy)])[0])
        ours.append(json.loads((copy / "status.json").read_text())["train_tokens_per_s"])
        return ours[-1]

    def run_bare() -> float:
        seconds, _, out = timed([PYTHON, "-m", "bench.bare_trainer", str(job_dir)])
        process["bare"].append(seconds)
        bare.append(json.loads(out.strip().splitlines()[-1])["train_tokens_per_s"])
        return bare[-1]

    interleaved({"ours": run_ours, "bare": run_bare}, reps)
    shutil.rmtree(root, ignore_errors=True)
    return [
        row(
            "local trainer, tokens/s (default profile's data and parameters)",
            median(ours),
            median(bare),
            "tok/s",
            "bare PyTorch loop: same model, data, LoRA, optimizer",
            lower_is_better=False,
        ),
        row(
            "training job, whole process (wall)",
            median(process["ours"]),
            median(process["bare"]),
            "s",
            "the bare loop's process",
            extra="ours also evaluates (base, each epoch), logs its metrics, merges LoRA and saves the model",
        ),
    ]


def mlflow_serve(version: ModelVersion, tracking_uri: str, port: int) -> subprocess.Popen:
    """`mlflow models serve` of a registered version, as a user would start it, on 127.0.0.1:`port`."""
    return subprocess.Popen(
        [PYTHON, "-m", "mlflow", "models", "serve", "-m", f"models:/{version.name}/{version.version}"]
        + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env={**with_tools(), "MLFLOW_TRACKING_URI": tracking_uri},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_endpoint(requests: int) -> list[dict]:
    from bench.common import trained_job
    from tasks.register import register_once

    root = Path(tempfile.mkdtemp(prefix="tunegate-bench-endpoint-"))
    workspace, job, _ = trained_job(root)
    version = register_once(workspace.registry, job, "bench-ft", {})
    workspace.endpoints.ensure("bench")
    workspace.endpoints.create_deployment("bench", "blue", version, "local-cpu")
    workspace.endpoints.set_traffic("bench", {"blue": 100})
    credentials = workspace.endpoints.credentials("bench")
    port = free_port()
    server = mlflow_serve(version, workspace.registry.tracking_uri, port)
    try:
        client = httpx.Client(timeout=60)  # one pooled client for both: the same keep-alive connections
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if client.get(f"http://127.0.0.1:{port}/ping").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        conversation = [{"role": "user", "content": "What is the capital of France?"}]
        parameters = {"max_new_tokens": 16, "do_sample": False}
        key = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
        ours_body = {"input_data": {"input_string": [conversation], "parameters": parameters}, "params": {}}
        mlflow_body = {"inputs": {"input_string": [conversation], "parameters": parameters}}
        health_url = credentials.scoring_uri.rsplit("/", 1)[0] + "/health"

        def clock(call) -> float:
            started = time.perf_counter()
            response = call()
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000

        runs = {
            "ours": lambda: clock(lambda: client.post(credentials.scoring_uri, json=ours_body, headers=key)),
            "mlflow": lambda: clock(lambda: client.post(f"http://127.0.0.1:{port}/invocations", json=mlflow_body)),
            "health": lambda: clock(lambda: client.get(health_url)),
            "ping": lambda: clock(lambda: client.get(f"http://127.0.0.1:{port}/ping")),
        }
        interleaved(runs, 5)  # warm-up: first requests load kernels, open connections
        results = interleaved(runs, requests)
        same = (
            client.post(credentials.scoring_uri, json=ours_body, headers=key).json()["output"]
            == client.post(f"http://127.0.0.1:{port}/invocations", json=mlflow_body).json()["predictions"][0]
        )
    finally:
        server.terminate()
        server.wait(30)
        workspace.endpoints.delete("bench")
        shutil.rmtree(root, ignore_errors=True)
    return [
        row(
            "local endpoint p50, 16 new tokens, greedy",
            median(results["ours"]),
            median(results["mlflow"]),
            "ms",
            "`mlflow models serve` on the same registered version",
            extra="same answer" if same else "ANSWERS DIFFER",
        ),
        row("/health round trip p50", median(results["health"]), median(results["ping"]), "ms", "mlflow /ping"),
    ]


def bench_deploy(reps: int) -> list[dict]:
    """From nothing to a first answer: a new local endpoint with one deployment of a registered version, against
    `mlflow models serve` of the same version started and asked once."""
    from bench.common import trained_job
    from tasks.register import register_once

    root = Path(tempfile.mkdtemp(prefix="tunegate-bench-deploy-"))
    workspace, job, _ = trained_job(root)
    version = register_once(workspace.registry, job, "bench-ft", {})
    conversation = [{"role": "user", "content": "What is the capital of France?"}]
    parameters = {"max_new_tokens": 16, "do_sample": False}
    client = httpx.Client(timeout=120)

    def ours() -> float:  # the endpoint's name is new each time: nothing of an earlier one is reused
        name = f"deploy{next(numbers)}"
        started = time.perf_counter()
        workspace.endpoints.ensure(name)
        workspace.endpoints.create_deployment(name, "blue", version, "local-cpu")
        workspace.endpoints.set_traffic(name, {"blue": 100})
        credentials = workspace.endpoints.credentials(name)
        body = {"input_data": {"input_string": [conversation], "parameters": parameters}}
        key = {"Authorization": f"Bearer {credentials.key.get_secret_value()}"}
        client.post(credentials.scoring_uri, json=body, headers=key).raise_for_status()
        seconds = time.perf_counter() - started
        workspace.endpoints.delete(name)
        return seconds

    def anchor() -> float:
        port = free_port()
        started = time.perf_counter()
        server = mlflow_serve(version, workspace.registry.tracking_uri, port)
        try:
            body = {"inputs": {"input_string": [conversation], "parameters": parameters}}
            while True:
                try:
                    client.post(f"http://127.0.0.1:{port}/invocations", json=body).raise_for_status()
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.perf_counter() - started > 300:
                        raise RuntimeError("mlflow models serve did not answer") from None
                    time.sleep(0.05)
            return time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)

    numbers = iter(range(reps))
    measured = interleaved({"ours": ours, "mlflow": anchor}, reps)
    shutil.rmtree(root, ignore_errors=True)
    return [
        row(
            "deploy to a first answer (new endpoint, one deployment, 100% traffic, one scoring call)",
            median(measured["ours"]),
            median(measured["mlflow"]),
            "s",
            "`mlflow models serve` of the same version until its first answer",
        )
    ]


def bench_flow(reps: int) -> list[dict]:
    state = Path(tempfile.mkdtemp(prefix="tunegate-bench-flow-"))
    run = [PYTHON, "-m", "flows.cli", "run", "--set", f"workspace.state_dir={state}"]
    unset = ("PREFECT_API_URL",)  # each run starts its own temporary server, as a user's first command does
    timed(run, unset)  # cold: builds the foundation model; not measured
    results = interleaved(
        {
            "ours": lambda: timed(run, unset)[0],
            "bare": lambda: timed([PYTHON, "-m", "bench.bare_flow"], unset)[0],
        },
        reps,
    )
    shutil.rmtree(state, ignore_errors=True)
    return [
        row(
            "warm `tunegate run`, default profile (wall, incl. its Prefect server)",
            median(results["ours"]),
            median(results["bare"]),
            "s",
            f"bare {STAGES}-task Prefect flow (bench/bare_flow.py)",
        )
    ]


def bench_memory_flow(reps: int) -> list[dict]:
    _, _, out = timed([PYTHON, "-m", "bench.memory_flow", "--reps", str(reps)])
    measured = json.loads(out.strip().splitlines()[-1])
    return [
        row(
            "in-memory workspace, flow call only (tests/fakes.py: no training, no servers)",
            measured["medians"]["ours"],
            measured["medians"]["bare"],
            "s",
            f"bare Prefect flow of as many tasks ({measured['task_runs']}), called in the same process",
        )
    ]


def row(
    name: str, ours: float, anchor: float, unit: str, anchor_name: str, extra: str = "", lower_is_better: bool = True
) -> dict:
    ratio = ours / anchor if anchor else float("inf")
    return {
        "figure": name,
        "tunegate": f"{ours:,.2f} {unit}" if ours < 100 else f"{ours:,.0f} {unit}",
        "anchor": f"{anchor_name}: " + (f"{anchor:,.2f} {unit}" if anchor < 100 else f"{anchor:,.0f} {unit}"),
        "ratio": f"{ratio:.2f}x" + (" (time: lower is better)" if lower_is_better else " (higher is better)"),
        "notes": extra,
    }


HEADER = ["| figure | tunegate | anchor | tunegate / anchor | notes |", "|---|---|---|---|---|"]


def table_row(r: dict) -> str:
    return f"| {r['figure']} | {r['tunegate']} | {r['anchor']} | {r['ratio']} | {r['notes']} |"


def table(rows: list[dict]) -> str:
    return "\n".join(HEADER + [table_row(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions of each measurement")
    parser.add_argument("--rows", type=int, default=207_865, help="train_sft rows of the generated dataset")
    parser.add_argument("--requests", type=int, default=50, help="scoring requests per endpoint")
    parser.add_argument(
        "--only", default="sample,trainer,endpoint,deploy,flow,memory", help="comma-separated rows to run"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: checks the harness only")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.rows, args.requests = 1, 2_000, 3
    chosen = set(args.only.split(","))
    sections: dict[str, Callable[[], list[dict]]] = {
        "sample": lambda: bench_sampling(args.rows, args.reps),
        "trainer": lambda: bench_trainer(args.reps),
        "endpoint": lambda: bench_endpoint(args.requests),
        "deploy": lambda: bench_deploy(args.reps),
        "flow": lambda: bench_flow(args.reps),
        "memory": lambda: bench_memory_flow(args.reps),
    }
    rows: list[dict] = []
    failed = []
    started = time.perf_counter()
    print("\n".join(HEADER), flush=True)
    for name, measure in sections.items():
        if name not in chosen:
            continue
        try:  # each row as soon as it is measured: a section that fails later loses nothing already measured
            measured = measure()
        except Exception as exc:  # noqa: BLE001 - said in the table, the other sections still run
            failed.append(name)
            measured = [{"figure": name, "tunegate": "FAILED", "anchor": "", "ratio": "", "notes": str(exc)[-300:]}]
        for measured_row in measured:
            print(table_row(measured_row).replace("\n", " "), flush=True)
        rows += measured
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    footer = f"medians of {args.reps} interleaved repetitions; {machine}; {time.perf_counter() - started:.0f} s"
    print(f"\n{footer}", flush=True)
    if args.out:
        args.out.write_text(table(rows) + f"\n\n{footer}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
