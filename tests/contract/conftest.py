"""The workspaces the contract suite runs on: the in-memory fake, the Azure adapter on the HTTP replay, and the
real local workspace (slow: a real trainer, MLflow and endpoint servers). A new adapter gets a harness here."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import responses
from azure.ai.ml import MLClient

from tasks.compute import ValidatedCompute, validate
from tasks.finetune import build_spec, submit_or_reattach
from tasks.sampling import sample_to_directory
from tasks.settings import DataSettings, FinetuneSettings
from tests.azure_replay import ENDPOINT_KEY, RG, SUB, WS, FakeAzureML, FakeCredential
from tests.fakes import FAKE_KEY, FakeWorkspace, ScoringServer
from workspaces.azure.workspace import AzureWorkspace
from workspaces.local.workspace import LocalWorkspace
from workspaces.ports import (
    ComputeSpec,
    DataRef,
    FinetuneSpec,
    JobRef,
    JobState,
    TransientWorkspaceError,
    Workspace,
    WorkspaceError,
)


class Harness:
    """One workspace under contract, with what the suite needs to drive it."""

    name: str
    workspace: Workspace
    foundation: str
    instance_type: str

    def spec(self, long: bool = False) -> FinetuneSpec:
        """A fine-tune the workspace can run; `long` runs until cancelled."""
        raise NotImplementedError

    def wait(self, job: JobRef, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.workspace.jobs.status(job).state.terminal:
            assert time.monotonic() < deadline, f"job {job.name} did not end in {timeout_s} s"
            time.sleep(0.2)

    def completed_job(self) -> JobRef:
        if not hasattr(self, "_completed"):
            self._completed = submit_or_reattach(self.workspace.jobs, self.spec(), f"contract-done-{self.name}")
            self.wait(self._completed)
        return self._completed

    def transient_failure(self) -> Callable[[], object]:
        """Arrange that the returned call fails in a way that may go away (throttling, 5xx, a dead server)."""
        raise NotImplementedError

    def permanent_failure(self) -> Callable[[], object]:
        """Arrange that the returned call fails in a way a retry cannot fix (refused, not allowed)."""
        raise NotImplementedError


class MemoryHarness(Harness):
    name, foundation, instance_type = "memory", "Phi-3-mini-4k-instruct", "Standard_NC6s_v3"

    def __init__(self, scoring: ScoringServer) -> None:
        self.workspace = self.fake = FakeWorkspace(scoring)

    def spec(self, long: bool = False) -> FinetuneSpec:
        self.fake.job_states = [JobState.RUNNING] if long else [JobState.RUNNING, JobState.COMPLETED]
        foundation = self.workspace.registry.get_foundation_model(self.foundation)
        data = DataRef(train="mem://train", test="mem://test", fingerprint="fp")
        compute = ValidatedCompute(name="gpu", size="Standard_NC24ads_A100_v4", gpus_per_node=1)
        return build_spec(foundation, compute, data, FinetuneSettings(), "contract")

    def transient_failure(self) -> Callable[[], object]:
        self.fake.faults["endpoints.get"].append(TransientWorkspaceError("503 from the fake"))
        return lambda: self.workspace.endpoints.get("any")

    def permanent_failure(self) -> Callable[[], object]:
        self.fake.faults["endpoints.get"].append(WorkspaceError("403 from the fake"))
        return lambda: self.workspace.endpoints.get("any")


class AzureHarness(Harness):
    name, foundation, instance_type = "azure", "Phi-3-mini-4k-instruct", "Standard_NC6s_v3"

    def __init__(self, replay: FakeAzureML, data_dir: Path) -> None:
        self.replay = replay
        credential = FakeCredential()
        self.workspace = AzureWorkspace(
            MLClient(credential, subscription_id=SUB, resource_group_name=RG, workspace_name=WS),
            MLClient(credential, registry_name="azureml"),
        )
        for name in ("train_sft.jsonl", "test_sft.jsonl"):
            (data_dir / name).write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
        self.data_dir = data_dir

    def spec(self, long: bool = False) -> FinetuneSpec:
        self.replay.job_status_sequence = ["Running"] if long else ["Running", "Completed"]
        foundation = self.workspace.registry.get_foundation_model(self.foundation)
        data = self.workspace.data.upload(self.data_dir / "train_sft.jsonl", self.data_dir / "test_sft.jsonl", "fp")
        compute = ValidatedCompute(name="gpu", size="Standard_NC24ads_A100_v4", gpus_per_node=1)
        return build_spec(foundation, compute, data, FinetuneSettings(num_train_epochs=1), "contract")

    def transient_failure(self) -> Callable[[], object]:
        self.replay.faults["GET /onlineEndpoints/"] = [503] * 4  # more than the SDK's own retries
        return lambda: self.workspace.endpoints.get("any")

    def permanent_failure(self) -> Callable[[], object]:
        self.replay.faults["GET /onlineEndpoints/"] = [403] * 4
        return lambda: self.workspace.endpoints.get("any")


class LocalHarness(Harness):
    name, foundation, instance_type = "local", "tiny-phi3-chat", "local-cpu"

    def __init__(self, root: Path) -> None:
        self.workspace = self.local = LocalWorkspace(root / "workspace")
        sampled = sample_to_directory(DataSettings(percent=10, synthetic_rows=1000), root / "run", root / "cache")
        foundation = self.workspace.registry.get_foundation_model(self.foundation)
        compute = validate(
            self.workspace.compute.ensure(ComputeSpec(name="local", size="local-cpu")),
            foundation,
            self.workspace.compute.list_sizes(),
        )
        data = self.workspace.data.upload(
            Path(sampled.files["train_sft"]), Path(sampled.files["test_sft"]), sampled.fingerprint
        )
        self._spec = build_spec(foundation, compute, data, FinetuneSettings(), "contract")

    def spec(self, long: bool = False) -> FinetuneSpec:
        if not long:
            return self._spec
        return self._spec.model_copy(update={"parameters": {**self._spec.parameters, "num_train_epochs": 500}})

    def transient_failure(self) -> Callable[[], object]:
        # an endpoint whose server died: the workspace can bring it back, so it is worth a retry
        self.workspace.endpoints.ensure("contract-dead")
        info = json.loads((self.local.root / "endpoints" / "contract-dead" / "server.json").read_text())
        os.killpg(info["pid"], signal.SIGKILL)
        time.sleep(0.3)
        return lambda: self.workspace.endpoints.set_traffic("contract-dead", {})

    def permanent_failure(self) -> Callable[[], object]:
        return lambda: self.workspace.compute.ensure(ComputeSpec(name="x", size="Standard_NC6"))


@pytest.fixture(scope="session")
def scoring() -> Iterator[ScoringServer]:
    server = ScoringServer(key=ENDPOINT_KEY)
    yield server
    server.close()


@pytest.fixture(scope="module")
def local_harness(tmp_path_factory) -> Iterator[LocalHarness]:
    harness = LocalHarness(tmp_path_factory.mktemp("contract-local"))
    yield harness
    for job in harness.local.inventory().running_jobs:
        harness.local.jobs.cancel(JobRef(name=job))
    for endpoint in harness.local.inventory().endpoints:
        harness.local.endpoints.delete(endpoint)


@pytest.fixture(params=["memory", "azure", pytest.param("local", marks=pytest.mark.slow)])
def harness(request, scoring, tmp_path) -> Iterator[Harness]:
    scoring.mode, scoring.key = "ok", FAKE_KEY if request.param == "memory" else ENDPOINT_KEY
    if request.param == "memory":
        yield MemoryHarness(scoring)
    elif request.param == "azure":
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            yield AzureHarness(FakeAzureML(rsps, scoring.url), tmp_path)
    else:
        yield request.getfixturevalue("local_harness")
