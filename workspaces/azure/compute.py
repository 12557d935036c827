"""Compute as the notebook does it: get the cluster or create it (dedicated, else low priority), list VM sizes."""

from __future__ import annotations

import logging
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.entities import AmlCompute

from workspaces.azure.errors import get_or_none, translated
from workspaces.ports import Compute, ComputeSpec, Sku, TransientWorkspaceError, WorkspaceError

logger = logging.getLogger(__name__)


class AzureCompute:
    """The workspace's AmlCompute clusters as the compute role."""

    def __init__(self, ml: MLClient) -> None:
        self.ml = ml

    def ensure(self, spec: ComputeSpec) -> Compute:
        return ensure_compute(self.ml, spec)

    def list_sizes(self) -> list[Sku]:
        return list_sizes(self.ml)


def ensure_compute(ml: MLClient, spec: ComputeSpec) -> Compute:
    compute = get_or_none(f"compute {spec.name}", lambda: ml.compute.get(spec.name)) or _create(ml, spec)
    state = getattr(compute.provisioning_state, "value", compute.provisioning_state)  # the SDK may give an enum
    return Compute(name=compute.name, size=compute.size, provisioning_state=str(state))


def _create(ml: MLClient, spec: ComputeSpec) -> Any:
    last: WorkspaceError | None = None
    for tier in ("dedicated", "low_priority"):  # no dedicated quota: a low-priority cluster can still run it
        cluster = AmlCompute(
            name=spec.name,
            size=spec.size,
            tier=tier,
            min_instances=spec.min_instances,
            max_instances=spec.max_instances,
            idle_time_before_scale_down=spec.idle_seconds_before_scaledown,
        )
        try:
            with translated(f"create compute {spec.name} ({tier})"):
                return ml.compute.begin_create_or_update(cluster).result()
        except TransientWorkspaceError:
            raise
        except WorkspaceError as exc:
            logger.warning("%s", exc)
            last = exc
    raise last or WorkspaceError(f"could not create compute {spec.name}")


def list_sizes(ml: MLClient) -> list[Sku]:
    with translated("list VM sizes"):
        return [Sku(name=size.name, gpus=int(size.gpus or 0)) for size in ml.compute.list_sizes()]
