"""Check metrics, the stage: read the champion and the job's metrics, then apply the gate (tasks/gate.py)."""

from __future__ import annotations

from prefect.logging import get_run_logger

from tasks.errors import stage
from tasks.gate import GateResult, evaluate_gate
from tasks.settings import GateSettings
from workspaces.ports import JobRef, MetricsNotFound, ModelRegistry, ModelVersion, TrainingJobs


@stage("read champion")
def read_champion(registry: ModelRegistry, registered_name: str) -> ModelVersion | None:
    """The live champion of `registered_name`, or None when there definitely is none (errors are raised)."""
    return registry.champion(registered_name)


@stage("check metrics")
def check_metrics(
    jobs: TrainingJobs,
    job: JobRef,
    settings: GateSettings,
    champion: ModelVersion | None,
    *,
    champion_error: str | None = None,
    eval_fingerprint: str | None = None,
    evaluated_champion: str | None = None,
) -> GateResult:
    try:
        metrics, missing = jobs.metrics(job), None
    except MetricsNotFound as exc:  # the job ran but its metric is nowhere: a gate failure that says where it looked
        metrics, missing = {}, str(exc)
    result = evaluate_gate(
        metrics,
        settings,
        champion,
        champion_error=champion_error,
        eval_fingerprint=eval_fingerprint,
        evaluated_champion=evaluated_champion,
        metrics_missing=missing,
    )
    get_run_logger().info("metric gate %s:\n%s", "passed" if result.passed else "FAILED", "\n".join(result.reasons))
    return result
