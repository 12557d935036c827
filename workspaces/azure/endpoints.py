"""Managed online endpoints (key auth) and deployments, as the notebook creates, invokes and deletes them."""

from __future__ import annotations

import re
import threading
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
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
    DeploymentTraffic,
    Endpoint,
    ModelVersion,
    NotFoundError,
    ServingBase,
    TrafficReading,
)

CREATED_BY = {"created_by": "tunegate"}


def model_reference(model: Any) -> str:
    """ "name:version" of a deployment's model, which the service reports as an ARM id
    (.../models/<name>/versions/<version>) or an `azureml:<name>:<version>` reference."""
    text = str(getattr(model, "id", None) or model or "")
    if match := re.search(r"/models/([^/]+)/versions/([^/]+)$", text):
        return f"{match.group(1)}:{match.group(2)}"
    return text.removeprefix("azureml:")


def deployment_traffic(metrics: Any) -> DeploymentTraffic:
    """Azure Monitor's per-minute series of one deployment -> the window's totals: requests (the minute's count,
    summed over minutes and response codes), errors (codes 5xx, and 408: the deployment's timeout), p95 (each
    minute's P95 weighted by that minute's requests)."""
    requests = errors = 0
    per_minute: dict[Any, int] = {}
    latency: dict[Any, float] = {}
    for metric in metrics:
        for series in metric.timeseries:
            code = str((series.metadata_values or {}).get("envoy_response_code", ""))
            for point in series.data:
                if point.average is None:
                    continue
                if metric.name == "RequestsPerMinute":
                    count = round(point.average)
                    requests += count
                    errors += count if code.startswith("5") or code == "408" else 0
                    per_minute[point.timestamp] = per_minute.get(point.timestamp, 0) + count
                elif metric.name == "RequestLatency_P95":
                    latency[point.timestamp] = float(point.average)
    weighted = [(latency[minute], count) for minute, count in per_minute.items() if minute in latency and count]
    total = sum(count for _, count in weighted)
    p95 = sum(value * count for value, count in weighted) / total if total else None
    return DeploymentTraffic(requests=requests, errors=errors, p95_ms=round(p95, 1) if p95 is not None else None)


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class AzureEndpoints(ServingBase):
    def __init__(self, ml: MLClient, settings: AzureSettings, credential: Any = None) -> None:
        self.ml = ml
        self.settings = settings
        self.credential = credential if credential is not None else getattr(ml, "_credential", None)

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
        mirror = {key: int(value) for key, value in (endpoint.mirror_traffic or {}).items() if int(value)}
        return Endpoint(name=name, traffic=traffic, deployments=deployments, mirror=mirror)

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

    def set_mirror(self, endpoint: str, mirror: dict[str, int]) -> Endpoint:
        """mirror_traffic on the endpoint, as the safe-rollout guide sets it (one deployment, at most 50%)."""
        with translated(f"mirror traffic of {endpoint}"):
            current = self.ml.online_endpoints.get(endpoint)
        unknown = sorted(set(mirror) - set(self.existing(endpoint).deployments))
        if unknown:
            raise NotFoundError(f"mirror traffic of {endpoint}: no deployment(s) {unknown}")
        current.mirror_traffic = {name: int(share) for name, share in mirror.items() if share}
        with translated(f"mirror traffic of {endpoint}"):
            self.ml.online_endpoints.begin_create_or_update(current).result()
        return self.existing(endpoint)

    def traffic(self, endpoint: str, since: TrafficReading | None = None) -> TrafficReading:
        """Each deployment's Azure Monitor metrics between `since` and now (one-minute grain): RequestsPerMinute
        split by envoy_response_code (5xx are errors) and RequestLatency_P95, weighted by requests. The service
        publishes a minute's numbers a few minutes late: windows on Azure are minutes long (rollout.window_s)."""
        from azure.monitor.query import MetricsQueryClient

        now = time.time()
        start = float(since.mark.get("at", now - 3600)) if since is not None else now - 3600
        client = MetricsQueryClient(self.credential)
        found = {}
        for name in self.existing(endpoint).deployments:
            resource = (
                f"/subscriptions/{self.ml.subscription_id}/resourceGroups/{self.ml.resource_group_name}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{self.ml.workspace_name}/onlineEndpoints/{endpoint}"
                f"/deployments/{name}"
            )
            with translated(f"metrics of {endpoint}/{name}"):
                result = client.query_resource(
                    resource,
                    metric_names=["RequestsPerMinute", "RequestLatency_P95"],
                    timespan=(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(now, UTC)),
                    granularity=timedelta(minutes=1),
                    aggregations=["Average"],
                    filter="envoy_response_code eq '*'",
                )
            found[name] = deployment_traffic(result.metrics)
        return TrafficReading(at=now, deployments=found, mark={"at": now})

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
