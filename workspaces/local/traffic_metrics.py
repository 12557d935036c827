"""What a local endpoint counts per deployment (requests, errors, latency histogram) in the Prometheus text format,
and reading it back: the server side (TrafficMetrics, `GET /metrics`) and the adapter side (`counters`, `window`)
that turns two scrapes into a window's numbers, p95 as Prometheus' histogram_quantile computes it."""

from __future__ import annotations

import math
from typing import Any

from workspaces.ports import DeploymentTraffic

# latency buckets (s): Prometheus' defaults, plus the long tail a CPU generation reaches
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.35,
    0.5,
    0.75,
    1,
    1.5,
    2.5,
    5,
    7.5,
    10,
    20,
    40,
    80,
)
MIRROR_MAX_PERCENT = 50  # as Azure ML caps mirror_traffic


class TrafficMetrics:
    """Per-deployment request counts and latency in the Prometheus text format (`GET /metrics`), each app its own
    registry: `tunegate_requests_total{deployment, code, kind}` and `tunegate_request_duration_seconds{deployment,
    kind}`, kind = split (the traffic split chose it), targeted (the deployment header), mirror (a copy)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tunegate_requests", "Scoring requests a deployment answered or failed", ["deployment", "code", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tunegate_request_duration_seconds", "Time a deployment took to answer", ["deployment", "kind"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.dropped = Counter(
            "tunegate_mirror_dropped", "Mirrored copies not sent: no scoring slot was free", ["deployment"],
            registry=self.registry,
        )  # fmt: skip

    def observe(self, deployment: str, kind: str, code: int, seconds: float) -> None:
        self.requests.labels(deployment, str(code), kind).inc()
        self.latency.labels(deployment, kind).observe(seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


REQUESTS = "tunegate_requests"
LATENCY = "tunegate_request_duration_seconds"


def counters(text: str) -> dict[str, dict[str, Any]]:
    """A scrape of `/metrics` -> per deployment: cumulative requests, errors (5xx), mirrored, and the latency
    histogram's cumulative bucket counts {upper bound: count} summed over kinds."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[str, Any]] = {}

    def of(deployment: str) -> dict[str, Any]:
        return found.setdefault(deployment, {"requests": 0, "errors": 0, "mirrored": 0, "buckets": {}, "kinds": {}})

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            deployment = sample.labels.get("deployment")
            if deployment is None:
                continue
            if family.name == REQUESTS and sample.name == f"{REQUESTS}_total":
                entry, count = of(deployment), int(sample.value)
                entry["requests"] += count
                entry["errors"] += count if sample.labels.get("code", "").startswith("5") else 0
                entry["mirrored"] += count if sample.labels.get("kind") == "mirror" else 0
            elif family.name == LATENCY and sample.name == f"{LATENCY}_bucket":
                entry, bound, count = of(deployment), sample.labels["le"], int(sample.value)
                entry["buckets"][bound] = entry["buckets"].get(bound, 0) + count
                kind = entry["kinds"].setdefault(sample.labels.get("kind", ""), {})
                kind[bound] = kind.get(bound, 0) + count
    return found


def window(now: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]] | None) -> dict[str, DeploymentTraffic]:
    """What each deployment served between two scrapes. A counter that went down means the server restarted in
    between: what it counted since is the window's (Prometheus' reset rule)."""
    served = {}
    for deployment, current in now.items():
        earlier = (before or {}).get(deployment)
        if earlier is None or current["requests"] < earlier["requests"]:
            earlier = {"requests": 0, "errors": 0, "mirrored": 0, "buckets": {}, "kinds": {}}
        kinds = {
            kind: _minus(buckets, earlier.get("kinds", {}).get(kind, {}))
            for kind, buckets in current.get("kinds", {}).items()
        }
        counts = {kind: int(buckets.get("+Inf", 0)) for kind, buckets in kinds.items()}
        by_kind = {kind: _ms(histogram_quantile(0.95, buckets)) for kind, buckets in kinds.items()}
        served[deployment] = DeploymentTraffic(
            requests=current["requests"] - earlier["requests"],
            errors=current["errors"] - earlier["errors"],
            mirrored=current["mirrored"] - earlier["mirrored"],
            p95_ms=_ms(histogram_quantile(0.95, _minus(current["buckets"], earlier["buckets"]))),
            requests_by_kind={kind: count for kind, count in counts.items() if count},
            p95_ms_by_kind={kind: p95 for kind, p95 in by_kind.items() if p95 is not None},
        )
    return served


def _minus(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {bound: count - before.get(bound, 0) for bound, count in now.items()}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def histogram_quantile(q: float, buckets: dict[str, int]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in (from 0 in the first); a rank in
    the +Inf bucket is the highest finite bound. None without observations."""
    ordered = sorted(((float(bound), count) for bound, count in buckets.items()), key=lambda item: item[0])
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
