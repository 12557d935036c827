"""The one place a backend is chosen: the table of workspace kinds, keyed by `workspace.kind`.

`KINDS` holds one `WorkspaceKind` per backend: its settings model (a section of the profile, a choice in the
Prefect form) and how to open it. The profile's union, the form and `open_workspace` are all derived from it;
adding a workspace is one `register_kind` (ARCHITECTURE.md, "Adding a workspace"). Tests register the in-memory
fake the same way, and hand the flow one instance with `use_workspace(fake)`, the way Dagster picks resources by
deployment name: an explicit seam, not a patch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import ConfigDict, Field, model_validator

from workspaces.azure.settings import AzureSettings
from workspaces.forms import FormModel, as_choice
from workspaces.local.settings import LocalSettings
from workspaces.ports import ChatFlows, Workspace, WorkspaceError

T = TypeVar("T")
STATE_DIR_HELP = "Where runs, sampled data and the local workspace are kept on this machine."


class LocalWorkspaceSettings(FormModel):
    """Everything on this machine: a trainer process, an MLflow registry in a file, endpoints on localhost."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, title="Local (this machine)")

    kind: Literal["local"] = Field("local", description="Run on this machine.")
    state_dir: str = Field(".tunegate", description=STATE_DIR_HELP)
    local: LocalSettings = Field(default_factory=LocalSettings, title="Local endpoint and MLflow UI")

    @property
    def model_compute_rules(self) -> bool:
        """The model's fine-tune allow/deny lists apply (the local trainer follows them as the pipeline would)."""
        return True


class AzureWorkspaceSettings(FormModel):
    """An Azure ML workspace and registry, as in the Azure ML fine-tuning notebook."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, title="Azure ML")

    kind: Literal["azure"] = Field("azure", description="Run on Azure ML.")
    state_dir: str = Field(".tunegate", description=STATE_DIR_HELP)
    subscription_id: str | None = Field(
        None, description="Azure subscription ID of the workspace (or give the workspace's config.json below)."
    )
    resource_group: str | None = Field(None, description="Resource group of the workspace.")
    workspace_name: str | None = Field(None, description="Azure ML workspace name.")
    registry_name: str = Field("azureml", description="Registry the foundation model and pipeline come from.")
    azure: AzureSettings = Field(default_factory=AzureSettings, title="Azure options")

    @property
    def model_compute_rules(self) -> bool:
        """The model's fine-tune allow/deny lists are for the registry's pipeline component; a command job runs the
        user's own script on the cluster they chose."""
        return self.azure.finetune_mode == "pipeline"

    @model_validator(mode="after")
    def _no_placeholders(self) -> AzureWorkspaceSettings:
        for key in ("subscription_id", "resource_group", "workspace_name"):
            value = getattr(self, key)
            if value and value.startswith("<"):
                raise ValueError(
                    f"workspace.{key} is still the placeholder {value}: fill it in, or set "
                    "workspace.azure.config_path to your config.json and remove the three ids"
                )
        return self


def _open_local(settings: LocalWorkspaceSettings) -> Workspace:
    from workspaces.local.workspace import LocalWorkspace

    return LocalWorkspace(
        Path(settings.state_dir) / "workspace",
        settings.local.endpoint_limits,
        settings.local.mlflow_ui_url,
        assistant_only_loss=settings.local.assistant_only_loss,
    )


def _preload_local() -> None:
    """The MLflow client and its sqlite store: 2 s of imports at the first stage that reads the registry."""
    import importlib

    for module in ("workspaces.local.workspace", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"):
        importlib.import_module(module)


def _open_azure(settings: AzureWorkspaceSettings) -> Workspace:
    from workspaces.azure.workspace import AzureWorkspace  # azure-ai-ml is imported only when it is chosen

    return AzureWorkspace.from_settings(settings)


class WorkspaceSection(Protocol):
    """What every kind's settings has (the profile's `workspace` section), whichever kind it is."""

    @property
    def kind(self) -> str: ...
    @property
    def state_dir(self) -> str: ...
    @property
    def model_compute_rules(self) -> bool:
        """The model's fine-tune allow/deny lists apply to this workspace's jobs."""
        ...


@dataclass(frozen=True)
class WorkspaceKind:
    """One backend: `settings` is its profile section (a pydantic model whose `kind` is a Literal of `name`)."""

    name: str
    settings: type[FormModel]
    open: Callable[[Any], Workspace]
    # it runs on this machine: the preflight checks the machine's own sizes (a GPU size without a GPU)
    on_this_machine: bool = False
    # `tunegate model import` can fill its registry from a folder
    imports_models: bool = False
    # what a run on it will import anyway, imported ahead (`tunegate run` does it while its Prefect server boots)
    preload: Callable[[], None] | None = None


KINDS: dict[str, WorkspaceKind] = {}


def register_kind(kind: WorkspaceKind) -> WorkspaceKind:
    """Add a backend. Profiles and forms built after this call offer it (flows.params builds them at import)."""
    field = kind.settings.model_fields.get("kind")
    if field is None or field.default != kind.name:
        raise ValueError(f"{kind.settings.__name__} needs a field kind: Literal[{kind.name!r}] = {kind.name!r}")
    KINDS[kind.name] = kind
    return kind


register_kind(
    WorkspaceKind(
        "local", LocalWorkspaceSettings, _open_local, on_this_machine=True, imports_models=True, preload=_preload_local
    )
)
register_kind(WorkspaceKind("azure", AzureWorkspaceSettings, _open_azure))


def workspace_kind(name: str) -> WorkspaceKind:
    try:
        return KINDS[name]
    except KeyError:
        raise WorkspaceError(f"workspace.kind {name!r} is not one of {', '.join(KINDS)}") from None


def workspace_settings_type() -> Any:
    """The profile's `workspace` section: `kind` picks the backend (the UI form shows it as a choice)."""
    union = functools.reduce(operator.or_, (kind.settings for kind in KINDS.values()))  # A | B | ...
    titles = [str(kind.settings.model_config.get("title", kind.name)) for kind in KINDS.values()]
    return Annotated[
        union,
        Field(
            discriminator="kind",
            description="Where the flow runs: " + ", or ".join(titles) + ".",
            json_schema_extra=as_choice,
        ),
    ]


_override: contextvars.ContextVar[Workspace | None] = contextvars.ContextVar("tunegate_workspace", default=None)
_chat_flows_override: contextvars.ContextVar[ChatFlows | None] = contextvars.ContextVar(
    "tunegate_chat_flows", default=None
)


@contextlib.contextmanager
def _overriding(variable: contextvars.ContextVar, value: T) -> Iterator[T]:
    token = variable.set(value)
    try:
        yield value
    finally:
        variable.reset(token)


def use_workspace(workspace: Workspace) -> contextlib.AbstractContextManager[Workspace]:
    return _overriding(_override, workspace)


def use_chat_flows(chat_flows: ChatFlows) -> contextlib.AbstractContextManager[ChatFlows]:
    """The smoke's chat-flow runner for the flows run inside (tests: an in-memory one)."""
    return _overriding(_chat_flows_override, chat_flows)


def open_workspace(settings: Any) -> Workspace:
    override = _override.get()
    if override is not None:
        return override
    return workspace_kind(settings.kind).open(settings)


def open_chat_flows() -> ChatFlows:
    """The runner of the chat flow (smoke.promptflow): Prompt flow, whatever the workspace."""
    override = _chat_flows_override.get()
    if override is not None:
        return override
    from workspaces.promptflow import PromptflowChat

    return PromptflowChat()


def open_judge(base_url: str, model: str, key_block: str | None = None) -> Callable[[str, str, str, str], float]:
    """The evaluation's judge (evaluate.judge): an OpenAI-compatible chat endpoint, its key from a Prefect Secret."""
    from pydantic import SecretStr

    from workspaces.judge import OpenAIJudge

    key = None
    if key_block:
        from prefect.blocks.system import Secret

        block: Any = Secret.load(key_block)  # a sync call in a sync flow
        key = SecretStr(str(block.get()))
    return OpenAIJudge(base_url, model, key)
