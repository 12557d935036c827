"""Profiles and overrides: bad input fails before any work, naming the field."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel

from flows.params import DEFAULT_PROFILE, ProfileError, TunegateConfig, config_from_dict, load_profile

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_profile_is_valid():
    for profile in sorted((ROOT / "deployments").glob("*.yaml")):
        filled = ["workspace.subscription_id=sub", "workspace.resource_group=rg", "workspace.workspace_name=ws"]
        assert isinstance(load_profile(profile, filled if profile.name == "azure.yaml" else []), TunegateConfig), (
            profile
        )


def test_azure_profile_placeholders_must_be_filled():
    with pytest.raises(ProfileError, match="workspace.subscription_id is still the placeholder"):
        load_profile(ROOT / "deployments" / "azure.yaml")


def test_default_profile_is_local():
    config = load_profile()
    assert DEFAULT_PROFILE.name == "local.yaml" and config.workspace.kind == "local"


def test_overrides_are_typed_and_nested():
    config = load_profile(
        None,
        [
            "finetune.learning_rate=1e-4",
            "data.percent_per_split={test_gen: 50}",
            "teardown.mode=keep",
            "finetune.apply_lora=false",
        ],
    )
    assert config.finetune.learning_rate == 1e-4 and config.finetune.apply_lora is False
    assert config.data.percent_for("test_gen") == 50 and config.teardown.mode == "keep"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("finetune.learning_rat=1e-4", "finetune.learning_rat: unknown key"),
        ("finetune.num_train_epochs=0", "finetune.num_train_epochs"),
        ("teardown.mode=sometimes", "teardown.mode"),
        ("approval.policy=yolo", "approval.policy"),
        ("endpoint.name=9bad", "endpoint.name"),
        ("data.percent_per_split={dev: 5}", "unknown split 'dev'"),
        ("nosection.key=1", "nosection: unknown key"),
    ],
)
def test_bad_overrides_name_the_field(override, named):
    with pytest.raises(ProfileError) as info:
        load_profile(None, [override])
    assert named in str(info.value)


@pytest.mark.parametrize("override", ["finetune", "learning_rate=1", "finetune.lr=[1"])
def test_malformed_set_is_explained(override):
    with pytest.raises(ProfileError, match="--set"):
        load_profile(None, [override])


def test_unknown_profile_key_and_missing_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("data:\n  percent: 5\n  sead: 1\n")
    with pytest.raises(ProfileError, match="data.sead: unknown key"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")


def test_config_schema_renders_as_a_form():
    import json

    schema = TunegateConfig.model_json_schema()
    assert {"data", "finetune", "approval", "teardown"} <= set(schema["properties"])
    text = json.dumps(schema)
    assert '"null"' not in text and "<" not in text  # no None toggles; no <placeholders> the UI would swallow
    workspace = schema["properties"]["workspace"]
    assert [option["$ref"].rsplit("/", 1)[1] for option in workspace["anyOf"]] == [
        "LocalWorkspaceSettings",
        "AzureWorkspaceSettings",
    ]
    epochs = schema["$defs"]["FinetuneSettings"]["properties"]["num_train_epochs"]
    assert epochs["type"] == "number" and "default" not in epochs and "else 3" in epochs["description"]
    # an untouched form field is not sent: the model's own defaults still decide
    assert TunegateConfig.model_validate({"finetune": {}}).finetune.num_train_epochs is None
    assert "num_train_epochs" not in TunegateConfig().model_dump()["finetune"]


def test_a_profile_without_workspace_kind_is_local_and_errors_name_profile_keys():
    assert config_from_dict({"workspace": {"state_dir": "x"}}).workspace.kind == "local"
    with pytest.raises(ProfileError, match=r"workspace\.subscription_id: Input should be a valid string"):
        config_from_dict({"workspace": {"kind": "azure", "subscription_id": 5}})
    with pytest.raises(ProfileError, match=r"workspace\.azure\.finetune_mode"):
        config_from_dict({"workspace": {"kind": "azure", "azure": {"finetune_mode": "magic"}}})
    with pytest.raises(ProfileError, match=r"workspace\.subscription_id: unknown key"):
        config_from_dict({"workspace": {"kind": "local", "subscription_id": "s"}})


def _leaf_defaults(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    leaves: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        variants = [arg for arg in get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.update(_leaf_defaults(annotation, f"{prefix}{name}."))
        elif variants:  # a choice (workspace: local or azure): the keys of each; the default variant's values win
            for variant in reversed(variants):
                leaves.update(_leaf_defaults(variant, f"{prefix}{name}."))
        else:
            default = field.get_default(call_default_factory=True)
            leaves[f"{prefix}{name}"] = default.value if isinstance(default, Enum) else default
    return leaves


def test_readme_profile_table_is_the_model_defaults():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Profiles", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9_.*]+)` \| `([^`]*)` \|", section, flags=re.M))
    defaults = _leaf_defaults(TunegateConfig)
    documented: set[str] = set()
    for key, text in rows.items():
        documented_value = yaml.safe_load(text)
        matching = [leaf for leaf in defaults if leaf == key or (key.endswith(".*") and leaf.startswith(key[:-1]))]
        assert matching, f"README documents {key}, which the profile model does not have"
        for leaf in matching:
            assert documented_value == defaults[leaf], (
                f"README says {leaf} defaults to {text}, the model {defaults[leaf]!r}"
            )
        documented.update(matching)
    assert not set(defaults) - documented, f"undocumented keys: {sorted(set(defaults) - documented)}"


def test_local_profile_is_the_defaults():
    assert load_profile(DEFAULT_PROFILE) == TunegateConfig()


def test_an_advisory_champion_comparison_needs_a_person():
    with pytest.raises(ProfileError, match=r"gate.champion: advisory needs approval.policy: manual \(it is auto"):
        load_profile(None, ["gate.champion=advisory"])
    assert load_profile(None, ["gate.champion=advisory", "approval.policy=manual"]).gate.champion == "advisory"


def test_the_unknown_key_hint_names_the_readme_section_that_exists():
    with pytest.raises(ProfileError, match="see README 'Profiles'") as info:
        load_profile(None, ["data.sead=1"])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = re.search(r"see README '([^']+)'", str(info.value)).group(1)
    assert f"\n## {section}\n" in readme


def test_the_run_form_starts_with_what_people_change_and_ends_with_the_machinery():
    sections = list(TunegateConfig.model_json_schema()["properties"])
    assert sections[:5] == ["data", "model", "finetune", "gate", "approval"]
    assert sections[-1] == "workspace"  # the local endpoint's byte limits and the like come last
