"""The metric gate, as pure functions: what a fine-tuned model must pass before anyone is asked to approve it.

The gate fails closed: a champion that cannot be read, or whose recorded metric is malformed, fails it; only a
definite "there is no champion" means nothing to beat. A champion is compared only on the same evaluation data:
re-evaluated on this run's test split in the same job (local workspace), or with a recorded eval loss whose eval
data fingerprint is this run's. Otherwise the comparison is "not comparable" and the gate says so: the
auto-if-better policy then asks a person instead of approving on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from tasks.settings import GateSettings
from workspaces.ports import ModelVersion

TRAIN_LOSS, EVAL_LOSS, BASE_EVAL_LOSS = "train_loss", "eval_loss", "base_eval_loss"
CHAMPION_EVAL_LOSS = "champion_eval_loss"  # the champion re-evaluated on this run's test split, in the same job
EVAL_FINGERPRINT = "eval_fingerprint"  # tag: fingerprint of the rows a version's eval_loss was measured on

Comparison = Literal["no-champion", "same-split", "same-data", "not-comparable", "unknown"]


class GateCheck(BaseModel):
    """One check of the gate: what was measured against what, and a sentence that reads right either way."""

    name: str  # eval_loss_present | max_eval_loss | beats_base | champion_readable | beats_champion | comparable
    #            | max_train_loss
    passed: bool
    message: str  # for people: "eval_loss 0.70 does not beat champion m:1 (0.69, ...) by more than 0.0"
    observed: float | None = None
    threshold: float | None = None  # the number `observed` had to be at or under (max_*) or under (beats_*)
    advisory: bool = False  # shown to the person who decides; a failure does not stop the run (gate.champion)

    @property
    def blocks(self) -> bool:
        """This check stops the run."""
        return not self.passed and not self.advisory

    @property
    def reason(self) -> str:
        """The check as the summary's `gate.reasons` has always spelled it: "ok: ..." or "fail: ..."."""
        if self.passed:
            return "ok: " + self.message
        return ("fail (advisory, a person decides): " if self.advisory else "fail: ") + self.message


class GateResult(BaseModel):
    passed: bool  # no check that stops the run failed (an advisory one may have)
    checks: list[GateCheck]
    metrics: dict[str, float]
    champion: str | None = None  # "name:version" compared against
    champion_eval_loss: float | None = None  # the champion's number the candidate was compared with
    comparison: Comparison = "unknown"

    @property
    def reasons(self) -> list[str]:
        return [check.reason for check in self.checks]

    @property
    def failures(self) -> list[str]:
        """The messages of the failed checks that stop the run."""
        return [check.message for check in self.checks if check.blocks]

    @property
    def advised_against(self) -> list[str]:
        """The messages of the failed advisory checks: for the person who decides."""
        return [check.message for check in self.checks if check.advisory and not check.passed]

    def words(self) -> str:
        """ "passed", "FAILED", or passed with a failed advisory check said plainly."""
        if not self.passed:
            return "FAILED"
        if self.advised_against:
            return "passed, but it does NOT beat the champion (gate.champion advisory: you decide)"
        return "passed"

    def with_check(self, check: GateCheck, **update: object) -> GateResult:
        checks = [*self.checks, check]
        return self.model_copy(update={"checks": checks, "passed": not any(c.blocks for c in checks), **update})

    @property
    def comparable(self) -> bool:
        """True when the candidate was measured against the champion on the same data (or there is none)."""
        return self.comparison in ("no-champion", "same-split", "same-data")


def model_id(model: ModelVersion | None) -> str | None:
    return f"{model.name}:{model.version}" if model is not None else None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def beats(candidate: float, reference: float, margin: float) -> bool:
    """The one rule for "better": a lower loss by more than the margin."""
    return candidate < reference - margin


def beats_champion(gate: GateResult, margin: float) -> bool:
    """The candidate beats the champion it was compared with on the same data by more than `margin` (the approval
    policy's margin may differ from the gate's). A champion measured on other data beats nothing and loses nothing."""
    candidate = gate.metrics.get(EVAL_LOSS)
    if candidate is None or not math.isfinite(candidate) or not gate.comparable or gate.champion_eval_loss is None:
        return False
    return beats(candidate, gate.champion_eval_loss, margin)


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
    """The gate, as a pure function: every check, typed (GateCheck). `champion_error`: reading the champion failed
    (after retries); `eval_fingerprint`: this run's eval data; `evaluated_champion`: the "name:version" the job
    re-evaluated on it (its loss is metrics["champion_eval_loss"]); `metrics_missing`: why the job's metrics were
    found nowhere."""
    checks: list[GateCheck] = []
    check = checks.append
    eval_loss, train_loss, base = metrics.get(EVAL_LOSS), metrics.get(TRAIN_LOSS), metrics.get(BASE_EVAL_LOSS)
    comparison: Comparison = "unknown"
    compared_with: float | None = None
    if eval_loss is None or not math.isfinite(eval_loss):
        why = metrics_missing or f"eval_loss is missing or not finite ({eval_loss}); the job reported {sorted(metrics)}"
        check(GateCheck(name="eval_loss_present", passed=False, message=why, observed=eval_loss))
    else:
        if settings.max_eval_loss is not None:
            check(at_most("max_eval_loss", EVAL_LOSS, eval_loss, settings.max_eval_loss))
        if not settings.compare_with_base:
            check(
                GateCheck(name="beats_base", passed=True, message="base comparison off (gate.compare_with_base=false)")
            )
        elif base is None or not math.isfinite(base):
            message = "base_eval_loss missing: cannot show the fine-tune beats the base model"
            check(GateCheck(name="beats_base", passed=False, message=message))
        else:
            check(better_than("beats_base", eval_loss, f"base {base:.4f}", base, settings.min_improvement_over_base))
    if champion_error is not None:
        message = f"could not read the champion, failing closed: {champion_error}"
        check(GateCheck(name="champion_readable", passed=False, message=message))
    elif champion is None:
        comparison = "no-champion"
        check(GateCheck(name="beats_champion", passed=True, message="no champion yet; nothing to beat"))
    else:
        comparison, compared_with = _compare_with_champion(
            check, eval_loss, metrics, settings, champion, eval_fingerprint, evaluated_champion
        )
    if settings.max_train_loss is not None:
        check(at_most("max_train_loss", TRAIN_LOSS, train_loss, settings.max_train_loss))
    return GateResult(
        passed=not any(c.blocks for c in checks),
        checks=checks,
        metrics=metrics,
        champion=model_id(champion),
        champion_eval_loss=compared_with,
        comparison=comparison,
    )


def at_most(name: str, metric: str, value: float | None, limit: float) -> GateCheck:
    """`metric` <= `limit`; a missing or non-finite value fails."""
    if value is None or not math.isfinite(value):
        return GateCheck(name=name, passed=False, message=f"{metric} is {value}: cannot check {name} {limit}")
    if value <= limit:
        return GateCheck(
            name=name, passed=True, message=f"{metric} {value:.4f} <= {name} {limit}", observed=value, threshold=limit
        )
    return GateCheck(
        name=name,
        passed=False,
        message=f"{metric} {value:.4f} is above {name} {limit}",
        observed=value,
        threshold=limit,
    )


def better_than(name: str, eval_loss: float, what: str, reference: float, margin: float) -> GateCheck:
    """eval_loss beats `reference` by more than `margin` (beats), worded for people whichever way it went."""
    passed = beats(eval_loss, reference, margin)
    verb = "beats" if passed else "does not beat"
    return GateCheck(
        name=name,
        passed=passed,
        message=f"eval_loss {eval_loss:.4f} {verb} {what} by more than {margin}",
        observed=eval_loss,
        threshold=reference - margin,
    )


def _compare_with_champion(
    check: Callable[[GateCheck], None],
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
        check(GateCheck(name="champion_readable", passed=False, message=str(malformed)))
        return "unknown", None
    same_split = metrics.get(CHAMPION_EVAL_LOSS) if evaluated_champion == name else None
    if same_split is not None and not _finite(same_split):
        message = f"{CHAMPION_EVAL_LOSS} of {name} on this run's test split is not finite ({same_split})"
        check(GateCheck(name="champion_readable", passed=False, message=message))
        return "unknown", None
    comparison: Comparison
    if same_split is not None:
        basis, comparison, value = "re-evaluated on this run's test split", "same-split", same_split
    elif recorded is not None and eval_fingerprint and champion.tags.get(EVAL_FINGERPRINT) == eval_fingerprint:
        basis, comparison, value = f"recorded on the same eval data ({eval_fingerprint})", "same-data", recorded
    else:
        theirs = champion.tags.get(EVAL_FINGERPRINT) or "not recorded"
        check(
            GateCheck(
                name="comparable",
                passed=True,
                message=f"champion {name} not comparable: its eval_loss "
                f"{'(' + format(recorded, '.4f') + ') ' if recorded is not None else ''}was measured on other data "
                f"(eval fingerprint {theirs}, this run {eval_fingerprint or 'unknown'}) and this workspace cannot "
                "re-evaluate it; a person decides",
            )
        )
        return "not-comparable", None
    if eval_loss is None or not math.isfinite(eval_loss):
        return comparison, value
    compared = better_than("beats_champion", eval_loss, f"champion {name} ({value:.4f}, {basis})", value, need)
    check(compared.model_copy(update={"advisory": settings.champion == "advisory"}))
    return comparison, value
