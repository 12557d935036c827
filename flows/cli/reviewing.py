"""The approver's commands: `approve`, `reject`, `pending`, and `serve` for a laptop."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.common import (
    _fail,
    app,
    console,
    exit_code,
)


def _decide(run_id: str, approved: bool, approver: str, comment: str) -> None:
    from tasks.reviews import ReviewError, decide

    try:
        decided = decide(run_id, approved, approver, comment)
    except ReviewError as exc:
        _fail(exc, exit_code(exc))
    verb = "approved" if approved else "rejected"
    console.print(f"{verb} run {decided.flow_run_id} as {decided.decision.approver}", markup=False)
    if approved:
        console.print("The run resumes now: it goes on to deploy, smoke-test and release the model as configured.")
    else:
        console.print("The run resumes now and stops: nothing is deployed, the model version is tagged rejected.")
    if decided.run_page:
        console.print(f"Follow it: {decided.run_page}", markup=False, soft_wrap=True)


RunOption = Annotated[
    str, typer.Argument(help="The waiting run: its id, a unique start of the id, or its name (`tunegate pending`).")
]


ApproverOption = Annotated[str, typer.Option("--approver", "-a", help="Your name, recorded on the model version.")]


CommentOption = Annotated[str, typer.Option("--comment", "-c", help="Why; recorded with the decision.")]


@app.command()
def approve(run_id: RunOption, approver: ApproverOption, comment: CommentOption = "") -> None:
    """Approve the model a paused run is waiting on: the run goes on to deploy it."""
    _decide(run_id, True, approver, comment)


@app.command()
def reject(run_id: RunOption, approver: ApproverOption, comment: CommentOption = "") -> None:
    """Reject the model a paused run is waiting on: nothing is deployed, the version is tagged rejected."""
    _decide(run_id, False, approver, comment)


def without_pictures(markdown: str) -> str:
    """A terminal cannot show the review's inline pictures (rich draws a broken-image placeholder): say where
    they are instead."""
    import re

    return re.sub(
        r"!\[([^\]]*)\]\([^)]*\)",
        lambda found: f"({found.group(1) or 'a picture'}: open the run's approval-review artifact in the UI)",
        markdown,
    )


@app.command()
def pending() -> None:
    """Runs waiting for an approval decision, with the summary a reviewer decides from."""
    from rich.markdown import Markdown

    from tasks.reviews import ReviewError, describe_timeout, pending_reviews

    try:
        reviews = pending_reviews()
    except ReviewError as exc:
        _fail(exc, exit_code(exc))
    if not reviews:
        console.print("no runs are waiting for approval")
        return
    for review in reviews:
        console.rule(f"{review.run_id}  {review.run_name}")
        # on a line of its own: a rule is cut at the terminal's width
        console.print(f"times out {describe_timeout(review.times_out)}", markup=False, soft_wrap=True)
        console.print(Markdown(without_pictures(review.review or "(no summary)")))
        console.print(
            f"tunegate approve {review.run_id} --approver NAME   |   "
            f"tunegate reject {review.run_id} --approver NAME --comment WHY",
            markup=False,
        )


@app.command()
def serve() -> None:
    """Serve the deployments of prefect.yaml from this process, without a work pool (for a laptop)."""
    from flows.deployments import serve_all
    from tasks.reviews import ReviewError, server_url

    try:
        server_url()
    except ReviewError as exc:
        _fail(exc, 2)
    serve_all()
