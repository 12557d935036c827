"""Build the fine-tune job for Azure ML exactly as the notebook does, after checking every parameter against what
the component declares: unknown names are an error listing the valid ones; values are coerced to the declared
types (booleans as "true"/"false", `deepspeed_stage` as the enum's string — the notebook's int 2 is wrong for
0.0.82); enum values are checked. Also the seed-004 path: your own training script as a command job."""

from __future__ import annotations

import math
from typing import Any

from azure.ai.ml import Input, command
from azure.ai.ml.dsl import pipeline

from workspaces.azure.settings import CommandJobSettings
from workspaces.ports import FinetuneSpec

# inputs the adapter wires itself, as the notebook does; a parameter may not override them
WIRED_INPUTS = (
    "mlflow_model_path",
    "compute_model_import",
    "compute_preprocess",
    "compute_finetune",
    "compute_model_evaluation",
    "train_file_path",
    "test_file_path",
    "number_of_gpu_to_use_finetuning",
)
SCALAR_TYPES = {"string", "integer", "number", "boolean"}


class ComponentParameterError(ValueError):
    """A fine-tune parameter the component does not accept as given."""


def _coerce(name: str, value: Any, declared: Any) -> Any:
    kind = str(declared.type).lower()
    if kind not in SCALAR_TYPES:
        raise ComponentParameterError(
            f"finetune parameter {name!r} is a {kind} input of the component, not a parameter"
        )
    if kind == "string":
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            value = str(int(value))
        else:
            value = str(value)
    elif kind == "integer":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ComponentParameterError(f"finetune parameter {name!r} must be an integer, got {value!r}")
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ComponentParameterError(f"finetune parameter {name!r} must be an integer, got {value!r}") from None
    elif kind == "number":
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ComponentParameterError(f"finetune parameter {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ComponentParameterError(f"finetune parameter {name!r} must be finite, got {value!r}")
    elif kind == "boolean":
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            value = value.lower() == "true"
        elif not isinstance(value, bool):
            raise ComponentParameterError(f"finetune parameter {name!r} must be a boolean, got {value!r}")
    enum = getattr(declared, "enum", None)
    if enum and value not in enum and str(value) not in [str(e) for e in enum]:
        raise ComponentParameterError(f"finetune parameter {name!r} = {value!r} is not one of {list(enum)}")
    for bound, ok in (("min", lambda v, b: v >= b), ("max", lambda v, b: v <= b)):
        limit = getattr(declared, bound, None)
        if limit is not None and kind in {"integer", "number"} and not ok(value, float(limit)):
            raise ComponentParameterError(f"finetune parameter {name!r} = {value!r} is outside its {bound} {limit}")
    return value


def check_parameters(component: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the component declares them, or an error that says what to fix."""
    declared = dict(component.inputs)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        valid = sorted(
            name
            for name, spec in declared.items()
            if str(spec.type).lower() in SCALAR_TYPES and name not in WIRED_INPUTS
        )
        raise ComponentParameterError(
            f"{component.name} {component.version} has no input(s) {unknown}; "
            f"valid finetune parameters: {', '.join(valid)}"
        )
    wired = sorted(set(parameters) & set(WIRED_INPUTS))
    if wired:
        raise ComponentParameterError(
            f"{wired} are set by tunegate from the profile (model, compute, data), not as finetune parameters"
        )
    return {name: _coerce(name, value, declared[name]) for name, value in parameters.items()}


def build_pipeline_job(component: Any, spec: FinetuneSpec, job_name: str) -> Any:
    """The notebook's `create_pipeline`, with checked parameters, the job name and the run settings."""
    parameters = check_parameters(component, spec.parameters)

    @pipeline(name=spec.display_name)
    def create_pipeline():
        chat_completion_pipeline = component(
            mlflow_model_path=spec.model_id,
            compute_model_import=spec.compute,
            compute_preprocess=spec.compute,
            compute_finetune=spec.compute,
            compute_model_evaluation=spec.compute,
            train_file_path=Input(type="uri_file", path=spec.data.train),
            test_file_path=Input(type="uri_file", path=spec.data.test),
            number_of_gpu_to_use_finetuning=spec.gpus_per_node,
            **parameters,
        )
        return {"trained_model": chat_completion_pipeline.outputs.mlflow_model_folder}

    job = create_pipeline()
    job.name = job_name
    job.display_name = spec.display_name
    job.experiment_name = spec.experiment_name
    job.settings.force_rerun = True  # never reuse cached results of an earlier run
    job.settings.continue_on_step_failure = False
    return job


def build_command_job(settings: CommandJobSettings, spec: FinetuneSpec, job_name: str, environment: Any) -> Any:
    """Seed 004: your training script, your environment, your compute. The script logs its model as a run
    artifact under `model_path`; that is what gets registered."""
    job = command(
        code=settings.code_dir,
        command=settings.command,
        environment=environment,
        compute=spec.compute,
        inputs={
            "train_file": Input(type="uri_file", path=spec.data.train),
            "eval_file": Input(type="uri_file", path=spec.data.test),
            "model_output": settings.model_path,  # as the guide: a path the script logs its model under
        },
        display_name=spec.display_name,
        experiment_name=spec.experiment_name,
        environment_variables={f"TUNEGATE_{k.upper()}": str(v) for k, v in spec.parameters.items()},
    )
    job.name = job_name
    return job
