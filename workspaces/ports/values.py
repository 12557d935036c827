"""The base of every value the port hands out: frozen pydantic models (they go into Prefect results and the summary)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Value(BaseModel):
    model_config = ConfigDict(frozen=True)
