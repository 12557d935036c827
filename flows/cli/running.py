"""`tunegate run`: the whole flow once, with a progress bar, a summary table and an exit code for scripts."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from data.documents import write_json
from data.runs import RunStore

if TYPE_CHECKING:
    from flows.summary import RunSummary

from flows.cli.common import (
    ProfileOption,
    SetOption,
    _config,
    _fail,
    _interrupt,
    _quiet_third_parties,
    app,
    console,
    err,
)
from flows.cli.progress import TrainingBar


def where_things_are(summary: RunSummary, summary_file: Path | None, temporary_server: bool) -> list[str]:
    """What a run leaves where: the summary file, the loss curve, the pages to open; and, after a temporary Prefect
    server, that its UI (run page, artifacts) went with it and how to keep the next run's."""
    lines = []
    if summary_file is not None:
        lines.append(f"summary: {summary_file}")
    if summary.loss_curve.path:
        lines.append(f"loss curve: {summary.loss_curve.path}")
    lines += [f"{label}: {url}" for label, url in summary.links.items()]
    if temporary_server:
        lines.append(
            "The run's Prefect UI pages and artifacts were on a temporary server, gone now that the run ended. To "
            "keep them: `prefect server start` in another terminal, `export PREFECT_API_URL=http://127.0.0.1:4200/api`,"
            " then run again."
        )
    elif summary.flow_run_id:
        from tasks.approval.asking import ui_url

        ui = ui_url()
        if ui:
            lines.append(f"run page: {ui}/runs/flow-run/{summary.flow_run_id}")
    return lines


def _print_summary(summary: RunSummary) -> None:
    colour = "green" if summary.status == "succeeded" else "red"
    table = Table(title=f"tunegate run [{colour}]{summary.status}[/{colour}]", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("flow run", str(summary.flow_run_id))
    rows = ", ".join(f"{split} {count:,}" for split, count in summary.data.rows.items()) or "-"
    table.add_row(
        "data", f"{rows} rows; fingerprint {summary.data.fingerprint} ({summary.data.dropped_invalid} invalid dropped)"
    )
    table.add_row(
        "fine-tune job",
        f"{summary.job.name} ({summary.job.how})\n{summary.job.display_name or ''}" if summary.job.name else "-",
    )
    table.add_row("metrics", ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary.metrics.items()) if "loss" in k))
    table.add_row(
        "gate",
        ("passed" if summary.gate.passed else "failed" if summary.gate.passed is False else "-")
        + "".join(f"\n  {r}" for r in summary.gate.reasons),
    )
    model = f"{summary.model.name}:{summary.model.version}" if summary.model.version else "-"
    table.add_row("model", model + (f" (from {summary.model.foundation})" if summary.model.foundation else ""))
    table.add_row(
        "approval",
        f"{summary.approval.decision} by {summary.approval.approver}\n  {summary.approval.comment or ''}"
        if summary.approval.decision
        else "-",
    )
    traffic = ", ".join(f"{name} {share}%" for name, share in summary.endpoint.traffic.items()) or "none"
    table.add_row(
        "endpoint",
        f"{summary.endpoint.name or '-'} / {summary.endpoint.deployment or '-'}; traffic {traffic}"
        + (f"\nserving {', '.join(summary.endpoint.live)}" if summary.endpoint.live else ""),
    )
    smoke = {True: "passed", False: "failed", None: "not run"}[summary.smoke.ok]
    latency = f" in {summary.smoke.latency_ms:.0f} ms" if summary.smoke.latency_ms is not None else ""
    table.add_row(
        "smoke",
        f"{smoke}{latency} {summary.smoke.error or ''}".strip()
        + (f"\n  sample: {summary.smoke.sample_output!r}" if summary.smoke.sample_output else ""),
    )
    if summary.smoke.no_reply:
        table.add_row("", f"  no reply: {'; '.join(summary.smoke.no_reply)} (left to the evaluation)")
    table.add_row("evaluation", evaluation_words(summary))
    if summary.rollout.outcome is not None:
        table.add_row("rollout", rollout_words(summary))
    deleted = ", ".join(summary.teardown.deleted) or "nothing"
    state = "done" if summary.teardown.done else "NOT DONE: see the error and `tunegate inventory`"
    table.add_row("teardown", f"{summary.teardown.mode or '-'}: {state}; deleted {deleted}")
    if summary.error:
        table.add_row("error", f"[red]{summary.error}[/red]")
    table.add_row("seconds", str(summary.seconds))
    console.print(table)
    if summary.teardown.mode == "keep" and summary.endpoint.live and summary.endpoint.name:
        name = summary.endpoint.name
        console.print(
            f"live on {name}: `tunegate chat --endpoint {name}` to talk to it, "
            f"`tunegate teardown --endpoint {name}` to delete it",
            markup=False,
            soft_wrap=True,  # commands to copy: never cut by the terminal's width
        )


def rollout_words(summary: RunSummary) -> str:
    found = summary.rollout
    lines = [f"{found.outcome}: {found.candidate} against {found.live}"]
    for step in found.steps:
        p95 = "/".join(
            "-" if step.p95_ms[side] is None else f"{step.p95_ms[side]:.0f}" for side in ("candidate", "live")
        )
        lines.append(
            f"{'mirror ' if step.phase == 'mirror' else ''}{step.traffic}% for {step.seconds:.0f} s: requests "
            f"{step.requests['candidate']}/{step.requests['live']}, errors {step.errors['candidate']}/"
            f"{step.errors['live']}, p95 {p95} ms (candidate/live) -> {step.verdict}"
        )
    return "\n  ".join(lines)


def evaluation_words(summary: RunSummary) -> str:
    found = summary.evaluation
    if found.passed is None:
        return "-"
    words = [f"{'passed' if found.passed else 'failed'} on {found.samples} prompts"]
    words.append(
        f"no reply {found.degenerate_rate.get('candidate', 0):.0%}, ROUGE-L {found.similarity.get('candidate', 0):.3f}"
        + (
            f" (champion {found.degenerate_rate.get('champion', 0):.0%}, {found.similarity.get('champion', 0):.3f})"
            if found.champion
            else ""
        )
    )
    if found.win_rate is not None and found.win_rate_ci is not None:
        low, high = found.win_rate_ci
        words.append(f"win rate {found.win_rate:.2f} ({low:.2f}-{high:.2f}) against {found.champion}")
    return "\n  ".join([*words, *found.failures, *found.notes[:1]])


@app.command()
def run(
    profile: ProfileOption = None,
    set_: SetOption = None,
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="Write the run summary here as JSON.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show MLflow's and transformers' own messages and bars.")
    ] = False,
) -> None:
    """Run the whole flow once (an ephemeral Prefect server is started when PREFECT_API_URL is not set)."""
    config = _config(profile, set_)
    if not verbose:
        _quiet_third_parties()
    from tasks.approval import ManualApprovalNeedsServer, require_server_for_manual
    from tasks.reviews import ReviewError, server_url

    try:
        require_server_for_manual(config.approval)  # before an ephemeral server is started or anything is trained
        if config.approval.policy == "manual":
            server_url()
    except (ManualApprovalNeedsServer, ReviewError) as exc:
        _fail(exc, 2)
    _preflight(config)

    from flows.ephemeral import TemporaryServerError, start_temporary_server

    temporary = start_temporary_server()  # dies with this process, even after kill -9; boots while the flow imports
    from prefect.exceptions import TerminationSignal

    from flows.summary import RunSummary
    from flows.tunegate_flow import tunegate

    # the server's boot leaves this process idle for seconds: what the run imports anyway, now (after this thread's
    # own imports: two threads importing at once can deadlock on a module each)
    preloading = threading.Thread(target=_preload, args=(config,), daemon=True)
    if temporary is not None:
        preloading.start()
    settings = contextlib.ExitStack()  # held for the rest of the run: a collected one would undo its settings
    if temporary is not None:
        try:
            settings.enter_context(temporary.ready())
            preloading.join()
        except TemporaryServerError as exc:
            _fail(exc, 1)
    started = time.time()
    # SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: recorded as cancelled, teardown done, job cancelled
    signal.signal(signal.SIGTERM, _interrupt)
    # and SIGINT explicitly: a process started in the background by a non-interactive shell inherits SIGINT
    # ignored, and Python then leaves it ignored (kill -INT would do nothing)
    signal.signal(signal.SIGINT, _interrupt)
    from tasks.progress import listening

    bar = TrainingBar()
    try:
        with listening(bar.show), bar:
            state = tunegate(config=config, return_state=True)
    except (KeyboardInterrupt, TerminationSignal):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the report short
        text = RunStore(config.workspace.state_dir).newest_summary(started)
        if text is not None:
            interrupted = RunSummary.model_validate_json(text)
            _mark_cancelled(interrupted.flow_run_id)
            _print_summary(interrupted)
            if summary_json:
                write_json(summary_json, interrupted.model_dump(mode="json"))
        _fail("interrupted: the run was cancelled", 130)
    text = RunStore(config.workspace.state_dir).read_summary(str(state.state_details.flow_run_id))
    if text is None:
        _fail(f"the run ended before writing a summary: {state.message}", 1)
    summary = RunSummary.model_validate_json(text)
    _print_summary(summary)
    store = RunStore(config.workspace.state_dir)
    for line in where_things_are(
        summary,
        store.summary_path(summary.flow_run_id).resolve() if summary.flow_run_id else None,
        temporary is not None,
    ):
        console.print(line, markup=False, soft_wrap=True, highlight=False)  # paths and links: never cut
    if summary_json:
        write_json(summary_json, summary.model_dump(mode="json"))
    # a run whose teardown failed left something running (the summary says what): not a success for a script
    raise typer.Exit(0 if summary.status == "succeeded" and summary.teardown.done else 1)


def _preload(config) -> None:
    """Imports a run makes at its first stages (its workspace's client, the loss curve's matplotlib), made ahead;
    what fails here fails again, and is reported, where the run needs it."""
    import importlib

    from workspaces.factory import workspace_kind

    try:
        kind = workspace_kind(config.workspace.kind)
        if kind.preload is not None:
            kind.preload()
        for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a warm-up only
        pass


def _preflight(config) -> None:
    """What can be checked before anything starts, one line per problem, exit 2 (tasks/preflight.py)."""
    from data.sources import source_problem
    from tasks.preflight import problems
    from workspaces.factory import workspace_kind

    local_sizes = None
    if workspace_kind(config.workspace.kind).on_this_machine:
        from workspaces.local.compute import list_sizes

        local_sizes = list_sizes()
    found = problems(config, local_sizes, source_problem)
    for problem in found:
        err.print(problem, style="red", markup=False)
    if found:
        raise typer.Exit(2)


def _mark_cancelled(flow_run_id: str | None) -> None:
    """Prefect records an interrupted run as Crashed; it was cancelled on purpose, its job cancelled and its teardown
    done: say so on the server."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    if not flow_run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                flow_run_id,
                Cancelled(message="interrupted (Ctrl-C or SIGTERM): job cancelled, teardown done"),
                force=True,
            )
    except Exception as exc:  # noqa: BLE001 - the summary printed next is the record; the state is for the UI
        err.print(f"could not mark the run cancelled on the Prefect server: {exc}", markup=False, soft_wrap=True)
