"""Typed settings for each stage. The flow's parameter (flows/params.py) is made of these sections.

The defaults here are *the* defaults: README's profile table documents them (a test holds the two together) and
deployments/local.yaml only says what differs. Every model forbids unknown keys, so a typo in a profile or a
`--set` fails before any work starts with the field's dotted name in the message.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from data.splits import SPLITS
from tasks.sections import Section
from workspaces.names import name_problem
from workspaces.scoring import ScoringParameters


class DataSettings(Section):
    source: str = Field(
        "synthetic",
        description="Where the chat data comes from: synthetic (generated on the fly, for trying tunegate out), a "
        "folder of parquet or jsonl files named after the splits (train_sft, test_sft, ...), or hf: followed by a "
        "Hugging Face dataset id, e.g. hf:HuggingFaceH4/ultrachat_200k.",
    )
    percent: float = Field(15.0, gt=0, le=100, description="Percent of each split to use for this run.")
    percent_per_split: dict[str, float] = Field(
        default_factory=dict, description="A different percent for some splits, e.g. test_sft: 50."
    )
    seed: int = Field(0, description="Change it to draw a different sample of the same data.")
    synthetic_rows: int = Field(
        2000, ge=20, description="Synthetic data only: conversations in the training split (the others in proportion)."
    )

    @field_validator("percent_per_split")
    @classmethod
    def _known_splits(cls, value: dict[str, float]) -> dict[str, float]:
        for split, pct in value.items():
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
            if not 0 < pct <= 100:
                raise ValueError(f"percent for {split} must be in (0, 100], got {pct}")
        return value

    def percent_for(self, split: str) -> float:
        return self.percent_per_split.get(split, self.percent)


class ModelSettings(Section):
    name: str = Field(
        "tiny-phi3-chat",
        description="The model to fine-tune, as the registry names it: tiny-phi3-chat on this machine, e.g. "
        "Phi-3-mini-4k-instruct on Azure ML.",
    )
    version: str | None = Field(None, description="A fixed version of it; empty: the version the label points to.")
    label: str = Field("latest", description="Which version to take when none is fixed.")
    finetuned_name: str | None = Field(
        None,
        description="Name to register the fine-tuned model under; empty: the model's name followed by -ultrachat-200k.",
    )

    @field_validator("finetuned_name", "version")
    @classmethod
    def _a_name(cls, value: str | None) -> str | None:
        # it becomes a registry name and, on this machine, a folder: refused now, not after hours of training
        problem = name_problem(value) if value is not None else None
        if problem is not None:
            raise ValueError(f"{value!r} is not valid: {problem}")
        return value

    @model_validator(mode="after")
    def _registered_name_valid(self) -> ModelSettings:
        problem = name_problem(self.registered_name())
        if problem is not None:
            raise ValueError(
                f"model.name {self.name!r} gives the registered name {self.registered_name()!r}, which is not "
                f"valid ({problem}): set model.finetuned_name"
            )
        return self

    def registered_name(self) -> str:
        # as the notebook: model_name + "-ultrachat-200k", slashes replaced
        return (self.finetuned_name or f"{self.name}-ultrachat-200k").replace("/", "-")


class ComputeSettings(Section):
    name: str = Field("local", description="Compute cluster that trains (created on Azure ML when missing).")
    size: str = Field(
        "local-cpu",
        description="On this machine local-cpu or local-cuda; on Azure ML a VM size the model allows for "
        "fine-tuning, e.g. Standard_NC24ads_A100_v4.",
    )
    min_instances: int = Field(0, ge=0, description="Azure ML: nodes kept running when idle (0 costs nothing).")
    max_instances: int = Field(1, ge=1, description="Azure ML: most nodes the cluster may grow to.")
    idle_seconds_before_scaledown: int = Field(
        120, ge=0, description="Azure ML: idle seconds before a node is released."
    )


def _tuned(notebook_default: str, description: str) -> str:
    return f"{description} Empty: the model's own default if its registry entry has one, else {notebook_default}."


class FinetuneSettings(Section):
    """Training settings. Leave a field empty to use the model's recommended value, or the notebook's."""

    # None, not a default value: a run from the UI form sends every field it shows, so an untouched field must mean
    # "not decided here" (the model_specific_defaults tag or the notebook's default then applies)
    num_train_epochs: float | None = Field(
        None,
        gt=0,
        description=_tuned(
            "3",
            "Passes over the training data; on this machine a fraction (0.5) trains on part of it, Azure ML "
            "takes whole passes.",
        ),
    )
    per_device_train_batch_size: int | None = Field(
        None, ge=1, description=_tuned("1", "Training conversations per step on each GPU.")
    )
    per_device_eval_batch_size: int | None = Field(
        None, ge=1, description=_tuned("1", "Evaluation conversations per step on each GPU.")
    )
    gradient_accumulation_steps: int | None = Field(
        None, ge=1, description=_tuned("1", "Steps added up before each weight update.")
    )
    learning_rate: float | None = Field(None, gt=0, description=_tuned("0.000005", "Learning rate."))
    lr_scheduler_type: (
        Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"] | None
    ) = Field(None, description=_tuned("cosine", "How the learning rate changes over training."))
    apply_lora: bool | None = Field(
        None, description=_tuned("true", "Train small LoRA adapters instead of all weights.")
    )
    lora_r: int | None = Field(None, ge=1, description=_tuned("8", "LoRA rank."))
    lora_alpha: int | None = Field(None, ge=1, description=_tuned("128", "LoRA scaling."))
    lora_dropout: float | None = Field(None, ge=0, lt=1, description=_tuned("0", "LoRA dropout."))
    apply_deepspeed: bool | None = Field(
        None, description=_tuned("true", "Azure ML: spread training state over GPUs with DeepSpeed.")
    )
    deepspeed_stage: Literal["2", "3"] | None = Field(None, description=_tuned("2", "DeepSpeed ZeRO stage."))
    max_seq_length: int | None = Field(
        None, description=_tuned("the model's context length", "Longest conversation in tokens; longer is cut.")
    )
    save_total_limit: int | None = Field(
        None, description=_tuned("no limit", "Checkpoints kept during training (-1: all).")
    )
    num_nodes_finetune: int | None = Field(None, ge=1, description=_tuned("1", "Azure ML: machines that train."))
    seed: int | None = Field(None, description=_tuned("42", "Random seed of training."))

    @field_validator("num_train_epochs")
    @classmethod
    def _whole_epochs_as_int(cls, value: float | None) -> float | None:
        # 3, not 3.0: the job's parameters (and so its idempotency key) stay what they were for whole epochs
        return int(value) if value is not None and value.is_integer() else value

    @field_validator("deepspeed_stage", mode="before")
    @classmethod
    def _stage_as_string(cls, value: object) -> object:
        # the notebook passes the int 2; the component declares the string enum "2"/"3"
        return str(value) if isinstance(value, int) else value

    def overrides(self) -> dict[str, object]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class GateSettings(Section):
    max_eval_loss: float | None = Field(None, description="Fail when the fine-tuned eval loss is above this.")
    max_train_loss: float | None = Field(None, description="Fail when the final train loss is above this.")
    compare_with_base: bool = Field(
        True,
        description="The fine-tuned model must beat the model it started from. Turn off where the training "
        "pipeline does not measure the starting model (some Azure ML pipeline versions do not).",
    )
    min_improvement_over_base: float = Field(0.0, ge=0, description="Eval loss must be below base by more than this.")
    min_improvement_over_champion: float = Field(
        0.0, ge=0, description="When a champion exists, eval loss must be below its eval loss by more than this."
    )
    champion: Literal["required", "advisory"] = Field(
        "required",
        description="required: a model that does not beat the champion stops at the gate. advisory (only with "
        "approval.policy manual): the comparison is shown to the person who decides, failed or not, and does not "
        "stop the run on its own; the base-model and loss checks still do.",
    )


class ApprovalSettings(Section):
    policy: Literal["auto", "auto-if-better", "manual"] = Field(
        "auto-if-better",
        description="auto-if-better: a person decides unless the model beats the champion by the margin; "
        "manual: a person always decides; auto: every model that passes the gate goes live.",
    )
    margin: float = Field(
        0.0, ge=0, description="auto-if-better: how much lower the eval loss must be than the champion's."
    )
    timeout_hours: float = Field(24.0, gt=0, description="manual: a decision not made in time is a reject.")
    notify: list[str] = Field(
        default_factory=list,
        description="Who is told when a run waits for a person: Prefect notification blocks as "
        "block-type/block-name, e.g. slack-webhook/approvers, ms-teams-webhook/ml-team or custom-webhook/pager "
        "(create them in the Prefect UI under Blocks).",
    )
    when: Literal["after-evaluation", "before-deploy"] = Field(
        "after-evaluation",
        description="after-evaluation: the candidate is deployed at 0% (serving nothing) and evaluated first, so "
        "the person sees its answers; before-deploy: decide on the losses alone and deploy only what is approved "
        "(no idle deployment while a person decides).",
    )
    remind_before_minutes: float = Field(
        60.0,
        ge=0,
        description="A reminder goes to the same blocks this many minutes before an unanswered approval times "
        "out and becomes a reject; 0 sends none.",
    )

    @field_validator("notify")
    @classmethod
    def _block_slugs(cls, slugs: list[str]) -> list[str]:
        for slug in slugs:
            if not re.fullmatch(r"[a-z0-9-]+/[A-Za-z0-9_-][A-Za-z0-9_.-]*", slug):
                raise ValueError(
                    f"{slug!r} is not a notification block: write block-type/block-name, e.g. slack-webhook/approvers"
                )
        return slugs


class EndpointSettings(Section):
    name: str = Field(
        "tunegate-chat",
        pattern=r"^[a-zA-Z][a-zA-Z0-9-]{2,22}$",
        description="Endpoint that serves the model. Ephemeral runs add a part of the run's id to it, so they never "
        "touch a live endpoint.",
    )
    instance_type: str = Field(
        "local-cpu", description="Machine the model is served on; must be one the model allows for inference."
    )
    instance_count: int = Field(1, ge=1, description="Machines serving it.")
    deployment_prefix: str = Field(
        "ft-",
        pattern=r"^[a-z][a-z0-9-]{0,15}$",
        description="Deployment name = prefix + model name + version (one per model version, at most 32 chars).",
    )


class SmokeSettings(Section, ScoringParameters):
    """A few test prompts sent to the new deployment before it takes traffic."""

    samples: int = Field(2, ge=1, le=20, description="test_gen rows sent through the new deployment.")
    max_latency_ms: float = Field(30000, gt=0, description="A slower answer fails the smoke test.")
    timeout_s: float = Field(120, gt=0, description="Seconds to wait for one answer.")
    promptflow: bool = Field(
        False,
        description="Also send the same prompts through tunegate's Prompt flow chat flow as one batch run and attach "
        "its table of prompts and answers to the run; any unanswered prompt fails the smoke test. Needs Prompt flow "
        'installed with tunegate (pip install -e ".[promptflow]").',
    )

    def scoring_parameters(self) -> ScoringParameters:
        return ScoringParameters.model_validate(self.model_dump(include=set(ScoringParameters.model_fields)))


class TeardownSettings(Section):
    mode: Literal["ephemeral", "keep"] = Field(
        "ephemeral", description="ephemeral: delete the endpoint at the end; keep: leave the new deployment live."
    )


class JobSettings(Section):
    poll_initial_s: float = Field(0.5, gt=0, description="First wait between job status polls.")
    poll_max_s: float = Field(2.0, gt=0, description="Backoff cap between polls.")
    timeout_hours: float = Field(
        12.0, gt=0, description="A job still running after this is cancelled and the run fails."
    )
    experiment_name: str | None = Field(
        None, description="Experiment the job is filed under; empty: chat_completion_ followed by the model's name."
    )
    fresh: bool = Field(
        False,
        description="Train again even when a job with the same inputs (model, data, compute, parameters) is running "
        "or has completed; by default that job is re-attached to or its model reused.",
    )


class RetrySettings(Section):
    attempts: int = Field(
        3, ge=0, le=20, description="Retries of a stage after a transient error (429, 5xx, dropped connection)."
    )
    delay_s: float = Field(5.0, ge=0, description="Seconds between those retries.")
