"""Azure-only settings of a profile (`workspace.azure`). Plain pydantic: validating a profile never imports the SDK."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from workspaces.forms import FormModel


class CommandJobSettings(FormModel):
    """Your own training script as an Azure ML command job (the Azure ML end-to-end fine-tuning guide's way)."""

    model_config = ConfigDict(extra="forbid")

    code_dir: str = Field(
        "./finetuning_dir", description="Folder uploaded as the job's code (holds the training script)."
    )
    command: str = Field(
        "python fine_tune.py --train-file ${{inputs.train_file}} --eval-file ${{inputs.eval_file}} "
        "--model_output_dir ${{inputs.model_output}}",
        description="Command line (the guide's); ${{inputs.train_file}}, ${{inputs.eval_file}} and "
        "${{inputs.model_output}} (= model_path) are bound.",
    )
    model_path: str = Field(
        "model_output",
        pattern=r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]*$",
        description="Where your script logs its MLflow model among the job's artifacts (the guide logs it "
        "to ./model_output); the model is registered from there.",
    )
    environment: str = Field(
        "phi-3-training-environment@latest", description="Registered environment name@label or name:version."
    )


class AzureSettings(FormModel):
    model_config = ConfigDict(extra="forbid")

    config_path: str | None = Field(
        None, description="config.json of the workspace (MLClient.from_config); else the ids below."
    )
    pipeline_component: str = Field(
        "chat_completion_pipeline", description="Fine-tune pipeline component in the registry."
    )
    pipeline_component_version: str | None = Field(
        None, description="Pinned component version; default label 'latest'."
    )
    finetune_mode: Literal["pipeline", "command"] = Field(
        "pipeline", description="Registry pipeline (notebook) or your own training script as a command job."
    )
    command_job: CommandJobSettings = Field(default_factory=CommandJobSettings)
    interactive_login: bool = Field(True, description="Fall back to a browser login when a terminal is attached.")
    endpoint_identity: str | None = Field(
        None, description="Resource id of a user-assigned managed identity for the endpoint."
    )
    request_timeout_ms: int = Field(90000, ge=1000)
    liveness_initial_delay_s: int = Field(600, ge=0)
    mlflow_tracking_uri: str | None = Field(
        None, description="Default: the workspace's own tracking URI (azureml-mlflow)."
    )
