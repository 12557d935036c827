"""`tunegate serve`: the deployments of prefect.yaml, served from this process without a work pool.

prefect.yaml stays the one place deployments are described; this reads it and hands them to `prefect.serve`.
"""

from __future__ import annotations

from pathlib import Path

from data.documents import read_yaml

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict]:
    document = read_yaml(path)
    if not isinstance(document, dict) or not isinstance(document.get("deployments"), list):
        raise ValueError(f"{path} has no list of deployments")
    return document["deployments"]


def runner_deployments(path: Path = PREFECT_YAML) -> list:
    from prefect.schedules import Cron

    from flows.tunegate_flow import tunegate

    deployments = []
    for spec in deployment_specs(path):
        schedules = [
            # a schedule without `active` is on, as in `prefect deploy`; ours that need a cloud say `active: false`
            Cron(s["cron"], timezone=s.get("timezone"), active=bool(s.get("active", True)))
            for s in spec.get("schedules") or []
            if s.get("cron")
        ]
        deployments.append(
            tunegate.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=schedules or None,
            )
        )
    return deployments


def serve_all(path: Path = PREFECT_YAML) -> None:
    from prefect import serve

    serve(*runner_deployments(path))
