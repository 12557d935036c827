"""The approval gate: nothing goes live without a recorded decision on the model version.

Policies: `auto` approves (approver "policy:auto"); `auto-if-better` approves when the candidate beats the
champion by the margin (or there is no champion) and otherwise needs a person; `manual` always needs a person.
A person decides on a paused run: the Prefect UI's Resume form or `tunegate approve|reject RUN_ID`, both filling
`Decision`. No environment variable or flag skips it: each flow attempt pauses under a key of its own (a reused key
would hand back the previous attempt's answer), and deploy refuses a version without a recorded approval.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Literal

from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field, ValidationError, field_validator

from tasks import curves, notify
from tasks.errors import stage
from tasks.markdown import link, table
from tasks.metrics import EVAL_LOSS, GateResult
from tasks.settings import ApprovalSettings
from workspaces.base import ModelVersion, Workspace

APPROVED, REJECTED = "approved", "rejected"


class Decision(RunInput):
    """What a reviewer fills in (the UI form of the paused run, or `tunegate approve|reject`). The decision is a
    required choice with no default: a form submitted without picking one is refused, never read as a reject."""

    decision: Literal["approve", "reject"] = Field(
        ..., description="approve: this model version takes traffic; reject: it does not."
    )
    approver: str = Field(..., min_length=1, description="Your name: recorded on the model version.")
    comment: str = Field("", description="Why (recorded on the model version).")

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    @field_validator("approver")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("approver must name a person")
        return value.strip()


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


class ManualApprovalNeedsServer(ValueError):
    pass


def has_prefect_server() -> bool:
    """True when runs talk to a real Prefect server (PREFECT_API_URL), which is where a person can resume them."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def require_server_for_manual(settings: ApprovalSettings) -> None:
    if settings.policy == "manual" and not has_prefect_server():
        raise ManualApprovalNeedsServer(
            "approval.policy manual needs a Prefect server a reviewer can reach: start one with "
            "`prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
            "(or `prefect config set PREFECT_API_URL=...`) and run again"
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def policy_record(policy: str, approved: bool, comment: str) -> ApprovalRecord:
    """A decision made by a policy, recorded under the policy's name."""
    return ApprovalRecord(
        approved=approved, approver=f"policy:{policy}", comment=comment, policy=policy, decided_at=now_iso()
    )


def policy_decision(settings: ApprovalSettings, gate: GateResult) -> ApprovalRecord | None:
    """The decision a policy makes on its own, or None when a person must decide."""
    if settings.policy == "auto":
        return policy_record("auto", True, "auto policy approves every gated model")
    if settings.policy == "auto-if-better":
        candidate = gate.metrics.get(EVAL_LOSS)
        if gate.comparison == "no-champion":
            return policy_record("auto-if-better", True, "no champion yet; the gate passed")
        # a champion measured on other data says nothing about which is better: a person decides
        if (
            gate.comparable
            and gate.champion_eval_loss is not None
            and candidate is not None
            and candidate < gate.champion_eval_loss - settings.margin
        ):
            return policy_record(
                "auto-if-better",
                True,
                f"eval_loss {candidate:.4f} beats champion {gate.champion} ({gate.champion_eval_loss:.4f}, "
                f"{gate.comparison}) by more than the margin {settings.margin}",
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


def decision_markdown(
    model: ModelVersion, decision: ApprovalRecord, gate: GateResult, links: dict[str, str] | None = None
) -> str:
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(gate.metrics.items()))
    who = "the policy" if decision.approver.startswith("policy:") else decision.approver
    facts = [
        ("decision", decision.label),
        ("by", f"{who} (approval policy {decision.policy})"),
        ("when", decision.decided_at),
        ("comment", decision.comment or "-"),
        ("champion", gate.champion or "none yet"),
        *((label, link(url)) for label, url in (links or {}).items()),
    ]
    gate_words = "passed" if gate.passed else "failed"
    return (
        f"{table(f'# {decision.label.title()}: {model.name} version {model.version}', facts)}\n\n"
        f"## Metrics\n\n| metric | value |\n|---|---:|\n{rows}\n\n## Metric gate: {gate_words}\n\n"
        + "\n".join(f"- {r}" for r in gate.reasons)
    )


def review_markdown(
    model: ModelVersion, gate: GateResult, facts: dict[str, str], loss_curve_png: bytes | None = None
) -> str:
    """What a reviewer decides from: the model, its data, metrics vs base vs champion, the gate, the target, and
    the loss curve (inline, so the review page shows it)."""
    metrics = gate.metrics
    champion = f"{gate.champion_eval_loss:.4f}" if gate.champion_eval_loss is not None else "-"

    def cell(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "-"

    rows = "\n".join(
        f"| {name} | {cell(metrics[name])} | {cell(metrics.get('base_' + name))} "
        f"| {champion if name == EVAL_LOSS else '-'} |"
        for name in ("eval_loss", "train_loss")
        if name in metrics
    )
    facts_md = "\n".join(f"- **{key}**: {value}" for key, value in facts.items())
    return (
        f"## Approve {model.name} version {model.version} for deployment?\n\n{facts_md}\n\n"
        f"| metric | candidate | base | champion ({gate.champion or 'none'}) |\n|---|---|---|---|\n{rows}\n\n"
        f"**Metric gate: {'passed' if gate.passed else 'FAILED'}**\n\n"
        + "\n".join(f"- {r}" for r in gate.reasons)
        + (f"\n\n### Loss per step\n\n{curves.markdown_image(loss_curve_png, 'loss curve')}" if loss_curve_png else "")
        + "\n\nIn the run's Resume form, choose **approve** or **reject** as the decision and give your name as "
        "**approver**; or `tunegate approve|reject <run id> --approver <name>`."
    )


def headline(gate: GateResult, bold: str = "") -> str:
    """'eval_loss 1.2345 vs champion m:2: 1.3000 (...); base 2.1000; gate passed'"""
    metrics = gate.metrics
    candidate = metrics.get(EVAL_LOSS)
    first = f"eval_loss {bold}{candidate:.4f}{bold}" if candidate is not None else "no eval_loss"
    if gate.champion is None:
        versus = "no champion yet"
    elif gate.champion_eval_loss is not None:
        versus = f"champion {gate.champion}: {gate.champion_eval_loss:.4f} ({gate.comparison})"
    else:
        versus = f"champion {gate.champion}: {bold}not comparable{bold} (measured on other data)"
    base = metrics.get("base_eval_loss")
    return f"{first} vs {versus}" + (f"; base {base:.4f}" if base is not None else "")


def form_description(model: ModelVersion, gate: GateResult, review_url: str | None) -> str:
    """The Resume form's text: short enough to read without scrolling; everything else is in the review artifact."""
    failures = len(gate.failures)
    lines = [
        f"### Approve {model.name} version {model.version}?",
        headline(gate, bold="**"),
        f"Metric gate: {'passed' if gate.passed else 'FAILED'} ({len(gate.reasons)} checks, {failures} failed)",
        f"Full review (every gate check, data, loss curve, target): {review_url}" if review_url else "",
        "Choose **approve** or **reject**, and give your name.",
    ]
    return "\n\n".join(line for line in lines if line)


def ui_url() -> str | None:
    """The Prefect UI a person opens: PREFECT_UI_URL, else the API's address without /api."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return ui.rstrip("/") or None


def review_link(artifact_id: object) -> str | None:
    """The UI address of an artifact, when the run talks to a server whose UI a reviewer can open."""
    ui = ui_url()
    return f"{ui}/artifacts/artifact/{artifact_id}" if ui and artifact_id else None


def ask_a_person(
    review: str, model: ModelVersion, gate: GateResult, settings: ApprovalSettings, key: str, poll_interval_s: int = 2
) -> ApprovalRecord:
    """Pause the run until a person decides; a timeout is a reject. The full review is the run's `approval-review`
    artifact, linked from the short form text. An answer without a decision or a name is asked again."""
    artifact_id = create_markdown_artifact(
        key="approval-review", markdown=review, description=f"review of {model.name}:{model.version}"
    )
    description = form_description(model, gate, review_link(artifact_id))
    timeout_s = max(1, int(settings.timeout_hours * 3600))
    with tell_approvers(settings, model, gate, review_link(artifact_id), timeout_s):
        label_waiter()
        return _wait_for_a_decision(model, gate, settings, key, poll_interval_s, description, artifact_id, timeout_s)


def tell_approvers(
    settings: ApprovalSettings, model: ModelVersion, gate: GateResult, review_url: str | None, timeout_s: int
) -> notify.Reminder:
    """Notify the profile's blocks now; the returned context sends the reminder unless the decision comes first."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    notice = notify.ApprovalNotice(
        model=f"{model.name}:{model.version}",
        headline=headline(gate),
        run_name=flow_run.name or str(flow_run.id),
        run_url=f"{ui_url()}/runs/flow-run/{flow_run.id}" if ui_url() and flow_run.id else None,
        review_url=review_url,
        timeout_words=f"at {deadline:%Y-%m-%d %H:%M} UTC (in {duration_words(timeout_s)})",
    )
    if settings.notify:
        notify.send(settings.notify, notice.subject(), notice.body(), logger=logger)
    else:
        logger.info("waiting for a person to approve %s; approval.notify names no one to tell", notice.model)

    def remind() -> None:
        notify.send(settings.notify, notice.subject(reminder=True), notice.body(reminder=True), logger=logger)

    before_s = settings.remind_before_minutes * 60 if settings.notify else 0
    return notify.Reminder(timeout_s, before_s, remind)


def duration_words(seconds: float) -> str:
    """'3 h 12 min', '45 min'"""
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


WAITER_LABEL = "tunegate.waiter"  # labels of a paused run: the process that waits for the decision


def label_waiter() -> None:
    """Label this flow run with the process that waits in pause_flow_run (host, pid, its start time and boot): a
    reviewer's `tunegate approve` can then tell a run whose process was killed, which would never resume."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    from workspaces.local.processes import identity

    labels = {f"{WAITER_LABEL}.{key}": str(value) for key, value in identity(os.getpid()).items() if value}
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(flow_run.id, labels)
    except Exception as exc:  # noqa: BLE001 - without them a reviewer is simply not warned of a dead run
        get_run_logger().info("could not label the run with its process: %s", exc)


def _wait_for_a_decision(
    model: ModelVersion,
    gate: GateResult,
    settings: ApprovalSettings,
    key: str,
    poll_interval_s: int,
    description: str,
    artifact_id: object,
    timeout_s: int,
) -> ApprovalRecord:
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    logger = get_run_logger()
    for round_ in range(1, 100):
        try:
            answer = pause_flow_run(
                wait_for_input=Decision.with_initial_data(description=description),
                timeout=timeout_s,
                poll_interval=poll_interval_s,
                key=f"{key}-ask{round_}",
            )
        except FlowPauseTimeout:
            return ApprovalRecord(
                approved=False,
                approver="timeout",
                policy=settings.policy,
                decided_at=now_iso(),
                comment=f"no decision within {settings.timeout_hours} h: rejected",
            )
        except ValidationError as exc:  # an answer the form should not have let through: ask again
            logger.warning("invalid approval input (%s); asking again", exc.errors()[0]["msg"])
            description = (
                "**The last answer was invalid (a decision and an approver's name are required); please answer "
                "again.**\n\n" + form_description(model, gate, review_link(artifact_id))
            )
            continue
        return ApprovalRecord(
            approved=answer.approved,
            approver=answer.approver,
            comment=answer.comment,
            policy=settings.policy,
            decided_at=now_iso(),
        )
    raise RuntimeError("no valid approval input after 99 rounds")


@stage("record decision")
def record_decision(
    workspace: Workspace,
    model: ModelVersion,
    decision: ApprovalRecord,
    gate: GateResult,
    links: dict[str, str] | None = None,
) -> ModelVersion:
    """Tags on the model version (decision, approver, time, comment) and a markdown artifact on the run."""
    model = workspace.tag_model(model, decision_tags(decision))
    create_markdown_artifact(
        key="approval-decision",
        markdown=decision_markdown(model, decision, gate, links),
        description=f"{decision.label} {model.name}:{model.version}",
    )
    return model
