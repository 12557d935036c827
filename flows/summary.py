"""What a run did, in one object: printed by the CLI, written by --summary-json, kept as a Prefect artifact.
It never holds a secret: endpoint keys stay inside the workspace and the scoring client."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
    deployment: str | None = None
    traffic: dict[str, int] = Field(default_factory=dict)


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

    def markdown(self) -> str:
        metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(self.metrics.items())) or "| - | - |"
        reasons = "\n".join(f"- {r}" for r in self.gate.reasons) or "- (gate not reached)"
        return (
            f"# tunegate run: {self.status}\n\n"
            f"- data: {self.data.rows} fingerprint `{self.data.fingerprint}` ({self.data.dropped_invalid} invalid rows dropped)\n"
            f"- model: {self.model.name}:{self.model.version} (from {self.model.foundation})\n"
            f"- job: {self.job.name} {self.job.url or ''}\n"
            f"- approval: {self.approval.decision} by {self.approval.approver}\n"
            f"- endpoint: {self.endpoint.name} / {self.endpoint.deployment} traffic {self.endpoint.traffic}\n"
            f"- smoke: ok={self.smoke.ok} latency_ms={self.smoke.latency_ms} {self.smoke.error or ''}\n"
            f"- teardown: {self.teardown.mode} done={self.teardown.done} deleted={self.teardown.deleted}\n"
            + (f"- error: {self.error}\n" if self.error else "")
            + f"\n| metric | value |\n|---|---|\n{metrics}\n\n**Gate**\n\n{reasons}\n"
        )
