"""Approval policy: who decides, and the decision as recorded on the model version.

`auto` approves (approver "policy:auto"); `auto-if-better` approves when there is no champion, or when the
candidate beats the champion on loss by the margin (tasks/gate.beats_champion) *and* its answers win beyond chance
(the lower end of the win rate's 95% interval above one half, tasks/evaluation.clearly_better); otherwise a person
decides; `manual` always needs a person. A decision is recorded as tags on the version (decision_tags); promote
refuses a version without an approval, deploy one that was rejected.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from tasks.evaluation import Evaluation, clearly_better
from tasks.gate import EVAL_LOSS, GateResult, beats_champion
from tasks.settings import ApprovalSettings
from workspaces.ports import ModelVersion

APPROVED, REJECTED = "approved", "rejected"


class ApprovalRecord(BaseModel):
    """A decision as recorded: by a person, by a policy, or by a timeout."""

    approved: bool
    approver: str
    comment: str = ""
    policy: str
    decided_at: str = ""

    @property
    def label(self) -> str:
        return APPROVED if self.approved else REJECTED


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def policy_record(policy: str, approved: bool, comment: str) -> ApprovalRecord:
    """A decision made by a policy, recorded under the policy's name."""
    return ApprovalRecord(
        approved=approved, approver=f"policy:{policy}", comment=comment, policy=policy, decided_at=now_iso()
    )


def policy_decision(
    settings: ApprovalSettings, gate: GateResult, evaluation: Evaluation | None = None
) -> ApprovalRecord | None:
    """The decision a policy makes on its own, or None when a person must decide."""
    if settings.policy == "auto":
        return policy_record("auto", True, "auto policy approves every gated model")
    if settings.policy == "auto-if-better":
        if gate.comparison == "no-champion":
            answered = "; its answers passed the evaluation" if evaluation is not None else ""
            return policy_record("auto-if-better", True, f"no champion yet; the gate passed{answered}")
        # a champion measured on other data says nothing about which is better (beats_champion), nor does a loss
        # alone say the answers are better: both, or a person decides
        if beats_champion(gate, settings.margin) and clearly_better(evaluation):
            assert evaluation is not None and evaluation.win_rate_ci is not None
            low, high = evaluation.win_rate_ci
            return policy_record(
                "auto-if-better",
                True,
                f"eval_loss {gate.metrics[EVAL_LOSS]:.4f} beats champion {gate.champion} "
                f"({gate.champion_eval_loss:.4f}, {gate.comparison}) by more than the margin {settings.margin}, "
                f"and its answers win {evaluation.win_rate:.2f} (95% interval {low:.2f}-{high:.2f}) of the "
                "comparisons",
            )
    return None


def decision_tags(decision: ApprovalRecord) -> dict[str, str]:
    return {
        "decision": decision.label,
        "approver": decision.approver,
        "decided_at": decision.decided_at,
        "decision_comment": decision.comment[:500],
        "decision_policy": decision.policy,
    }


def recorded_decision(model: ModelVersion) -> ApprovalRecord | None:
    """The decision the version's tags record (decision_tags), or None when it has none."""
    if model.tags.get("decision") not in (APPROVED, REJECTED):
        return None
    return ApprovalRecord(
        approved=model.tags["decision"] == APPROVED,
        approver=model.tags.get("approver", "unknown"),
        comment=model.tags.get("decision_comment", ""),
        policy=model.tags.get("decision_policy", "unknown"),
        decided_at=model.tags.get("decided_at", ""),
    )


def is_approved(model: ModelVersion) -> bool:
    return model.tags.get("decision") == APPROVED
