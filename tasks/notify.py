"""Telling approvers: a message to the Prefect notification blocks the profile names (`approval.notify`) when a
run starts waiting for a person, and a reminder before the wait times out into a reject.

The blocks are Prefect's own (Slack, Microsoft Teams, email, a custom webhook...), saved on the Prefect server the
run talks to; tunegate only loads them by slug and calls `notify`. A block that cannot be loaded or a message that
cannot be delivered is logged and does not stop the run: the run still waits, and `tunegate pending` lists it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.logging import get_run_logger


@dataclass(frozen=True)
class ApprovalNotice:
    """What an approver needs to act: which model, how it did, where to look, how to answer."""

    model: str  # "name:version"
    headline: str  # one line: eval loss vs champion/base, gate
    run_name: str
    run_url: str | None
    review_url: str | None
    timeout_words: str  # "at 14:05 UTC (in 24 h)"
    answers: str | None = None  # one line of the answer evaluation's scores, when the candidate was evaluated

    def subject(self, reminder: bool = False) -> str:
        first = "Reminder: still waiting" if reminder else "Waiting"
        return f"tunegate: {first} for your approval of {self.model}"

    def body(self, reminder: bool = False) -> str:
        lines = [
            ("Still no decision on " if reminder else "A fine-tuned model needs your decision: ") + self.model,
            self.headline,
            *([self.answers] if self.answers else []),
            f"Flow run {self.run_name}: " + (self.run_url or "open it in the Prefect UI"),
        ]
        if self.review_url:
            lines.append(f"Review (metrics, answers side by side, loss curve): {self.review_url}")
        lines += [
            f"Approve or reject in the run's Resume form, or: tunegate approve {self.run_name} --approver <you> "
            f"(tunegate reject {self.run_name} --approver <you> --comment <why>)",
            f"Unanswered, it is rejected {self.timeout_words}.",
        ]
        return "\n".join(lines)


def send(
    slugs: list[str], subject: str, body: str, logger: Any = None, load_block: Callable[[str], Any] | None = None
) -> list[str]:
    """Notify every block; the slugs that failed (each logged with why). Pass the run's logger when calling from
    another thread (the reminder's timer): there is no run context there."""
    logger = logger or get_run_logger()
    if load_block is None:
        from prefect.blocks.core import Block

        load_block = Block.load
    failed = []
    for slug in slugs:
        try:
            block: Any = load_block(slug)  # a notification block (a sync call in a sync flow)
            block.notify(body=body, subject=subject)
        except Exception as exc:  # noqa: BLE001 - one unreachable channel must not silence the others
            logger.warning("could not notify %s: %s: %s", slug, type(exc).__name__, exc)
            failed.append(slug)
        else:
            logger.info("notified %s: %s", slug, subject)
    return failed


class Reminder:
    """A reminder sent `before_s` seconds before the wait ends, unless cancelled first (the decision came)."""

    def __init__(self, wait_s: float, before_s: float, action: Callable[[], object]) -> None:
        self.timer: threading.Timer | None = None
        if before_s > 0 and wait_s > before_s:
            self.timer = threading.Timer(wait_s - before_s, action)
            self.timer.daemon = True  # never keeps a finished process alive

    def __enter__(self) -> Reminder:
        if self.timer is not None:
            self.timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
