"""What people read while and after a run: training progress in words, the loss-curve picture, the run report.
Pure functions, no Prefect."""

from __future__ import annotations

import base64
import io
import re

from flows.summary import RunSummary
from tasks.curves import loss_curve_png, markdown_image
from tasks.progress import LogPacer, clock, describe, eta_s, fraction, listening, tell_listeners
from workspaces.ports import JobProgress, JobRef, JobState, LossHistory


def running(step=None, total=None, started=None, **more) -> JobProgress:
    return JobProgress(state=JobState.RUNNING, status_text="training", step=step, total_steps=total, **more)


def test_fraction_and_eta_follow_the_pace_so_far():
    assert fraction(running()) is None and fraction(running(step=3)) is None
    assert fraction(running(step=25, total=100)) == 0.25
    assert fraction(running(step=120, total=100)) == 1.0  # never past the end
    progress = running(step=25, total=100).model_copy(update={"started": 1000.0})
    assert eta_s(progress, now=1060.0) == 180.0  # a quarter in a minute: three more minutes
    assert eta_s(running(step=0, total=100, started=None), now=5) is None


def test_describe_says_what_is_known_and_nothing_else():
    progress = JobProgress(
        state=JobState.RUNNING,
        status_text="training",
        step=12,
        total_steps=30,
        epoch=1.2,
        train_loss=2.31,
        eval_loss=2.4,
        started=100.0,
    )
    text = describe(progress, now=114.0)
    assert text == (
        "training: step 12/30 (40%), epoch 1.20, train loss 2.3100, eval loss 2.4000, 0:14 elapsed, about 0:21 left"
    )
    assert describe(JobProgress(state=JobState.QUEUED, status_text="Preparing"), now=0) == "Preparing"
    assert clock(3725) == "1:02:05" and clock(65) == "1:05"


def test_the_log_is_paced_but_state_changes_are_said_at_once():
    pacer = LogPacer(every_s=15)
    assert pacer.due(JobProgress(state=JobState.QUEUED), 0)  # the first poll
    assert not pacer.due(JobProgress(state=JobState.QUEUED), 1)  # nothing new
    assert pacer.due(running(step=1, total=10), 2)  # queued -> training
    assert not pacer.due(running(step=2, total=10), 5)  # moved, but too soon
    assert pacer.due(running(step=5, total=10), 17.5)
    assert not pacer.due(running(step=5, total=10), 40)  # nothing moved
    assert pacer.due(JobProgress(state=JobState.COMPLETED), 41)  # the end, at once


def test_listeners_hear_polls_only_while_they_listen():
    heard = []
    job = JobRef(name="j")
    with listening(lambda job, progress: heard.append((job.name, progress.step))):
        tell_listeners(job, running(step=1))
    tell_listeners(job, running(step=2))
    assert heard == [("j", 1)]


def test_the_loss_curve_is_a_png_with_every_line_it_has_data_for():
    from PIL import Image

    history = LossHistory(
        train=tuple((step, 3.0 - step / 50) for step in range(1, 101)),
        eval=((50, 2.2), (100, 1.9)),
        base_eval_loss=3.1,
        champion_eval_loss=2.0,
    )
    png = loss_curve_png(history, "model: job j")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (800, 450)
    empty = Image.open(io.BytesIO(loss_curve_png(LossHistory(), "nothing logged")))
    assert empty.size == (800, 450)  # says so in the picture instead of failing
    long = LossHistory(train=tuple((step, 1.0) for step in range(1, 50_001)))
    assert loss_curve_png(long, "long")  # thinned, not 50,000 points drawn
    inline = markdown_image(png, "loss curve")
    assert inline.startswith("![loss curve](data:image/png;base64,")
    assert base64.b64decode(inline.split(",", 1)[1].rstrip(")")) == png


def test_the_run_report_uses_words_tables_and_links_not_reprs():
    summary = RunSummary(status="succeeded", flow_run_id="r1", workspace="local")
    summary.data.rows = {"train_sft": 1200, "test_sft": 30}
    summary.data.fingerprint = "abc"
    summary.model.foundation, summary.model.name, summary.model.version = "phi:1", "ft", "3"
    summary.metrics = {"eval_loss": 1.23456, "train_loss": 1.5}
    summary.gate.passed, summary.gate.reasons = True, ["ok: eval_loss 1.2346 beats base 2.0 by more than 0.0"]
    summary.approval.decision, summary.approval.approver = "approved", "alice"
    summary.endpoint.name, summary.endpoint.traffic = "ep", {"ft-3": 100}
    summary.endpoint.models, summary.endpoint.live = {"ft-3": "ft:3"}, ["ft:3"]
    summary.smoke.ok, summary.smoke.latency_ms, summary.smoke.sample_output = True, 16.2, "Hello | there\nfriend"
    summary.teardown.mode, summary.teardown.done = "keep", True
    summary.record_links({"MLflow run": "http://127.0.0.1:5000/#/experiments/1/runs/x", "job folder": "file:///j"})
    text = summary.markdown()
    assert "{'" not in text and "ok=True" not in text and "done=True" not in text
    assert "| train_sft | 1,200 |" in text and "| ft-3 | ft:3 | 100% |" in text
    assert "[http://127.0.0.1:5000/#/experiments/1/runs/x](http://127.0.0.1:5000/#/experiments/1/runs/x)" in text
    assert "Registered ft version 3; endpoint `ep` serves ft:3 and is kept running." in text
    assert "> Hello \\| there friend" in text  # one line, the pipe escaped
    stopped = RunSummary(status="gate_failed", error="Gate failed: eval_loss 2.0 does not beat base")
    assert stopped.markdown().startswith("# tunegate run stopped: the metric gate failed")
    assert "**What went wrong:** Gate failed" in stopped.markdown()


def test_an_approval_notice_says_what_where_and_how_to_answer():
    from tasks.notify import ApprovalNotice

    notice = ApprovalNotice(
        model="ft:3",
        headline="eval_loss 1.2000 vs no champion yet; base 2.0000",
        run_name="gifted-toucan",
        run_url="http://127.0.0.1:4200/runs/flow-run/abc",
        review_url="http://127.0.0.1:4200/artifacts/artifact/def",
        timeout_words="at 2026-11-24 14:05 UTC (in 24 h)",
    )
    body = notice.body()
    assert "tunegate approve gifted-toucan --approver <you>" in body and "runs/flow-run/abc" in body
    assert "artifacts/artifact/def" in body and "rejected at 2026-11-24 14:05 UTC" in body
    assert notice.subject(reminder=True).startswith("tunegate: Reminder")


def test_notification_blocks_are_named_type_slash_name():
    import pytest
    from pydantic import ValidationError

    from tasks.settings import ApprovalSettings

    assert ApprovalSettings(notify=["slack-webhook/approvers"]).notify == ["slack-webhook/approvers"]
    with pytest.raises(ValidationError, match="write block-type/block-name"):
        ApprovalSettings(notify=["approvers"])


def test_a_reminder_fires_before_the_end_unless_the_answer_came_first():
    import threading

    from tasks.notify import Reminder

    fired = threading.Event()
    with Reminder(wait_s=0.2, before_s=0.15, action=fired.set):
        assert fired.wait(2)
    cancelled = threading.Event()
    with Reminder(wait_s=10, before_s=1, action=cancelled.set):
        pass
    assert not cancelled.wait(0.2)
    assert Reminder(wait_s=10, before_s=0, action=cancelled.set).timer is None  # 0: no reminder


def test_the_terminal_bar_prints_log_lines_above_itself_and_gives_the_stream_back():
    import logging

    from rich.console import Console

    from flows.cli import AboveTheBar, TrainingBar
    from workspaces.ports import JobProgress, JobRef, JobState

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.console = Console(file=stream)  # as Prefect's console handler carries one
    logger = logging.getLogger("tunegate-test-bar")
    logger.addHandler(handler)
    try:
        with TrainingBar() as bar:
            bar.show(JobRef(name="j"), JobProgress(state=JobState.RUNNING, step=3, total_steps=10))
            assert isinstance(handler.console.file, AboveTheBar)
            bar.show(JobRef(name="j"), JobProgress(state=JobState.COMPLETED, step=10, total_steps=10))
            assert handler.console.file is stream  # the job ended: the bar is gone, the stream given back
    finally:
        logger.removeHandler(handler)


def test_a_summary_does_not_link_an_endpoint_its_teardown_deleted():
    from tasks.teardown import TeardownResult

    summary = RunSummary()
    summary.record_deployment("tunegate-chat-abc", "blue")
    summary.record_links({"scoring URL": "http://127.0.0.1:9/score", "job folder": "/tmp/job"})
    summary.record_teardown(TeardownResult(mode="ephemeral", done=True, deleted=["tunegate-chat-abc"]))
    assert summary.links == {"job folder": "/tmp/job"} and "127.0.0.1:9" not in summary.markdown()
    kept = RunSummary()
    kept.record_deployment("tunegate-chat", "green")
    kept.record_links({"scoring URL": "http://127.0.0.1:9/score"})
    kept.record_teardown(TeardownResult(mode="keep", done=True, deleted=["tunegate-chat/blue"]))
    assert "scoring URL" in kept.links  # it still serves


def test_a_run_stopped_before_registering_says_so_in_one_sentence():
    stopped = RunSummary(status="gate_failed")
    assert stopped.verdict() == (
        "Stopped at the metric gate: the fine-tuned model was not registered and nothing went live."
    )
    assert "no model did not" not in RunSummary(status="failed").verdict()


def test_the_training_bar_keeps_step_percent_and_time_left_at_80_columns():
    from rich.console import Console
    from rich.progress import Progress

    from flows.cli.progress import bar_columns, fit_words

    console = Console(width=80, record=True, force_terminal=False)
    bar = Progress(*bar_columns(), console=console, auto_refresh=False)
    words = "training: epoch 1.20, train loss 2.3100, eval loss 2.4000 and much more words than fit on one line"
    task = bar.add_task("fine-tune", total=3000, words=fit_words(words, 80))
    bar.update(task, completed=1200)
    console.print(bar.get_renderable())
    [line] = [line for line in console.export_text().splitlines() if line.strip()]
    assert len(line) <= 80 and "1200/3000" in line and "40%" in line and re.search(r"\d:\d\d:\d\d|-:--:--", line)
    assert "epoch 1.20" in line and line.endswith("…")  # the words start; the rest is cut


def test_pending_says_where_the_review_pictures_are_instead_of_a_placeholder():
    from flows.cli.reviewing import without_pictures

    text = without_pictures("### Loss per step\n\n![loss curve](data:image/png;base64,iVBORw0KGgo=)\n\nafter")
    assert "data:image" not in text and "(loss curve: open the run's approval-review artifact in the UI)" in text
    assert text.endswith("after")


def test_inventory_shows_the_processes_of_its_own_state_directory(tmp_path):
    from flows.cli.looking import of_state_dir

    mine, other = tmp_path / "state", tmp_path / "state2"
    assert of_state_dir(str(mine / "workspace" / "endpoints" / "ep"), mine)
    assert of_state_dir(f"file://{mine}/workspace/jobs/tunegate-1", mine)
    assert not of_state_dir(str(other / "workspace" / "endpoints" / "ep"), mine)  # a prefix is not a parent
    assert of_state_dir("port 4321", mine)  # a temporary Prefect server belongs to no directory


def test_a_finished_or_reused_job_shows_no_elapsed_time_since_it_started():
    done = JobProgress(state=JobState.COMPLETED, status_text="completed", step=117, total_steps=117, started=1000.0)
    assert "elapsed" not in describe(done, now=1000.0 + 155)  # trained 13 s, found again 2:35 after it started
    assert "0:14 elapsed" in describe(running(step=3, total=30).model_copy(update={"started": 0.0}), now=14.0)
