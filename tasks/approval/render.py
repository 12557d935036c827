"""What a reviewer reads: the review (facts, metrics vs base vs champion, every gate check, the loss curve), the
short text of the Resume form, the one-line headline of a notification, and the recorded decision."""

from __future__ import annotations

from tasks import curves
from tasks.approval.policy import ApprovalRecord
from tasks.evaluation import Evaluation
from tasks.evaluation_report import evaluation_scores, side_by_side
from tasks.gate import EVAL_LOSS, GateResult
from tasks.markdown import link, table
from workspaces.ports import ModelVersion


def decision_markdown(
    model: ModelVersion, decision: ApprovalRecord, gate: GateResult, links: dict[str, str] | None = None
) -> str:
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(gate.metrics.items()))
    who = "the policy" if decision.approver.startswith("policy:") else decision.approver
    facts = [
        ("decision", decision.label),
        ("by", f"{who} (approval policy {decision.policy})"),
        ("when", decision.decided_at),
        ("comment", decision.comment or "-"),
        ("champion", gate.champion or "none yet"),
        *((label, link(url)) for label, url in (links or {}).items()),
    ]
    gate_words = "passed" if gate.passed else "failed"
    return (
        f"{table(f'# {decision.label.title()}: {model.name} version {model.version}', facts)}\n\n"
        f"## Metrics\n\n| metric | value |\n|---|---:|\n{rows}\n\n## Metric gate: {gate_words}\n\n"
        + "\n".join(f"- {r}" for r in gate.reasons)
    )


def review_markdown(
    model: ModelVersion,
    gate: GateResult,
    facts: dict[str, str],
    loss_curve_png: bytes | None = None,
    evaluation: Evaluation | None = None,
    when: str = "after-evaluation",
) -> str:
    """What a reviewer decides from: the model, its data, metrics vs base vs champion, the gate, the target, the
    answer evaluation with the answers side by side, and the loss curve (inline, so the review page shows it)."""
    metrics = gate.metrics
    champion = f"{gate.champion_eval_loss:.4f}" if gate.champion_eval_loss is not None else "-"

    def cell(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "-"

    rows = "\n".join(
        f"| {name} | {cell(metrics[name])} | {cell(metrics.get('base_' + name))} "
        f"| {champion if name == EVAL_LOSS else '-'} |"
        for name in ("eval_loss", "train_loss")
        if name in metrics
    )
    facts_md = "\n".join(f"- **{key}**: {value}" for key, value in facts.items())
    return (
        f"## Approve {model.name} version {model.version} for deployment?\n\n{facts_md}\n\n"
        f"| metric | candidate | base | champion ({gate.champion or 'none'}) |\n|---|---|---|---|\n{rows}\n\n"
        f"**Metric gate: {gate.words()}**\n\n"
        + "\n".join(f"- {r}" for r in gate.reasons)
        + f"\n\n{answers_markdown(evaluation, when)}"
        + (f"\n\n### Loss per step\n\n{curves.markdown_image(loss_curve_png, 'loss curve')}" if loss_curve_png else "")
        + "\n\nIn the run's Resume form, choose **approve** or **reject** as the decision and give your name as "
        "**approver**; or `tunegate approve|reject <run id> --approver <name>`."
    )


def headline(gate: GateResult, bold: str = "") -> str:
    """'eval_loss 1.2345 vs champion m:2: 1.3000 (...); base 2.1000; gate passed'"""
    metrics = gate.metrics
    candidate = metrics.get(EVAL_LOSS)
    first = f"eval_loss {bold}{candidate:.4f}{bold}" if candidate is not None else "no eval_loss"
    if gate.champion is None:
        versus = "no champion yet"
    elif gate.champion_eval_loss is not None:
        versus = f"champion {gate.champion}: {gate.champion_eval_loss:.4f} ({gate.comparison})"
    else:
        versus = f"champion {gate.champion}: {bold}not comparable{bold} (measured on other data)"
    base = metrics.get("base_eval_loss")
    return f"{first} vs {versus}" + (f"; base {base:.4f}" if base is not None else "")


def form_description(model: ModelVersion, gate: GateResult, review_url: str | None) -> str:
    """The Resume form's text: short enough to read without scrolling; everything else is in the review artifact."""
    failures = sum(not check.passed for check in gate.checks)
    lines = [
        f"### Approve {model.name} version {model.version}?",
        headline(gate, bold="**"),
        f"Metric gate: {gate.words()} ({len(gate.reasons)} checks, {failures} failed)",
        f"Full review (every gate check, data, loss curve, target): {review_url}" if review_url else "",
        "Choose **approve** or **reject**, and give your name.",
    ]
    return "\n\n".join(line for line in lines if line)


def answers_markdown(evaluation: Evaluation | None, when: str) -> str:
    """The evaluation's scores and every prompt's answers side by side; or why there are none to show."""
    if evaluation is None:
        if when == "before-deploy":
            return (
                "### Answers\n\nNo answers to show: approval.when is before-deploy, so this decision comes before the "
                "candidate is deployed and evaluated (its evaluation still gates the release afterwards)."
            )
        return "### Answers\n\nNo answers to show: evaluate.enabled is off, the losses alone are the evidence."
    return (
        f"### Answer evaluation: {'passed' if evaluation.passed else 'failed'}\n\n{evaluation_scores(evaluation)}"
        + "".join(f"\n- {note}" for note in evaluation.notes)
        + f"\n\n### Answers side by side\n\n{side_by_side(evaluation)}"
    )
