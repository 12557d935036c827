"""Check metrics: the gate a fine-tuned model must pass before anyone is asked to approve it.

The gate fails closed: a champion that cannot be read, or whose recorded metric is malformed, fails it; only a
definite "there is no champion" means nothing to beat. A champion is compared only on the same evaluation data:
re-evaluated on this run's test split in the same job (local workspace), or with a recorded eval loss whose eval
data fingerprint is this run's. Otherwise the comparison is "not comparable" and the gate says so: the
auto-if-better policy then asks a person instead of approving on its own.
"""

from __future__ import annotations

import math
from typing import Literal

from prefect.logging import get_run_logger
from pydantic import BaseModel

from tasks.errors import stage
from tasks.settings import GateSettings
from workspaces.base import JobRef, MetricsNotFound, ModelVersion, Workspace

TRAIN_LOSS, EVAL_LOSS, BASE_EVAL_LOSS = "train_loss", "eval_loss", "base_eval_loss"
CHAMPION_EVAL_LOSS = "champion_eval_loss"  # the champion re-evaluated on this run's test split, in the same job
EVAL_FINGERPRINT = "eval_fingerprint"  # tag: fingerprint of the rows a version's eval_loss was measured on

Comparison = Literal["no-champion", "same-split", "same-data", "not-comparable", "unknown"]


class GateResult(BaseModel):
    passed: bool
    reasons: list[str]  # every check, "ok: ..." or "fail: ..."
    metrics: dict[str, float]
    champion: str | None = None  # "name:version" compared against
    champion_eval_loss: float | None = None  # the champion's number the candidate was compared with
    comparison: Comparison = "unknown"

    @property
    def failures(self) -> list[str]:
        return [reason for reason in self.reasons if reason.startswith("fail")]

    @property
    def comparable(self) -> bool:
        """True when the candidate was measured against the champion on the same data (or there is none)."""
        return self.comparison in ("no-champion", "same-split", "same-data")


def model_id(model: ModelVersion | None) -> str | None:
    return f"{model.name}:{model.version}" if model is not None else None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def recorded_eval_loss(champion: ModelVersion) -> float | None:
    """The champion's recorded eval_loss tag; None when it has none; ValueError when it is not a finite number."""
    raw = champion.tags.get(EVAL_LOSS)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"champion {model_id(champion)} tag {EVAL_LOSS}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"champion {model_id(champion)} tag {EVAL_LOSS}={raw!r} is not finite")
    return value


def evaluate_gate(
    metrics: dict[str, float],
    settings: GateSettings,
    champion: ModelVersion | None = None,
    *,
    champion_error: str | None = None,
    eval_fingerprint: str | None = None,
    evaluated_champion: str | None = None,
    metrics_missing: str | None = None,
) -> GateResult:
    """The gate, as a pure function. `champion_error`: reading the champion failed (after retries);
    `eval_fingerprint`: this run's eval data; `evaluated_champion`: the "name:version" the job re-evaluated on it
    (its loss is metrics["champion_eval_loss"]); `metrics_missing`: why the job's metrics were found nowhere."""
    reasons: list[str] = []

    def check(ok: bool, text: str) -> None:
        reasons.append(("ok: " if ok else "fail: ") + text)

    eval_loss, train_loss, base = metrics.get(EVAL_LOSS), metrics.get(TRAIN_LOSS), metrics.get(BASE_EVAL_LOSS)
    comparison: Comparison = "unknown"
    compared_with: float | None = None
    if not _finite(eval_loss):
        check(
            False,
            metrics_missing or f"eval_loss is missing or not finite ({eval_loss}); the job reported {sorted(metrics)}",
        )
    else:
        if settings.max_eval_loss is not None:
            check(
                eval_loss <= settings.max_eval_loss,
                f"eval_loss {eval_loss:.4f} <= max_eval_loss {settings.max_eval_loss}",
            )
        if not settings.compare_with_base:
            check(True, "base comparison off (gate.compare_with_base=false)")
        elif not _finite(base):
            check(False, "base_eval_loss missing: cannot show the fine-tune beats the base model")
        else:
            need = settings.min_improvement_over_base
            check(eval_loss < base - need, f"eval_loss {eval_loss:.4f} beats base {base:.4f} by more than {need}")
    if champion_error is not None:
        check(False, f"could not read the champion, failing closed: {champion_error}")
    elif champion is None:
        comparison = "no-champion"
        check(True, "no champion yet; nothing to beat")
    else:
        comparison, compared_with = _compare_with_champion(
            check, eval_loss, metrics, settings, champion, eval_fingerprint, evaluated_champion
        )
    if settings.max_train_loss is not None:
        check(
            _finite(train_loss) and train_loss <= settings.max_train_loss,
            f"train_loss {train_loss} <= max_train_loss {settings.max_train_loss}",
        )
    return GateResult(
        passed=all(reason.startswith("ok") for reason in reasons),
        reasons=reasons,
        metrics=metrics,
        champion=model_id(champion),
        champion_eval_loss=compared_with,
        comparison=comparison,
    )


def _compare_with_champion(
    check,
    eval_loss: float | None,
    metrics: dict[str, float],
    settings: GateSettings,
    champion: ModelVersion,
    eval_fingerprint: str | None,
    evaluated_champion: str | None,
) -> tuple[Comparison, float | None]:
    name, need = model_id(champion), settings.min_improvement_over_champion
    try:
        recorded = recorded_eval_loss(champion)
    except ValueError as malformed:
        check(False, str(malformed))
        return "unknown", None
    same_split = metrics.get(CHAMPION_EVAL_LOSS) if evaluated_champion == name else None
    if same_split is not None and not _finite(same_split):
        check(False, f"{CHAMPION_EVAL_LOSS} of {name} on this run's test split is not finite ({same_split})")
        return "unknown", None
    if same_split is not None:
        basis, comparison, value = "re-evaluated on this run's test split", "same-split", same_split
    elif recorded is not None and eval_fingerprint and champion.tags.get(EVAL_FINGERPRINT) == eval_fingerprint:
        basis, comparison, value = f"recorded on the same eval data ({eval_fingerprint})", "same-data", recorded
    else:
        theirs = champion.tags.get(EVAL_FINGERPRINT) or "not recorded"
        check(
            True,
            f"champion {name} not comparable: its eval_loss "
            f"{'(' + format(recorded, '.4f') + ') ' if recorded is not None else ''}was measured on other data "
            f"(eval fingerprint {theirs}, this run {eval_fingerprint or 'unknown'}) and this workspace cannot "
            "re-evaluate it; a person decides",
        )
        return "not-comparable", None
    if not _finite(eval_loss):
        return comparison, value
    check(
        eval_loss < value - need,
        f"eval_loss {eval_loss:.4f} beats champion {name} ({value:.4f}, {basis}) by more than {need}",
    )
    return comparison, value


@stage("read champion")
def read_champion(workspace: Workspace, registered_name: str) -> ModelVersion | None:
    """The live champion of `registered_name`, or None when there definitely is none (errors are raised)."""
    return workspace.champion(registered_name)


@stage("check metrics")
def check_metrics(
    workspace: Workspace,
    job: JobRef,
    settings: GateSettings,
    champion: ModelVersion | None,
    *,
    champion_error: str | None = None,
    eval_fingerprint: str | None = None,
    evaluated_champion: str | None = None,
) -> GateResult:
    try:
        metrics, missing = workspace.job_metrics(job), None
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
