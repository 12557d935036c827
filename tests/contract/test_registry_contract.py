"""The model registry role (ModelRegistry): foundation models, registration, tags and the champion.
Stated once and run on every workspace (conftest.py):
the in-memory fake, the Azure adapter through the real SDK on the replay, and the real local workspace."""

from __future__ import annotations

import pytest

from tasks.model import FINETUNE_ALLOW_LIST, INFERENCE_ALLOW_LIST, allow_list
from tasks.register import register_once
from tests.contract.common import unique
from workspaces.ports import (
    NotFoundError,
)


def test_a_foundation_model_carries_the_registry_tags(harness):
    model = harness.workspace.registry.get_foundation_model(harness.foundation)
    assert model.name == harness.foundation and model.version and model.id
    assert allow_list(model, FINETUNE_ALLOW_LIST) and allow_list(model, INFERENCE_ALLOW_LIST)


def test_an_unknown_foundation_model_is_not_found(harness):
    with pytest.raises(NotFoundError):
        harness.workspace.registry.get_foundation_model("no-such-model")


def test_registration_is_idempotent_per_job_and_versions_are_unique(harness):
    job, name = harness.completed_job(), unique("contract-model")
    assert harness.workspace.registry.find_model_version(name, job) is None
    first = register_once(harness.workspace.registry, job, name, {"data_fingerprint": "fp"})
    assert first.name == name and first.tags["data_fingerprint"] == "fp"
    assert register_once(harness.workspace.registry, job, name, {}).version == first.version
    assert harness.workspace.registry.find_model_version(name, job).version == first.version
    second = harness.workspace.registry.register_model(job, name, {})  # asked explicitly: a new, different version
    assert second.version != first.version


def test_tags_merge_and_the_champion_can_be_set_and_cleared(harness):
    name = unique("contract-champion")
    version = register_once(harness.workspace.registry, harness.completed_job(), name, {"a": "1"})
    tagged = harness.workspace.registry.tag_model(version, {"b": "2"})
    assert tagged.tags["a"] == "1" and tagged.tags["b"] == "2" and tagged.version == version.version
    assert harness.workspace.registry.champion(name) is None
    harness.workspace.registry.set_champion(tagged, name)
    assert harness.workspace.registry.champion(name).version == version.version
    harness.workspace.registry.set_champion(None, name)
    assert harness.workspace.registry.champion(name) is None
    assert harness.workspace.registry.champion(unique("never-registered")) is None
