"""What the contract tests share."""

from __future__ import annotations

import uuid

from workspaces.ports import (
    ScoringRequest,
)
from workspaces.scoring import ScoringParameters

HI = ScoringRequest(
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    parameters=ScoringParameters(max_new_tokens=8, do_sample=False),
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
