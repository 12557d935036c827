"""Register the fine-tuned model with lineage tags: where its data, job, metrics and run came from.

Registration is idempotent, here, for every workspace: a job's model is registered once; a retried task gets the
version it already made.
"""

from __future__ import annotations

from prefect.logging import get_run_logger

from tasks.errors import stage
from tasks.gate import EVAL_FINGERPRINT, EVAL_LOSS, GateResult
from workspaces.ports import FoundationModel, JobRef, ModelRegistry, ModelVersion

JOB_TAG = "finetune_job"  # the job a version was registered from


def lineage_tags(
    foundation: FoundationModel,
    job: JobRef,
    fingerprint: str,
    gate: GateResult,
    flow_run_id: str,
    eval_fingerprint: str = "",
) -> dict[str, str]:
    tags = {
        "foundation_model": foundation.id,
        "data_fingerprint": fingerprint,
        EVAL_FINGERPRINT: eval_fingerprint,  # what eval_loss was measured on: a later gate compares only on it
        JOB_TAG: job.name,
        "flow_run_id": flow_run_id,
        "gate": "passed" if gate.passed else "failed",
    }
    # the one number a later gate reads from the version (tasks/gate.champion_eval_loss); every other metric, and the
    # evaluation's scores, are metrics of the training run, not tags cluttering the version's page
    if EVAL_LOSS in gate.metrics:
        # every digit: a later run of the same model compares equal, not "better" by a rounded-up tag
        tags[EVAL_LOSS] = repr(float(gate.metrics[EVAL_LOSS]))
    return tags


def register_once(registry: ModelRegistry, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
    existing = registry.find_model_version(name, job)
    return existing if existing is not None else registry.register_model(job, name, tags)


@stage("register model")
def register_model(registry: ModelRegistry, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
    existing = registry.find_model_version(name, job)
    if existing is not None:  # a reused or re-found job: an earlier run registered its model
        logger = get_run_logger()
        logger.info(
            "%s version %s of job %s was registered before; using it", existing.name, existing.version, job.name
        )
        return existing
    version = registry.register_model(job, name, tags)
    get_run_logger().info("registered %s version %s", version.name, version.version)
    return version
