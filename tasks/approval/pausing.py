"""Prefect's in-process pause (prefect.flow_runs.pause_flow_run, 3.x) with the state named for what it waits for.

The UI and `prefect flow-run ls` show a paused run's state name; Prefect's own call always says "Paused". A run
waiting for a person says "Awaiting approval" instead. Everything else is Prefect's: the PAUSED state type (the UI's
Resume button and the server's resume rule go by it), the pause key, the run-input keyset and form, the polling.
"""

from __future__ import annotations

import time
from typing import Any

AWAITING_APPROVAL = "Awaiting approval"


def pause_awaiting(wait_for_input: Any, timeout: int, poll_interval: int, key: str, name: str = AWAITING_APPROVAL):
    """Pause this flow run under `key` until it is resumed with `wait_for_input`'s form (returns the answer) or
    `timeout` seconds pass (raises FlowPauseTimeout), as pause_flow_run(wait_for_input=..., key=...) does."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort, FlowPauseTimeout
    from prefect.input.run_input import keyset_from_base_key, run_input_subclass_from_type
    from prefect.logging import get_run_logger
    from prefect.states import Paused
    from prefect.utilities.engine import propose_state_sync

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("only a flow run can wait for an approval")
    form: Any = run_input_subclass_from_type(wait_for_input)
    proposed: Any = Paused(timeout_seconds=timeout, reschedule=False, pause_key=key, name=name)
    # the keys Prefect would use for a state named "Paused" (they derive from the name, and a key has no spaces)
    keyset: Any = keyset_from_base_key(f"paused-{key}")
    proposed.state_details.run_input_keyset = keyset
    get_run_logger().info("%s: the run continues when a person answers (or after %d s)", name, timeout)
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=proposed, flow_run_id=context.flow_run.id)
        except Abort as refused:
            raise RuntimeError(f"this flow run cannot be paused: {refused}") from refused
        if state.is_running():  # this key was paused and resumed before (a rerun of the same attempt)
            return answer_of(form, keyset, context.flow_run.id)
        if not state.is_paused():
            raise RuntimeError(f"this flow run cannot be paused: the server answered {state.type.value}")
        form.save(keyset)  # the schema the UI renders as the Resume form and the answer is validated against
        started = time.monotonic()
        time.sleep(min(timeout / 2, poll_interval))
        while True:
            current = client.read_flow_run(context.flow_run.id).state
            if current is not None and current.is_running():
                return answer_of(form, keyset, context.flow_run.id)
            if time.monotonic() - started >= timeout:
                break
            time.sleep(poll_interval)
        current = client.read_flow_run(context.flow_run.id).state  # once more before giving up
        if current is not None and current.is_running():
            return answer_of(form, keyset, context.flow_run.id)
    raise FlowPauseTimeout("Flow run was paused and never resumed.")


def answer_of(form: Any, keyset: Any, flow_run_id: Any) -> Any:
    """The answer given in the Resume form, validated as `form` (RunInput.load's reading, a ValidationError when
    the answer does not fit: the caller asks again)."""
    from prefect.input.actions import read_flow_run_input

    given: Any = read_flow_run_input(keyset["response"], flow_run_id=flow_run_id)  # sync here: no event loop
    return form(**(given or {}))
