"""The pipeline job built from the real chat_completion_pipeline spec files, exactly as the adapter builds it."""

from __future__ import annotations

import pytest
from azure.ai.ml import load_component

from tasks.finetune import merge_finetune_parameters
from tasks.settings import FinetuneSettings
from tests.azure_replay import FIXTURES
from workspaces.azure.pipeline import ComponentParameterError, build_pipeline_job, check_parameters
from workspaces.ports import DataRef, FinetuneSpec

SPECS = {
    "0.0.82": FIXTURES / "chat_completion_pipeline.spec.yaml",
    "0.0.78": FIXTURES / "chat_completion_pipeline.spec.0.0.78.yaml",
}
PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


@pytest.fixture(params=sorted(SPECS))
def component(request):
    return load_component(source=str(SPECS[request.param]))


def spec_for(parameters, tmp_path) -> FinetuneSpec:
    for name in ("train_sft.jsonl", "test_sft.jsonl"):
        (tmp_path / name).write_text('{"messages": []}\n')
    return FinetuneSpec(
        model_id="azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7",
        compute="gpu-cluster",
        gpus_per_node=4,
        data=DataRef(train=str(tmp_path / "train_sft.jsonl"), test=str(tmp_path / "test_sft.jsonl"), fingerprint="f"),
        parameters=parameters,
        display_name="Phi-3-mini-4k-instruct-ultrachat-bs4-cosine-ds2-lora-save_limit-1-seqlen-1",
        experiment_name="chat_completion_Phi-3-mini-4k-instruct",
    )


def notebook_parameters():
    # the notebook's finetune_parameters after the model's defaults: deepspeed_stage is the int 2 there
    return merge_finetune_parameters(
        FinetuneSettings(), {"apply_deepspeed": "true", "deepspeed_stage": 2, "apply_lora": "true"}
    )


def test_pipeline_job_serializes_with_declared_types(component, tmp_path):
    job = build_pipeline_job(component, spec_for(notebook_parameters(), tmp_path), "tunegate-abc")
    rest = job._to_rest_object().as_dict()
    assert rest["properties"]["settings"]["force_rerun"] is True
    assert rest["properties"]["settings"]["continue_on_step_failure"] is False
    assert rest["properties"]["displayName"].startswith("Phi-3-mini-4k-instruct-ultrachat")
    assert rest["properties"]["experimentName"] == "chat_completion_Phi-3-mini-4k-instruct"
    assert rest["properties"]["outputs"]["trained_model"]
    node = job._to_dict()["jobs"]["chat_completion_pipeline"]
    declared = component.inputs
    for name, value in node["inputs"].items():
        kind = str(declared[name].type)
        if kind in PY_TYPES:
            assert isinstance(value, PY_TYPES[kind]) and not (kind == "integer" and isinstance(value, bool)), (
                name,
                value,
            )
            if declared[name].enum:
                assert value in declared[name].enum, (name, value)
        else:
            assert value["type"] == kind, (name, value)
    assert node["inputs"]["deepspeed_stage"] == "2" and node["inputs"]["apply_lora"] == "true"
    assert node["inputs"]["number_of_gpu_to_use_finetuning"] == 4
    assert node["inputs"]["mlflow_model_path"]["path"].endswith("Phi-3-mini-4k-instruct/versions/7")
    assert {node["inputs"][f"compute_{s}"] for s in ("model_import", "preprocess", "finetune", "model_evaluation")} == {
        "gpu-cluster"
    }
    assert node["outputs"]["mlflow_model_folder"].endswith("parent.outputs.trained_model}}")


def test_unknown_parameter_lists_valid_ones(component):
    with pytest.raises(
        ComponentParameterError,
        match=r"has no input\(s\) \['learning_rat'\]; valid finetune parameters: .*learning_rate",
    ):
        check_parameters(component, {"learning_rat": 1e-4})


def test_wrong_enum_value_is_refused(component):
    with pytest.raises(ComponentParameterError, match="lr_scheduler_type.*not one of"):
        check_parameters(component, {"lr_scheduler_type": "sometimes"})
    with pytest.raises(ComponentParameterError, match="deepspeed_stage.*not one of"):
        check_parameters(component, {"deepspeed_stage": 1})


def test_values_are_coerced_to_declared_types(component):
    checked = check_parameters(
        component, {"apply_lora": True, "deepspeed_stage": 3, "num_train_epochs": 2.0, "learning_rate": "1e-4"}
    )
    assert checked == {"apply_lora": "true", "deepspeed_stage": "3", "num_train_epochs": 2, "learning_rate": 1e-4}
    with pytest.raises(ComponentParameterError, match="num_train_epochs.*integer"):
        check_parameters(component, {"num_train_epochs": 2.5})
    with pytest.raises(ComponentParameterError, match="set by tunegate"):
        check_parameters(component, {"compute_finetune": "other"})


def test_versions_differ_in_what_they_accept():
    new, old = (load_component(source=str(SPECS[v])) for v in ("0.0.82", "0.0.78"))
    assert check_parameters(new, {"trust_remote_code": True}) == {"trust_remote_code": "true"}
    with pytest.raises(ComponentParameterError, match="trust_remote_code"):
        check_parameters(old, {"trust_remote_code": True})
