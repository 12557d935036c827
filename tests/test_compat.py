"""The CLI, the profile keys and the run summary stay compatible across the restructuring (issue 22): what the
release before it offered, recorded in tests/fixtures/compat/, is all still there (additions are allowed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.compat.surface import cli_surface, profile_keys, summary_keys

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "compat" / "surface-before-issue-22.json").read_text())


def test_every_command_keeps_its_name_and_options():
    now = cli_surface()
    for command, options in RECORDED["cli"].items():  # new commands and new options are additions
        assert command in now, f"command {command!r} is gone"
        assert not set(options) - set(now[command]), f"{command}: options gone: {set(options) - set(now[command])}"


def test_every_profile_key_is_still_a_profile_key():
    missing = sorted(set(RECORDED["profile"]) - set(profile_keys()))
    assert not missing, f"profile keys users have in their files are gone: {missing}"


def test_every_summary_key_is_still_in_the_summary_json():
    missing = sorted(set(RECORDED["summary"]) - set(summary_keys()))
    assert not missing, f"summary keys scripts read are gone: {missing}"
