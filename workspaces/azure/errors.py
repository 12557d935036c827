"""Every SDK error is translated once, here: 429/5xx/connection failures become TransientWorkspaceError (the
tasks retry them), 404 a NotFoundError, 409 a ConflictError, anything else a WorkspaceError carrying the
service's own message."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from workspaces.azure.pipeline import ComponentParameterError
from workspaces.ports import RETRYABLE_STATUS, ConflictError, NotFoundError, TransientWorkspaceError, WorkspaceError

T = TypeVar("T")


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFoundError(f"{action}: {exc.message or exc}") from exc
    except ResourceExistsError as exc:
        raise ConflictError(f"{action}: {exc.message or exc}") from exc
    except ClientAuthenticationError as exc:
        raise WorkspaceError(
            f"{action}: authentication failed ({exc.message or exc}); run `az login` or set a service principal"
        ) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientWorkspaceError(f"{action}: {exc}") from exc
    except HttpResponseError as exc:
        message = f"{action}: HTTP {exc.status_code} {exc.message or exc}"
        if exc.status_code in RETRYABLE_STATUS:
            raise TransientWorkspaceError(message) from exc
        if exc.status_code == 404:
            raise NotFoundError(message) from exc
        if exc.status_code == 409:
            raise ConflictError(message) from exc
        raise WorkspaceError(message) from exc
    except ComponentParameterError:
        raise
    except Exception as exc:
        # the SDK's own client-side validation (ValidationException, ...) is a permanent input error; it also
        # reports "no such asset" that way (a label lookup of a missing model), which is a not-found
        if str(getattr(getattr(exc, "error_type", None), "value", "")) == "RESOURCE NOT FOUND":
            raise NotFoundError(f"{action}: {exc}") from exc
        if type(exc).__module__.startswith("azure."):
            raise WorkspaceError(f"{action}: {exc}") from exc
        raise


def get_or_none(action: str, get: Callable[[], T]) -> T | None:
    """`get()` under the error translation, with "does not exist" as None instead of an error."""
    try:
        with translated(action):
            return get()
    except NotFoundError:
        return None


def gone_is_fine(action: str, delete: Callable[[], object]) -> None:
    """A delete whose target is already gone has done its job (a retried teardown must not fail)."""
    try:
        with translated(action):
            delete()
    except NotFoundError:
        pass
