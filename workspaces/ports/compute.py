"""The compute role: the training cluster and the VM sizes the workspace offers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workspaces.ports.values import Value


class ComputeSpec(Value):
    name: str
    size: str
    min_instances: int = 0
    max_instances: int = 1
    idle_seconds_before_scaledown: int = 120


class Compute(Value):
    name: str
    size: str
    provisioning_state: str


class Sku(Value):
    name: str
    gpus: int


@runtime_checkable
class ComputeTargets(Protocol):
    def ensure(self, spec: ComputeSpec) -> Compute:
        """The cluster of that name, created when missing; ConflictError when it exists with another size."""
        ...

    def list_sizes(self) -> list[Sku]:
        """The sizes this workspace can run, with their GPU count."""
        ...
