"""The approval gate: nothing goes live without a recorded decision on the model version.

Policies: `auto` approves (approver "policy:auto"); `auto-if-better` approves when the candidate beats the
champion by the margin (or there is no champion) and otherwise needs a person; `manual` always needs a person.
A person's decision is taken by pausing the run for input (issue #4); until that is wired in, a run that
needs a person records a reject, so the safe outcome is the default.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.errors import stage
from tasks.metrics import EVAL_LOSS, GateResult
from tasks.settings import ApprovalSettings
from workspaces.base import ModelVersion, Workspace

APPROVED, REJECTED = "approved", "rejected"


class Decision(BaseModel):
    approved: bool
    approver: str
    comment: str = ""
    policy: str
    decided_at: str = ""

    @property
    def label(self) -> str:
        return APPROVED if self.approved else REJECTED


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def policy_decision(settings: ApprovalSettings, gate: GateResult) -> Decision | None:
    """The decision a policy makes on its own, or None when a person must decide."""
    if settings.policy == "auto":
        return Decision(approved=True, approver="policy:auto", comment="auto policy approves every gated model",
                        policy="auto", decided_at=now_iso())
    if settings.policy == "auto-if-better":
        candidate = gate.metrics.get(EVAL_LOSS)
        if gate.champion is None:
            return Decision(approved=True, approver="policy:auto-if-better", policy="auto-if-better",
                            comment="no champion yet; the gate passed", decided_at=now_iso())
        if gate.champion_eval_loss is not None and candidate is not None and candidate < gate.champion_eval_loss - settings.margin:
            return Decision(
                approved=True, approver="policy:auto-if-better", policy="auto-if-better", decided_at=now_iso(),
                comment=f"eval_loss {candidate:.4f} beats champion {gate.champion} ({gate.champion_eval_loss:.4f}) "
                f"by more than the margin {settings.margin}",
            )
    return None


def decision_tags(decision: Decision) -> dict[str, str]:
    return {
        "decision": decision.label,
        "approver": decision.approver,
        "decided_at": decision.decided_at,
        "decision_comment": decision.comment[:500],
        "decision_policy": decision.policy,
    }


def is_approved(model: ModelVersion) -> bool:
    return model.tags.get("decision") == APPROVED


def decision_markdown(model: ModelVersion, decision: Decision, gate: GateResult) -> str:
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(gate.metrics.items()))
    return (
        f"# {decision.label.title()}: {model.name} version {model.version}\n\n"
        f"- approver: **{decision.approver}** ({decision.policy})\n- decided at: {decision.decided_at}\n"
        f"- comment: {decision.comment or '-'}\n- champion: {gate.champion or 'none'}\n\n"
        f"| metric | value |\n|---|---|\n{rows}\n\n**Gate**\n\n" + "\n".join(f"- {r}" for r in gate.reasons)
    )


@stage("approval gate")
def approval_gate(workspace: Workspace, settings: ApprovalSettings, model: ModelVersion, gate: GateResult) -> tuple[Decision, ModelVersion]:
    decision = policy_decision(settings, gate)
    if decision is None:
        decision = Decision(
            approved=False, approver="policy:" + settings.policy, policy=settings.policy, decided_at=now_iso(),
            comment="a person must decide and this run cannot ask one (manual approval needs issue #4); rejected",
        )
    model = workspace.tag_model(model, decision_tags(decision))
    create_markdown_artifact(
        key="approval-decision", markdown=decision_markdown(model, decision, gate),
        description=f"{decision.label} {model.name}:{model.version}",
    )
    return decision, model
