"""What a workspace holds: `inventory` and `jobs` (and `jobs --cancel`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from workspaces.ports import WorkspaceError

if TYPE_CHECKING:
    pass

from flows.cli.common import (
    ProfileOption,
    SetOption,
    _config,
    _fail,
    _workspace,
    app,
    console,
    err,
    exit_code,
)

DAMAGED = "damaged: "  # a job listed whose state files cannot be read (workspaces/local/jobs.py)


@app.command()
def inventory(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
    every_process: Annotated[
        bool, typer.Option("--all", help="Also list the processes of other state directories.")
    ] = False,
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
    state_root = Path(_config(profile, set_).workspace.state_dir).resolve()
    here = {p.pid for p in processes if of_state_dir(p.argument, state_root)}
    if as_json:
        console.print_json(
            data={
                **found.model_dump(mode="json"),
                "serving_problems": _serving_problems(workspace, found),
                "rollout_problems": _rollout_problems(profile, set_),
                "tunegate_processes": [
                    {**vars(p), "owner_alive": not p.orphaned if p.owner else None, "this_state_dir": p.pid in here}
                    for p in processes
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
    for problem in (*found.problems, *_serving_problems(workspace, found), *_rollout_problems(profile, set_)):
        err.print(f"problem: {problem}", markup=False, soft_wrap=True)
    console.print(f"running jobs: {', '.join(found.running_jobs) or 'none'}", markup=False)
    shown = processes if every_process else [p for p in processes if p.pid in here]
    table = Table("pid", "process", "of", "started by", title="tunegate processes", title_justify="left")
    table.columns[2].overflow = "fold"  # a path is folded onto more lines, never cut
    for process in shown:
        owner = "-" if process.owner is None else f"{process.owner} ({'gone' if process.orphaned else 'running'})"
        table.add_row(str(process.pid), process.kind, Text(process.argument), owner)
    console.print(table if shown else f"tunegate processes of {state_root}: none", soft_wrap=not shown)
    elsewhere = len(processes) - len(shown)
    if elsewhere:
        console.print(f"{elsewhere} more of other state directories: `tunegate inventory --all` lists them")


def of_state_dir(argument: str, state_root: Path) -> bool:
    """A process's argument (an endpoint or job directory, or a Prefect server's port) is of this state directory;
    a port belongs to no directory and is shown everywhere."""
    if not argument.startswith(("/", "file:")):
        return True
    path = Path(argument.removeprefix("file://")).resolve()
    return path == state_root or state_root in path.parents


def _rollout_problems(profile, sets) -> list[str]:
    """Rollouts whose run is gone while the endpoint may still be split between two models."""
    from data.runs import RunStore
    from flows.rollout_control import as_rollout, interrupted

    problems = []
    for record in RunStore(_config(profile, sets).workspace.state_dir).rollouts():
        if interrupted(record):
            found = as_rollout(record)
            problems.append(
                f"the rollout of {found.candidate} on {found.endpoint} (run {record.get('run_id')}) was interrupted "
                f"at {found.reached}%: `tunegate rollout abort {found.endpoint}` gives {found.live} all traffic back"
            )
    return problems


def _serving_problems(workspace, found) -> list[str]:
    """Kept endpoints whose live model is not the registry's champion (a promotion killed half-way)."""
    from tasks.promote import repair_for, serving_state

    problems = []
    for name in found.endpoints:
        if name in found.endpoints_down or name in found.endpoints_ended:
            continue
        try:
            serving = serving_state(workspace.endpoints, name)
            if serving is None or not serving.live:
                continue
            model_name = serving.live[0].rpartition(":")[0]
            repair = repair_for(serving, workspace.registry.champion(model_name))
        except WorkspaceError:
            continue  # said among the inventory's own problems
        if repair.needed:
            problems.append(f"{repair.why}: `tunegate endpoint start {name}` puts them back together")
    return problems


@app.command()
def jobs(
    cancel: Annotated[
        str | None, typer.Option("--cancel", help="Cancel this job (by name) instead of listing.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
    every_process: Annotated[
        bool, typer.Option("--all", help="Also list the processes of other state directories.")
    ] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """The fine-tune jobs tunegate submitted in the workspace (whichever run did), newest first; or cancel one."""
    from datetime import datetime

    from workspaces.ports import JobRef

    workspace = _workspace(profile, set_)
    try:
        if cancel is not None:
            job = workspace.jobs.get(cancel)
            if job is None:
                _fail(f"no job {cancel!r} in this workspace; `tunegate jobs` lists them", 2)
            try:
                before = workspace.jobs.status(job).state.value
            except WorkspaceError as exc:  # its status cannot be read: cancelling stops what still runs of it
                err.print(str(exc), markup=False, soft_wrap=True)
                before = "unknown"
            if before in ("completed", "failed", "canceled"):
                console.print(f"job {cancel} already ended {before}; nothing to cancel", markup=False)
                return
            workspace.jobs.cancel(JobRef(name=job.name))
            console.print(f"cancelled job {cancel} (was {before})", markup=False)
            return
        found = workspace.jobs.list()
    except WorkspaceError as exc:
        _fail(exc, exit_code(exc))
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
