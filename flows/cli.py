"""`tunegate`: run the flow, chat with an endpoint, see and clean what a workspace holds."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from data.documents import write_json
from data.runs import RunStore
from flows.params import ProfileError, load_profile
from workspaces.base import InvalidNameError, WorkspaceError

if TYPE_CHECKING:
    from flows.summary import RunSummary

# Prefect and the flow are imported by the commands that need them: `tunegate sample` or `inventory` start in a
# fraction of the second that importing Prefect takes

app = typer.Typer(help="tunegate: fine-tune a chat model and take it safely to a live endpoint.", no_args_is_help=True)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line a script can match, not wrapped at 80

ProfileOption = Annotated[
    Path | None, typer.Option("--profile", "-p", help="YAML profile (default deployments/local.yaml).")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a profile key: section.key=value (repeatable).")
]


def _config(profile: Path | None, sets: list[str] | None):
    try:
        return load_profile(profile, sets or [])
    except ProfileError as exc:
        _fail(exc, 2)


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
    from prefect.exceptions import TerminationSignal

    from flows.summary import RunSummary
    from flows.tunegate_flow import tunegate
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

    try:
        start_temporary_server()  # dies with this process, even after kill -9
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
    if summary_json:
        write_json(summary_json, summary.model_dump(mode="json"))
    # a run whose teardown failed left something running (the summary says what): not a success for a script
    raise typer.Exit(0 if summary.status == "succeeded" and summary.teardown.done else 1)


def _preflight(config) -> None:
    """What can be checked before anything starts, one line per problem, exit 2 (tasks/preflight.py)."""
    from data.sources import source_problem
    from tasks.preflight import problems

    local_sizes = None
    if config.workspace.kind == "local":
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


class AboveTheBar(io.TextIOBase):
    """A stream whose lines are printed through a live display's console, so they appear above the display.
    (rich's own FileProxy unwraps itself when set as another console's file.)"""

    def __init__(self, console, original) -> None:
        self.console, self.original, self.pending = console, original, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()


class TrainingBar:
    """One progress bar on stderr for the fine-tune job while the flow waits for it (tasks/progress listeners):
    steps done of all, the latest losses, time left. It appears at the first poll and stays, finished, after."""

    def __init__(self) -> None:
        self.bar = None
        self.task = None
        self.rerouted: list = []  # (a log handler's console, the stream it had) while the bar shows

    def show(self, job, progress) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        from tasks.progress import describe

        if self.bar is None:
            self.bar = Progress(
                TextColumn("fine-tune [bold]{task.fields[job]}[/bold]"),
                BarColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[words]}"),
                console=err,
            )
            self.bar.start()
            self._route_prefect_logs_through(self.bar.console)
            self.task = self.bar.add_task("fine-tune", total=progress.total_steps, job=job.name, words="")
        losses = describe(progress.model_copy(update={"step": None, "started": None}), time.time())
        total = progress.total_steps or None
        done = progress.total_steps if progress.state.value == "completed" and total else progress.step or 0
        self.bar.update(self.task, total=total, completed=done, words=losses)
        if progress.state.terminal:
            self.close()

    def _route_prefect_logs_through(self, console) -> None:
        """Prefect's console log lines go through the bar's console while it shows, so each is printed above the
        bar instead of being glued to it (Prefect's handlers write to the stream they were given at start)."""
        import logging

        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", []):
                handler_console = getattr(handler, "console", None)
                if handler_console is not None and handler_console is not console:
                    self.rerouted.append((handler_console, handler_console.file))
                    handler_console.file = AboveTheBar(console, handler_console.file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        for handler_console, file in self.rerouted:
            handler_console.file = file
        self.rerouted = []

    def __enter__(self) -> TrainingBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _quiet_third_parties() -> None:
    """Keep MLflow's database chatter, its pickling advice and transformers' "Writing model shards" bars out of the
    terminal: set before they are imported (both read these at import), inherited by the trainer and servers."""
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _fail(error: object, code: int) -> NoReturn:
    err.print(str(error), style="red", markup=False)
    raise typer.Exit(code)


def _decide(run_id: str, approved: bool, approver: str, comment: str) -> None:
    from tasks.reviews import ReviewError, decide

    try:
        decision = decide(run_id, approved, approver, comment)
    except ReviewError as exc:
        _fail(exc, 2 if exc.usage else 1)
    console.print(f"{'approved' if approved else 'rejected'} run {run_id} as {decision.approver}", markup=False)


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


@app.command()
def pending() -> None:
    """Runs waiting for an approval decision, with the summary a reviewer decides from."""
    from rich.markdown import Markdown

    from tasks.reviews import ReviewError, describe_timeout, pending_reviews

    try:
        reviews = pending_reviews()
    except ReviewError as exc:
        _fail(exc, 2 if exc.usage else 1)
    if not reviews:
        console.print("no runs are waiting for approval")
        return
    for review in reviews:
        console.rule(f"{review.run_id}  {review.run_name}")
        # on a line of its own: a rule is cut at the terminal's width
        console.print(f"times out {describe_timeout(review.times_out)}", markup=False, soft_wrap=True)
        console.print(Markdown(review.review or "(no summary)"))
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


def _workspace(profile: Path | None, sets: list[str] | None):
    from workspaces.factory import open_workspace

    return open_workspace(_config(profile, sets).workspace)


def _require_live(workspace, endpoint: str) -> None:
    """Exit with what to do unless the endpoint exists and answers."""
    try:
        found = workspace.get_endpoint(endpoint)
    except WorkspaceError as exc:
        _fail(exc, 2 if isinstance(exc, InvalidNameError) else 1)
    if found is None:
        _fail(f"no endpoint {endpoint!r} in this workspace; `tunegate inventory` lists them", 2)
    if not found.running:
        _fail(f"endpoint {endpoint} is down (its server is not running): `tunegate endpoint start {endpoint}`", 1)


DAMAGED = "damaged: "  # a job listed whose state files cannot be read (workspaces/local/jobs.py)
CHAT_HELP = "/help this help, /reset start a new conversation, /quit leave (or Ctrl-D)"


@app.command()
def chat(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint name in the profile's workspace.")],
    deployment: Annotated[
        str | None, typer.Option(help="Target one deployment (header azureml-model-deployment).")
    ] = None,
    message: Annotated[
        list[str] | None, typer.Option("--message", "-m", help="Send these and exit (no prompt).")
    ] = None,
    max_new_tokens: int = 64,
    temperature: float = 0.6,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Talk to a live endpoint: each turn is sent with the conversation so far (the seed's 'chat with your model')."""
    from workspaces.base import ScoringRequest
    from workspaces.scoring import ScoringParameters

    workspace = _workspace(profile, set_)
    _require_live(workspace, endpoint)
    failed = False
    parameters = ScoringParameters(max_new_tokens=max_new_tokens, temperature=temperature)
    history: list[dict[str, str]] = []
    turns = iter(message) if message else None
    if turns is None:
        target = f"{endpoint}/{deployment}" if deployment else endpoint
        console.print(f"chatting with {target}: {CHAT_HELP}", markup=False, style="dim", soft_wrap=True)
    while True:
        try:
            text = next(turns) if turns else console.input("[bold]you> [/bold]")
        except (StopIteration, EOFError, KeyboardInterrupt):
            break
        command = text.strip().lower()
        if not command or command in {"/quit", "/exit"}:
            if turns:
                continue
            break
        if command == "/help":
            console.print(CHAT_HELP, markup=False, style="dim")
            continue
        if command == "/reset":
            history.clear()
            console.print("(a new conversation)", markup=False, style="dim")
            continue
        history.append({"role": "user", "content": text})
        try:
            result = workspace.invoke(endpoint, ScoringRequest(messages=history, parameters=parameters), deployment)
        except WorkspaceError as exc:  # the server went away meanwhile: one line, as for an HTTP error
            error = str(exc).splitlines()[0]
        else:
            error = result.error
        if error:
            err.print(error, style="red", markup=False)
            failed = True
            history.pop()
            continue
        history.append({"role": "assistant", "content": result.output or ""})
        console.print(
            Text.assemble(("model> ", "bold cyan"), result.output or "", (f"  ({result.latency_ms:.0f} ms)", "dim"))
        )
    if failed:  # a failed answer makes a failed command, scripted or not
        raise typer.Exit(1)


@app.command()
def promptflow(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint name in the profile's workspace.")],
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve the chat flow with its chat page (pf flow serve) until Ctrl-C.")
    ] = False,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="Chat in this terminal (pf flow test --interactive).")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of --serve.")] = 8080,
    host: Annotated[str, typer.Option(help="Address --serve listens on.")] = "localhost",
    open_browser: Annotated[bool, typer.Option("--open-browser", help="Open the chat page (--serve).")] = False,
    question: Annotated[
        str, typer.Option("--question", "-q", help="What to ask when neither --serve nor --interactive is given.")
    ] = "What can you help me with?",
    deployment: Annotated[
        str | None, typer.Option(help="Target one deployment (header azureml-model-deployment), also at 0% traffic.")
    ] = None,
    max_new_tokens: int = 200,
    temperature: float = 0.6,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Chat with a live endpoint through Prompt flow (the flow in promptflows/chat, as the E2E guide's Scenario 3).

    Points the Prompt flow connection `tunegate_endpoint` at the endpoint (its key kept as a secret of the
    connection, in Prompt flow's own encrypted store), then asks one question (pf flow test), chats in the terminal
    (--interactive) or serves the flow with its chat page (--serve)."""
    import os

    from workspaces import promptflow as pf
    from workspaces.scoring import ScoringParameters

    if serve and interactive:
        _fail("choose one of --serve and --interactive", 2)
    try:
        parameters = ScoringParameters(max_new_tokens=max_new_tokens, temperature=temperature)
    except ValueError as exc:
        _fail(str(exc).replace("\n", " "), 2)
    try:
        pf.require_promptflow()
    except WorkspaceError as exc:
        _fail(exc, 2)
    workspace = _workspace(profile, set_)
    _require_live(workspace, endpoint)
    try:
        credentials = workspace.endpoint_credentials(endpoint)
        pf.save_connection(pf.CONNECTION, endpoint, credentials, workspace.kind, deployment, parameters)
    except WorkspaceError as exc:
        _fail(exc, 1)
    target = f"{endpoint}/{deployment}" if deployment else endpoint
    console.print(
        f"Prompt flow connection {pf.CONNECTION} -> {target} ({credentials.scoring_uri})",
        markup=False,
        soft_wrap=True,
    )
    if serve or interactive:
        command = pf.serve_command(port, host, open_browser) if serve else pf.interactive_command()
        if serve:
            console.print(f"chat page: http://{host}:{port}/  (Ctrl-C stops it)", markup=False, soft_wrap=True)
        console.print("+ " + " ".join(command), markup=False, style="dim", soft_wrap=True)
        os.execv(command[0], command)  # pf takes over the terminal and Ctrl-C
    try:
        answer = pf.ask(question)
    except WorkspaceError as exc:
        _fail(exc, 1)
    console.print(Text.assemble(("you> ", "bold"), question), soft_wrap=True)
    console.print(Text.assemble(("model> ", "bold cyan"), answer), soft_wrap=True)


@app.command()
def inventory(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """What tunegate created in the workspace and is still there (endpoints, running jobs), and every tunegate
    process left on this machine (endpoint servers, trainers, temporary Prefect servers), whichever run started it."""
    from workspaces.local.processes import tunegate_processes

    workspace = _workspace(profile, set_)
    try:
        found = workspace.inventory()
    except WorkspaceError as exc:
        _fail(exc, 1)
    processes = tunegate_processes()
    if as_json:
        console.print_json(
            data={
                **found.model_dump(mode="json"),
                "serving_problems": _serving_problems(workspace, found),
                "tunegate_processes": [
                    {**vars(p), "owner_alive": not p.orphaned if p.owner else None} for p in processes
                ],
            }
        )
        return
    endpoints = Table("endpoint", "state", "deployments", title="endpoints", title_justify="left")
    for name, deployments in found.endpoints.items():
        down = name in found.endpoints_down
        state = Text("down", style="red") if down else Text("running", style="green")
        endpoints.add_row(Text(name), state, Text(", ".join(deployments) or "-"))
    console.print(endpoints if found.endpoints else "endpoints: none")
    for name in found.endpoints_down:
        if name not in found.endpoints_ended:
            console.print(f"  {name} is down: `tunegate endpoint start {name}` brings it back", markup=False)
    for problem in (*found.problems, *_serving_problems(workspace, found)):
        err.print(f"problem: {problem}", markup=False, soft_wrap=True)
    console.print(f"running jobs: {', '.join(found.running_jobs) or 'none'}", markup=False)
    table = Table("pid", "process", "of", "started by", title="tunegate processes", title_justify="left")
    for process in processes:
        owner = "-" if process.owner is None else f"{process.owner} ({'gone' if process.orphaned else 'running'})"
        table.add_row(str(process.pid), process.kind, Text(process.argument), owner)
    console.print(table if processes else "tunegate processes: none")


def _serving_problems(workspace, found) -> list[str]:
    """Kept endpoints whose live model is not the registry's champion (a promotion killed half-way)."""
    from tasks.deploy import repair_for, serving_state

    problems = []
    for name in found.endpoints:
        if name in found.endpoints_down or name in found.endpoints_ended:
            continue
        try:
            serving = serving_state(workspace, name)
            if serving is None or not serving.live:
                continue
            model_name = serving.live[0].rpartition(":")[0]
            repair = repair_for(serving, workspace.champion(model_name))
        except WorkspaceError:
            continue  # said among the inventory's own problems
        if repair.needed:
            problems.append(f"{repair.why}: `tunegate endpoint start {name}` puts them back together")
    return problems


@app.command()
def sample(
    source: Annotated[
        str,
        typer.Option("--source", help="'synthetic', a directory of split files (or the hub's data/ layout), hf:ID."),
    ],
    percent: Annotated[float, typer.Option("--percent", min=0.0001, max=100, help="Percent of each split to keep.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for train_sft/test_sft/test_gen.jsonl.")],
    seed: Annotated[int, typer.Option("--seed", help="Salt of the sampling hash: another seed, another sample.")] = 0,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Threads reading parquet (default: the cores, at most 8).")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Where generated or hub datasets are cached (default: the profile's, as a run)."),
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Sample a dataset exactly as a run's first stage does, without running the flow: the same rows, the same
    files and fingerprint. Prints rows kept of rows read per split, invalid rows by reason, and the fingerprint."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.sampling import sample_to_directory
    from tasks.settings import DataSettings

    try:
        settings = DataSettings(source=source, percent=percent, seed=seed)
    except ValueError as exc:
        _fail(exc, 2)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:>12,} rows read"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def progress(split: str, seen: int, done: int, total: int | None) -> None:
        if split not in tasks:
            tasks[split] = bar.add_task(split, total=total, rows=0)
        bar.update(tasks[split], completed=done, rows=seen)

    try:
        with bar:
            cache_dir = cache or RunStore(_config(profile, None).workspace.state_dir).datasets_dir
            result = sample_to_directory(settings, out, cache_dir, progress=progress, workers=workers)
    except (ValueError, WorkspaceError, OSError) as exc:
        _fail(exc, 1)
    table = Table("split", Column("kept", justify="right"), Column("read", justify="right"), "invalid rows")
    for split, kept in result.rows.items():
        reasons = result.invalid.get(split, {})
        table.add_row(
            split,
            f"{kept:,}",
            f"{result.seen.get(split, 0):,}",
            Text("; ".join(f"{n:,} {why}" for why, n in sorted(reasons.items(), key=lambda i: -i[1])) or "-"),
        )
    console.print(table)
    console.print(f"fingerprint {result.fingerprint}  ->  {out}", markup=False)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write data/<split>-*.parquet into.")],
    rows: Annotated[
        int, typer.Option("--rows", min=10, help="train_sft rows; the other splits follow ultrachat_200k's ratios.")
    ] = 207_865,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="Only these splits (repeatable; default: all four).")
    ] = None,
) -> None:
    """Generate an ultrachat_200k-sized dataset in the hub's layout (for benchmarks at the real scale, offline)."""
    from rich.progress import Progress

    from data.splits import SPLITS
    from data.ultrachat_scale import split_rows, write_ultrachat_scale

    unknown = set(split or []) - set(SPLITS)
    if unknown:
        _fail(f"--split {', '.join(sorted(unknown))}: splits are {', '.join(SPLITS)}", 2)
    wanted = split or list(SPLITS)
    sizes = {name: count for name, count in split_rows(rows).items() if name in wanted}
    try:
        with Progress(console=err, transient=True) as bar:
            tasks = {name: bar.add_task(name, total=count) for name, count in sizes.items()}
            written = write_ultrachat_scale(
                out, rows, seed, wanted, progress=lambda name, count: bar.advance(tasks[name], count)
            )
    except OSError as exc:
        _fail(exc, 1)
    summary = ", ".join(f"{name}: {count:,} rows" for name, count in written.items())
    console.print(f"{summary} -> {out / 'data'}", markup=False, soft_wrap=True)


model_app = typer.Typer(help="Foundation models of the local workspace.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("import")
def model_import(
    path: Annotated[Path, typer.Argument(help="A Hugging Face causal-LM folder: config, tokenizer, safetensors.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registered name; profiles name it as model.name.")],
    version: Annotated[
        str | None, typer.Option(help="Expected version (the registry numbers them: 1 for a new name).")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="Override a derived tag: key=value (repeatable), e.g. finetune_compute_allow_list=\"['local-cuda']\".",
        ),
    ] = None,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Register your own chat model in the local MLflow registry, with the tags an azureml registry model carries
    (allow lists and model_specific_defaults derived from its size); then `tunegate run --set model.name=NAME`."""
    from tasks.model import TagError, allow_list, model_specific_defaults
    from workspaces.base import FoundationModel
    from workspaces.local.imports import check_chat_template, derived_tags, inspect_model_folder, parse_tags
    from workspaces.names import checked_name

    try:  # before anything is read, copied or deleted: a name becomes a folder of the state directory
        checked_name("model", name)
        if version is not None:
            checked_name("version", version)
    except InvalidNameError as exc:
        _fail(exc, 2)
    settings = _config(profile, set_).workspace
    if settings.kind != "local":  # before opening it: no Azure sign-in for a refusal
        _fail(
            "tunegate model import fills the local workspace's registry; on Azure ML register the folder with the "
            "SDK (ml_client.models.create_or_update) or `az ml model create`, then name it as model.name",
            2,
        )
    from workspaces.factory import open_workspace

    workspace = open_workspace(settings)
    try:
        folder = inspect_model_folder(path)
        tags = {**derived_tags(folder), **parse_tags(tag or [])}
        as_model = FoundationModel(name=name, version="0", id="", tags=tags)
        for key in ("finetune_compute_allow_list", "inference_compute_allow_list"):
            allow_list(as_model, key)
        defaults = model_specific_defaults(as_model)
        check_chat_template(folder.path)
        registered = workspace.registry.import_model(folder.path, name, tags, version)
    except (WorkspaceError, TagError) as exc:
        _fail(exc, 2)
    console.print(
        f"registered {registered.name} version {registered.version}: {folder.architecture}, "
        f"{folder.parameters / 1e6:,.1f} M parameters, from {folder.path}",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"  fine-tune on {tags['finetune_compute_allow_list']}, serve on {tags['inference_compute_allow_list']}",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"  model_specific_defaults {defaults}", markup=False, soft_wrap=True)
    size = "local-cpu" if "local-cpu" in tags["finetune_compute_allow_list"] else "local-cuda"
    serve = "local-cpu" if "local-cpu" in tags["inference_compute_allow_list"] else "local-cuda"
    console.print(
        f"run it: tunegate run --set model.name={registered.name} --set compute.size={size} "
        f"--set endpoint.instance_type={serve}",
        markup=False,
        soft_wrap=True,
    )


endpoint_app = typer.Typer(help="Manage an endpoint of the workspace.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")


@endpoint_app.command("start")
def endpoint_start(
    name: Annotated[str, typer.Argument(help="Endpoint name (`tunegate inventory` lists them).")],
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Start an endpoint whose server is down again, with its deployments and traffic as they were."""
    workspace = _workspace(profile, set_)
    try:
        found = workspace.get_endpoint(name)
        if found is None:
            _fail(f"no endpoint {name!r} in this workspace; `tunegate inventory` lists them", 2)
        if found.running:
            console.print(f"endpoint {name} is running", markup=False)
        else:
            started = workspace.ensure_endpoint(name)
            console.print(f"started endpoint {name}: traffic {started.traffic or 'none'}", markup=False)
        repaired = _reconcile(workspace, name)
    except WorkspaceError as exc:
        _fail(exc, 2 if isinstance(exc, InvalidNameError) else 1)
    if repaired:
        console.print(f"repaired: {repaired}", markup=False, soft_wrap=True)


def _reconcile(workspace, name: str) -> str | None:
    """Live model and champion of a kept endpoint made to agree (tasks/deploy.reconcile); what was done."""
    from tasks.deploy import reconcile, serving_state

    serving = serving_state(workspace, name)
    if serving is None or not serving.live:
        return None
    with workspace.endpoint_lock(name):
        return reconcile(workspace, name, serving.live[0].rpartition(":")[0])


@app.command()
def jobs(
    cancel: Annotated[
        str | None, typer.Option("--cancel", help="Cancel this job (by name) instead of listing.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """The fine-tune jobs tunegate submitted in the workspace (whichever run did), newest first; or cancel one."""
    from datetime import datetime

    from workspaces.base import JobRef

    workspace = _workspace(profile, set_)
    try:
        if cancel is not None:
            job = workspace.get_job(cancel)
            if job is None:
                _fail(f"no job {cancel!r} in this workspace; `tunegate jobs` lists them", 2)
            try:
                before = workspace.job_status(job).state.value
            except WorkspaceError as exc:  # its status cannot be read: cancelling stops what still runs of it
                err.print(str(exc), markup=False, soft_wrap=True)
                before = "unknown"
            if before in ("completed", "failed", "canceled"):
                console.print(f"job {cancel} already ended {before}; nothing to cancel", markup=False)
                return
            workspace.cancel_job(JobRef(name=job.name))
            console.print(f"cancelled job {cancel} (was {before})", markup=False)
            return
        found = workspace.list_jobs()
    except WorkspaceError as exc:
        _fail(exc, 2 if isinstance(exc, InvalidNameError) else 1)
    if as_json:
        console.print_json(data=[info.model_dump(mode="json") for info in found])
        return
    if not found:
        console.print("no tunegate jobs in this workspace")
        return
    table = Table("state", "created", "display name")
    table.columns.insert(0, Column("job", no_wrap=True))  # whole: it is what `--cancel` takes
    for info in found:
        created = datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M:%S") if info.created else "-"
        damaged = info.display_name.startswith(DAMAGED)
        table.add_row(Text(info.name), info.state.value, created, Text("(see below)" if damaged else info.display_name))
    console.print(table)
    for info in found:
        if info.display_name.startswith(DAMAGED):
            console.print(f"{info.name}: {info.display_name}", markup=False, soft_wrap=True)


@app.command()
def teardown(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint to delete, with all its deployments.")],
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Delete an endpoint left behind (for example by a run that was killed)."""
    from tasks.teardown import take_down

    try:
        result = take_down(_workspace(profile, set_), "ephemeral", endpoint)
    except WorkspaceError as exc:  # one line, no traceback: a bad name is the caller's (2), the rest the workspace's
        _fail(exc, 2 if isinstance(exc, InvalidNameError) else 1)
    if not result.deleted:
        err.print(f"no endpoint {endpoint!r}; nothing to delete", markup=False)
        return
    console.print(f"deleted endpoint {endpoint}", markup=False)


if __name__ == "__main__":
    app()
