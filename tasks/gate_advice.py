"""What a failed gate says to the person who reads it: what happened, by how much, and what to change."""

from __future__ import annotations

from tasks.gate import GateCheck, GateResult

TRAIN_MORE = "train longer or on more data (finetune.num_train_epochs, data.percent)"
ADVICE = {
    "eval_loss_present": "look at the fine-tune job's log (`tunegate jobs`): it must report eval_loss",
    "max_eval_loss": f"{TRAIN_MORE}, or raise gate.max_eval_loss",
    "max_train_loss": f"{TRAIN_MORE}, or raise gate.max_train_loss",
    "beats_base": f"{TRAIN_MORE} or a higher finetune.learning_rate; gate.min_improvement_over_base is the margin",
    "beats_champion": f"{TRAIN_MORE}, lower gate.min_improvement_over_champion, or let a person decide "
    "(gate.champion=advisory with approval.policy=manual)",
    "champion_readable": "repair or remove the champion's eval_loss tag in the model registry, then run again",
}


def shortfall(check: GateCheck) -> str:
    """' (0.0132 too high)' for a check that measured a number against a threshold, else ''."""
    if check.observed is None or check.threshold is None or check.observed <= check.threshold:
        return ""
    return f" ({check.observed - check.threshold:.4f} too high)"


def stop_message(gate: GateResult, first: str = "") -> str:
    """'Gate failed: eval_loss 0.6976 does not beat champion ... (0.0132 too high). To change: train longer ...'"""
    failed = [check for check in gate.checks if check.blocks]
    said = "; ".join(check.message + shortfall(check) for check in failed)
    advice = list(dict.fromkeys(ADVICE[check.name] for check in failed if check.name in ADVICE))
    to_change = f" To change: {'; '.join(advice)}." if advice else ""
    return f"Gate failed: {first}{said}.{to_change}"
