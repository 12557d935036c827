"""The sections of a run summary (flows/summary.py), each what one part of the run found."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tasks.chatflow import ChatFlowSmoke
from tasks.evaluation import Evaluation
from tasks.evaluation_report import evaluation_scores
from tasks.gate import GateCheck
from tasks.markdown import inline
from tasks.rollout import Rollout, StepReport


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
    reasons: list[str] = Field(default_factory=list)  # "ok: ..." / "fail: ...", one per check
    checks: list[GateCheck] = Field(default_factory=list)  # the same checks, typed


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
    no_reply: list[str] = Field(default_factory=list)  # degenerate answers, with why (the evaluation decides)
    promptflow: ChatFlowSmoke | None = None  # smoke.promptflow: the batch run's prompts and answers


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


class LossCurveSummary(BaseModel):
    path: str | None = None  # the PNG in the run's directory
    stored_at: str | None = None  # the copy with the job's tracking run (MLflow artifact URI)
    error: str | None = None  # why there is none


class EvaluationSummary(BaseModel):
    """The answer evaluation's numbers (tasks/evaluation.Evaluation without its rows: those are the run's
    evaluation-answers artifact)."""

    passed: bool | None = None
    samples: int = 0
    candidate: str | None = None
    champion: str | None = None
    champion_source: str | None = None
    degenerate_rate: dict[str, float] = Field(default_factory=dict)
    similarity: dict[str, float] = Field(default_factory=dict)
    win_rate: float | None = None
    win_rate_ci: tuple[float, float] | None = None
    latency_ms: dict[str, dict[str, float]] = Field(default_factory=dict)
    judge: str | None = None
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, found: Evaluation) -> EvaluationSummary:
        return cls.model_validate(found.model_dump(exclude={"rows"}))

    def markdown(self) -> str:
        outcome = "passed" if self.passed else "failed"
        said = "\n".join(f"- {inline(text)}" for text in [*self.failures, *self.notes])
        return (
            f"## Answer evaluation: {outcome}\n\n{evaluation_scores(self)}"
            + (f"\n\n{said}" if said else "")
            + "\n\nEvery prompt with both answers: the **evaluation-answers** artifact of this run."
        )


class RolloutSummary(BaseModel):
    """The rollout's windows and how it ended (tasks/rollout.Rollout); outcome None: the run had none (ephemeral,
    a first model, rollout.enabled false, or it stopped before)."""

    outcome: str | None = None
    reason: str | None = None
    candidate: str | None = None
    live: str | None = None
    steps: list[StepReport] = Field(default_factory=list)

    @classmethod
    def of(cls, rollout: Rollout) -> RolloutSummary:
        return cls(
            outcome=rollout.outcome,
            reason=rollout.reason,
            candidate=f"{rollout.candidate} ({rollout.candidate_model})",
            live=f"{rollout.live} ({rollout.live_model})",
            steps=list(rollout.steps),
        )

    def markdown(self) -> str:
        rows = "\n".join(
            f"| {'mirror ' if step.phase == 'mirror' else ''}{step.traffic}% | {step.seconds:.0f} s | "
            f"{step.requests['candidate']} / {step.requests['live']} | {step.errors['candidate']} / "
            f"{step.errors['live']} | {_ms(step.p95_ms['candidate'])} / {_ms(step.p95_ms['live'])} | "
            f"{step.degenerate['candidate']:.0%} | {step.verdict} |"
            for step in self.steps
        )
        reason = f"\n\n{inline(self.reason)}" if self.reason else ""
        return (
            f"## Rollout: {self.outcome}\n\n{inline(self.candidate or '')} against {inline(self.live or '')}.{reason}"
            "\n\n| step | held | requests (candidate / live) | errors | p95 ms | no reply | verdict |"
            f"\n|---|---:|---:|---:|---:|---:|---|\n{rows}"
            "\n\nTimeline and picture: the **rollout** artifact of this run."
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
