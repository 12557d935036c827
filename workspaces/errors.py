"""Errors of the Workspace port: transient (worth a retry) or permanent, whatever backend raised them."""

from __future__ import annotations


class WorkspaceError(Exception):
    """A permanent failure: retrying will not help (bad input, missing resource, refused by policy)."""


class TransientWorkspaceError(WorkspaceError):
    """A failure that may go away on its own (throttling, 5xx, a dropped connection)."""


class InvalidNameError(WorkspaceError):
    """A resource name the workspace refuses (it would become a path, or breaks the service's naming rule)."""


class NotFoundError(WorkspaceError):
    """The named resource does not exist in the workspace."""


class ConflictError(WorkspaceError):
    """The resource exists already, or the request conflicts with its state (e.g. deleting a live deployment)."""


# HTTP answers that mean "try again later", whatever service gave them
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class MetricsNotFound(WorkspaceError):
    """The job ended but its evaluation metric is nowhere in its runs; the message lists what was searched."""
