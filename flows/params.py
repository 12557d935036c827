"""The flow's parameter: one pydantic model the Prefect UI renders as a form, loaded from a YAML profile.

`load_profile(path, ["finetune.learning_rate=1e-4", ...])` reads the profile, applies dotted overrides and
validates the result; unknown keys and bad values fail here, before any work starts, naming the field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from data.documents import DocumentError, read_yaml
from tasks.evaluate_settings import EvaluateSettings
from tasks.rollout_settings import RolloutSettings
from tasks.settings import (
    ApprovalSettings,
    ComputeSettings,
    DataSettings,
    EndpointSettings,
    FinetuneSettings,
    GateSettings,
    JobSettings,
    ModelSettings,
    RetrySettings,
    SmokeSettings,
    TeardownSettings,
)
from workspaces.factory import KINDS, LocalWorkspaceSettings, WorkspaceSection, workspace_settings_type
from workspaces.forms import FormModel

# the kinds registered when this module is imported (workspaces/factory.KINDS): the profile's and the form's choice;
# the type checker sees what every kind's settings has
if TYPE_CHECKING:
    WorkspaceSettings = WorkspaceSection
else:
    WorkspaceSettings = workspace_settings_type()
DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "deployments" / "local.yaml"


class TunegateConfig(FormModel):
    """Everything a run needs. The UI's run form shows the sections in this order: what people change most first
    (data, model, fine-tune, gate, approval, release), the machinery and its limits last (workspace)."""

    model_config = ConfigDict(extra="forbid")

    data: DataSettings = Field(default_factory=DataSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    teardown: TeardownSettings = Field(default_factory=TeardownSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    endpoint: EndpointSettings = Field(default_factory=EndpointSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    job: JobSettings = Field(default_factory=JobSettings)
    retries: RetrySettings = Field(default_factory=RetrySettings)
    workspace: WorkspaceSettings = Field(default_factory=LocalWorkspaceSettings)

    @model_validator(mode="after")
    def _advisory_champion_needs_a_person(self) -> TunegateConfig:
        # an advisory comparison with no person to read it would let a worse model go live on its own
        if self.gate.champion == "advisory" and self.approval.policy != "manual":
            raise ValueError(
                f"gate.champion: advisory needs approval.policy: manual (it is {self.approval.policy}); "
                "a person must read the comparison that no longer stops the run"
            )
        return self

    @field_validator("workspace", mode="before")
    @classmethod
    def _local_unless_said(cls, value: Any) -> Any:
        """`kind` may be left out of a profile: local, the embedded default."""
        if isinstance(value, dict) and "kind" not in value:
            return {**value, "kind": "local"}
        return value


class ProfileError(ValueError):
    """A profile or override that cannot be used; the message names the field to fix."""


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source} is not valid:"]
    for item in error.errors():
        loc = list(item["loc"])
        if loc[:1] == ["workspace"] and len(loc) > 1 and loc[1] in KINDS:
            del loc[1]  # the union's tag (workspace.kind), not a key of the profile
        field = ".".join(str(part) for part in loc)
        if not loc:  # a rule across sections: its message names the keys
            lines.append(f"  - {item['msg'].removeprefix('Value error, ')}")
        elif item["type"] == "extra_forbidden":
            lines.append(f"  - {field}: unknown key (check the spelling; see README 'Profiles')")
        else:
            lines.append(f"  - {field}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'finetune.learning_rate=1e-4' -> (['finetune', 'learning_rate'], 0.0001); the value is read as YAML."""
    if "=" not in text:
        raise ProfileError(f"--set {text!r}: expected key=value, e.g. finetune.learning_rate=1e-4")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if len(path) < 2:
        raise ProfileError(f"--set {text!r}: key must be section.field, e.g. data.percent=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ProfileError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return path, value


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    merged = copy.deepcopy(document)
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ProfileError(f"--set {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return merged


def config_from_dict(document: dict[str, Any], source: str = "profile") -> TunegateConfig:
    try:
        return TunegateConfig.model_validate(document)
    except ValidationError as exc:
        raise ProfileError(_describe(exc, source)) from None


def load_profile(path: str | Path | None = None, overrides: list[str] | None = None) -> TunegateConfig:
    profile = Path(path) if path else DEFAULT_PROFILE
    if not profile.is_absolute() and not profile.exists():  # deployments name profiles relative to the repository
        profile = DEFAULT_PROFILE.parent.parent / profile
    if not profile.is_file():
        raise ProfileError(
            f"profile {profile} does not exist (profiles live in deployments/, e.g. deployments/local.yaml)"
        )
    try:
        document = read_yaml(profile) or {}
    except DocumentError as exc:
        raise ProfileError(f"profile {exc}") from exc
    if not isinstance(document, dict):
        raise ProfileError(f"profile {profile} must be a mapping of sections (workspace, data, model, ...)")
    source = f"profile {profile}" + (f" with --set {' '.join(overrides)}" if overrides else "")
    return config_from_dict(apply_overrides(document, overrides or []), source)
