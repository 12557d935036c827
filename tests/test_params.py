"""Profiles and overrides: bad input fails before any work, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.params import DEFAULT_PROFILE, ProfileError, TunegateConfig, load_profile

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_profile_is_valid():
    for profile in sorted((ROOT / "deployments").glob("*.yaml")):
        filled = ["workspace.subscription_id=sub", "workspace.resource_group=rg", "workspace.workspace_name=ws"]
        assert isinstance(load_profile(profile, filled if profile.name == "azure.yaml" else []), TunegateConfig), profile


def test_azure_profile_placeholders_must_be_filled():
    with pytest.raises(ProfileError, match="workspace.subscription_id is still the placeholder"):
        load_profile(ROOT / "deployments" / "azure.yaml")


def test_default_profile_is_local():
    config = load_profile()
    assert DEFAULT_PROFILE.name == "local.yaml" and config.workspace.kind == "local"


def test_overrides_are_typed_and_nested():
    config = load_profile(None, ["finetune.learning_rate=1e-4", "data.percent_per_split={test_gen: 50}",
                                 "teardown.mode=keep", "finetune.apply_lora=false"])
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
    schema = TunegateConfig.model_json_schema()
    assert {"data", "finetune", "approval", "teardown"} <= set(schema["properties"])
