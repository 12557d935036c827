"""The one rule for a name a user gives that a workspace turns into a path or a resource name (model, version,
endpoint, deployment, job): letters, digits, '-', '_' and '.', starting with a letter or digit, never '..'. Checked
before any file operation, and for profile fields when the profile is loaded."""

from __future__ import annotations

import re

from workspaces.errors import InvalidNameError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid name, or None."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        return "use letters, digits, '-', '_' or '.', starting with a letter or digit, at most 128 characters"
    return None


def checked_name(kind: str, name: str) -> str:
    """`name` when it is valid, else InvalidNameError naming the kind (e.g. "model name '../x' is not valid")."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidNameError(f"{kind} name {name!r} is not valid: {problem}")
    return name
