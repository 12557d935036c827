"""Following a fine-tune job: wait for it to end (polling with backoff, cancelling it when the run is
interrupted), report its progress as it goes, and draw its loss curve when it is done."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect.logging import get_run_logger
from pydantic import BaseModel

from tasks import curves, progress
from tasks.errors import is_transient, stage
from tasks.settings import JobSettings
from workspaces.ports import (
    JobProgress,
    JobRef,
    JobState,
    JobStatus,
    TrainingJobs,
    WorkspaceError,
)


def poll_delays(initial: float, cap: float):
    delay = initial
    while True:
        yield delay
        delay = min(delay * 1.5, cap)


def wait_until_terminal(
    jobs: TrainingJobs,
    job: JobRef,
    settings: JobSettings,
    sleep=time.sleep,
    on_poll: Callable[[JobStatus], None] | None = None,
) -> JobStatus:
    """Poll with capped backoff (`on_poll` hears every status). Whatever stops the wait early (timeout, cancel,
    Ctrl-C) cancels the job: a GPU job left running after its flow is gone costs money and nobody looks at it."""
    deadline = time.monotonic() + settings.timeout_hours * 3600
    try:
        for delay in poll_delays(settings.poll_initial_s, settings.poll_max_s):
            status = jobs.status(job)
            if on_poll is not None:
                on_poll(status)
            if status.state.terminal:
                return status
            if time.monotonic() > deadline:
                raise WorkspaceError(
                    f"job {job.name} still {status.state.value} after {settings.timeout_hours} h; cancelled"
                )
            sleep(delay)
    except BaseException as exc:
        if not is_transient(exc):  # a transient poll error is retried by the task; the job keeps running
            jobs.cancel(job)
        raise
    raise AssertionError("unreachable")


class ProgressReport:
    """At every poll: the job's progress to the terminal's listeners, to the run's log at a sensible rate
    (tasks/progress.LogPacer) and to a Prefect progress artifact. Progress is for people: a workspace that cannot
    say it (an error reading it) never fails the wait."""

    def __init__(self, jobs: TrainingJobs, job: JobRef, clock: Callable[[], float] = time.time) -> None:
        self.jobs, self.job, self.clock = jobs, job, clock
        self.pacer = progress.LogPacer()
        self.artifact_id: Any = None
        self.percent = -1.0
        self.unreadable_said = False

    def poll(self, status: JobStatus) -> None:
        logger = get_run_logger()
        try:
            now_progress = self.jobs.progress(self.job)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            if not self.unreadable_said:
                logger.info("the progress of %s cannot be read (%s); waiting for it to end", self.job.name, exc)
                self.unreadable_said = True
            now_progress = JobProgress(state=status.state, status_text=status.state.value)
        now = self.clock()
        progress.tell_listeners(self.job, now_progress)
        if self.pacer.due(now_progress, now):
            logger.info("fine-tune %s %s", self.job.name, progress.describe(now_progress, now))
        done = progress.fraction(now_progress)
        percent = 100.0 if status.state is JobState.COMPLETED else round(100 * (done or 0.0), 1)
        if percent != self.percent:
            self.percent = percent
            self._artifact(percent, progress.describe(now_progress, now))

    def _artifact(self, percent: float, words: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        description = f"Fine-tune job {self.job.name}: {words}"
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    progress=percent, key="training-progress", description=description
                )
            else:
                update_progress_artifact(self.artifact_id, progress=percent, description=description)
        except Exception:  # noqa: BLE001 - the log lines above carry the same news
            get_run_logger().debug("could not update the training-progress artifact", exc_info=True)


@stage("wait for fine-tune")
def wait_for_finetune(jobs: TrainingJobs, job: JobRef, settings: JobSettings) -> JobStatus:
    status = wait_until_terminal(jobs, job, settings, on_poll=ProgressReport(jobs, job).poll)
    if status.state is not JobState.COMPLETED:
        raise WorkspaceError(f"fine-tune job {job.name} ended {status.state.value}: {status.message} ({job.url or ''})")
    return status


class TrainingReport(BaseModel):
    """The loss curve of a finished job: the picture, and where the workspace stored a copy (its tracking run)."""

    png: bytes
    stored_at: str | None = None
    train_points: int = 0
    eval_points: int = 0


LOSS_CURVE = "loss_curve.png"


@stage("report training")
def report_training(jobs: TrainingJobs, job: JobRef, model_name: str) -> TrainingReport:
    """Draw the job's loss curve, store it with the job's tracking run and show it among the Prefect run's artifacts
    (inline: the UI needs no file server to show it)."""
    from prefect.artifacts import create_markdown_artifact

    history = jobs.loss_history(job)
    png = curves.loss_curve_png(history, f"{model_name}: fine-tune job {job.name}")
    try:
        stored_at = jobs.attach(job, LOSS_CURVE, png)
    except WorkspaceError as exc:  # the picture still reaches the run directory and the artifact
        if is_transient(exc):
            raise
        get_run_logger().warning("could not store the loss curve with job %s: %s", job.name, exc)
        stored_at = None
    create_markdown_artifact(
        key="loss-curve",
        markdown=f"## Loss per step: job {job.name}\n\n{curves.markdown_image(png, 'loss curve')}\n\n"
        + (f"Stored with the job's tracking run: `{stored_at}`\n" if stored_at else ""),
        description=f"train and eval loss of {job.name}",
    )
    return TrainingReport(png=png, stored_at=stored_at, train_points=len(history.train), eval_points=len(history.eval))
