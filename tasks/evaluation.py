"""The answer evaluation: held-out test_gen prompts answered by the candidate (at 0%, through its deployment header)
and by the champion, scored against the reference replies (tasks/answers.py), and gated by `evaluate.*`.

The champion answers from where it serves, or from its own evaluation record when the prompts and generation
settings are the same (`EvaluationRecord.fingerprint`); never from other prompts. With no champion, or none that can
answer, the evaluation judges the candidate alone and says so.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from itertools import islice

from pydantic import BaseModel, Field

from data.runs import read_jsonl
from tasks import answers
from tasks.errors import stage
from tasks.evaluate_settings import EvaluateSettings
from workspaces.ports import ScoringParameters, ScoringRequest, ServingEndpoints

BATCH = 8  # prompts in one scoring request where the endpoint answers several at once
INTERVAL = 0.95


class EvalPrompt(BaseModel):
    prompt: str
    reference: str


class Answer(BaseModel):
    text: str | None
    latency_ms: float = 0.0
    error: str | None = None


class AnswerSet(BaseModel):
    """Who answered the evaluation prompts, from where, and what they said (in the prompts' order)."""

    model: str  # "name:version"
    source: str  # "deployment <endpoint>/<name>" or "its evaluation record"
    answers: list[Answer]


class EvaluationRecord(BaseModel):
    """A model's answers to one set of prompts under one set of generation settings: reusable for exactly those."""

    model: str
    fingerprint: str
    answers: list[Answer]


class EvaluationRow(BaseModel):
    prompt: str
    reference: str
    candidate: str | None
    champion: str | None
    candidate_problem: str | None = None
    champion_problem: str | None = None
    verdict: str | None = None  # "win" / "tie" / "loss" for the candidate; None without a champion


class Evaluation(BaseModel):
    """What the evaluation found and decided: the summary's `evaluation` section and the review's table."""

    passed: bool
    samples: int
    candidate: str
    champion: str | None = None
    champion_source: str | None = None
    degenerate_rate: dict[str, float] = Field(default_factory=dict)  # candidate / champion
    similarity: dict[str, float] = Field(default_factory=dict)
    win_rate: float | None = None
    win_rate_ci: tuple[float, float] | None = None
    latency_ms: dict[str, dict[str, float]] = Field(default_factory=dict)  # who -> p50 / p95
    judge: str | None = None  # the judge's model, when one was asked
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # what the numbers rest on (no champion answers, and why)
    rows: list[EvaluationRow] = Field(default_factory=list)


def evaluation_prompts(test_gen_path: str, samples: int, seed: int) -> list[EvalPrompt]:
    """`samples` rows of test_gen drawn with `seed` (the same file and seed: the same prompts, in the same order):
    each row's first user turn, and the assistant reply that follows it as the reference."""
    usable = []
    for row in islice(read_jsonl(test_gen_path), 100_000):
        messages = row.get("messages") or []
        for index, message in enumerate(messages[:-1]):
            following = messages[index + 1]
            if message.get("role") == "user" and following.get("role") == "assistant":
                if str(message.get("content", "")).strip() and str(following.get("content", "")).strip():
                    usable.append(EvalPrompt(prompt=message["content"], reference=following["content"]))
                break
    if len(usable) <= samples:
        return usable
    picked = sorted(random.Random(seed).sample(range(len(usable)), samples))
    return [usable[index] for index in picked]


def generation_parameters(settings: EvaluateSettings) -> ScoringParameters:
    # greedy: the same model gives the same answers, so a record can stand in for a deployment that is gone
    return ScoringParameters(do_sample=False, max_new_tokens=settings.max_new_tokens)


def fingerprint(prompts: Sequence[EvalPrompt], parameters: ScoringParameters) -> str:
    """What makes two sets of answers comparable: the same prompts (and references) under the same settings."""
    payload = json.dumps(
        {"prompts": [p.model_dump() for p in prompts], "parameters": parameters.model_dump()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@stage("answer prompts")
def answer_prompts(
    endpoints: ServingEndpoints,
    endpoint: str,
    deployment: str,
    prompts: list[EvalPrompt],
    parameters: ScoringParameters,
    timeout_s: float = 120,
) -> list[Answer]:
    """Every prompt answered by one deployment (named in the header, so one at 0% answers too), in batches where
    the endpoint takes several conversations at once. An HTTP error is an answer that failed, not a crash."""
    batch = max(1, min(BATCH, endpoints.batch_limit))
    found: list[Answer] = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        conversations = [[{"role": "user", "content": p.prompt}] for p in chunk]
        request = ScoringRequest(messages=conversations[0], more=conversations[1:], parameters=parameters)
        result = endpoints.invoke(endpoint, request, deployment=deployment, timeout_s=timeout_s)
        each = result.latency_ms / len(chunk)
        if result.error or result.output is None:
            found += [Answer(text=None, latency_ms=each, error=result.error or "no answer") for _ in chunk]
            continue
        texts = result.outputs if len(result.outputs) == len(chunk) else [result.output]
        if len(texts) != len(chunk):
            raise ValueError(
                f"{endpoint}/{deployment} answered {len(texts)} of {len(chunk)} conversations in one request"
            )
        found += [Answer(text=text, latency_ms=each) for text in texts]
    return found


@stage("find serving")
def find_serving(endpoints: ServingEndpoints, endpoint_names: list[str], model: str) -> tuple[str, str] | None:
    """(endpoint, deployment) of a running deployment that serves `model` ("name:version"), or None."""
    for name in endpoint_names:
        endpoint = endpoints.get(name)
        if endpoint is None or not endpoint.running:
            continue
        for deployment in endpoint.deployments:
            found = endpoints.get_deployment(name, deployment)
            if found is not None and found.model == model:
                return name, deployment
    return None


Judge = Callable[[str, str, str, str], float]
"""(prompt, reference, first answer, second answer) -> 1 (first better), 0.5 (tie) or 0 (second better)."""


def score(
    prompts: Sequence[EvalPrompt],
    candidate: AnswerSet,
    champion: AnswerSet | None,
    settings: EvaluateSettings,
    judge: Judge | None = None,
    judge_name: str | None = None,
    notes: Sequence[str] = (),
) -> Evaluation:
    """The numbers and the verdict (pure, but for the judge it may ask): degenerate rate, reference similarity,
    per-prompt preference as a win rate with its bootstrap interval, latencies; then the thresholds."""
    texts = [a.text for a in candidate.answers]
    rows, verdicts = [], []
    for index, prompt in enumerate(prompts):
        ours = texts[index]
        theirs = champion.answers[index].text if champion is not None else None
        verdict = None
        if champion is not None:
            verdict = answers.preference(ours, theirs, prompt.reference)
            both_reply = answers.degenerate_reason(ours) is None and answers.degenerate_reason(theirs) is None
            if judge is not None and both_reply:
                first = judge(prompt.prompt, prompt.reference, ours or "", theirs or "")
                second = 1.0 - judge(prompt.prompt, prompt.reference, theirs or "", ours or "")
                verdict = answers.judged(first, second)
            verdicts.append(verdict)
        rows.append(
            EvaluationRow(
                prompt=prompt.prompt,
                reference=prompt.reference,
                candidate=ours,
                champion=theirs,
                candidate_problem=answers.degenerate_reason(ours) or candidate.answers[index].error,
                champion_problem=(answers.degenerate_reason(theirs) or champion.answers[index].error)
                if champion is not None
                else None,
                verdict=VERDICT_WORDS[verdict] if verdict is not None else None,
            )
        )
    sets = {"candidate": candidate} | ({"champion": champion} if champion is not None else {})
    found = Evaluation(
        passed=False,
        samples=len(prompts),
        candidate=candidate.model,
        champion=champion.model if champion is not None else None,
        champion_source=champion.source if champion is not None else None,
        degenerate_rate={
            who: round(answers.degenerate_rate([a.text for a in s.answers]), 4) for who, s in sets.items()
        },
        similarity={who: round(mean_similarity(s.answers, prompts), 4) for who, s in sets.items()},
        latency_ms={who: latencies(s.answers) for who, s in sets.items() if s.source.startswith("deployment")},
        judge=judge_name if judge is not None else None,
        notes=list(notes),
        rows=rows,
    )
    if verdicts:
        low, high = answers.bootstrap_interval(verdicts, INTERVAL)
        found.win_rate, found.win_rate_ci = round(answers.win_rate(verdicts), 4), (round(low, 4), round(high, 4))
    found.failures = failures(found, settings)
    found.passed = not found.failures
    return found


VERDICT_WORDS = {answers.WIN: "win", answers.TIE: "tie", answers.LOSS: "loss"}


def failures(found: Evaluation, settings: EvaluateSettings) -> list[str]:
    """Every threshold the candidate misses, in words that name the setting; an evaluation that could not be made
    (no prompts) fails: closed, never passed by default."""
    if found.samples == 0:
        return ["no test_gen prompt with a reference reply to evaluate on"]
    said = []
    rate = found.degenerate_rate["candidate"]
    if rate > settings.max_degenerate_rate:
        said.append(
            f"{rate:.0%} of the candidate's answers are no reply (evaluate.max_degenerate_rate "
            f"{settings.max_degenerate_rate:.0%}); e.g. {first_problem(found)}"
        )
    close = found.similarity["candidate"]
    if close < settings.min_similarity:
        said.append(
            f"the candidate's answers are far from the reference replies: ROUGE-L {close:.3f} < "
            f"evaluate.min_similarity {settings.min_similarity:g}"
        )
    if found.win_rate_ci is not None and settings.min_win_rate > 0 and found.win_rate_ci[1] < settings.min_win_rate:
        said.append(
            f"the champion {found.champion} answers clearly better: win rate {found.win_rate:.2f} "
            f"(95% interval {found.win_rate_ci[0]:.2f}-{found.win_rate_ci[1]:.2f}) is below evaluate.min_win_rate "
            f"{settings.min_win_rate:g}"
        )
    return said


def first_problem(found: Evaluation) -> str:
    row = next((r for r in found.rows if r.candidate_problem), None)
    if row is None:
        return "-"
    return f"{row.candidate_problem}: {(row.candidate or '')[:60]!r}"


def latencies(found: Sequence[Answer]) -> dict[str, float]:
    values = [a.latency_ms for a in found]
    if not values:
        return {}
    return {"p50": round(answers.percentile(values, 50), 1), "p95": round(answers.percentile(values, 95), 1)}


def mean_similarity(found: Sequence[Answer], prompts: Sequence[EvalPrompt]) -> float:
    values = [answers.similarity(a.text, p.reference) for a, p in zip(found, prompts, strict=True)]
    return sum(values) / len(values) if values else 0.0


def clearly_better(found: Evaluation | None) -> bool:
    """The candidate answers better than the champion beyond chance: the lower end of its win rate's interval is
    above one half (what auto-if-better needs besides the loss)."""
    return found is not None and found.win_rate_ci is not None and found.win_rate_ci[0] > 0.5
