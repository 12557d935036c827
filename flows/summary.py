"""What a run did, in one object: printed by the CLI, written by --summary-json, kept as a Prefect artifact.
Each stage's result is recorded by the summary itself (`record_*`), so the flow only says what happened.
It never holds a secret: endpoint keys stay inside the workspace and the scoring client."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tasks.approval import ApprovalRecord
from tasks.deploy import ServingState, SmokeResult
from tasks.metrics import GateResult
from tasks.sampling import SampledData
from tasks.teardown import TeardownResult
from workspaces.base import FinetuneSpec, FoundationModel, JobRef, ModelVersion


class DataSummary(BaseModel):
    rows: dict[str, int] = Field(default_factory=dict)
    dropped_invalid: int = 0
    fingerprint: str | None = None


class ModelSummary(BaseModel):
    foundation: str | None = None
    name: str | None = None
    version: str | None = None


class GateSummary(BaseModel):
    passed: bool | None = None
    reasons: list[str] = Field(default_factory=list)


class ApprovalSummary(BaseModel):
    decision: str | None = None
    approver: str | None = None
    comment: str | None = None


class EndpointSummary(BaseModel):
    name: str | None = None
    deployment: str | None = None  # the candidate's deployment (None once rolled back)
    traffic: dict[str, int] = Field(default_factory=dict)  # read back from the workspace
    models: dict[str, str] = Field(default_factory=dict)  # deployment -> "name:version", read back
    live: list[str] = Field(default_factory=list)  # model versions that take traffic, read back


class SmokeSummary(BaseModel):
    ok: bool | None = None
    latency_ms: float | None = None
    error: str | None = None
    sample_output: str | None = None


class TeardownSummary(BaseModel):
    mode: str | None = None
    done: bool = False
    deleted: list[str] = Field(default_factory=list)


class JobSummary(BaseModel):
    name: str | None = None
    url: str | None = None
    display_name: str | None = None
    reattached: bool = False
    reused: bool = False  # completed before this run: nothing was trained

    @property
    def how(self) -> str:
        if self.reused:
            return "reused: completed earlier with the same inputs, not trained again"
        return "re-attached: started earlier with the same inputs" if self.reattached else "submitted by this run"


class RunSummary(BaseModel):
    status: str = "running"  # succeeded | gate_failed | rejected | smoke_failed | failed | cancelled
    flow_run_id: str | None = None
    workspace: str | None = None
    error: str | None = None
    data: DataSummary = Field(default_factory=DataSummary)
    model: ModelSummary = Field(default_factory=ModelSummary)
    job: JobSummary = Field(default_factory=JobSummary)
    metrics: dict[str, float] = Field(default_factory=dict)
    gate: GateSummary = Field(default_factory=GateSummary)
    approval: ApprovalSummary = Field(default_factory=ApprovalSummary)
    endpoint: EndpointSummary = Field(default_factory=EndpointSummary)
    smoke: SmokeSummary = Field(default_factory=SmokeSummary)
    teardown: TeardownSummary = Field(default_factory=TeardownSummary)
    seconds: float | None = None

    def record_data(self, sampled: SampledData) -> None:
        self.data = DataSummary(rows=sampled.rows, fingerprint=sampled.fingerprint, dropped_invalid=sampled.dropped)

    def record_foundation(self, foundation: FoundationModel) -> None:
        self.model.foundation = f"{foundation.name}:{foundation.version}"

    def record_job(self, job: JobRef, spec: FinetuneSpec) -> None:
        self.job = JobSummary(
            name=job.name, url=job.url, display_name=spec.display_name, reattached=job.reattached, reused=job.reused
        )

    def record_gate(self, gate: GateResult) -> None:
        self.metrics = dict(gate.metrics)
        self.gate = GateSummary(passed=gate.passed, reasons=list(gate.reasons))

    def record_model(self, version: ModelVersion) -> None:
        self.model.name, self.model.version = version.name, version.version

    def record_waiting_for_approval(self) -> None:
        self.approval.decision = "waiting"

    def record_decision(self, decision: ApprovalRecord) -> None:
        self.approval = ApprovalSummary(decision=decision.label, approver=decision.approver, comment=decision.comment)

    def record_deployment(self, endpoint: str, deployment: str | None) -> None:
        self.endpoint.name, self.endpoint.deployment = endpoint, deployment

    def record_smoke(self, smoke: SmokeResult) -> None:
        self.smoke = SmokeSummary(
            ok=smoke.ok, latency_ms=smoke.latency_ms, error=smoke.error, sample_output=smoke.sample_output
        )

    def record_rollback(self) -> None:
        self.endpoint.deployment = None

    def record_endpoint(self, serving: ServingState | None) -> None:
        """What the workspace says serves, read back after promotion (not what the run meant to do)."""
        self.endpoint.traffic = dict(serving.traffic) if serving else {}
        self.endpoint.models = dict(serving.models) if serving else {}
        self.endpoint.live = serving.live if serving else []

    def record_teardown(self, result: TeardownResult) -> None:
        self.teardown = TeardownSummary(mode=result.mode, done=result.done, deleted=list(result.deleted))

    def record_teardown_failure(self, mode: str, error: BaseException) -> None:
        self.teardown = TeardownSummary(mode=mode, done=False)
        self.add_error(f"teardown failed: {error}")

    def record_outcome(self, status: str, error: str | None = None) -> None:
        self.status = status
        if error:
            self.add_error(error)

    def add_error(self, text: str) -> None:
        self.error = f"{self.error}; {text}" if self.error else text

    def markdown(self) -> str:
        metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(self.metrics.items())) or "| - | - |"
        reasons = "\n".join(f"- {r}" for r in self.gate.reasons) or "- (gate not reached)"
        return (
            f"# tunegate run: {self.status}\n\n"
            f"- data: {self.data.rows} fingerprint `{self.data.fingerprint}` "
            f"({self.data.dropped_invalid} invalid rows dropped)\n"
            f"- model: {self.model.name}:{self.model.version} (from {self.model.foundation})\n"
            f"- job: {self.job.name} ({self.job.how}) {self.job.url or ''}\n"
            f"- approval: {self.approval.decision} by {self.approval.approver}\n"
            f"- endpoint: {self.endpoint.name} / {self.endpoint.deployment} traffic {self.endpoint.traffic} "
            f"serving {self.endpoint.live or 'nothing'}\n"
            f"- smoke: ok={self.smoke.ok} latency_ms={self.smoke.latency_ms} {self.smoke.error or ''}\n"
            f"- teardown: {self.teardown.mode} done={self.teardown.done} deleted={self.teardown.deleted}\n"
            + (f"- error: {self.error}\n" if self.error else "")
            + f"\n| metric | value |\n|---|---|\n{metrics}\n\n**Gate**\n\n{reasons}\n"
        )
