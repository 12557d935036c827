"""The rollout's pure rules, without Prefect: a window judged (fail closed), p95 from a Prometheus histogram as
histogram_quantile computes it, two scrapes made a window, the settings refused with the key named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.rollout import ProbeTally, Rollout, StepReport, judge_window
from tasks.rollout_report import rollout_png, timeline_markdown
from tasks.rollout_settings import RolloutSettings
from workspaces.local.traffic_metrics import TrafficMetrics, counters, histogram_quantile, window
from workspaces.ports import DeploymentTraffic

SETTINGS = RolloutSettings()
HEALTHY = DeploymentTraffic(requests=40, errors=0, p95_ms=100.0)


def probes(degenerate: int = 0, sent: int = 10) -> dict[str, ProbeTally]:
    return {"candidate": ProbeTally(sent=sent, degenerate=degenerate), "live": ProbeTally(sent=sent)}


def test_a_healthy_window_passes():
    assert judge_window(DeploymentTraffic(requests=12, errors=0, p95_ms=140.0), HEALTHY, probes(), SETTINGS) == []


@pytest.mark.parametrize(
    ("candidate", "degenerate", "says"),
    [
        (DeploymentTraffic(requests=20, errors=2, p95_ms=100.0), 0, "candidate error rate 10.0% (2 of 20) > "),
        (DeploymentTraffic(requests=20, errors=0, p95_ms=351.0), 0, "is 3.51x the live model's 100 ms (all requests)"),
        (DeploymentTraffic(requests=20, errors=0, p95_ms=100.0), 3, "3 of the candidate's 10 probe answers"),
        (DeploymentTraffic(requests=4, errors=0, p95_ms=100.0), 0, "fewer than rollout.min_requests 5: no evidence"),
    ],
)
def test_each_limit_is_named_with_its_numbers(candidate, degenerate, says):
    [failure] = judge_window(candidate, HEALTHY, probes(degenerate), SETTINGS)
    assert says in failure


def test_a_quiet_live_side_is_no_evidence_either_and_the_mirror_does_not_judge_unseen_answers():
    quiet = DeploymentTraffic(requests=2, p95_ms=90.0)
    assert "live served 2 requests" in judge_window(HEALTHY, quiet, probes(), SETTINGS)[0]
    assert judge_window(HEALTHY, HEALTHY, probes(degenerate=9), SETTINGS, mirror=True) == []


def test_latency_is_compared_like_for_like_and_fast_answers_get_some_slack():
    # the live side answers a flood of fast split requests; the candidate's share of them is as fast: no regression,
    # though over everything each served the candidate's p95 (its probes weigh more) is 10x the live one's
    candidate = DeploymentTraffic(
        requests=60, p95_ms=300.0, requests_by_kind={"split": 50, "targeted": 10},
        p95_ms_by_kind={"split": 21.0, "targeted": 300.0},
    )  # fmt: skip
    live = DeploymentTraffic(
        requests=160, p95_ms=30.0, requests_by_kind={"split": 150, "targeted": 10},
        p95_ms_by_kind={"split": 20.0, "targeted": 290.0},
    )  # fmt: skip
    assert judge_window(candidate, live, probes(), SETTINGS) == []
    slower = candidate.model_copy(update={"p95_ms_by_kind": {"split": 121.0, "targeted": 300.0}})
    [failure] = judge_window(slower, live, probes(), SETTINGS)
    assert "121 ms is 6.05x the live model's 20 ms (live traffic)" in failure
    # a quiet endpoint: the probes, the same prompts on both sides
    quiet = {"requests_by_kind": {"targeted": 10}}
    ours = candidate.model_copy(update={**quiet, "p95_ms_by_kind": {"targeted": 1000.0}})
    theirs = live.model_copy(update={**quiet, "p95_ms_by_kind": {"targeted": 290.0}})
    assert "(probes)" in judge_window(ours, theirs, probes(), SETTINGS)[0]
    # 40 ms against 10 ms is 4x, but within the slack: timer noise, not a regression
    fast = DeploymentTraffic(requests=20, p95_ms=40.0)
    assert judge_window(fast, DeploymentTraffic(requests=20, p95_ms=10.0), probes(), SETTINGS) == []


def test_settings_refuse_steps_that_do_not_rise_to_100_and_an_over_cap_mirror():
    for steps, says in (
        ([], "empty"),
        ([50, 25, 100], "must rise"),
        ([10, 50], "must end at 100"),
        ([0, 100], "1..100"),
    ):
        with pytest.raises(ValidationError, match=says):
            RolloutSettings(steps=steps)
    with pytest.raises(ValidationError, match="less than or equal to 50"):
        RolloutSettings(mirror_percent=60)
    assert RolloutSettings(steps=[100]).steps == [100]  # one switch, as before


def test_histogram_quantile_matches_prometheus():
    # 100 observations: 50 <= 0.1 s, 90 <= 0.25 s, 100 <= 0.5 s; rank 95 falls in (0.25, 0.5]: 0.25 + 0.25 * 5/10
    buckets = {"0.1": 50, "0.25": 90, "0.5": 100, "+Inf": 100}
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.375)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, {"0.1": 0, "+Inf": 0}) is None
    assert histogram_quantile(0.99, {"0.1": 10, "+Inf": 20}) == 0.1  # in +Inf: the highest finite bound


def test_two_scrapes_make_a_window_and_a_restart_counts_from_zero():
    metrics = TrafficMetrics()
    for _ in range(3):
        metrics.observe("blue", "split", 200, 0.05)
    before = counters(metrics.text().decode())
    for code, seconds in ((200, 0.2), (500, 0.3), (200, 0.2), (200, 0.2)):
        metrics.observe("green", "targeted", code, seconds)
    metrics.observe("green", "mirror", 200, 0.2)
    metrics.observe("blue", "split", 200, 0.05)
    served = window(counters(metrics.text().decode()), before)
    assert (served["green"].requests, served["green"].errors, served["green"].mirrored) == (5, 1, 1)
    assert served["blue"].requests == 1 and 0.025 < served["blue"].p95_ms / 1000 <= 0.05
    assert 250 < served["green"].p95_ms <= 350
    restarted = window(counters(TrafficMetrics().text().decode()), before)
    assert restarted == {}  # a new server that served nothing yet
    fresh = TrafficMetrics()
    fresh.observe("blue", "split", 200, 0.05)
    assert window(counters(fresh.text().decode()), before)["blue"].requests == 1  # fewer than before: a reset


def test_the_timeline_and_its_picture():
    step = StepReport(
        phase="step", traffic=25, started_at=1_700_000_000.0, seconds=10.2,
        requests={"candidate": 9, "live": 21}, errors={"candidate": 3, "live": 0},
        error_rate={"candidate": 0.333, "live": 0.0}, p95_ms={"candidate": 250.0, "live": 80.0}, p95_ratio=3.1,
        degenerate={"candidate": 0.0, "live": 0.0}, probes={"candidate": 10, "live": 10}, verdict="rolled back",
        failures=["candidate error rate 33.3% (3 of 9) > rollout.max_error_rate 5.0%"],
    )  # fmt: skip
    rollout = Rollout(endpoint="chat", candidate="ft-2", live="ft-1", steps=[step], outcome="rolled back")
    png = rollout_png(rollout)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert rollout_png(Rollout(endpoint="chat", candidate="a", live="b")).startswith(b"\x89PNG")
    text = timeline_markdown(rollout, png)
    assert "| 25% | 10 s | 9 / 21 | 33.3% / 0.0% | 250 / 80 |" in text and "data:image/png;base64," in text
    assert rollout.words() == "rollout rolled back (25% rolled back)" and rollout.reached == 25
