"""Managed online endpoints (key auth) and deployments, as the notebook creates, invokes and deletes them."""

from __future__ import annotations

import re
import threading
from contextlib import AbstractContextManager
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.entities import (
    IdentityConfiguration,
    ManagedIdentityConfiguration,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineRequestSettings,
    ProbeSettings,
)
from pydantic import SecretStr

from workspaces.azure.errors import get_or_none, gone_is_fine, translated
from workspaces.azure.settings import AzureSettings
from workspaces.ports import (
    ConflictError,
    Credentials,
    Deployment,
    Endpoint,
    ModelVersion,
    NotFoundError,
    ServingBase,
)

CREATED_BY = {"created_by": "tunegate"}


def model_reference(model: Any) -> str:
    """ "name:version" of a deployment's model, which the service reports as an ARM id
    (.../models/<name>/versions/<version>) or an `azureml:<name>:<version>` reference."""
    text = str(getattr(model, "id", None) or model or "")
    if match := re.search(r"/models/([^/]+)/versions/([^/]+)$", text):
        return f"{match.group(1)}:{match.group(2)}"
    return text.removeprefix("azureml:")


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class AzureEndpoints(ServingBase):
    def __init__(self, ml: MLClient, settings: AzureSettings) -> None:
        self.ml = ml
        self.settings = settings

    def _endpoint(self, name: str) -> Any | None:
        return get_or_none(f"endpoint {name}", lambda: self.ml.online_endpoints.get(name))

    def ensure(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        if self._endpoint(name) is None:
            identity = None
            if self.settings.endpoint_identity:
                identity = IdentityConfiguration(
                    type="user_assigned",
                    user_assigned_identities=[
                        ManagedIdentityConfiguration(resource_id=self.settings.endpoint_identity)
                    ],
                )
            endpoint = ManagedOnlineEndpoint(
                name=name,
                description=description,
                auth_mode="key",
                identity=identity,
                tags={**CREATED_BY, "tunegate.ephemeral": str(ephemeral).lower()},
            )
            with translated(f"create endpoint {name}"):
                self.ml.online_endpoints.begin_create_or_update(endpoint).result()
        return self.existing(name)

    def lock(self, name: str) -> AbstractContextManager[Any]:
        """Serialises this process's changes to one endpoint. Azure ML has no lease on an endpoint: two machines
        deploying to one endpoint at once are not serialised here (README: run keep-mode deployments of one
        endpoint from one Prefect deployment with a concurrency limit of 1)."""
        with _LOCKS_GUARD:
            return _LOCKS.setdefault(name, threading.RLock())

    def get(self, name: str) -> Endpoint | None:
        endpoint = self._endpoint(name)
        if endpoint is None:
            return None
        with translated(f"deployments of {name}"):
            deployments = tuple(sorted(d.name for d in self.ml.online_deployments.list(endpoint_name=name)))
        traffic = {key: int(value) for key, value in (endpoint.traffic or {}).items()}
        return Endpoint(name=name, traffic=traffic, deployments=deployments)

    def created_by_tunegate(self) -> list[str]:
        with translated("list endpoints"):
            return [e.name for e in self.ml.online_endpoints.list() if (e.tags or {}).get("created_by") == "tunegate"]

    def create_deployment(
        self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1
    ) -> Deployment:
        deployment = ManagedOnlineDeployment(
            name=name,
            endpoint_name=endpoint,
            model=f"azureml:{model.name}:{model.version}",
            instance_type=instance_type,
            instance_count=instance_count,
            liveness_probe=ProbeSettings(initial_delay=self.settings.liveness_initial_delay_s),
            request_settings=OnlineRequestSettings(request_timeout_ms=self.settings.request_timeout_ms),
            tags=dict(CREATED_BY),
        )
        with translated(f"create deployment {endpoint}/{name}"):
            self.ml.online_deployments.begin_create_or_update(deployment).result()
        return Deployment(
            endpoint=endpoint, name=name, model=f"{model.name}:{model.version}", instance_type=instance_type
        )

    def get_deployment(self, endpoint: str, name: str) -> Deployment | None:
        found = get_or_none(
            f"deployment {endpoint}/{name}", lambda: self.ml.online_deployments.get(name=name, endpoint_name=endpoint)
        )
        if found is None:
            return None
        return Deployment(
            endpoint=endpoint, name=name, model=model_reference(found.model), instance_type=found.instance_type or ""
        )

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        with translated(f"traffic of {endpoint}"):
            current = self.ml.online_endpoints.get(endpoint)
        deployments = self.existing(endpoint).deployments
        unknown = sorted(set(traffic) - set(deployments))
        if unknown:  # the service refuses this too, after a long-running operation; say it at once
            raise NotFoundError(f"traffic of {endpoint}: no deployment(s) {unknown}; it has {list(deployments)}")
        current.traffic = {name: int(traffic.get(name, 0)) for name in deployments}
        with translated(f"traffic of {endpoint}"):
            self.ml.online_endpoints.begin_create_or_update(current).result()
        return self.existing(endpoint)

    def scoring_uri(self, endpoint: str) -> str | None:
        found = get_or_none(f"endpoint {endpoint}", lambda: self.ml.online_endpoints.get(endpoint))
        return found.scoring_uri if found is not None else None

    def credentials(self, endpoint: str) -> Credentials:
        with translated(f"credentials of {endpoint}"):
            scoring_uri = self.ml.online_endpoints.get(endpoint).scoring_uri
            keys = self.ml.online_endpoints.get_keys(endpoint)
        return Credentials(scoring_uri=scoring_uri, key=SecretStr(keys.primary_key))

    def delete_deployment(self, endpoint: str, name: str) -> None:
        current = self.get(endpoint)
        if current is None or name not in current.deployments:
            return
        if current.traffic.get(name, 0) > 0:
            raise ConflictError(f"deployment {endpoint}/{name} takes {current.traffic[name]}% of traffic; not deleting")
        gone_is_fine(
            f"delete deployment {endpoint}/{name}",
            lambda: self.ml.online_deployments.begin_delete(name=name, endpoint_name=endpoint).result(),
        )

    def delete(self, endpoint: str) -> None:
        gone_is_fine(
            f"delete endpoint {endpoint}", lambda: self.ml.online_endpoints.begin_delete(name=endpoint).result()
        )
