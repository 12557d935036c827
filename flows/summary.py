"""What a run did, in one object: printed by the CLI, written by --summary-json, kept as a Prefect artifact.
Each stage's result is fed to it in one place (`observe`, through flows/run.Run.stage), so the flow only says what
happened. It never holds a secret: endpoint keys stay inside the workspace and the scoring client."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from flows.summary_sections import (
    ApprovalSummary,
    DataSummary,
    EndpointSummary,
    EvaluationSummary,
    GateSummary,
    JobSummary,
    LossCurveSummary,
    ModelSummary,
    RolloutSummary,
    SmokeSummary,
    TeardownSummary,
)
from tasks.approval import ApprovalRecord
from tasks.chatflow import ChatFlowSmoke
from tasks.deploy import SmokeResult
from tasks.evaluation import Evaluation
from tasks.gate import GateResult
from tasks.markdown import inline, link, table
from tasks.promote import ServingState
from tasks.rollout import Rollout
from tasks.sampling import SampledData
from tasks.teardown import TeardownResult
from workspaces.ports import FinetuneSpec, FoundationModel, JobRef, ModelVersion


class RunStatus(enum.StrEnum):
    """How a run ended (or where it is): the summary's `status`."""

    RUNNING = "running"
    WAITING = "waiting"  # paused for a person's approval
    SUCCEEDED = "succeeded"
    GATE_FAILED = "gate_failed"
    REJECTED = "rejected"
    SMOKE_FAILED = "smoke_failed"
    EVALUATION_FAILED = "evaluation_failed"
    ROLLED_BACK = "rolled_back"  # a canary step broke a limit on live traffic: the live model back to 100%
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunSummary(BaseModel):
    status: RunStatus = RunStatus.RUNNING
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
    evaluation: EvaluationSummary = Field(default_factory=EvaluationSummary)
    rollout: RolloutSummary = Field(default_factory=RolloutSummary)
    teardown: TeardownSummary = Field(default_factory=TeardownSummary)
    loss_curve: LossCurveSummary = Field(default_factory=LossCurveSummary)
    links: dict[str, str] = Field(default_factory=dict)  # label -> URL: job, MLflow run, model version, endpoint
    seconds: float | None = None

    def observe(self, name: str, result: Any) -> None:
        """The one place the summary is fed: a stage's result (by the stage's name), or what a phase found."""
        recorder = OBSERVERS.get(name)
        if recorder is not None:
            recorder(self, result)

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
        self.gate = GateSummary(passed=gate.passed, reasons=list(gate.reasons), checks=list(gate.checks))

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
            ok=smoke.ok,
            latency_ms=smoke.latency_ms,
            error=smoke.error,
            sample_output=smoke.sample_output,
            no_reply=list(smoke.no_reply),
            promptflow=self.smoke.promptflow,
        )

    def record_promptflow(self, batch: ChatFlowSmoke) -> None:
        self.smoke.promptflow = batch

    def record_evaluation(self, found: Evaluation) -> None:
        self.evaluation = EvaluationSummary.of(found)

    def record_rollout(self, rollout: Rollout) -> None:
        self.rollout = RolloutSummary.of(rollout)

    def record_rollback(self) -> None:
        self.endpoint.deployment = None

    def record_endpoint(self, serving: ServingState | None) -> None:
        """What the workspace says serves, read back after promotion (not what the run meant to do)."""
        self.endpoint.traffic = dict(serving.traffic) if serving else {}
        self.endpoint.models = dict(serving.models) if serving else {}
        self.endpoint.live = serving.live if serving else []

    def record_teardown(self, result: TeardownResult) -> None:
        self.teardown = TeardownSummary(mode=result.mode, done=result.done, deleted=list(result.deleted))
        if self.endpoint.name and self.endpoint.name in result.deleted:  # its pages lead nowhere now
            for label in ENDPOINT_LINKS:
                self.links.pop(label, None)

    def record_teardown_failure(self, mode: str, error: BaseException) -> None:
        self.teardown = TeardownSummary(mode=mode, done=False)
        self.add_error(f"teardown failed: {error}")

    def record_outcome(self, status: RunStatus, error: str | None = None) -> None:
        self.status = RunStatus(status)
        if error:
            self.add_error(error)

    def add_error(self, text: str) -> None:
        self.error = f"{self.error}; {text}" if self.error else text

    def record_loss_curve(self, path: str | None, stored_at: str | None = None, error: str | None = None) -> None:
        self.loss_curve = LossCurveSummary(path=path, stored_at=stored_at, error=error)

    def record_links(self, links: dict[str, str]) -> None:
        self.links.update(links)

    def markdown(self) -> str:
        """The run-summary artifact: words and tables a person reads, links to open."""
        sections = [f"# tunegate run {OUTCOMES.get(self.status, self.status)}", self.verdict()]
        if self.error:
            sections.append(f"**What went wrong:** {inline(self.error)}")
        if self.links:
            rows = "\n".join(f"| {label} | {link(url)} |" for label, url in self.links.items())
            sections.append(f"## Links\n\n| page | link |\n|---|---|\n{rows}")
        split_rows = "\n".join(f"| {split} | {count:,} |" for split, count in self.data.rows.items())
        if split_rows:
            sections.append(
                f"## Data\n\n| split | rows |\n|---|---:|\n{split_rows}\n\n"
                f"Fingerprint `{self.data.fingerprint}`; {self.data.dropped_invalid} invalid rows left out."
            )
        facts = [
            ("foundation model", self.model.foundation),
            ("fine-tune job", f"{self.job.name} ({self.job.how})" if self.job.name else None),
            ("pipeline", self.job.display_name),
            ("registered as", f"{self.model.name} version {self.model.version}" if self.model.version else None),
        ]
        sections.append(table("## Model", [(key, value) for key, value in facts if value]))
        if self.metrics:
            rows = "\n".join(f"| {key} | {value:.4f} |" for key, value in sorted(self.metrics.items()))
            sections.append(f"## Metrics\n\n| metric | value |\n|---|---:|\n{rows}")
        if self.loss_curve.path or self.loss_curve.error:
            where = f"`{self.loss_curve.path}`" if self.loss_curve.path else f"not drawn: {self.loss_curve.error}"
            kept = f"; also stored with the job's tracking run: `{self.loss_curve.stored_at}`"
            sections.append(
                f"## Loss curve\n\n{where}{kept if self.loss_curve.stored_at else ''} "
                "(shown in the **loss-curve** artifact of this run)."
            )
        gate = {True: "passed", False: "failed", None: "not reached"}[self.gate.passed]
        reasons = "\n".join(f"- {inline(reason)}" for reason in self.gate.reasons)
        sections.append(f"## Metric gate: {gate}" + (f"\n\n{reasons}" if reasons else ""))
        if self.approval.decision:
            sections.append(
                table(
                    "## Approval",
                    [
                        ("decision", self.approval.decision),
                        ("by", self.approval.approver or "-"),
                        ("comment", self.approval.comment or "-"),
                    ],
                )
            )
        if self.endpoint.name:
            serving = "\n".join(
                f"| {name} | {self.endpoint.models.get(name, '-')} | {share}% |"
                for name, share in self.endpoint.traffic.items()
            )
            serving_table = f"\n\n| deployment | model | traffic |\n|---|---|---:|\n{serving}" if serving else ""
            sections.append(f"## Endpoint `{self.endpoint.name}`{serving_table}\n\n{self.serving_words()}")
        if self.smoke.ok is not None:
            latency = f" in {self.smoke.latency_ms:.0f} ms" if self.smoke.latency_ms is not None else ""
            said = f"\n\n> {inline(self.smoke.sample_output)}" if self.smoke.sample_output else ""
            outcome = "passed" if self.smoke.ok else f"failed: {inline(self.smoke.error or '')}"
            sections.append(f"## Smoke test\n\nThe endpoint answered a test prompt{latency}; {outcome}.{said}")
        if self.smoke.promptflow is not None:
            sections.append(self.promptflow_markdown(self.smoke.promptflow))
        if self.evaluation.passed is not None:
            sections.append(self.evaluation.markdown())
        if self.rollout.outcome is not None:
            sections.append(self.rollout.markdown())
        if self.teardown.mode:
            deleted = ", ".join(f"`{name}`" for name in self.teardown.deleted) or "nothing"
            state = "done" if self.teardown.done else "**not done**: see the error and `tunegate inventory`"
            sections.append(f"## Teardown ({self.teardown.mode})\n\n{state}; deleted {deleted}.")
        if self.seconds is not None:
            sections.append(f"Took {self.seconds:.0f} s.")
        return "\n\n".join(sections) + "\n"

    @staticmethod
    def promptflow_markdown(batch: ChatFlowSmoke) -> str:
        if batch.run is None:
            return f"## Through Prompt flow\n\nNo batch run: {inline(batch.error or '')}"
        rows = "\n".join(
            f"| {inline(row.question)} | {inline(row.answer) if row.answer is not None else '-'} | "
            f"{inline(row.error or '') if row.answer is None else ''} |"
            for row in batch.rows
        )
        where = f" Inputs, outputs and logs: `{batch.outputs_at}`." if batch.outputs_at else ""
        return (
            f"## Through Prompt flow\n\nBatch run `{batch.run}` (`pf run show-details --name {batch.run}`).{where}"
            f"\n\n| prompt | answer | error |\n|---|---|---|\n{rows}"
        )

    def verdict(self) -> str:
        """One sentence: what this run leaves behind."""
        model = f"{self.model.name} version {self.model.version}" if self.model.version else "no model"
        if self.status == "succeeded":
            live = ", ".join(self.endpoint.live) or "nothing"
            if self.teardown.mode == "keep":
                return f"Registered {model}; endpoint `{self.endpoint.name}` serves {live} and is kept running."
            return f"Registered {model}; endpoint `{self.endpoint.name}` served {live}, then was taken down."
        if self.status == "waiting":
            return f"Registered {model}; waiting for a person to approve it."
        if self.model.version:
            return f"Stopped: {model} did not go live."
        where = "at the metric gate: the fine-tuned model was" if self.status == "gate_failed" else "before a model was"
        return f"Stopped {where} not registered and nothing went live."

    def serving_words(self) -> str:
        if self.endpoint.live:
            return f"Serving {', '.join(self.endpoint.live)}."
        return "Serving nothing from this run."


ENDPOINT_LINKS = ("scoring URL", "endpoint in Studio")  # workspaces' link labels of an endpoint (see links())
OUTCOMES = {
    "succeeded": "succeeded",
    "gate_failed": "stopped: the metric gate failed",
    "rejected": "stopped: rejected",
    "smoke_failed": "stopped: the smoke test failed (rolled back)",
    "evaluation_failed": "stopped: the answer evaluation failed (rolled back)",
    "rolled_back": "stopped: rolled back during the rollout (the live model serves all traffic)",
    "failed": "failed",
    "cancelled": "cancelled",
    "running": "still running",
}


Recorder = Callable[[RunSummary, Any], None]
# stage (or phase finding) -> how the summary records it; stages not named here leave no trace in the summary
OBSERVERS: dict[str, Recorder] = {
    "sample_data": RunSummary.record_data,
    "pick_model": RunSummary.record_foundation,
    "job": lambda summary, found: summary.record_job(*found),
    "loss_curve": lambda summary, found: summary.record_loss_curve(*found),
    "check_metrics": RunSummary.record_gate,
    "register_model": RunSummary.record_model,
    "waiting": lambda summary, _: summary.record_waiting_for_approval(),
    "decision": RunSummary.record_decision,
    "deploy_candidate": lambda summary, deployed: summary.record_deployment(deployed.endpoint, deployed.deployment),
    "deployment": lambda summary, found: summary.record_deployment(*found),
    "smoke_invoke": RunSummary.record_smoke,
    "smoke_promptflow": RunSummary.record_promptflow,
    "record_evaluation": RunSummary.record_evaluation,
    "roll_back": lambda summary, _: summary.record_rollback(),
    "rollout": RunSummary.record_rollout,
    "read_endpoint": RunSummary.record_endpoint,
    "teardown": RunSummary.record_teardown,
}
