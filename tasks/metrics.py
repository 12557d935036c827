"""Check metrics: the gate a fine-tuned model must pass before anyone is asked to approve it."""

from __future__ import annotations

import math

from prefect.logging import get_run_logger
from pydantic import BaseModel

from tasks.errors import stage
from tasks.settings import GateSettings
from workspaces.base import JobRef, ModelVersion, Workspace

TRAIN_LOSS, EVAL_LOSS, BASE_EVAL_LOSS = "train_loss", "eval_loss", "base_eval_loss"


class GateResult(BaseModel):
    passed: bool
    reasons: list[str]  # every check, "ok: ..." or "fail: ..."
    metrics: dict[str, float]
    champion: str | None = None  # "name:version" compared against
    champion_eval_loss: float | None = None

    @property
    def failures(self) -> list[str]:
        return [reason for reason in self.reasons if reason.startswith("fail")]


def champion_eval_loss(champion: ModelVersion | None) -> float | None:
    if champion is None or EVAL_LOSS not in champion.tags:
        return None
    try:
        return float(champion.tags[EVAL_LOSS])
    except ValueError:
        return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def evaluate_gate(
    metrics: dict[str, float], settings: GateSettings, champion: ModelVersion | None = None
) -> GateResult:
    reasons: list[str] = []

    def check(ok: bool, text: str) -> None:
        reasons.append(("ok: " if ok else "fail: ") + text)

    eval_loss, train_loss, base = metrics.get(EVAL_LOSS), metrics.get(TRAIN_LOSS), metrics.get(BASE_EVAL_LOSS)
    if not _finite(eval_loss):
        check(False, f"eval_loss is missing or not finite ({eval_loss}); the job reported {sorted(metrics)}")
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
        best = champion_eval_loss(champion)
        if champion is not None and best is not None:
            need = settings.min_improvement_over_champion
            check(
                eval_loss < best - need,
                f"eval_loss {eval_loss:.4f} beats champion {champion.name}:{champion.version} ({best:.4f}) "
                f"by more than {need}",
            )
        elif champion is not None:
            check(True, f"champion {champion.name}:{champion.version} has no eval_loss tag; not compared")
        else:
            check(True, "no champion yet; nothing to beat")
    if settings.max_train_loss is not None:
        check(
            _finite(train_loss) and train_loss <= settings.max_train_loss,
            f"train_loss {train_loss} <= max_train_loss {settings.max_train_loss}",
        )
    return GateResult(
        passed=all(reason.startswith("ok") for reason in reasons),
        reasons=reasons,
        metrics=metrics,
        champion=f"{champion.name}:{champion.version}" if champion else None,
        champion_eval_loss=champion_eval_loss(champion),
    )


@stage("check metrics")
def check_metrics(workspace: Workspace, job: JobRef, settings: GateSettings, registered_name: str) -> GateResult:
    result = evaluate_gate(workspace.job_metrics(job), settings, workspace.champion(registered_name))
    get_run_logger().info("metric gate %s:\n%s", "passed" if result.passed else "FAILED", "\n".join(result.reasons))
    return result
