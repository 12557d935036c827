"""Settings of the local workspace (profile section `workspace.local`): pydantic only, cheap to import."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from workspaces.forms import FormModel


class EndpointLimits(FormModel):
    """Limits on what one request may cost a local endpoint; the defaults keep a laptop answering."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413 before parsing.")
    max_prompt_tokens: int = Field(2048, ge=16, description="Longer prompts get 413 (the model's context also caps).")
    max_new_tokens: int = Field(512, ge=1, description="Requests asking for more get 422.")
    max_conversations: int = Field(
        16, ge=1, le=256, description="Conversations answered in one request (as one batch); more get 422."
    )
    generation_timeout_s: float = Field(60, gt=0, description="Generation stops after this (transformers max_time).")
    max_concurrent_requests: int = Field(
        4,
        ge=1,
        le=64,
        description="Requests scored at once; more wait in line (their bodies read, at most 4 times "
        "this many bodies at once).",
    )
    max_queue_wait_s: float = Field(30, gt=0, description="A request that waited this long in line gets 429.")
    body_timeout_s: float = Field(
        10,
        gt=0,
        le=600,
        description="A request whose body has not fully arrived after this gets 408 (a slow or "
        "stalled client never holds a scoring slot).",
    )


class LocalSettings(FormModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoint_limits: EndpointLimits = Field(default_factory=EndpointLimits)
    assistant_only_loss: bool = Field(
        True,
        description="The local trainer puts the loss on the assistant's replies only (the user's turns and the chat "
        "template are context, not targets); base and champion are evaluated on the same tokens. Off: every token. "
        "A job already trained with the other setting is reused unless job.fresh is on.",
    )
    mlflow_ui_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Address of an MLflow UI you run for this state folder, e.g. http://127.0.0.1:5000 (see the "
        "README): run reports then link to the training run and the model version there.",
    )
