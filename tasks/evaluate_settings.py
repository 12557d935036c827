"""The answer evaluation's settings (`evaluate.*`, tasks/evaluation.py); README's profile table documents them."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from tasks.sections import Section


class EvaluateSettings(Section):
    """The candidate's answers judged before it takes traffic: held-out test_gen prompts answered by it and by the
    champion, scored against the reference replies. A failed evaluation deletes the candidate."""

    enabled: bool = Field(
        True, description="Judge the answers before release; off: the metric gate (loss) alone decides."
    )
    samples: int = Field(16, ge=2, le=200, description="test_gen prompts answered, drawn with the seed below.")
    seed: int = Field(0, description="Which prompts are drawn; the same seed and data give the same prompts.")
    max_new_tokens: int = Field(64, ge=8, le=1024, description="Longest answer per prompt (greedy decoding).")
    max_degenerate_rate: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Fail when more of the candidate's answers than this are no reply at all: empty, control "
        "characters, runaway repetition, speaking as the user or leaking the chat template.",
    )
    min_similarity: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Fail when the candidate's mean ROUGE-L F1 against the reference replies is below this.",
    )
    min_win_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Against a champion: fail when even the top of the candidate's win rate 95% interval is "
        "below this (the champion answers clearly better); 0 turns it off.",
    )
    judge: bool = Field(
        False,
        description="Also ask a judge model which answer is better, in both orders; needs judge_url and judge_model.",
    )
    judge_url: str | None = Field(
        None,
        description="An OpenAI-compatible chat completions base URL, e.g. https://myresource.openai.azure.com/"
        "openai/v1 or http://localhost:8000/v1.",
    )
    judge_model: str | None = Field(None, description="The judge's model (or Azure OpenAI deployment) name.")
    judge_key_block: str | None = Field(
        None, description="Name of the Prefect Secret block that holds the judge's API key; empty: no key."
    )

    @model_validator(mode="after")
    def _judge_named(self) -> EvaluateSettings:
        if self.judge and not (self.judge_url and self.judge_model):
            raise ValueError("evaluate.judge is on: set evaluate.judge_url and evaluate.judge_model")
        if self.judge_url and not re.match(r"^https?://[^/\s]+", self.judge_url):
            raise ValueError(f"evaluate.judge_url {self.judge_url!r} is not an http(s) URL")
        return self
