"""`tunegate`: run the flow, chat with an endpoint, see and clean what a workspace holds."""

from __future__ import annotations

import os

# offline machines: no analytics calls from an ephemeral Prefect server (set before prefect is imported)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flows.params import ProfileError, load_profile  # noqa: E402
from flows.summary import RunSummary  # noqa: E402

app = typer.Typer(help="tunegate: fine-tune a chat model and take it safely to a live endpoint.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ProfileOption = Annotated[Optional[Path], typer.Option("--profile", "-p", help="YAML profile (default deployments/local.yaml).")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a profile key: section.key=value (repeatable).")]


def _config(profile: Path | None, sets: list[str] | None):
    try:
        return load_profile(profile, sets or [])
    except ProfileError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _print_summary(summary: RunSummary) -> None:
    colour = "green" if summary.status == "succeeded" else "red"
    table = Table(title=f"tunegate run [{colour}]{summary.status}[/{colour}]", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("flow run", str(summary.flow_run_id))
    table.add_row("data", f"{summary.data.rows} fingerprint {summary.data.fingerprint} ({summary.data.dropped_invalid} invalid rows dropped)")
    table.add_row("fine-tune job", f"{summary.job.name} {'(re-attached)' if summary.job.reattached else ''}\n{summary.job.display_name or ''}")
    table.add_row("metrics", ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary.metrics.items()) if "loss" in k))
    table.add_row("gate", ("passed" if summary.gate.passed else "failed" if summary.gate.passed is False else "-")
                  + "".join(f"\n  {r}" for r in summary.gate.reasons))
    table.add_row("model", f"{summary.model.name}:{summary.model.version} (from {summary.model.foundation})")
    table.add_row("approval", f"{summary.approval.decision} by {summary.approval.approver}\n  {summary.approval.comment or ''}")
    table.add_row("endpoint", f"{summary.endpoint.name} / {summary.endpoint.deployment} traffic {summary.endpoint.traffic}")
    table.add_row("smoke", f"ok={summary.smoke.ok} latency {summary.smoke.latency_ms} ms {summary.smoke.error or ''}"
                  + (f"\n  sample: {summary.smoke.sample_output!r}" if summary.smoke.sample_output else ""))
    table.add_row("teardown", f"{summary.teardown.mode} done={summary.teardown.done} deleted {summary.teardown.deleted}")
    if summary.error:
        table.add_row("error", f"[red]{summary.error}[/red]")
    table.add_row("seconds", str(summary.seconds))
    console.print(table)


@app.command()
def run(
    profile: ProfileOption = None,
    set_: SetOption = None,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="Write the run summary here as JSON.")] = None,
) -> None:
    """Run the whole flow once (an ephemeral Prefect server is started when PREFECT_API_URL is not set)."""
    config = _config(profile, set_)
    from flows.tunegate_flow import ManualApprovalNeedsServer, require_server_for_manual, tunegate

    try:
        require_server_for_manual(config)  # before an ephemeral server is started or anything is trained
        if config.approval.policy == "manual":
            _reachable_server()
    except ManualApprovalNeedsServer as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

    state = tunegate(config=config, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    path = Path(config.workspace.state_dir) / "runs" / run_id / "summary.json"
    if not path.exists():
        err.print(f"[red]the run ended before writing a summary: {state.message}[/red]")
        raise typer.Exit(1)
    summary = RunSummary.model_validate_json(path.read_text())
    _print_summary(summary)
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.model_dump(mode="json"), indent=2))
    raise typer.Exit(0 if summary.status == "succeeded" else 1)


def _reachable_server() -> str:
    """The Prefect API URL, after checking that a server answers there."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        err.print("[red]PREFECT_API_URL is not set: start a server with `prefect server start` and "
                  "`export PREFECT_API_URL=http://127.0.0.1:4200/api`[/red]")
        raise typer.Exit(2)
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        err.print(f"[red]no Prefect server answers at {url} ({exc}); start one with `prefect server start`[/red]")
        raise typer.Exit(2) from None
    return url


def _decide(run_id: str, approved: bool, approver: str, comment: str) -> None:
    from uuid import UUID

    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import resume_flow_run

    if not approver.strip():
        err.print("[red]--approver must name a person[/red]")
        raise typer.Exit(2)
    _reachable_server()
    try:
        flow_run_id = UUID(run_id)
    except ValueError:
        err.print(f"[red]{run_id!r} is not a flow run id; `tunegate pending` lists the runs waiting for a decision[/red]")
        raise typer.Exit(2) from None
    try:
        resume_flow_run(flow_run_id, run_input={"approved": approved, "approver": approver.strip(), "comment": comment})
    except FlowPauseTimeout:
        err.print(f"[red]run {run_id} can no longer be resumed: its approval timed out (recorded as a reject)[/red]")
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - NotPausedError, ObjectNotFound, a rejected input: say which
        err.print(f"[red]could not resume run {run_id}: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{'approved' if approved else 'rejected'} run {run_id} as {approver.strip()}")


ApproverOption = Annotated[str, typer.Option("--approver", "-a", help="Your name, recorded on the model version.")]
CommentOption = Annotated[str, typer.Option("--comment", "-c", help="Why; recorded with the decision.")]


@app.command()
def approve(run_id: str, approver: ApproverOption, comment: CommentOption = "") -> None:
    """Approve the model a paused run is waiting on: the run goes on to deploy it."""
    _decide(run_id, True, approver, comment)


@app.command()
def reject(run_id: str, approver: ApproverOption, comment: CommentOption = "") -> None:
    """Reject the model a paused run is waiting on: nothing is deployed, the version is tagged rejected."""
    _decide(run_id, False, approver, comment)


@app.command()
def pending() -> None:
    """Runs waiting for an approval decision, with the summary a reviewer decides from."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.input.actions import read_flow_run_input
    from rich.markdown import Markdown

    _reachable_server()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["tunegate"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=100,
        )
    if not runs:
        console.print("no runs are waiting for approval")
        return
    for run in runs:
        keyset = run.state.state_details.run_input_keyset if run.state else None
        description = read_flow_run_input(keyset["description"], flow_run_id=run.id) if keyset else None
        timeout = run.state.state_details.pause_timeout if run.state else None
        console.rule(f"{run.id}  {run.name}  (times out {timeout})")
        console.print(Markdown(description or "(no summary)"))
        console.print(f"tunegate approve {run.id} --approver NAME   |   tunegate reject {run.id} --approver NAME --comment WHY")


@app.command()
def serve() -> None:
    """Serve the deployments of prefect.yaml from this process, without a work pool (for a laptop)."""
    from flows.deployments import serve_all

    _reachable_server()
    serve_all()


def _workspace(profile: Path | None, sets: list[str] | None):
    from workspaces.factory import open_workspace

    return open_workspace(_config(profile, sets).workspace)


@app.command()
def chat(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint name in the profile's workspace.")],
    deployment: Annotated[Optional[str], typer.Option(help="Target one deployment (header azureml-model-deployment).")] = None,
    message: Annotated[Optional[list[str]], typer.Option("--message", "-m", help="Send these and exit (no prompt).")] = None,
    max_new_tokens: int = 64,
    temperature: float = 0.6,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Talk to a live endpoint: each turn is sent with the conversation so far (the seed's 'chat with your model')."""
    from tasks.invoke import ScoringParameters, score

    workspace = _workspace(profile, set_)
    if workspace.get_endpoint(endpoint) is None:
        err.print(f"[red]no endpoint {endpoint!r} in this workspace; `tunegate inventory` lists them[/red]")
        raise typer.Exit(2)
    credentials = workspace.endpoint_credentials(endpoint)
    parameters = ScoringParameters(max_new_tokens=max_new_tokens, temperature=temperature)
    history: list[dict[str, str]] = []
    turns = iter(message) if message else None
    while True:
        try:
            text = next(turns) if turns else console.input("[bold]you> [/bold]")
        except (StopIteration, EOFError, KeyboardInterrupt):
            break
        if not text.strip() or text.strip() in {"/quit", "/exit"}:
            if turns:
                continue
            break
        history.append({"role": "user", "content": text})
        result = score(credentials, history, parameters, deployment=deployment)
        if result.error:
            err.print(f"[red]{result.error}[/red]")
            history.pop()
            continue
        history.append({"role": "assistant", "content": result.output or ""})
        console.print(f"[bold cyan]model>[/bold cyan] {result.output}  [dim]({result.latency_ms:.0f} ms)[/dim]")


@app.command()
def inventory(profile: ProfileOption = None, set_: SetOption = None) -> None:
    """What tunegate created in the workspace and is still there (endpoints, running jobs, processes)."""
    console.print_json(_workspace(profile, set_).inventory().model_dump_json())


@app.command()
def teardown(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint to delete, with all its deployments.")],
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Delete an endpoint left behind (for example by a run that was killed)."""
    workspace = _workspace(profile, set_)
    if workspace.get_endpoint(endpoint) is None:
        err.print(f"no endpoint {endpoint!r}; nothing to delete")
        raise typer.Exit(0)
    workspace.delete_endpoint(endpoint)
    console.print(f"deleted endpoint {endpoint}")


if __name__ == "__main__":
    app()
