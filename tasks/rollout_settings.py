"""The progressive rollout's settings (`rollout.*`, tasks/rollout.py); README's profile table documents them."""

from __future__ import annotations

from pydantic import Field, field_validator

from tasks.sections import Section


class RolloutSettings(Section):
    """How a kept endpoint's new model goes live: optionally mirrored first (a copy of live traffic, its answers
    thrown away), then in traffic steps, each held for a window and judged against the live model on the same
    window. A breach rolls back at once. An ephemeral endpoint has no live traffic: it switches in one step."""

    enabled: bool = Field(
        True, description="Keep mode: go live in the steps below, judged on live traffic; off: 0 to 100% in one switch."
    )
    steps: list[int] = Field(
        [25, 100],
        description="The candidate's traffic share at each step, in %, rising and ending at 100; every step below "
        "100 is held for window_s and judged.",
    )
    window_s: float = Field(
        10.0, gt=0, le=86_400, description="How long each step is held and measured (Azure: minutes, e.g. 600)."
    )
    probe_rate: float = Field(
        2.0,
        ge=0,
        le=50,
        description="Held-out test_gen prompts sent per second during each window, to the candidate and the live "
        "model in turn, so that a quiet endpoint is still measured; 0: live traffic alone.",
    )
    mirror_percent: int = Field(
        0,
        ge=0,
        le=50,
        description="Before the first step, copy this % of live traffic to the candidate (answers thrown away) for "
        "mirror_window_s; 0: no mirror phase. Azure caps it at 50.",
    )
    mirror_window_s: float = Field(10.0, gt=0, le=86_400, description="How long the mirror phase lasts.")
    min_requests: int = Field(
        5, ge=1, description="Fewer requests than this to either model in a window is not evidence: rolled back."
    )
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Roll back when more of the candidate's requests than this fail (5xx, timeout)."
    )
    max_p95_ratio: float = Field(
        3.0,
        gt=0,
        description="Roll back when the candidate's p95 latency is more than this many times the live model's "
        "(plus p95_slack_ms), on requests of the same kind: the split's, else the probes'.",
    )
    p95_slack_ms: float = Field(
        50.0,
        ge=0,
        description="Latency a slower p95 may add on top of max_p95_ratio before it counts (timer noise on fast "
        "answers).",
    )
    max_degenerate_rate: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Roll back when more of the candidate's probe answers than this are no reply at all.",
    )

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("rollout.steps is empty: give the traffic shares, e.g. [25, 100]")
        if any(not 0 < step <= 100 for step in steps):
            raise ValueError(f"rollout.steps {steps}: every share is a % in 1..100")
        if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"rollout.steps {steps} must rise, step by step")
        if steps[-1] != 100:
            raise ValueError(f"rollout.steps {steps} must end at 100 (all traffic to the candidate)")
        return steps
