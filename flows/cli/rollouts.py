"""`tunegate rollout status|abort ENDPOINT`: where a progressive rollout stands, and back to the live model now."""

from __future__ import annotations

import getpass
import time
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.common import ProfileOption, SetOption, _config, _fail, app, console
from workspaces.ports import WorkspaceError

rollout_app = typer.Typer(help="Progressive rollouts on kept endpoints: where one stands, and abort it.")
app.add_typer(rollout_app, name="rollout")


def _open(profile, sets):
    from data.runs import RunStore
    from workspaces.factory import open_workspace

    config = _config(profile, sets)
    return RunStore(config.workspace.state_dir), open_workspace(config.workspace)


@rollout_app.command("status")
def status(
    endpoint: Annotated[str, typer.Argument(help="The kept endpoint (endpoint.name).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """The rollout's step, the traffic now, and each window's numbers; says when its run is gone."""
    from flows.rollout_control import RolloutError, rollout_status

    store, workspace = _open(profile, set_)
    try:
        found = rollout_status(store, workspace.endpoints, endpoint)
    except (RolloutError, WorkspaceError) as exc:
        _fail(exc, 1)
    if as_json:
        console.print_json(data=found)
        return
    run = {"running": "running", "gone": "GONE (killed?)", "elsewhere": "on another machine", "ended": "ended"}
    console.print(
        f"rollout on {endpoint}: {found['outcome']}; candidate {found['candidate']} ({found.get('candidate_model')}) "
        f"against {found['live']} ({found.get('live_model')}); run {found.get('run_id')}: {run[found['run']]}",
        markup=False,
        soft_wrap=True,
    )
    if found.get("reason"):
        console.print(f"  {found['reason']}", markup=False, soft_wrap=True)
    console.print(f"  traffic now: {found['traffic_now']}  mirror: {found['mirror_now'] or 'none'}", markup=False)
    table = Table("started", "step", "held", "requests c/l", "errors c/l", "p95 ms c/l", "no reply", "verdict")
    for step in found.get("steps", []):
        p95 = "/".join("-" if step["p95_ms"][s] is None else f"{step['p95_ms'][s]:.0f}" for s in ("candidate", "live"))
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(step["started_at"])),
            f"{'mirror ' if step['phase'] == 'mirror' else ''}{step['traffic']}%",
            f"{step['seconds']:.0f} s",
            f"{step['requests']['candidate']}/{step['requests']['live']}",
            f"{step['errors']['candidate']}/{step['errors']['live']}",
            p95,
            f"{step['degenerate']['candidate']:.0%}",
            step["verdict"],
        )
    console.print(table)
    if found["interrupted"]:
        console.print(
            f"its run is gone: `tunegate rollout abort {endpoint}` gives {found['live']} all traffic back (the next "
            "run on this endpoint does so too)",
            markup=False,
            soft_wrap=True,
        )


@rollout_app.command("abort")
def abort(
    endpoint: Annotated[str, typer.Argument(help="The kept endpoint (endpoint.name).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record.")] = "no reason given",
    wait_s: Annotated[float, typer.Option("--wait", help="Seconds to wait for a running rollout to act.")] = 120,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Back to the live model now: all traffic to it, no mirror, the candidate deleted (the champion never moved)."""
    from flows.rollout_control import RolloutError, abort_rollout

    store, workspace = _open(profile, set_)
    try:
        done = abort_rollout(store, workspace.endpoints, endpoint, getpass.getuser(), reason, wait_s=wait_s)
    except (RolloutError, WorkspaceError) as exc:
        _fail(exc, 1)
    console.print(done, markup=False, soft_wrap=True)
