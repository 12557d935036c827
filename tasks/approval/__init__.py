"""The approval gate: nothing goes live without a recorded decision on the model version.

    policy.py   who decides (auto, auto-if-better, manual) and the decision as recorded on the version
    asking.py   pausing the run for a person, one deadline across every round; notifications
    render.py   the review, the form text, the decision artifact

This module is the stage that records a decision, and the names the flow and the CLI use.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from tasks.approval.asking import (
    WAITER_LABEL,
    Decision,
    ManualApprovalNeedsServer,
    ask_a_person,
    duration_words,
    has_prefect_server,
    label_waiter,
    require_server_for_manual,
    review_link,
    ui_url,
)
from tasks.approval.policy import (
    APPROVED,
    REJECTED,
    ApprovalRecord,
    decision_tags,
    is_approved,
    now_iso,
    policy_decision,
    policy_record,
    recorded_decision,
)
from tasks.approval.render import decision_markdown, form_description, headline, review_markdown
from tasks.errors import stage
from tasks.gate import GateResult
from workspaces.ports import ModelRegistry, ModelVersion

__all__ = [
    "APPROVED",
    "REJECTED",
    "WAITER_LABEL",
    "ApprovalRecord",
    "Decision",
    "ManualApprovalNeedsServer",
    "ask_a_person",
    "decision_markdown",
    "decision_tags",
    "duration_words",
    "form_description",
    "has_prefect_server",
    "headline",
    "is_approved",
    "label_waiter",
    "now_iso",
    "policy_decision",
    "policy_record",
    "record_decision",
    "recorded_decision",
    "require_server_for_manual",
    "review_link",
    "review_markdown",
    "ui_url",
]


@stage("record decision")
def record_decision(
    registry: ModelRegistry,
    model: ModelVersion,
    decision: ApprovalRecord,
    gate: GateResult,
    links: dict[str, str] | None = None,
) -> ModelVersion:
    """Tags on the model version (decision, approver, time, comment) and a markdown artifact on the run."""
    model = registry.tag_model(model, decision_tags(decision))
    create_markdown_artifact(
        key="approval-decision",
        markdown=decision_markdown(model, decision, gate, links),
        description=f"{decision.label} {model.name}:{model.version}",
    )
    return model
