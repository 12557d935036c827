"""What the evaluation (tasks/evaluation.py) leaves for people and records: the answers table artifact, the scores
as metrics for the registry, the scores table and the side-by-side table of the review and the summary."""

from __future__ import annotations

from typing import Protocol

from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from tasks.errors import stage
from tasks.evaluation import Evaluation
from tasks.markdown import inline
from workspaces.ports import ModelRegistry, ModelVersion


@stage("record evaluation")
def record_evaluation(found: Evaluation) -> Evaluation:
    """The answers side by side as the run's `evaluation-answers` table artifact."""
    create_table_artifact(
        key="evaluation-answers",
        table=[{key: value[:300] for key, value in row.items()} for row in answer_table(found)],
        description=f"{found.candidate} against {found.champion or 'no champion'}: "
        f"{'passed' if found.passed else 'failed'}",
    )
    get_run_logger().info(
        "evaluation %s: %d prompts, degenerate %s, ROUGE-L %s, win rate %s",
        "passed" if found.passed else "failed",
        found.samples,
        found.degenerate_rate,
        found.similarity,
        f"{found.win_rate:.2f} {found.win_rate_ci}" if found.win_rate is not None else "- (no champion answers)",
    )
    return found


@stage("log evaluation")
def log_evaluation(registry: ModelRegistry, model: ModelVersion, found: Evaluation) -> str | None:
    """The scores as metrics and the answers as a table where the registry keeps the model's training run; where
    it was stored, or None where the workspace keeps no such record."""
    return registry.record_evaluation(model, evaluation_metrics(found), answer_table(found))


def evaluation_metrics(found: Evaluation) -> dict[str, float]:
    metrics = {f"evaluation_degenerate_rate_{who}": rate for who, rate in found.degenerate_rate.items()}
    metrics |= {f"evaluation_rouge_l_{who}": value for who, value in found.similarity.items()}
    if found.win_rate is not None and found.win_rate_ci is not None:
        metrics |= {
            "evaluation_win_rate": found.win_rate,
            "evaluation_win_rate_low": found.win_rate_ci[0],
            "evaluation_win_rate_high": found.win_rate_ci[1],
        }
    for who, values in found.latency_ms.items():
        metrics |= {f"evaluation_latency_{q}_ms_{who}": v for q, v in values.items()}
    return metrics | {"evaluation_passed": float(found.passed), "evaluation_samples": float(found.samples)}


def answer_table(found: Evaluation) -> list[dict[str, str]]:
    """Prompt, reference, champion's answer, candidate's answer, verdict: one row per prompt."""
    return [
        {
            "prompt": row.prompt,
            "reference": row.reference,
            "champion": (row.champion or "") if found.champion else "-",
            "candidate": row.candidate or "",
            "verdict": row.verdict or "-",
            "problem": row.candidate_problem or "",
        }
        for row in found.rows
    ]


class Scores(Protocol):
    """What both an Evaluation and its summary carry: enough for the scores table."""

    @property
    def samples(self) -> int: ...
    @property
    def candidate(self) -> str | None: ...
    @property
    def champion(self) -> str | None: ...
    @property
    def champion_source(self) -> str | None: ...
    @property
    def degenerate_rate(self) -> dict[str, float]: ...
    @property
    def similarity(self) -> dict[str, float]: ...
    @property
    def win_rate(self) -> float | None: ...
    @property
    def win_rate_ci(self) -> tuple[float, float] | None: ...
    @property
    def latency_ms(self) -> dict[str, dict[str, float]]: ...
    @property
    def judge(self) -> str | None: ...


def evaluation_scores(found: Scores) -> str:
    """The scores, candidate beside champion, as a markdown table with the win rate's interval under it."""

    def cell(values: dict[str, float], who: str, fmt: str) -> str:
        return format(values[who], fmt) if who in values else "-"

    def latency(who: str) -> str:
        values = found.latency_ms.get(who)
        return f"{values['p50']:.0f} / {values['p95']:.0f}" if values else "-"

    champion = f"champion {found.champion}" if found.champion else "champion (none)"
    rows = [
        f"| no reply (degenerate) | {cell(found.degenerate_rate, 'candidate', '.0%')} | "
        f"{cell(found.degenerate_rate, 'champion', '.0%')} |",
        f"| ROUGE-L F1 to the reference | {cell(found.similarity, 'candidate', '.3f')} | "
        f"{cell(found.similarity, 'champion', '.3f')} |",
        f"| latency p50 / p95 (ms) | {latency('candidate')} | {latency('champion')} |",
    ]
    if found.win_rate is not None and found.win_rate_ci is not None:
        low, high = found.win_rate_ci
        by = f"judge {found.judge}, asked in both orders" if found.judge else "closer to the reference reply"
        verdict = (
            f"Win rate of the candidate: **{found.win_rate:.2f}** (95% interval {low:.2f}-{high:.2f}; ties count "
            f"half; {by})."
        )
    else:
        verdict = "No win rate: there were no champion answers to compare with."
    source = f" Champion answers: {found.champion_source}." if found.champion_source else ""
    return (
        f"{found.samples} held-out test_gen prompts, greedy decoding.{source}\n\n"
        f"| | candidate {found.candidate} | {champion} |\n|---|---:|---:|\n" + "\n".join(rows) + f"\n\n{verdict}"
    )


def side_by_side(found: Evaluation, limit: int = 20, width: int = 90) -> str:
    """Prompt, reference, champion's answer, candidate's answer, verdict: what the person who approves reads (the
    champion's column only when there were champion answers)."""

    def text(value: str | None, problem: str | None = None) -> str:
        shown = inline((value or "")[:width]) or "(empty)"
        return f"{shown} **[{inline(problem)}]**" if problem else shown

    compared = found.champion is not None
    header = "| # | prompt | reference |" + (" champion |" if compared else "") + " candidate | verdict |"
    rule = "|---:|---|---|" + ("---|" if compared else "") + "---|---|"
    lines = [
        f"| {i} | {text(r.prompt)} | {text(r.reference)} | "
        + (f"{text(r.champion, r.champion_problem)} | " if compared else "")
        + f"{text(r.candidate, r.candidate_problem)} | {r.verdict or '-'} |"
        for i, r in enumerate(found.rows[:limit], start=1)
    ]
    more = (
        f"\n\n{len(found.rows) - limit} more in the run's evaluation-answers artifact."
        if len(found.rows) > limit
        else ""
    )
    return f"{header}\n{rule}\n" + "\n".join(lines) + more


def evaluation_line(found: Evaluation | None) -> str | None:
    """One line for a notification: 'answers: 16 prompts, no reply 0% (champion 6%), ROUGE-L 0.482 (0.401), win
    rate 0.62 (95% 0.45-0.78)'."""
    if found is None:
        return None

    def beside(values: dict[str, float], fmt: str) -> str:
        theirs = f" (champion {format(values['champion'], fmt)})" if "champion" in values else ""
        return format(values.get("candidate", 0.0), fmt) + theirs

    line = (
        f"answers: {found.samples} prompts, {'passed' if found.passed else 'failed'}; no reply "
        f"{beside(found.degenerate_rate, '.0%')}, ROUGE-L {beside(found.similarity, '.3f')}"
    )
    if found.win_rate is not None and found.win_rate_ci is not None:
        line += f", win rate {found.win_rate:.2f} (95% {found.win_rate_ci[0]:.2f}-{found.win_rate_ci[1]:.2f})"
    return line
