"""The base of every settings section (tasks/settings.py, tasks/evaluate_settings.py)."""

from __future__ import annotations

from pydantic import ConfigDict

from workspaces.forms import FormModel


class Section(FormModel):
    # NaN/inf can only fail later (a NaN threshold trains for nothing): refused here with the field's name
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
