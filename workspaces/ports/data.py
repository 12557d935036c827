"""The data role: where the sampled files go so that a job can read them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from workspaces.ports.values import Value


class DataRef(Value):
    """Where the sampled files live once the workspace can read them."""

    train: str
    test: str
    fingerprint: str


@runtime_checkable
class DataStore(Protocol):
    def upload(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        """Make the two files readable by a job; the same fingerprint twice stores them once."""
        ...
