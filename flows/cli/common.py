"""What every command shares: the app, the consoles, the profile options, and one way to fail (exit_code)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from flows.params import ProfileError, load_profile
from workspaces.ports import InvalidNameError, WorkspaceError

if TYPE_CHECKING:
    pass


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


def _quiet_third_parties() -> None:
    """Keep MLflow's database chatter, its pickling advice and transformers' "Writing model shards" bars out of the
    terminal: set before they are imported (both read these at import), inherited by the trainer and servers."""
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    # MLflow's advice to log an input example when a model version is logged: nothing a tunegate user can act on
    warnings.filterwarnings("ignore", message=r".*An input example was not provided", category=UserWarning)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def exit_code(error: BaseException) -> int:
    """The one mapping of an error to an exit status: 2 when the caller's input is what to fix (a name, a profile,
    a usage), 1 when it is the state of the workspace or of the run."""
    if isinstance(error, InvalidNameError | ProfileError):
        return 2
    usage = getattr(error, "usage", None)  # tasks.reviews.ReviewError says which it is
    return 2 if usage else 1


def _fail(error: object, code: int) -> NoReturn:
    err.print(str(error), style="red", markup=False)
    raise typer.Exit(code)


def _workspace(profile: Path | None, sets: list[str] | None):
    from workspaces.factory import open_workspace

    return open_workspace(_config(profile, sets).workspace)


def _require_live(workspace, endpoint: str) -> None:
    """Exit with what to do unless the endpoint exists and answers."""
    try:
        found = workspace.endpoints.get(endpoint)
    except WorkspaceError as exc:
        _fail(exc, exit_code(exc))
    if found is None:
        _fail(f"no endpoint {endpoint!r} in this workspace; `tunegate inventory` lists them", 2)
    if not found.running:
        _fail(f"endpoint {endpoint} is down (its server is not running): `tunegate endpoint start {endpoint}`", 1)
