"""Typed settings for each stage. The flow's parameter (flows/params.py) is made of these sections.

The defaults here are *the* defaults: README's profile table documents them (a test holds the two together) and
deployments/local.yaml only says what differs. Every model forbids unknown keys, so a typo in a profile or a
`--set` fails before any work starts with the field's dotted name in the message.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.splits import SPLITS
from workspaces.scoring import ScoringParameters


class _Section(BaseModel):
    # NaN/inf can only fail later (a NaN threshold trains for nothing): refused here with the field's name
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataSettings(_Section):
    source: str = Field(
        "synthetic",
        description="'synthetic' (generated in code), a directory of <split>.parquet/.jsonl files, or 'hf:<hub id>'.",
    )
    percent: float = Field(15.0, gt=0, le=100, description="Percent of each split to keep (default for every split).")
    percent_per_split: dict[str, float] = Field(default_factory=dict, description="Per-split percent overrides.")
    seed: int = Field(0, description="Salt of the sampling hash: another seed picks another sample.")
    synthetic_rows: int = Field(2000, ge=20, description="Rows in train_sft of the generated dataset (others scale).")

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


class ModelSettings(_Section):
    name: str = Field("tiny-phi3-chat", description="Foundation model name in the registry.")
    version: str | None = Field(None, description="Pinned version; when empty the label is used.")
    label: str = Field("latest", description="Registry label used when no version is pinned.")
    finetuned_name: str | None = Field(
        None, description="Registered name of the fine-tuned model (default: <name>-ultrachat-200k)."
    )

    def registered_name(self) -> str:
        # as the notebook: model_name + "-ultrachat-200k", slashes replaced
        return (self.finetuned_name or f"{self.name}-ultrachat-200k").replace("/", "-")


class ComputeSettings(_Section):
    name: str = Field("local", description="Compute cluster name.")
    size: str = Field("local-cpu", description="VM size (Azure) or local-cpu / local-cuda.")
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(1, ge=1)
    idle_seconds_before_scaledown: int = Field(120, ge=0)


class FinetuneSettings(_Section):
    """Fine-tune parameters the user sets. Empty (None) means: the model's `model_specific_defaults` tag
    decides, else the notebook's default (3 epochs, batch 1, lr 5e-6, cosine, LoRA, DeepSpeed stage "2"). A value
    set here wins over both.
    Explicit None instead of pydantic's fields-set bookkeeping, because a run started from the UI form or a
    deployment sends every field it shows."""

    num_train_epochs: int | None = Field(None, ge=1)
    per_device_train_batch_size: int | None = Field(None, ge=1)
    per_device_eval_batch_size: int | None = Field(None, ge=1)
    gradient_accumulation_steps: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    lr_scheduler_type: (
        Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"] | None
    ) = None
    apply_lora: bool | None = None
    lora_r: int | None = Field(None, ge=1)
    lora_alpha: int | None = Field(None, ge=1)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    apply_deepspeed: bool | None = None
    deepspeed_stage: Literal["2", "3"] | None = None
    max_seq_length: int | None = Field(None, description="-1: the model's default.")
    save_total_limit: int | None = None
    num_nodes_finetune: int | None = Field(None, ge=1)
    seed: int | None = None

    @field_validator("deepspeed_stage", mode="before")
    @classmethod
    def _stage_as_string(cls, value: object) -> object:
        # the notebook passes the int 2; the component declares the string enum "2"/"3"
        return str(value) if isinstance(value, int) else value

    def overrides(self) -> dict[str, object]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class GateSettings(_Section):
    max_eval_loss: float | None = Field(None, description="Fail when the fine-tuned eval loss is above this.")
    max_train_loss: float | None = Field(None, description="Fail when the final train loss is above this.")
    compare_with_base: bool = Field(
        True,
        description="Require the base model's eval loss and beat it (off where the trainer logs no base_eval_loss, "
        "e.g. chat_completion_pipeline 0.0.82 whose evaluation step is commented out).",
    )
    min_improvement_over_base: float = Field(0.0, ge=0, description="Eval loss must be below base by more than this.")
    min_improvement_over_champion: float = Field(
        0.0, ge=0, description="When a champion exists, eval loss must be below its eval loss by more than this."
    )


class ApprovalSettings(_Section):
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


class EndpointSettings(_Section):
    name: str = Field(
        "tunegate-chat",
        pattern=r"^[a-zA-Z][a-zA-Z0-9-]{2,22}$",
        description="Online endpoint name (ephemeral mode appends -<run id>, as the notebook appends a timestamp).",
    )
    instance_type: str = Field("local-cpu", description="Must be in the model's inference_compute_allow_list.")
    instance_count: int = Field(1, ge=1)
    deployment_prefix: str = Field(
        "ft-",
        pattern=r"^[a-z][a-z0-9-]{0,15}$",
        description="Deployment name = prefix + model name + version (one per model version, at most 32 chars).",
    )


class SmokeSettings(_Section, ScoringParameters):
    """The smoke request: generation settings (and their defaults) are the scoring contract's."""

    samples: int = Field(2, ge=1, le=20, description="test_gen rows sent through the new deployment.")
    max_latency_ms: float = Field(30000, gt=0, description="A slower answer fails the smoke test.")
    timeout_s: float = Field(120, gt=0, description="Seconds to wait for one answer.")

    def scoring_parameters(self) -> ScoringParameters:
        return ScoringParameters.model_validate(self.model_dump(include=set(ScoringParameters.model_fields)))


class TeardownSettings(_Section):
    mode: Literal["ephemeral", "keep"] = Field(
        "ephemeral", description="ephemeral: delete the endpoint at the end; keep: leave the new deployment live."
    )


class JobSettings(_Section):
    poll_initial_s: float = Field(0.5, gt=0, description="First wait between job status polls.")
    poll_max_s: float = Field(2.0, gt=0, description="Backoff cap between polls.")
    timeout_hours: float = Field(
        12.0, gt=0, description="A job still running after this is cancelled and the run fails."
    )
    experiment_name: str | None = Field(None, description="Default: chat_completion_<model name>.")
    fresh: bool = Field(
        False,
        description="Train again even when a job with the same inputs (model, data, compute, parameters) is running "
        "or has completed; by default that job is re-attached to or its model reused.",
    )


class RetrySettings(_Section):
    attempts: int = Field(
        3, ge=0, le=20, description="Retries of a stage after a transient error (429, 5xx, dropped connection)."
    )
    delay_s: float = Field(5.0, ge=0, description="Seconds between those retries.")
