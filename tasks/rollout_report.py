"""What a rollout leaves for people: a timeline table and a picture (traffic share, error rate and p95 latency per
window, candidate against the live model) in the run's artifacts. `rollout_png` is pure."""

from __future__ import annotations

import io
import time

from tasks.curves import markdown_image
from tasks.markdown import inline
from tasks.rollout import Rollout


def rollout_png(rollout: Rollout) -> bytes:
    """Three panels over time (seconds since the first window): the candidate's share, each side's error rate, each
    side's p95 latency. A 8x6 inch, 100 dpi PNG; never raises for a rollout without windows."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), dpi=100)
    share, errors, latency = figure.subplots(3, 1, sharex=True)
    steps = rollout.steps
    origin = steps[0].started_at if steps else 0.0
    ends = [step.started_at - origin + step.seconds for step in steps]
    starts = [step.started_at - origin for step in steps]
    for axes in (share, errors, latency):
        axes.grid(True, alpha=0.3)
    if not steps:
        share.text(0.5, 0.5, "no window was measured", ha="center", va="center", transform=share.transAxes)
    # after the last window: all traffic (promoted) or none (rolled back), drawn for a moment past it
    last = (ends[-1] if ends else 0.0) + max(1.0, 0.05 * (ends[-1] if ends else 0.0))
    final = 100 if rollout.outcome == "promoted" else 0
    shares = [0 if step.phase == "mirror" else step.traffic for step in steps]
    share.step([0, *ends, last], [0, *shares, final], where="pre", color="#9467bd", label="candidate share of traffic")
    if any(step.phase == "mirror" for step in steps):
        mirrored = [step.traffic if step.phase == "mirror" else 0 for step in steps]
        share.step([0, *ends], [0, *mirrored], where="pre", color="#8c564b", linestyle="--", label="mirrored copies")
    share.set_ylabel("traffic %")
    share.set_ylim(0, 105)
    middles = [(a + b) / 2 for a, b in zip(starts, ends, strict=True)]
    for side, color in (("candidate", "#d62728"), ("live", "#1f77b4")):
        errors.plot(middles, [100 * s.error_rate[side] for s in steps], marker="o", color=color, label=side)
        points = [(x, s.p95_ms[side]) for x, s in zip(middles, steps, strict=True) if s.p95_ms[side] is not None]
        if points:
            latency.plot(*zip(*points, strict=True), marker="o", color=color, label=side)
    errors.set_ylabel("errors %")
    worst = max((100 * step.error_rate[side] for step in steps for side in ("candidate", "live")), default=0.0)
    errors.set_ylim(0, max(5.0, worst * 1.15))
    latency.set_ylabel("p95 ms")
    latency.set_xlabel("seconds since the rollout began")
    for x, step in zip(ends, steps, strict=True):
        if not step.passed:
            for axes in (share, errors, latency):
                axes.axvline(x, color="#d62728", linestyle="--", linewidth=1)
    share.set_title(f"rollout on {rollout.endpoint}: {rollout.candidate} against {rollout.live} ({rollout.outcome})")
    for axes in (share, errors, latency):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def timeline_markdown(rollout: Rollout, png: bytes | None = None) -> str:
    rows = []
    for step in rollout.steps:
        at = time.strftime("%H:%M:%S", time.localtime(step.started_at))
        p95 = " / ".join(
            "-" if step.p95_ms[side] is None else f"{step.p95_ms[side]:.0f}" for side in ("candidate", "live")
        )
        rows.append(
            f"| {at} | {'mirror ' if step.phase == 'mirror' else ''}{step.traffic}% | {step.seconds:.0f} s | "
            f"{step.requests['candidate']} / {step.requests['live']} | "
            f"{step.error_rate['candidate']:.1%} / {step.error_rate['live']:.1%} | {p95} | "
            f"{step.degenerate['candidate']:.0%} | **{step.verdict}** {inline('; '.join(step.failures))} |"
        )
    header = (
        "| started | candidate share | held | requests (candidate / live) | errors | p95 ms | no reply | verdict |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|"
    )
    picture = f"\n\n{markdown_image(png, 'rollout timeline')}" if png else ""
    reason = f"\n\n{inline(rollout.reason)}" if rollout.reason else ""
    return (
        f"## Rollout on `{rollout.endpoint}`: {rollout.outcome}\n\n`{rollout.candidate}` ({rollout.candidate_model}) "
        f"against `{rollout.live}` ({rollout.live_model}).{reason}\n\n{header}\n" + "\n".join(rows) + picture
    )
