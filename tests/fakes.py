"""An in-memory Workspace for the flow's own tests, with fault injection, and a real loopback scoring server.

`faults` maps a role method ("jobs.submit") to a list of exceptions raised, one per call, before the method does its
work: `faults["jobs.submit"] = [TransientWorkspaceError("503")]` fails the first submit only.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, SecretStr

from workspaces import scoring
from workspaces.factory import WorkspaceKind, register_kind
from workspaces.forms import FormModel
from workspaces.ports import (
    ChatBatch,
    ChatBatchRow,
    Compute,
    ComputeSpec,
    ConflictError,
    Credentials,
    DataRef,
    Deployment,
    DeploymentTraffic,
    Endpoint,
    FinetuneSpec,
    FoundationModel,
    Inventory,
    JobInfo,
    JobProgress,
    JobRef,
    JobState,
    JobStatus,
    LossHistory,
    ModelVersion,
    NotFoundError,
    ScoreResult,
    ScoringRequest,
    Sku,
    TrafficReading,
    WorkspaceError,
)
from workspaces.ports.serving import one_piece

FAKE_KEY = "fake-secret-key-0123456789"


def fair_answer(prompt: str, deployment: str | None) -> str:
    """A reply that reads as one and shares the prompt's words, as a trained model's does (the evaluation's
    reference similarity passes it: ROUGE-L 0.32 on average over synthetic test_gen)."""
    return prompt


class ScoringServer:
    """A real HTTP server on 127.0.0.1 speaking the scoring contract; `mode` picks how it answers."""

    def __init__(self, key: str = FAKE_KEY) -> None:
        self.key = key
        self.mode = "ok"  # ok | error | bad-shape | unreachable (a gateway's 502 on every request)
        self.unreachable_first = 0  # answer this many requests with 502 first, as a fresh endpoint does
        self.deployment_header: str | None = None
        self.requests: list[dict] = []
        # (the last user turn, the deployment header) -> the answer; tests give a deployment its own voice
        self.answer: Callable[[str, str | None], str] = fair_answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {
                        "body": body,
                        "deployment": self.headers.get("azureml-model-deployment"),
                        "auth": self.headers.get("Authorization"),
                        "at": time.time(),
                    }
                )
                if server.mode == "unreachable" or server.unreachable_first > 0:
                    server.unreachable_first -= 1
                    self._send(502, {"error": "upstream connect error or disconnect/reset before headers"})
                elif self.headers.get("Authorization") != f"Bearer {server.key}":
                    self._send(401, {"error": "bad key"})
                elif server.mode == "error":
                    self._send(500, {"error": "model crashed"})
                elif server.mode == "bad-shape":
                    self._send(200, ["not", "an", "object"])
                else:
                    deployment = self.headers.get("azureml-model-deployment")
                    conversations = body["input_data"]["input_string"]
                    outputs = [server.answer(conversation[-1]["content"], deployment) for conversation in conversations]
                    more = {"outputs": outputs} if len(outputs) > 1 else {}
                    self._send(200, {"output": outputs[0], **more})

            def _send(self, code: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if server.deployment_header:
                    self.send_header("azureml-model-deployment", server.deployment_header)
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/score"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeWorkspace:
    kind = "memory"

    def __init__(
        self,
        scoring: ScoringServer,
        *,
        compute_size: str = "Standard_NC24ads_A100_v4",
        metrics: dict[str, float] | None = None,
        job_states: list[JobState] | None = None,
        foundation_tags: dict[str, str] | None = None,
    ) -> None:
        self.scoring = scoring
        scoring.answer = self.answer_as_trained
        self.trained_loss: dict[str, float] = {}  # "name:version" -> the eval_loss of the job that made it
        self.faults: dict[str, list[BaseException]] = defaultdict(list)
        self.locks: dict[str, threading.RLock] = {}
        self.calls: list[str] = []
        self.compute_size = compute_size
        self.metrics = metrics or {"train_loss": 1.2, "eval_loss": 1.5, "base_eval_loss": 2.5}
        self.job_states = list(job_states or [JobState.RUNNING, JobState.COMPLETED])
        self.foundation_tags = (
            foundation_tags
            if foundation_tags is not None
            else {
                "finetune_compute_allow_list": "['Standard_NC24ads_A100_v4', 'Standard_NC48ads_A100_v4']",
                "inference_compute_allow_list": "['Standard_NC6s_v3', 'Standard_NC24ads_A100_v4']",
                "model_specific_defaults": "{'apply_deepspeed': 'true', 'deepspeed_stage': 2, 'apply_lora': 'true'}",
            }
        )
        self.job_records: dict[str, dict] = {}  # name -> {key, states, canceled}
        self.submissions = 0
        self.models: dict[str, list[ModelVersion]] = defaultdict(list)
        self.champions: dict[str, ModelVersion] = {}
        self.endpoint_records: dict[str, dict] = {}  # name -> {"deployments": {name: Deployment}, "traffic": {}}
        self.deleted: list[str] = []
        self.unknown_models = {"no-such-model"}
        self.evaluates_champion = True  # False: like Azure's pipeline, the job cannot evaluate the champion
        self.champion_on_this_split: float | None = None
        self.attachments: dict[tuple[str, str], bytes] = {}
        self.evaluations: dict[str, tuple[dict[str, float], list[dict[str, str]]]] = {}
        # what each deployment served: (endpoint, deployment) -> [(status code, latency ms, kind)]
        self.served: dict[tuple[str, str], list[tuple[int, float, str]]] = defaultdict(list)
        # a model that fails this share of its requests once it takes live traffic (smoke and evaluation pass)
        self.fails_under_traffic: dict[str, float] = {}
        self.extra_latency_ms: dict[str, float] = {}  # a model slower than it looks, by this much per request

        self.registry = FakeRegistry(self)
        self.compute = FakeCompute(self)
        self.data = FakeData(self)
        self.jobs = FakeJobs(self)
        self.endpoints = FakeEndpoints(self)
        self.imports = None

    def enter(self, method: str) -> None:
        self.calls.append(method)
        if self.faults[method]:
            raise self.faults[method].pop(0)

    def links(self, job=None, model=None, endpoint=None) -> dict[str, str]:
        found = {"job": f"mem://jobs/{job.name}"} if job is not None else {}
        if model is not None:
            found["model version"] = f"mem://models/{model.name}/{model.version}"
        if endpoint is not None and endpoint in self.endpoint_records:
            found["scoring URL"] = self.scoring.url
        return found

    def answer_as_trained(self, prompt: str, deployment: str | None) -> str:
        """As real models do, the better trained answers better: the model with the lowest eval loss of all
        registered ones replies in words that share the prompt's (fair_answer); any other says it does not know."""
        model = next(
            (
                record["deployments"][deployment].model
                for record in self.endpoint_records.values()
                if deployment in record["deployments"]
            ),
            None,
        )
        losses = dict(self.trained_loss)
        for champion in self.champions.values():  # measured again on this run's split, where the job did that
            if self.champion_on_this_split is not None:
                losses[f"{champion.name}:{champion.version}"] = self.champion_on_this_split
        loss = losses.get(model or "")
        if loss is None or loss <= min(losses.values()):
            return fair_answer(prompt, deployment)
        return "I do not know."

    def inventory(self) -> Inventory:
        running = tuple(
            name for name, rec in self.job_records.items() if not rec["canceled"] and not rec["last"].terminal
        )
        return Inventory(
            endpoints={name: tuple(rec["deployments"]) for name, rec in self.endpoint_records.items()},
            running_jobs=running,
        )


class FakeRegistry:
    def __init__(self, ws: FakeWorkspace) -> None:
        self.ws = ws

    def get_foundation_model(self, name, version=None, label="latest"):
        self.ws.enter("registry.get_foundation_model")
        if name in self.ws.unknown_models:
            raise NotFoundError(f"registry model {name} not found")
        return FoundationModel(
            name=name,
            version=version or "7",
            id=f"azureml://registries/azureml/models/{name}/versions/{version or 7}",
            tags=self.ws.foundation_tags,
        )

    def find_model_version(self, name: str, job: JobRef) -> ModelVersion | None:
        self.ws.enter("registry.find_model_version")
        return next((v for v in self.ws.models.get(name, []) if v.tags.get("finetune_job") == job.name), None)

    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        self.ws.enter("registry.register_model")
        if job.name not in self.ws.job_records or self.ws.job_records[job.name]["last"] is not JobState.COMPLETED:
            raise WorkspaceError(f"job {job.name} has no trained model to register")
        version = ModelVersion(
            name=name, version=str(len(self.ws.models[name]) + 1), tags={**tags, "finetune_job": job.name}
        )
        self.ws.models[name].append(version)
        self.ws.trained_loss[f"{name}:{version.version}"] = self.ws.metrics.get("eval_loss", 0.0)
        return version

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        self.ws.enter("registry.tag_model")
        updated = model.model_copy(update={"tags": {**model.tags, **tags}})
        versions = self.ws.models[model.name]
        versions[[v.version for v in versions].index(model.version)] = updated
        return updated

    def record_evaluation(
        self, model: ModelVersion, metrics: dict[str, float], answers: list[dict[str, str]]
    ) -> str | None:
        self.ws.enter("registry.record_evaluation")
        self.ws.evaluations[f"{model.name}:{model.version}"] = (dict(metrics), list(answers))
        return f"mem://models/{model.name}/{model.version}/evaluation"

    def champion(self, name: str) -> ModelVersion | None:
        self.ws.enter("registry.champion")
        return self.ws.champions.get(name)

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        self.ws.enter("registry.set_champion")
        if model is None:
            self.ws.champions.pop(name, None)
        else:
            self.ws.champions[name] = model


class FakeCompute:
    def __init__(self, ws: FakeWorkspace) -> None:
        self.ws = ws

    def ensure(self, spec: ComputeSpec) -> Compute:
        self.ws.enter("compute.ensure")
        return Compute(name=spec.name, size=self.ws.compute_size, provisioning_state="Succeeded")

    def list_sizes(self):
        self.ws.enter("compute.list_sizes")
        return [
            Sku(name="Standard_NC24ads_A100_v4", gpus=1),
            Sku(name="Standard_NC48ads_A100_v4", gpus=2),
            Sku(name="STANDARD_NC6", gpus=1),
            Sku(name="Standard_D2_v2", gpus=0),
        ]


class FakeData:
    def __init__(self, ws: FakeWorkspace) -> None:
        self.ws = ws

    def upload(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        self.ws.enter("data.upload")
        return DataRef(train=f"mem://{train.name}", test=f"mem://{test.name}", fingerprint=fingerprint)


class FakeJobs:
    def __init__(self, ws: FakeWorkspace) -> None:
        self.ws = ws

    def get(self, name: str) -> JobRef | None:
        self.ws.enter("jobs.get")
        record = self.ws.job_records.get(name)
        if not record:
            return None
        compared = record["spec"].compare_with  # what the job evaluated, as the local trainer records it
        return JobRef(
            name=name,
            idempotency_key=record["key"],
            url=f"mem://jobs/{name}",
            evaluated_champion=f"{compared.name}:{compared.version}" if compared else None,
        )

    def submit(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        self.ws.enter("jobs.submit")
        if name in self.ws.job_records:
            raise ConflictError(f"job {name} exists already")
        self.ws.submissions += 1
        self.ws.job_records[name] = {
            "spec": spec,
            "key": idempotency_key,
            "states": list(self.ws.job_states),
            "canceled": False,
            "last": JobState.QUEUED,
        }
        return JobRef(name=name, idempotency_key=idempotency_key, url=f"mem://jobs/{name}")

    def status(self, job: JobRef) -> JobStatus:
        self.ws.enter("jobs.status")
        if job.name not in self.ws.job_records:
            raise NotFoundError(f"job {job.name} not found")
        record = self.ws.job_records[job.name]
        if record["canceled"]:
            return JobStatus(state=JobState.CANCELED)
        state = record["states"].pop(0) if len(record["states"]) > 1 else record["states"][0]
        record["last"] = state
        return JobStatus(state=state, message="" if state is not JobState.FAILED else "CUDA out of memory")

    def cancel(self, job: JobRef) -> None:
        self.ws.calls.append("jobs.cancel")
        record = self.ws.job_records.get(job.name)
        if record is not None and not record["last"].terminal:
            record["canceled"] = True

    def list(self) -> list[JobInfo]:
        self.ws.enter("jobs.list")
        return [
            JobInfo(
                name=name,
                state=JobState.CANCELED if rec["canceled"] else rec["last"],
                display_name=rec["spec"].display_name,
                idempotency_key=rec["key"],
            )
            for name, rec in reversed(self.ws.job_records.items())
        ]

    def metrics(self, job: JobRef) -> dict[str, float]:
        """The configured metrics; when the job was asked to evaluate the champion too (and this fake plays a
        workspace that can), its loss on the job's split: `champion_on_this_split`, else its recorded one."""
        self.ws.enter("jobs.metrics")
        metrics = dict(self.ws.metrics)
        compared = self.ws.job_records[job.name]["spec"].compare_with if job.name in self.ws.job_records else None
        if compared is not None and self.ws.evaluates_champion:
            recorded = compared.tags.get("eval_loss")
            value = self.ws.champion_on_this_split if self.ws.champion_on_this_split is not None else recorded
            if value is not None:
                metrics["champion_eval_loss"] = float(value)
        return metrics

    def progress(self, job: JobRef) -> JobProgress:
        self.ws.enter("jobs.progress")
        if job.name not in self.ws.job_records:
            raise NotFoundError(f"job {job.name} not found")
        record = self.ws.job_records[job.name]
        record["polls"] = record.get("polls", 0) + 1
        state = JobState.CANCELED if record["canceled"] else record["last"]
        step = min(10 * record["polls"], 30) if state is not JobState.QUEUED else None
        return JobProgress(
            state=state,
            status_text=state.value,
            step=step,
            total_steps=30,
            epoch=step / 10 if step else None,
            train_loss=self.ws.metrics.get("train_loss"),
            started=time.time() - 5,
        )

    def loss_history(self, job: JobRef) -> LossHistory:
        self.ws.enter("jobs.loss_history")
        train, final = self.ws.metrics.get("train_loss", 1.0), self.ws.metrics.get("eval_loss", 1.0)
        return LossHistory(
            train=tuple((step, train + 1.0 / step) for step in range(5, 31, 5)),
            eval=((10, final + 0.2), (20, final + 0.1), (30, final)),
            base_eval_loss=self.ws.metrics.get("base_eval_loss"),
            champion_eval_loss=self.ws.champion_on_this_split,
        )

    def attach(self, job: JobRef, filename: str, content: bytes) -> str | None:
        self.ws.enter("jobs.attach")
        self.ws.attachments[(job.name, filename)] = content
        return f"mem://jobs/{job.name}/{filename}"


class FakeEndpoints:
    batch_limit = 4  # answers several conversations per request, as a local endpoint does

    def __init__(self, ws: FakeWorkspace) -> None:
        self.ws = ws

    def _endpoint(self, name: str) -> Endpoint:
        record = self.ws.endpoint_records[name]
        return Endpoint(
            name=name,
            traffic=dict(record["traffic"]),
            deployments=tuple(record["deployments"]),
            mirror=dict(record.get("mirror", {})),
        )

    def ensure(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        self.ws.enter("endpoints.ensure")
        self.ws.endpoint_records.setdefault(name, {"deployments": {}, "traffic": {}})
        return self._endpoint(name)

    def lock(self, name: str) -> threading.RLock:
        return self.ws.locks.setdefault(name, threading.RLock())

    def get(self, name: str) -> Endpoint | None:
        self.ws.enter("endpoints.get")
        return self._endpoint(name) if name in self.ws.endpoint_records else None

    def create_deployment(self, endpoint, name, model, instance_type, instance_count=1) -> Deployment:
        self.ws.enter("endpoints.create_deployment")
        if endpoint not in self.ws.endpoint_records:
            raise NotFoundError(f"endpoint {endpoint} not found")
        deployment = Deployment(
            endpoint=endpoint, name=name, model=f"{model.name}:{model.version}", instance_type=instance_type
        )
        self.ws.endpoint_records[endpoint]["deployments"][name] = deployment
        return deployment

    def get_deployment(self, endpoint: str, name: str) -> Deployment | None:
        self.ws.enter("endpoints.get_deployment")
        return self.ws.endpoint_records.get(endpoint, {}).get("deployments", {}).get(name)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        self.ws.enter("endpoints.set_traffic")
        if endpoint not in self.ws.endpoint_records:
            raise NotFoundError(f"endpoint {endpoint} not found")
        record = self.ws.endpoint_records[endpoint]
        unknown = sorted(set(traffic) - set(record["deployments"]))
        if unknown:
            raise NotFoundError(f"no deployments {unknown}")
        if any(pct < 0 for pct in traffic.values()) or sum(traffic.values()) not in (0, 100):
            raise WorkspaceError(f"traffic must be >= 0 and sum to 100 (or 0): {traffic}")
        if any(traffic.get(name, 0) > 0 for name in record.get("mirror", {})):
            raise ConflictError(f"{sorted(record['mirror'])} mirror live traffic: stop the mirror first")
        record["traffic"] = {name: traffic.get(name, 0) for name in record["deployments"]}
        return self._endpoint(endpoint)

    def credentials(self, endpoint: str) -> Credentials:
        self.ws.enter("endpoints.credentials")
        if endpoint not in self.ws.endpoint_records:
            raise NotFoundError(f"endpoint {endpoint} not found")
        return Credentials(scoring_uri=self.ws.scoring.url, key=SecretStr(FAKE_KEY))

    def invoke(
        self, endpoint: str, request: ScoringRequest, deployment: str | None = None, timeout_s: float = 120
    ) -> ScoreResult:
        self.ws.enter("endpoints.invoke")
        record = self.ws.endpoint_records.get(endpoint, {})
        if deployment is not None and deployment not in record.get("deployments", {}):
            raise NotFoundError(f"deployment {endpoint}/{deployment} not found")
        served = deployment
        if served is None:  # the traffic split picks one, and the mirror gets a copy
            weighted = [(name, share) for name, share in record.get("traffic", {}).items() if share > 0]
            if weighted:
                served = random.choices([n for n, _ in weighted], weights=[w for _, w in weighted])[0]
            for name, share in record.get("mirror", {}).items():
                if random.random() * 100 < share:
                    self._serve(endpoint, name, request, timeout_s, "mirror")
        if served is None:
            return scoring.score(self.credentials(endpoint), request, None, timeout_s)
        return self._serve(endpoint, served, request, timeout_s, "targeted" if deployment else "split")

    def stream(self, endpoint: str, request: ScoringRequest, deployment: str | None = None) -> Iterator[str]:
        yield from one_piece(self.invoke(endpoint, request, deployment))  # the fake's scoring server answers whole

    def _serve(self, endpoint: str, name: str, request: ScoringRequest, timeout_s: float, kind: str) -> ScoreResult:
        record = self.ws.endpoint_records[endpoint]
        model = record["deployments"][name].model
        if record["traffic"].get(name, 0) > 0 and random.random() < self.ws.fails_under_traffic.get(model, 0.0):
            result = ScoreResult(status_code=500, output=None, latency_ms=5.0, error="HTTP 500: model crashed")
        else:
            self.ws.scoring.deployment_header = name
            result = scoring.score(self.credentials(endpoint), request, name, timeout_s)
        latency = result.latency_ms + self.ws.extra_latency_ms.get(model, 0.0)
        self.ws.served[(endpoint, name)].append((result.status_code, latency, kind))
        return result

    def set_mirror(self, endpoint: str, mirror: dict[str, int]) -> Endpoint:
        self.ws.enter("endpoints.set_mirror")
        record = self.ws.endpoint_records.get(endpoint)
        if record is None:
            raise NotFoundError(f"endpoint {endpoint} not found")
        wanted = {name: share for name, share in mirror.items() if share}
        if set(wanted) - set(record["deployments"]):
            raise NotFoundError(f"no deployments {sorted(set(wanted) - set(record['deployments']))}")
        if len(wanted) > 1 or any(not 0 < share <= 50 for share in wanted.values()):
            raise WorkspaceError(f"mirror one deployment at 1..50% (or none): {mirror}")
        if any(record["traffic"].get(name, 0) > 0 for name in wanted):
            raise ConflictError(f"{sorted(wanted)} take live traffic: a mirror must take none")
        record["mirror"] = wanted
        return self._endpoint(endpoint)

    def traffic(self, endpoint: str, since: TrafficReading | None = None) -> TrafficReading:
        self.ws.enter("endpoints.traffic")
        if endpoint not in self.ws.endpoint_records:
            raise NotFoundError(f"endpoint {endpoint} not found")
        counts, found = {}, {}
        for (name_of, deployment), rows in self.ws.served.items():
            if name_of != endpoint:
                continue
            counts[deployment] = len(rows)
            window = rows[(since.mark.get(deployment, 0) if since else 0) :]
            kinds = {kind for *_, kind in window}
            found[deployment] = DeploymentTraffic(
                requests=len(window),
                errors=sum(1 for code, _, _ in window if code >= 500),
                mirrored=sum(1 for *_, kind in window if kind == "mirror"),
                p95_ms=p95([latency for _, latency, _ in window]),
                requests_by_kind={kind: sum(1 for *_, k in window if k == kind) for kind in kinds},
                p95_ms_by_kind={kind: p95([ms for _, ms, k in window if k == kind]) for kind in kinds},
            )
        return TrafficReading(at=time.time(), deployments=found, mark=counts)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        self.ws.enter("endpoints.delete_deployment")
        record = self.ws.endpoint_records.get(endpoint)
        if record is None or name not in record["deployments"]:
            return
        if record["traffic"].get(name, 0) > 0:
            raise ConflictError(f"deployment {name} still takes {record['traffic'][name]}% of traffic")
        record["deployments"].pop(name)
        record["traffic"].pop(name, None)
        record.get("mirror", {}).pop(name, None)
        self.ws.deleted.append(f"{endpoint}/{name}")

    def delete(self, endpoint: str) -> None:
        self.ws.enter("endpoints.delete")
        if self.ws.endpoint_records.pop(endpoint, None) is not None:
            self.ws.deleted.append(endpoint)


def p95(latencies: list[float]) -> float | None:
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else None


class FakeChatFlows:
    """The chat flow's runner without Prompt flow: each prompt goes through the scoring client to the deployment, as
    the flow's tool sends it. `mode`: ok | unanswered (every prompt fails) | broken (the batch run cannot start)."""

    def __init__(self, installed: bool = True) -> None:
        self.installed = installed
        self.mode = "ok"
        self.batches: list[dict] = []

    def check(self) -> None:
        if not self.installed:
            raise WorkspaceError('Prompt flow is not installed: pip install -e ".[promptflow]"')

    def batch(self, endpoint, credentials, deployment, questions, parameters, workspace_kind) -> ChatBatch:
        self.check()
        self.batches.append({"endpoint": endpoint, "deployment": deployment, "questions": list(questions)})
        if self.mode == "broken":
            raise WorkspaceError("could not save Prompt flow connection: no keyring")
        rows = []
        for question in questions:
            if self.mode == "unanswered":
                rows.append(ChatBatchRow(question=question, error="the endpoint answered HTTP 500: model crashed"))
                continue
            request = ScoringRequest(messages=[{"role": "user", "content": question}], parameters=parameters)
            result = scoring.score(credentials, request, deployment=deployment)
            rows.append(ChatBatchRow(question=question, answer=result.output, error=result.error))
        return ChatBatch(run=f"fake_batch_{len(self.batches)}", status="Completed", rows=tuple(rows))


# ---------------------------------------------------------------- the fake as a workspace kind

FAKES: dict[str, FakeWorkspace] = {}  # name -> instance, for `workspace: {kind: memory, name: ...}` profiles


class MemoryWorkspaceSettings(FormModel):
    """The in-memory fake as a profile's workspace section: registered like any other kind (ARCHITECTURE.md,
    "Adding a workspace")."""

    model_config = ConfigDict(extra="forbid", title="In memory (tests)")

    kind: Literal["memory"] = Field("memory", description="The tests' in-memory workspace.")
    state_dir: str = Field(".tunegate", description="Where runs and sampled data are kept.")
    name: str = Field("default", description="Which FakeWorkspace of tests.fakes.FAKES.")

    @property
    def model_compute_rules(self) -> bool:
        return True


def open_memory(settings: MemoryWorkspaceSettings) -> FakeWorkspace:
    try:
        return FAKES[settings.name]
    except KeyError:
        raise WorkspaceError(f"no fake workspace named {settings.name!r}; put one in tests.fakes.FAKES") from None


# registered by a process that wants profiles to name it (tests/test_kinds.py), before flows.params is imported:
# the tests' own process keeps the table as users have it (local, azure), which the form tests check
MEMORY_KIND = WorkspaceKind("memory", MemoryWorkspaceSettings, open_memory)


def register_memory_kind() -> WorkspaceKind:
    return register_kind(MEMORY_KIND)
