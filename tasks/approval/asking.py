"""Asking a person: pause the run for a `Decision` until one deadline (whatever happens in between), tell the
approvers, and label the run with the process that waits.

A person decides on a paused run: the Prefect UI's Resume form or `tunegate approve|reject RUN_ID`, both filling
`Decision`. No environment variable or flag skips it: each flow attempt pauses under a key of its own (a reused key
would hand back the previous attempt's answer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field, ValidationError, field_validator

from tasks import notify
from tasks.approval.policy import ApprovalRecord, now_iso
from tasks.approval.render import form_description, headline
from tasks.gate import GateResult
from tasks.settings import ApprovalSettings
from workspaces.ports import ModelVersion


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


class ManualApprovalNeedsServer(ValueError):
    pass


# the API of the temporary server `tunegate run` started for itself (flows/ephemeral.py): gone with the run, no
# place for a person to decide on it
TEMPORARY_API_ENV = "TUNEGATE_TEMPORARY_PREFECT_API"


def has_prefect_server() -> bool:
    """True when runs talk to a real Prefect server (PREFECT_API_URL, not the run's temporary one), which is where a
    person can resume them."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return bool(url) and url != os.environ.get(TEMPORARY_API_ENV)


def require_server_for_manual(settings: ApprovalSettings) -> None:
    if settings.policy == "manual" and not has_prefect_server():
        raise ManualApprovalNeedsServer(
            "approval.policy manual needs a Prefect server a reviewer can reach: start one with "
            "`prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
            "(or `prefect config set PREFECT_API_URL=...`) and run again"
        )


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
    review: str,
    model: ModelVersion,
    gate: GateResult,
    settings: ApprovalSettings,
    key: str,
    poll_interval_s: int = 2,
    answers: str | None = None,
) -> ApprovalRecord:
    """Pause the run until a person decides; a timeout is a reject. The full review is the run's `approval-review`
    artifact, linked from the short form text. An answer without a decision or a name is asked again."""
    artifact_id = create_markdown_artifact(
        key="approval-review", markdown=review, description=f"review of {model.name}:{model.version}"
    )
    description = form_description(model, gate, review_link(artifact_id))
    timeout_s = max(1, int(settings.timeout_hours * 3600))
    with tell_approvers(settings, model, gate, review_link(artifact_id), timeout_s, answers):
        label_waiter()
        return _wait_for_a_decision(model, gate, settings, key, poll_interval_s, description, artifact_id, timeout_s)


def tell_approvers(
    settings: ApprovalSettings,
    model: ModelVersion,
    gate: GateResult,
    review_url: str | None,
    timeout_s: int,
    answers: str | None = None,
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
        answers=answers,
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

    labels: dict[str, bool | int | float | str] = {
        f"{WAITER_LABEL}.{key}": str(value) for key, value in identity(os.getpid()).items() if value
    }
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(flow_run.id, labels)
    except Exception as exc:  # noqa: BLE001 - without them a reviewer is simply not warned of a dead run
        get_run_logger().info("could not label the run with its process: %s", exc)


def answer_within(
    timeout_s: float,
    ask: Callable[[int, int], Decision],
    on_invalid: Callable[[ValidationError], None],
    clock: Callable[[], float] = time.monotonic,
) -> Decision | None:
    """Ask (round number, whole seconds left) until a valid answer comes; None once the deadline passes. One
    deadline over every round: an invalid answer does not give the reviewer more time."""
    from prefect.exceptions import FlowPauseTimeout

    deadline = clock() + timeout_s
    for round_ in range(1, 100):
        left_s = deadline - clock()
        if left_s < 1:
            return None
        try:
            return ask(round_, int(left_s))
        except FlowPauseTimeout:
            return None
        except ValidationError as exc:  # an answer the form should not have let through: ask again
            on_invalid(exc)
    raise RuntimeError("no valid approval input after 99 rounds")


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
    from tasks.approval.pausing import pause_awaiting

    logger = get_run_logger()
    form = {"description": description}

    def ask(round_: int, left_s: int) -> Decision:
        return pause_awaiting(
            Decision.with_initial_data(description=form["description"]),
            timeout=left_s,
            poll_interval=poll_interval_s,
            key=f"{key}-ask{round_}",
        )

    def invalid(error: ValidationError) -> None:
        logger.warning("invalid approval input (%s); asking again", error.errors()[0]["msg"])
        form["description"] = (
            "**The last answer was invalid (a decision and an approver's name are required); please answer "
            "again.**\n\n" + form_description(model, gate, review_link(artifact_id))
        )

    answer = answer_within(timeout_s, ask, invalid)
    if answer is None:
        return ApprovalRecord(
            approved=False,
            approver="timeout",
            policy=settings.policy,
            decided_at=now_iso(),
            comment=f"no decision within {settings.timeout_hours} h: rejected",
        )
    return ApprovalRecord(
        approved=answer.approved,
        approver=answer.approver,
        comment=answer.comment,
        policy=settings.policy,
        decided_at=now_iso(),
    )
