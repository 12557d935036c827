"""`tunegate model import`: a local model folder into the local workspace's registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from workspaces.ports import InvalidNameError, WorkspaceError

if TYPE_CHECKING:
    pass

from flows.cli.common import (
    ProfileOption,
    SetOption,
    _config,
    _fail,
    app,
    console,
)

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
    from workspaces.local.imports import check_chat_template, derived_tags, inspect_model_folder, parse_tags
    from workspaces.names import checked_name
    from workspaces.ports import FoundationModel

    try:  # before anything is read, copied or deleted: a name becomes a folder of the state directory
        checked_name("model", name)
        if version is not None:
            checked_name("version", version)
    except InvalidNameError as exc:
        _fail(exc, 2)
    settings = _config(profile, set_).workspace
    from workspaces.factory import open_workspace, workspace_kind

    if not workspace_kind(settings.kind).imports_models:  # before opening it: no Azure sign-in for a refusal
        _fail(
            "tunegate model import fills the local workspace's registry; on Azure ML register the folder with the "
            "SDK (ml_client.models.create_or_update) or `az ml model create`, then name it as model.name",
            2,
        )
    imports = open_workspace(settings).imports
    if imports is None:
        _fail(f"the {settings.kind} workspace cannot import model folders", 2)
    try:
        folder = inspect_model_folder(path)
        tags = {**derived_tags(folder), **parse_tags(tag or [])}
        as_model = FoundationModel(name=name, version="0", id="", tags=tags)
        for key in ("finetune_compute_allow_list", "inference_compute_allow_list"):
            allow_list(as_model, key)
        defaults = model_specific_defaults(as_model)
        check_chat_template(folder.path)
        registered = imports.import_model(folder.path, name, tags, version)
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
