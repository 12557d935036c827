"""A rollout's record in the state directory (`<state>/rollouts/<hash>.json`), written at every step: how a person
(`tunegate rollout status|abort`), `tunegate inventory` and the next run find a rollout and, when its run is gone,
undo it (the live model back to 100%, the candidate deleted). A running rollout reads it between probes: an abort
written here ends it within a probe."""

from __future__ import annotations

import os
import time
from typing import Any

from data.runs import RunStore
from tasks.rollout import Rollout
from workspaces.local.processes import identity, process_matches, this_host


class RolloutControl:
    def __init__(self, store: RunStore, endpoint: str) -> None:
        self.store, self.endpoint = store, endpoint

    def read(self) -> dict[str, Any] | None:
        return self.store.read_rollout(self.endpoint)

    def start(self, rollout: Rollout, run_id: str) -> None:
        self._write(rollout, run_id=run_id, owner=identity(os.getpid()), started=time.time())

    def save(self, rollout: Rollout) -> None:
        """The rollout as it stands now (keeps the owner, and an abort someone asked for meanwhile)."""
        self._write(rollout)

    def _write(self, rollout: Rollout, **fields: Any) -> None:
        current = self.read() or {}
        kept = {key: current[key] for key in ("run_id", "owner", "started", "abort") if key in current}
        self.store.write_rollout(self.endpoint, {**kept, **fields, **rollout.model_dump(), "updated": time.time()})

    def abort_reason(self) -> str | None:
        record = self.read() or {}
        abort = record.get("abort")
        if isinstance(abort, dict):
            return f"aborted by {abort.get('by', 'a person')}: {abort.get('reason') or 'no reason given'}"
        return None

    def request_abort(self, by: str, reason: str) -> dict[str, Any] | None:
        record = self.read()
        if record is None or "damaged" in record:
            return record
        record["abort"] = {"by": by, "reason": reason, "at": time.time()}
        self.store.write_rollout(self.endpoint, record)
        return record


def owner_state(record: dict[str, Any]) -> str:
    """ "running" (its run's process is alive here), "gone" (it is not), or "elsewhere" (it ran on another host:
    cannot tell from here)."""
    owner = record.get("owner")
    if not isinstance(owner, dict):
        return "gone"
    if owner.get("host") and owner["host"] != this_host():
        return "elsewhere"
    return "running" if process_matches(owner) else "gone"


def interrupted(record: dict[str, Any] | None) -> bool:
    """A rollout that was under way when its run died (kill -9, a lost machine): the endpoint may be split between
    two models with nobody watching."""
    if not record or "damaged" in record:
        return False
    return record.get("outcome") == "in progress" and owner_state(record) == "gone"


def as_rollout(record: dict[str, Any]) -> Rollout:
    return Rollout.model_validate({key: value for key, value in record.items() if key in Rollout.model_fields})
