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


class RolloutError(RuntimeError):
    """What `tunegate rollout` cannot do, saying what to do instead."""


def rollout_status(store: RunStore, endpoints: Any, endpoint: str) -> dict[str, Any]:
    """Where the rollout on `endpoint` stands: its record, whether its run is alive, what the endpoint serves now."""
    record = store.read_rollout(endpoint)
    if record is None:
        raise RolloutError(f"no rollout on {endpoint} in {store.root}: none was started from this state directory")
    if "damaged" in record:
        raise RolloutError(
            f"the rollout record is damaged ({record['damaged']}); `tunegate endpoint start {endpoint}` gives the "
            "champion's deployment all traffic back"
        )
    found = endpoints.get(endpoint)
    return {
        **record,
        "run": owner_state(record) if record.get("outcome") == "in progress" else "ended",
        "interrupted": interrupted(record),
        "traffic_now": dict(found.traffic) if found is not None else None,
        "mirror_now": dict(found.mirror) if found is not None else None,
    }


def abort_rollout(
    store: RunStore, endpoints: Any, endpoint: str, by: str, reason: str, wait_s: float = 120, poll_s: float = 0.5
) -> str:
    """Back to the live model now. A rollout whose run is alive is asked (its record) and does it within a probe;
    one whose run is gone is undone here, under the endpoint's lock. Returns what was done."""
    from tasks.rollout_traffic import restore_live

    control = RolloutControl(store, endpoint)
    status = rollout_status(store, endpoints, endpoint)
    if status["outcome"] != "in progress":
        return f"nothing to abort: the rollout on {endpoint} ended {status['outcome']} ({status.get('reason') or '-'})"
    if status["run"] in ("running", "elsewhere"):
        control.request_abort(by, reason)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            record = control.read() or {}
            if record.get("outcome") != "in progress":
                return f"the run {record.get('run_id')} rolled back: {record.get('reason')}"
            if owner_state(record) == "gone":
                break
            time.sleep(poll_s)
        else:
            raise RolloutError(
                f"asked the run {status.get('run_id')} to abort; it has not done so within {wait_s:g} s. It acts "
                f"between probes: see `tunegate rollout status {endpoint}`, or stop that run (Ctrl-C, or Cancel in "
                "the Prefect UI): either gives the live model all traffic back"
            )
    found = as_rollout(control.read() or status)
    with endpoints.lock(endpoint):
        traffic = restore_live.fn(endpoints, endpoint, found.live, found.candidate)
    control.save(found.model_copy(update={"outcome": "aborted", "reason": f"aborted by {by}: {reason}"}))
    live = f"{found.live} ({found.live_model})"
    return f"{live} serves all traffic of {endpoint} again ({traffic}); {found.candidate} deleted"


def restore_rollout_of(store: RunStore, endpoints: Any, endpoint: str, run_id: str) -> str | None:
    """A killed or cancelled run's hook: its own rollout, still in progress, undone (the live model to 100%)."""
    record = store.read_rollout(endpoint)
    if not record or "damaged" in record or record.get("run_id") != run_id or record.get("outcome") != "in progress":
        return None
    return abort_rollout(store, endpoints, endpoint, "the runner", "the flow run was cancelled or crashed", wait_s=0)
