"""Judging answers, as pure functions (issue 23's rules; the evaluation phase and the smoke test use them).

- `degenerate_reason`: why an answer is not one a person would accept as a reply at all (empty, control or
  replacement characters, runaway repetition, speaking as the user or leaking role markers, cut off at the limit);
- `win_rate` of a candidate against the champion from per-prompt verdicts (a tie counts half), with a seeded
  percentile `bootstrap_interval`;
- `percentile` for latencies;
- `similarity` to the reference reply (ROUGE-L) and `preference`, the per-prompt verdict without a judge.
"""

from __future__ import annotations

import functools
import math
import random
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

# what a chat template puts around turns: in a reply, the model is speaking as someone else or leaking the template
ROLE_MARKERS = re.compile(
    r"<\|(?:user|assistant|system|end|endoftext|im_start|im_end|eot_id|start_header_id)\|>"
    r"|^\s*(?:user|human|### (?:user|human|instruction))\s*:",
    re.IGNORECASE | re.MULTILINE,
)
MIN_REPEATED = 4  # a run of words said this many times in a row is runaway repetition, not emphasis
ALLOWED_CONTROLS = {"\n", "\t", "\r"}

WIN, TIE, LOSS = 1.0, 0.5, 0.0


def _odd_character(answer: str) -> str | None:
    for character in answer:
        if character == "\ufffd":
            return "a replacement character (U+FFFD: bytes that are not text)"
        if character not in ALLOWED_CONTROLS and unicodedata.category(character) in ("Cc", "Cs", "Co", "Cn"):
            return f"a control or unassigned character (U+{ord(character):04X})"
    return None


def _runaway_repetition(answer: str) -> str | None:
    words = answer.split()
    for size in (1, 2, 3, 4, 5):  # a phrase of up to 5 words said MIN_REPEATED times in a row
        for start in range(0, max(0, len(words) - size * MIN_REPEATED) + 1):
            phrase = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == phrase for k in range(1, MIN_REPEATED)):
                return f"runaway repetition ({' '.join(phrase)!r} {MIN_REPEATED} times in a row)"
    return None


def degenerate_reason(answer: str | None, cut_off: bool = False) -> str | None:
    """Why the answer is degenerate, or None when it reads as a reply. `cut_off`: the server says it stopped at the
    token limit (the reply did not end)."""
    if answer is None or not answer.strip():
        return "empty"
    odd = _odd_character(answer)
    if odd is not None:
        return odd
    marker = ROLE_MARKERS.search(answer)
    if marker is not None:
        return f"speaks as another role or leaks the chat template ({marker.group(0).strip()!r})"
    repeated = _runaway_repetition(answer)
    if repeated is not None:
        return repeated
    if cut_off:
        return "cut off at the token limit"
    return None


def degenerate_rate(answers: Sequence[str | None]) -> float:
    """The share of answers that are degenerate (1.0 for no answers: nothing was shown to be a reply)."""
    if not answers:
        return 1.0
    return sum(degenerate_reason(answer) is not None for answer in answers) / len(answers)


def win_rate(verdicts: Sequence[float]) -> float:
    """Candidate against champion, per prompt: WIN 1, TIE 0.5, LOSS 0; the mean. ValueError on anything else."""
    if not verdicts:
        raise ValueError("no verdicts: a win rate needs at least one compared prompt")
    if any(verdict not in (WIN, TIE, LOSS) for verdict in verdicts):
        raise ValueError(f"verdicts are 1 (win), 0.5 (tie) or 0 (loss), got {sorted(set(verdicts))}")
    return sum(verdicts) / len(verdicts)


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values`: seeded, so the same verdicts give the same
    interval on every run."""
    if not values:
        raise ValueError("no values to bootstrap")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    return percentile(means, tail * 100), percentile(means, (1 - tail) * 100)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between the nearest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


SIMILARITY_TIE = 0.02  # reference similarities closer than this are a tie: the metric's noise, not a preference


@functools.cache
def _rouge_l() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def similarity(answer: str | None, reference: str) -> float:
    """ROUGE-L F1 of the answer against the reference reply (rouge-score: lower-cased words, longest common
    subsequence): 0 for no answer or nothing in common, 1 for the same words in the same order."""
    if not answer or not answer.strip() or not reference.strip():
        return 0.0
    return float(_rouge_l().score(reference, answer)["rougeL"].fmeasure)


def preference(candidate: str | None, champion: str | None, reference: str) -> float:
    """The candidate's verdict against the champion on one prompt, without a judge: an answer that is no reply loses
    to one that is; two replies, the closer to the reference wins (within SIMILARITY_TIE: a tie); two non-replies
    tie."""
    candidate_bad = degenerate_reason(candidate) is not None
    champion_bad = degenerate_reason(champion) is not None
    if candidate_bad or champion_bad:
        return TIE if candidate_bad == champion_bad else (LOSS if candidate_bad else WIN)
    ours, theirs = similarity(candidate, reference), similarity(champion, reference)
    if abs(ours - theirs) < SIMILARITY_TIE:
        return TIE
    return WIN if ours > theirs else LOSS


def judged(first_order: float, second_order: float) -> float:
    """A judge asked twice, the candidate shown first then second (`second_order` already turned to the
    candidate's side): the verdict stands when both agree, otherwise it was the position talking, a tie."""
    return first_order if first_order == second_order else TIE
