"""The reviewer's side of the approval gate, on a Prefect server: is one reachable, which runs wait for a
decision (with the review they show), and resuming one with a decision. `tunegate pending|approve|reject` are
thin wrappers over these; the UI's Resume form fills the same `Decision`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from tasks.approval import Decision, duration_words

FLOW_NAME = "tunegate"


class ReviewError(Exception):
    """A review action that cannot be done; the message says why and what to do."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage  # the caller's input was wrong (exit 2), not the state of the run (exit 1)


class PendingReview(BaseModel):
    run_id: str
    run_name: str
    times_out: datetime | None
    review: str | None


def server_url() -> str:
    """The Prefect API URL, after checking that a server answers there."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ReviewError(
            "PREFECT_API_URL is not set: start a server with `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`",
            usage=True,
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ReviewError(
            f"no Prefect server answers at {url} ({problem}); start one with `prefect server start`", True
        )
    return url


def pending_reviews(limit: int = 100) -> list[PendingReview]:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.input.actions import read_flow_run_input

    server_url()
    paused = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=paused),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
        reviews = []
        for run in runs:
            gone = waiter_gone(run)
            if gone is not None:  # it waits for nothing: never listed as waiting
                mark_crashed(client, run, gone)
                continue
            details = run.state.state_details if run.state else None
            keyset = details.run_input_keyset if details else None
            # the full review (the form shows a short text and links to it); else the form's text
            review = full_review(client, run.id) or (
                read_flow_run_input(keyset["description"], flow_run_id=run.id) if keyset else None
            )
            reviews.append(
                PendingReview(
                    run_id=str(run.id),
                    run_name=run.name,
                    review=review,
                    times_out=details.pause_timeout if details else None,
                )
            )
    return reviews


def waiter_gone(run) -> str | None:
    """Why the paused run `run` can never resume (its waiting process, on this host, is gone), or None when it may:
    alive, or on another host (nothing to check there: Prefect's own state says)."""
    from tasks.approval import WAITER_LABEL
    from workspaces.local.processes import process_matches, this_host

    labels = {key.removeprefix(f"{WAITER_LABEL}."): value for key, value in (run.labels or {}).items()}
    if labels.get("host") != this_host() or not str(labels.get("pid", "")).isdigit():
        return None
    record = {
        "pid": int(labels["pid"]),
        "pid_started": int(labels["pid_started"]) if str(labels.get("pid_started", "")).isdigit() else None,
        "boot_id": labels.get("boot_id"),
    }
    if process_matches(record):
        return None
    return f"the process that waited for the decision (pid {labels['pid']} on {labels['host']}) is gone"


def mark_crashed(client, run, why: str) -> None:
    """A paused run whose process is gone is over: say so on the server (the UI stops offering it for review)."""
    from prefect.states import Crashed

    try:
        client.set_flow_run_state(run.id, Crashed(message=f"{why}; start the run again"), force=True)
    except Exception:  # noqa: BLE001 - the refusal the caller gives says the same to the person
        pass


def full_review(client, flow_run_id) -> str | None:
    """The run's latest `approval-review` artifact: everything a reviewer decides from."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=["approval-review"])
        ),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    return str(found[0].data) if found else None


def pick_run(ref: str, waiting: list[tuple[str, str]]) -> str:
    """The id of the one waiting run (id, name) that `ref` names: its name, or a prefix of its id."""
    wanted = ref.strip().lower()
    by_name = [run_id for run_id, name in waiting if name.lower() == wanted]
    found = by_name or [run_id for run_id, _ in waiting if wanted and run_id.lower().startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ReviewError(
            f"no run waiting for a decision is named {ref!r} or has an id starting with it; "
            "`tunegate pending` lists them",
            usage=True,
        )
    names = ", ".join(f"{name} ({run_id[:8]})" for run_id, name in waiting if run_id in found)
    raise ReviewError(f"{ref!r} matches {len(found)} waiting runs: {names}; give more of the id", usage=True)


def describe_timeout(when: datetime | None, now: datetime | None = None) -> str:
    """When an approval times out, for a person: local time and how long from now ('14:05 (in 3 h 12 min)')."""
    if when is None:
        return "no timeout"
    now = now or datetime.now(when.tzinfo)
    local = when.astimezone()
    seconds = (when - now).total_seconds()
    if seconds < 0:
        return f"{local:%Y-%m-%d %H:%M} (passed)"
    left = f"in {duration_words(seconds)}"
    day = "%H:%M" if local.date() == (now.astimezone().date()) else "%Y-%m-%d %H:%M"
    return f"{local.strftime(day)} ({left})"


class Decided(BaseModel):
    """A decision handed to a waiting run: which run, and where a person watches it go on."""

    decision: Decision
    flow_run_id: str
    run_page: str | None  # the run's page in the Prefect UI


def decide(run_id: str, approved: bool, approver: str, comment: str = "") -> Decided:
    """Resume a paused run with a decision; `run_id` may also be the run's name or a unique prefix of its id.
    ReviewError says why it could not be done."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import resume_flow_run

    if not approver.strip():
        raise ReviewError("--approver must name a person", usage=True)
    try:
        flow_run_id = UUID(run_id)
    except ValueError:  # a name or an id prefix: among the runs waiting for a decision
        flow_run_id = UUID(pick_run(run_id, [(r.run_id, r.run_name) for r in pending_reviews()]))
    decision = Decision(decision="approve" if approved else "reject", approver=approver, comment=comment)
    server_url()
    refuse_unresumable(flow_run_id, run_id)
    try:
        resume_flow_run(flow_run_id, run_input=decision.model_dump(include={"decision", "approver", "comment"}))
    except FlowPauseTimeout:
        raise ReviewError(
            f"run {run_id} can no longer be resumed: its approval timed out (recorded as a reject)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - NotPausedError, ObjectNotFound, a refused input: say which
        raise ReviewError(f"could not resume run {run_id}: {type(exc).__name__}: {exc}") from None
    from tasks.approval.asking import ui_url

    ui = ui_url()
    return Decided(
        decision=decision, flow_run_id=str(flow_run_id), run_page=f"{ui}/runs/flow-run/{flow_run_id}" if ui else None
    )


def refuse_unresumable(flow_run_id: UUID, ref: str) -> None:
    """ReviewError unless the run waits for a decision and something is there to act on it: a crashed, cancelled
    or finished run, or a paused one whose process is gone, is refused with what to do."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise ReviewError(f"no flow run {ref}; `tunegate pending` lists the runs waiting", usage=True) from None
        state = run.state.type.value if run.state else "unknown"
        if state != "PAUSED":
            name = run.state.name if run.state else state
            raise ReviewError(
                f"run {run.name} ({flow_run_id}) is {name}, not waiting for a decision: nothing to approve or reject"
                + ("; start the run again" if state in ("CRASHED", "CANCELLED", "FAILED") else "")
            )
        gone = waiter_gone(run)
        if gone is not None:
            mark_crashed(client, run, gone)
            raise ReviewError(
                f"run {run.name} can never resume: {gone}. Nothing was approved; it is marked Crashed. Start the run "
                "again (a fine-tune that finished is reused, not trained again)"
            )
