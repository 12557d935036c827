"""Which failures are worth a retry. Every task uses `retry_transient` as its retry condition, so a
validation error or a refused request fails at once while throttling and dropped connections are retried."""

from __future__ import annotations

from typing import Any

from tasks.settings import RetrySettings
from workspaces.ports import RETRYABLE_STATUS, TransientWorkspaceError, WorkspaceError

CONNECTION_FAILURES = frozenset({"TransportError", "ServiceRequestError", "ServiceResponseError"})


def _status_code(exc: BaseException) -> int | None:
    # duck-typed so tasks never import a backend SDK: azure-core's HttpResponseError and httpx's
    # HTTPStatusError both carry the HTTP status on the exception or its response
    code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, TransientWorkspaceError):
        return True
    if isinstance(exc, WorkspaceError | ValueError | TypeError | KeyError | PermissionError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    code = _status_code(exc)
    if code is not None:
        return code in RETRYABLE_STATUS
    # connection-level failures of the HTTP stacks underneath (httpx's TransportError, azure-core's
    # ServiceRequestError/ServiceResponseError), recognised by class name so tasks import no HTTP library
    return any(cls.__name__ in CONNECTION_FAILURES for cls in type(exc).__mro__)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only when the exception that failed the task is transient."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return is_transient(exc)


def stage(name: str):
    """The decorator of every stage task: retried on transient errors only, never cached (each run is new work).

    Attempts and delay are the `retries` section's defaults; the flow applies a profile's values once, to all
    stages (flows/stages.py).
    """
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    defaults = RetrySettings()
    return task(
        name=name,
        retries=defaults.attempts,
        retry_delay_seconds=defaults.delay_s,
        retry_condition_fn=retry_transient,
        cache_policy=NO_CACHE,
    )
