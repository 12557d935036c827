"""The progressive rollout's rules and stages: a window of live traffic (plus probes) measured for the candidate and
the live model, judged against the profile's limits (`rollout.*`); the phase that steps through it is flows/rollout.py.

    judge_window   pure: a window's numbers -> the limits it breaks (none: the step passed)
    watch_window   stage: hold a step for its window, probing both deployments at a bounded rate, then measure

What changes the endpoint between the windows (shift_traffic, restore_live) is tasks/rollout_traffic.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from tasks.answers import degenerate_reason
from tasks.errors import stage
from tasks.evaluation import EvalPrompt
from tasks.rollout_settings import RolloutSettings
from workspaces.ports import (
    DeploymentTraffic,
    ScoringParameters,
    ScoringRequest,
    ServingEndpoints,
    TrafficReading,
    WorkspaceError,
)

SIDES = ("candidate", "live")


class ProbeTally(BaseModel):
    """The probes one deployment answered in a window, as the client saw them."""

    sent: int = 0
    failed: int = 0  # no answer: a transport error or an HTTP error
    degenerate: int = 0  # answered, but no reply at all (tasks/answers.degenerate_reason)

    @property
    def degenerate_rate(self) -> float:
        answered = self.sent - self.failed
        return self.degenerate / answered if answered else 0.0


class StepReport(BaseModel):
    """One window: what each side served, and whether the candidate stayed inside the limits."""

    phase: Literal["mirror", "step"]
    traffic: int  # the candidate's share in % (mirror: the share of live traffic copied to it)
    started_at: float
    seconds: float
    requests: dict[str, int]  # "candidate" / "live"
    errors: dict[str, int]
    error_rate: dict[str, float]
    p95_ms: dict[str, float | None]  # on like-for-like requests (p95_basis)
    p95_ratio: float | None
    p95_basis: str | None = None  # which requests the p95s are of: live traffic, probes, ...
    degenerate: dict[str, float]  # share of probe answers that were no reply
    probes: dict[str, int]
    mirrored: int = 0  # copies of live traffic the candidate answered
    verdict: Literal["passed", "rolled back", "aborted"] = "passed"
    failures: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


class Rollout(BaseModel):
    """A rollout as it went: the deployments, each window's report, how it ended. Kept in the run's summary, its
    artifact and (as it goes) in the state directory, where a run killed mid-way is found again."""

    endpoint: str
    candidate: str  # deployment
    live: str  # the deployment that served all traffic before
    candidate_model: str = ""
    live_model: str = ""
    steps: list[StepReport] = Field(default_factory=list)
    share: int = 0  # the candidate's traffic share now (while a window is held, before its report)
    outcome: Literal["in progress", "promoted", "rolled back", "aborted", "restored"] = "in progress"
    reason: str | None = None

    @property
    def reached(self) -> int:
        """The highest share the candidate took (0: none)."""
        return max([self.share, *(step.traffic for step in self.steps if step.phase == "step")])

    def words(self) -> str:
        """One line for the decision record and notifications."""
        steps = ", ".join(f"{s.traffic}%{' mirror' if s.phase == 'mirror' else ''} {s.verdict}" for s in self.steps)
        why = f": {self.reason}" if self.reason and self.outcome != "promoted" else ""
        return f"rollout {self.outcome} ({steps or 'no window'}){why}"


def judge_window(
    candidate: DeploymentTraffic,
    live: DeploymentTraffic,
    probes: dict[str, ProbeTally],
    settings: RolloutSettings,
    mirror: bool = False,
) -> list[str]:
    """Pure rule: the limits this window breaks, each naming the numbers; [] when the candidate may go on. Fails
    closed: too few requests to either side is not evidence. In the mirror phase the candidate's answers are thrown
    away unseen, so only errors and latency are judged there."""
    failures = []
    for side, served in (("candidate", candidate), ("live", live)):
        if served.requests < settings.min_requests:
            failures.append(
                f"{side} served {served.requests} requests in the window, fewer than rollout.min_requests "
                f"{settings.min_requests}: no evidence (raise rollout.window_s or rollout.probe_rate)"
            )
    if failures:
        return failures
    if candidate.error_rate > settings.max_error_rate:
        failures.append(
            f"candidate error rate {candidate.error_rate:.1%} ({candidate.errors} of {candidate.requests}) > "
            f"rollout.max_error_rate {settings.max_error_rate:.1%} (live: {live.error_rate:.1%})"
        )
    compared = comparable_p95(candidate, live, settings.min_requests, mirror)
    if compared is not None:
        ours, theirs, kind = compared
        if ours > settings.max_p95_ratio * theirs + settings.p95_slack_ms:
            failures.append(
                f"candidate p95 latency {ours:.0f} ms is {ours / max(theirs, 1e-3):.2f}x the live model's "
                f"{theirs:.0f} ms ({kind}) > rollout.max_p95_ratio {settings.max_p95_ratio:g} "
                f"(+ rollout.p95_slack_ms {settings.p95_slack_ms:g})"
            )
    tally = probes.get("candidate", ProbeTally())
    if not mirror and tally.degenerate_rate > settings.max_degenerate_rate:
        failures.append(
            f"{tally.degenerate} of the candidate's {tally.sent - tally.failed} probe answers were no reply "
            f"({tally.degenerate_rate:.0%} > rollout.max_degenerate_rate {settings.max_degenerate_rate:.0%})"
        )
    return failures


def comparable_p95(
    candidate: DeploymentTraffic, live: DeploymentTraffic, enough: int, mirror: bool = False
) -> tuple[float, float, str] | None:
    """(candidate p95, live p95, on what) over requests of the same mix: the traffic split sends both the same kind
    of requests (in the mirror phase: the copies against the split), the probes are the same prompts on both;
    only where the workspace cannot tell them apart (Azure Monitor), everything each served."""
    pairs = [("mirror", "split", "mirrored live traffic")] if mirror else [("split", "split", "live traffic")]
    pairs.append(("targeted", "targeted", "probes"))
    for ours, theirs, what in pairs:
        if min(candidate.requests_by_kind.get(ours, 0), live.requests_by_kind.get(theirs, 0)) >= enough:
            found = candidate.p95_ms_by_kind.get(ours), live.p95_ms_by_kind.get(theirs)
            if found[0] is not None and found[1] is not None:
                return found[0], found[1], what
    if candidate.p95_ms is None or live.p95_ms is None:
        return None
    return candidate.p95_ms, live.p95_ms, "all requests"


def report(
    phase: Literal["mirror", "step"],
    traffic: int,
    started_at: float,
    seconds: float,
    served: dict[str, DeploymentTraffic],
    probes: dict[str, ProbeTally],
    failures: list[str],
    enough: int = 1,
) -> StepReport:
    compared = comparable_p95(served["candidate"], served["live"], enough, phase == "mirror")
    p95 = {"candidate": compared[0], "live": compared[1]} if compared else {side: served[side].p95_ms for side in SIDES}
    ratio = compared[0] / max(compared[1], 1e-3) if compared else None
    return StepReport(
        phase=phase,
        traffic=traffic,
        started_at=started_at,
        seconds=round(seconds, 2),
        requests={side: served[side].requests for side in SIDES},
        errors={side: served[side].errors for side in SIDES},
        error_rate={side: round(served[side].error_rate, 4) for side in SIDES},
        p95_ms=p95,
        p95_ratio=round(ratio, 3) if ratio is not None else None,
        p95_basis=compared[2] if compared else None,
        degenerate={side: round(probes[side].degenerate_rate, 4) for side in SIDES},
        probes={side: probes[side].sent for side in SIDES},
        mirrored=served["candidate"].mirrored,
        verdict="passed" if not failures else "rolled back",
        failures=failures,
    )


def probe_once(
    endpoints: ServingEndpoints,
    endpoint: str,
    deployment: str | None,
    prompt: EvalPrompt,
    parameters: ScoringParameters,
    tally: ProbeTally,
    timeout_s: float,
) -> None:
    """One held-out prompt to one deployment (None: through the traffic split, which a mirror copies)."""
    request = ScoringRequest(messages=[{"role": "user", "content": prompt.prompt}], parameters=parameters)
    tally.sent += 1
    try:
        result = endpoints.invoke(endpoint, request, deployment=deployment, timeout_s=timeout_s)
    except WorkspaceError:  # no answer at all (a dropped connection, a timeout): the server counts it too, or not
        tally.failed += 1
        return
    if result.error or result.output is None:
        tally.failed += 1
    elif degenerate_reason(result.output) is not None:
        tally.degenerate += 1


@stage("watch window")
def watch_window(
    endpoints: ServingEndpoints,
    endpoint: str,
    deployments: dict[str, str],
    settings: RolloutSettings,
    prompts: Sequence[EvalPrompt],
    parameters: ScoringParameters,
    phase: Literal["mirror", "step"],
    traffic: int,
    stop: Callable[[], str | None] = lambda: None,
) -> StepReport:
    """Hold the step for its window: live traffic flows as the split says while probes go to the candidate and the
    live model in turn (at most rollout.probe_rate a second; in the mirror phase the live model's through the split,
    which copies them to the candidate); then what each served in the window, judged. `stop` is asked between
    probes: a reason (an abort, a cancelled run) ends the window at once, with the verdict "aborted"."""
    window_s = settings.mirror_window_s if phase == "mirror" else settings.window_s
    probes = {side: ProbeTally() for side in SIDES}
    started_wall, started = time.time(), time.monotonic()
    before: TrafficReading = endpoints.traffic(endpoint)
    interval = 1.0 / settings.probe_rate if settings.probe_rate > 0 else None
    sent, reason = 0, None
    while (elapsed := time.monotonic() - started) < window_s:
        reason = stop()
        if reason:
            break
        if interval is None or not prompts:
            time.sleep(min(0.5, window_s - elapsed))
            continue
        side = SIDES[sent % 2]
        # the live side's probes in the mirror phase go through the split, which copies some to the candidate
        target = None if phase == "mirror" and side == "live" else deployments[side]
        probe_once(endpoints, endpoint, target, prompts[sent % len(prompts)], parameters, probes[side], timeout_s=60)
        sent += 1
        next_at = sent * interval
        time.sleep(max(0.0, min(next_at - (time.monotonic() - started), window_s - (time.monotonic() - started))))
    after = endpoints.traffic(endpoint, since=before)
    served = {side: after.deployments.get(deployments[side], DeploymentTraffic()) for side in SIDES}
    seconds = time.monotonic() - started
    if reason:
        stopped = report(phase, traffic, started_wall, seconds, served, probes, [reason], settings.min_requests)
        return stopped.model_copy(update={"verdict": "aborted"})
    failures = judge_window(served["candidate"], served["live"], probes, settings, mirror=phase == "mirror")
    return report(phase, traffic, started_wall, seconds, served, probes, failures, settings.min_requests)
