"""The serving role (ServingEndpoints): endpoints, deployments, traffic, scoring, credentials.
Stated once and run on every workspace (conftest.py):
the in-memory fake, the Azure adapter through the real SDK on the replay, and the real local workspace."""

from __future__ import annotations

import pytest

from tasks.errors import is_transient
from tasks.register import register_once
from tasks.teardown import take_down
from tests.contract.common import HI, unique
from workspaces.ports import (
    ConflictError,
    NotFoundError,
    WorkspaceError,
)


def test_endpoint_lifecycle_traffic_rules_invoke_and_idempotent_teardown(harness):
    ws, endpoint = harness.workspace, unique("contract-ep")
    model = register_once(ws.registry, harness.completed_job(), unique("contract-served"), {})
    assert ws.endpoints.get(endpoint) is None
    assert ws.endpoints.ensure(endpoint).deployments == ()
    assert ws.endpoints.ensure(endpoint).name == endpoint  # again: the same endpoint
    try:
        ws.endpoints.create_deployment(endpoint, "blue", model, harness.instance_type)
        ws.endpoints.create_deployment(endpoint, "green", model, harness.instance_type)
        assert ws.endpoints.get_deployment(endpoint, "green").model == f"{model.name}:{model.version}"  # what it serves
        assert ws.endpoints.get_deployment(endpoint, "nope") is None
        assert ws.endpoints.set_traffic(endpoint, {"blue": 100}).traffic == {"blue": 100, "green": 0}
        with pytest.raises(NotFoundError):
            ws.endpoints.set_traffic(endpoint, {"nope": 100})
        with pytest.raises(WorkspaceError) as bad_sum:
            ws.endpoints.set_traffic(endpoint, {"blue": 50})
        assert not is_transient(bad_sum.value)
        assert ws.endpoints.get(endpoint).traffic == {"blue": 100, "green": 0}  # a refused change changed nothing
        with pytest.raises(ConflictError):
            ws.endpoints.delete_deployment(endpoint, "blue")  # it takes traffic

        served = ws.endpoints.invoke(endpoint, HI)
        assert served.error is None and isinstance(served.output, str), served
        targeted = ws.endpoints.invoke(endpoint, HI, deployment="green")  # a 0% deployment answers when named
        assert targeted.error is None and isinstance(targeted.output, str), targeted

        ws.endpoints.delete_deployment(endpoint, "green")
        ws.endpoints.delete_deployment(endpoint, "green")  # already gone: not an error
        assert ws.endpoints.get(endpoint).deployments == ("blue",)
        assert endpoint in ws.inventory().endpoints
    finally:
        take_down(ws.endpoints, "ephemeral", endpoint)
    assert ws.endpoints.get(endpoint) is None
    ws.endpoints.delete(endpoint)  # already gone: not an error
    assert take_down(ws.endpoints, "ephemeral", endpoint).done
    assert endpoint not in ws.inventory().endpoints


def test_credentials_never_show_the_key(harness):
    endpoint = unique("contract-key")
    ws = harness.workspace
    ws.endpoints.ensure(endpoint)
    try:
        credentials = ws.endpoints.credentials(endpoint)
        secret = credentials.key.get_secret_value()
        assert secret and secret not in repr(credentials) and secret not in credentials.model_dump_json()
    finally:
        ws.endpoints.delete(endpoint)
