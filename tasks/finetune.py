"""Submit the fine-tune and wait for it: parameter merge, display name, idempotent submission, polling.

The re-attach-or-resubmit rule lives here, once, for every workspace: a job of the same idempotency key that is
queued, running or completed is re-attached (a GPU job costs real money: never the same work twice); one that
failed or was cancelled is followed by a new attempt under the next name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect.logging import get_run_logger

from tasks.compute import ValidatedCompute
from tasks.errors import stage
from tasks.model import model_specific_defaults
from tasks.settings import FinetuneSettings
from workspaces.ports import (
    ConflictError,
    DataRef,
    DataStore,
    FinetuneSpec,
    FoundationModel,
    JobRef,
    JobState,
    ModelVersion,
    TrainingJobs,
    WorkspaceError,
    parameter_bool,
)

# the notebook's training_parameters ∪ optimization_parameters (deepspeed_stage as the string its enum declares)
NOTEBOOK_DEFAULTS: dict[str, object] = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "learning_rate": 5e-6,
    "lr_scheduler_type": "cosine",
    "apply_lora": True,
    "apply_deepspeed": True,
    "deepspeed_stage": "2",
}

Params = dict[str, str | int | float | bool]


def merge_finetune_parameters(settings: FinetuneSettings, model_defaults: dict[str, object]) -> Params:
    """defaults ∪ model_specific_defaults ∪ overrides, later wins: the notebook's `update` plus the user's say.

    Values of keys our settings know are coerced to their declared types (the tag says "true", we want True);
    keys we do not know pass through untouched for the backend to check against what its trainer declares.
    """
    merged: dict[str, object] = {**NOTEBOOK_DEFAULTS, **model_defaults, **settings.overrides()}
    known = {key: value for key, value in merged.items() if key in FinetuneSettings.model_fields}
    try:
        typed = FinetuneSettings.model_validate(known)
    except ValueError as exc:
        raise ValueError(f"model_specific_defaults tag gives a value our settings refuse: {exc}") from exc
    return {key: (getattr(typed, key) if key in known else as_parameter(value)) for key, value in merged.items()}


def as_parameter(value: object) -> str | int | float | bool:
    """A model_specific_defaults value our settings do not declare, as a job parameter (scalars pass, the rest as
    their text)."""
    return value if isinstance(value, str | int | float | bool) else str(value)


def pipeline_display_name(model_name: str, params: Params, gpus_per_node: int) -> str:
    """The notebook's get_pipeline_display_name, with booleans accepted as bool or "true"/"false"."""
    batch_size = (
        int(params.get("per_device_train_batch_size", 1))
        * int(params.get("gradient_accumulation_steps", 1))
        * max(int(gpus_per_node), 1)  # a CPU node still trains one batch at a time
        * int(params.get("num_nodes_finetune", 1))
    )
    scheduler = params.get("lr_scheduler_type", "linear")
    ds = f"ds{params.get('deepspeed_stage', '2')}" if parameter_bool(params.get("apply_deepspeed", "false")) else "nods"
    lora = "lora" if parameter_bool(params.get("apply_lora", "false")) else "nolora"
    save_limit = params.get("save_total_limit", -1)
    seq_len = params.get("max_seq_length", -1)
    return f"{model_name}-ultrachat-bs{batch_size}-{scheduler}-{ds}-{lora}-save_limit{save_limit}-seqlen{seq_len}"


def idempotency_key(
    model: FoundationModel,
    data: DataRef,
    compute: str,
    params: Params,
    compare_with: ModelVersion | None = None,
) -> str:
    """What the job computes, and nothing else: the same inputs give the same key, so a rerun after a crash (another
    flow run) finds the job that is still training, or the one that finished, instead of paying twice."""
    compared = f"{compare_with.name}:{compare_with.version}" if compare_with else None
    payload = json.dumps(
        {"model": model.id, "data": data.fingerprint, "compute": compute, "params": params, "compare_with": compared},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def build_spec(
    model: FoundationModel,
    compute: ValidatedCompute,
    data: DataRef,
    settings: FinetuneSettings,
    experiment_name: str,
    compare_with: ModelVersion | None = None,
) -> FinetuneSpec:
    params = merge_finetune_parameters(settings, model_specific_defaults(model))
    return FinetuneSpec(
        model_id=model.id,
        compute=compute.name,
        gpus_per_node=compute.gpus_per_node,
        data=data,
        parameters=params,
        display_name=pipeline_display_name(model.name, params, compute.gpus_per_node),
        experiment_name=experiment_name,
        compare_with=compare_with,
    )


@stage("upload data")
def upload_data(data: DataStore, train: str, test: str, fingerprint: str) -> DataRef:
    return data.upload(Path(train), Path(test), fingerprint)


MAX_ATTEMPTS = 50


def job_name(key: str, attempt: int) -> str:
    """tunegate-<key>, then -2, -3, ... for the attempts after a failed one (Azure job names: letters, digits, -)."""
    return f"tunegate-{key[:20]}" + (f"-{attempt}" if attempt > 1 else "")


def submit_or_reattach(jobs: TrainingJobs, spec: FinetuneSpec, key: str, fresh: bool = False) -> JobRef:
    """The newest job of this key that is queued, running or completed, else a new one under the next free name.
    `fresh`: always a new one (the jobs already there are left as they are)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        name = job_name(key, attempt)
        existing = jobs.get(name)
        if existing is None:
            try:
                return jobs.submit(spec, name, key)
            except ConflictError:  # a run with the same inputs submitted it a moment ago: that job is ours too
                existing = jobs.get(name)
                if existing is None:
                    raise
        if fresh:
            continue
        state = jobs.status(existing).state
        if state not in (JobState.FAILED, JobState.CANCELED):
            return existing.model_copy(update={"reattached": True, "reused": state is JobState.COMPLETED})
    raise WorkspaceError(f"{MAX_ATTEMPTS} jobs named {job_name(key, 1)}[-N] exist; not submitting another")


@stage("submit fine-tune")
def submit_finetune(jobs: TrainingJobs, spec: FinetuneSpec, key: str, fresh: bool = False) -> JobRef:
    logger = get_run_logger()
    logger.info("fine-tune parameters: %s", spec.parameters)
    job = submit_or_reattach(jobs, spec, key, fresh)
    if job.reused:
        logger.info("reusing job %s: it completed earlier with the same inputs, nothing is trained again", job.name)
    elif job.reattached:
        logger.info("re-attached to job %s, started earlier with the same inputs (%s)", job.name, job.url or "")
    else:
        logger.info("submitted job %s (%s)", job.name, job.url or "")
    return job
