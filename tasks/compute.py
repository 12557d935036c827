"""Validate compute: the notebook's §3 rules, unchanged, as plain functions shared by every workspace."""

from __future__ import annotations

from pydantic import BaseModel

from tasks.errors import stage
from tasks.model import FINETUNE_ALLOW_LIST, allow_list
from tasks.settings import ComputeSettings
from workspaces.ports import Compute, ComputeSpec, ComputeTargets, FoundationModel, Sku

# sizes the notebook refuses when the model carries no allow list
UNSUPPORTED_GPU_VM_SIZES = ("standard_nc6", "standard_nc12", "standard_nc24", "standard_nc24r")


class ComputeRejected(ValueError):
    """The compute cannot run the fine-tune: failed, not allowed, or of unknown size."""


def check_provisioning(compute: Compute) -> None:
    if compute.provisioning_state.lower() == "failed":
        raise ComputeRejected(
            f"Provisioning failed, Compute '{compute.name}' is in failed state. please try creating a different compute"
        )


def check_size_allowed(size: str, computes_allow_list: list[str] | None) -> None:
    if computes_allow_list is not None:
        if size.lower() not in [allowed.lower() for allowed in computes_allow_list]:
            raise ComputeRejected(
                f"VM size {size} is not in the allow-listed computes for finetuning: {computes_allow_list}"
            )
    elif size.lower() in UNSUPPORTED_GPU_VM_SIZES:
        raise ComputeRejected(
            f"VM size {size} is on the notebook's deny list for fine-tuning ({', '.join(UNSUPPORTED_GPU_VM_SIZES)}: "
            "the model carries no finetune_compute_allow_list, and these sizes are refused without one)"
        )


def gpus_for_size(size: str, skus: list[Sku], compute_name: str) -> int:
    for sku in skus:
        if sku.name.lower() == size.lower():
            return sku.gpus
    raise ComputeRejected(
        f"Number of GPU's in compute {size} not found. Available skus are: {[sku.name for sku in skus]}. "
        f"Please check the selected compute cluster: {compute_name} and try again."
    )


class ValidatedCompute(BaseModel):
    name: str
    size: str
    gpus_per_node: int


def allowed_sizes(computes_allow_list: list[str] | None, skus: list[Sku]) -> list[str]:
    """Sizes a new cluster could have: the model's allow list, else the GPU sizes the region offers minus the
    notebook's deny list."""
    if computes_allow_list is not None:
        return list(computes_allow_list)
    return [sku.name for sku in skus if sku.gpus > 0 and sku.name.lower() not in UNSUPPORTED_GPU_VM_SIZES]


def validate(
    compute: Compute,
    model: FoundationModel,
    skus: list[Sku],
    configured_size: str | None = None,
    model_rules: bool = True,
) -> ValidatedCompute:
    """The notebook's checks on the cluster as it is. A refusal names the cluster, its real size (an existing
    cluster keeps its size, whatever compute.size says), why, the allowed sizes and the way out.

    `model_rules=False`: the job is the user's own training script (Azure command mode), not the registry's
    pipeline component the model's allow/deny rules are written for; the cluster must still exist, be of a size
    the workspace lists, and have a GPU."""
    check_provisioning(compute)
    computes_allow_list = allow_list(model, FINETUNE_ALLOW_LIST) if model_rules else None
    try:
        if model_rules:
            check_size_allowed(compute.size, computes_allow_list)
        gpus = gpus_for_size(compute.size, skus, compute.name)
        if not model_rules and gpus == 0 and not compute.size.lower().startswith("local"):
            raise ComputeRejected(f"VM size {compute.size} has no GPU; a fine-tune script needs one")
    except ComputeRejected as why:
        raise rejected(compute.name, compute.size, why, computes_allow_list, skus, configured_size) from None
    return ValidatedCompute(name=compute.name, size=compute.size, gpus_per_node=gpus)


def rejected(
    cluster: str,
    size: str,
    why: ComputeRejected,
    computes_allow_list: list[str] | None,
    skus: list[Sku],
    configured_size: str | None = None,
) -> ComputeRejected:
    """The one refusal message: the cluster, its size, why, the sizes that would be accepted and the way out."""
    allowed = allowed_sizes(computes_allow_list, skus)
    differs = (
        f" (an existing cluster keeps its size: compute.size={configured_size} does not change it)"
        if configured_size and configured_size.lower() != size.lower()
        else ""
    )
    fix = (
        f"Fix: --set compute.size={allowed[0]}"  # this machine is its own "cluster": only the size changes
        if allowed and allowed[0].lower().startswith("local-")
        else "Fix: use a new cluster of an allowed size, "
        f"e.g. --set compute.name={cluster}-{_slug(allowed[0]) if allowed else 'gpu'} "
        f"--set compute.size={allowed[0] if allowed else '<allowed size>'}"
    )
    return ComputeRejected(
        f"compute cluster '{cluster}' is {size}{differs} and cannot run this fine-tune: {why}. "
        f"Allowed sizes: {', '.join(allowed) or 'none offered'}. {fix}"
    )


def _slug(size: str) -> str:
    return size.lower().removeprefix("standard_").replace("_", "-")[:16]


@stage("validate compute")
def validate_compute(
    targets: ComputeTargets, settings: ComputeSettings, model: FoundationModel, model_rules: bool = True
) -> ValidatedCompute:
    # refuse a configured size before creating a cluster of it; the existing cluster's real size is checked after
    if model_rules:
        computes_allow_list = allow_list(model, FINETUNE_ALLOW_LIST)
        try:
            check_size_allowed(settings.size, computes_allow_list)
        except ComputeRejected as why:
            raise rejected(settings.name, settings.size, why, computes_allow_list, targets.list_sizes()) from None
    compute = targets.ensure(
        ComputeSpec(
            name=settings.name,
            size=settings.size,
            min_instances=settings.min_instances,
            max_instances=settings.max_instances,
            idle_seconds_before_scaledown=settings.idle_seconds_before_scaledown,
        )
    )
    return validate(compute, model, targets.list_sizes(), configured_size=settings.size, model_rules=model_rules)
