"""The evaluation phase: after the smoke test, before anyone decides or anything takes traffic, the candidate (at 0%)
and the champion answer the same held-out prompts; the scores gate the release (tasks/evaluation.py).

A failed evaluation deletes the candidate, leaves traffic as it was and ends the run as `evaluation_failed`.
"""

from __future__ import annotations

from prefect.logging import get_run_logger

from flows.run import Run, RunStatus, RunStopped
from tasks import evaluation
from tasks.evaluation import AnswerSet, EvalPrompt, Evaluation, EvaluationRecord
from workspaces.factory import open_judge
from workspaces.ports import ModelVersion, ScoringParameters


def evaluate_answers(run: Run) -> None:
    deployed, candidate, settings = run.deployed, run.candidate_(), run.config.evaluate
    if deployed is None or candidate.already_champion or not settings.enabled:
        return  # nothing new serves (the champion is this job's), or the profile turned it off
    endpoints = run.workspace.endpoints
    test_gen = run.prepared_().sampled.files["test_gen"]
    prompts = evaluation.evaluation_prompts(test_gen, settings.samples, settings.seed)
    parameters = evaluation.generation_parameters(settings)
    fingerprint = evaluation.fingerprint(prompts, parameters)
    ours = run.stage("answer_prompts", endpoints, deployed.endpoint, deployed.deployment, prompts, parameters)
    candidate_id = f"{candidate.version.name}:{candidate.version.version}"
    answered = AnswerSet(
        model=candidate_id, source=f"deployment {deployed.endpoint}/{deployed.deployment}", answers=ours
    )
    remember(run, EvaluationRecord(model=candidate_id, fingerprint=fingerprint, answers=ours))
    champion, notes = champion_answers(run, candidate.champion, prompts, parameters, fingerprint)
    if len(prompts) < settings.samples:
        notes.insert(0, f"{len(prompts)} of the {settings.samples} prompts asked: test_gen holds no more with a reply")
    judge = None
    if settings.judge and settings.judge_url and settings.judge_model:
        judge = open_judge(settings.judge_url, settings.judge_model, settings.judge_key_block)
    found = evaluation.score(prompts, answered, champion, settings, judge, settings.judge_model, notes)
    found = log_in_registry(run, candidate.version, found)
    found = run.stage("record_evaluation", found)
    run.evaluation = found
    if not found.passed:
        run.stage("roll_back", endpoints, deployed)
        run.deployed = None
        raise RunStopped(
            RunStatus.EVALUATION_FAILED,
            f"Evaluation failed, {deployed.deployment} deleted: " + "; ".join(found.failures),
        )


def champion_answers(
    run: Run,
    champion: ModelVersion | None,
    prompts: list[EvalPrompt],
    parameters: ScoringParameters,
    fingerprint: str,
) -> tuple[AnswerSet | None, list[str]]:
    """The champion's answers to these prompts: from a deployment that serves it (this run's endpoint, then the kept
    one an ephemeral run stands beside), else from its own record of exactly these prompts and settings."""
    if champion is None:
        return None, ["no champion yet: the candidate is judged on its own answers"]
    champion_id = f"{champion.name}:{champion.version}"
    endpoints = run.workspace.endpoints
    names = list(dict.fromkeys([run.endpoint_name, run.config.endpoint.name]))
    where = run.stage("find_serving", endpoints, names, champion_id)
    if where is not None:
        endpoint, deployment = where
        theirs = run.stage("answer_prompts", endpoints, endpoint, deployment, prompts, parameters)
        remember(run, EvaluationRecord(model=champion_id, fingerprint=fingerprint, answers=theirs))
        return AnswerSet(model=champion_id, source=f"deployment {endpoint}/{deployment}", answers=theirs), []
    record = recalled(run, champion_id)
    if record is not None and record.fingerprint == fingerprint:
        return AnswerSet(model=champion_id, source="its evaluation record", answers=record.answers), []
    why = "its record is of other prompts or settings" if record is not None else "it has no evaluation record"
    note = f"champion {champion_id} serves on none of {', '.join(names)} and {why}: no side-by-side comparison"
    get_run_logger().warning(note)
    return None, [note]


def remember(run: Run, record: EvaluationRecord) -> None:
    """A model's answers kept for the next run that compares with it (when it no longer serves)."""
    try:
        run.store.write_evaluation(record.model, record.model_dump())
    except OSError as exc:  # a convenience for later runs; this one has its answers
        get_run_logger().warning("could not keep the evaluation answers of %s: %s", record.model, exc)


def recalled(run: Run, model: str) -> EvaluationRecord | None:
    found = run.store.read_evaluation(model)
    if found is None:
        return None
    try:
        return EvaluationRecord.model_validate(found)
    except ValueError:  # damaged or of another version of tunegate: not evidence
        get_run_logger().warning("the evaluation record of %s cannot be read: not used", model)
        return None


def log_in_registry(run: Run, version: ModelVersion, found: Evaluation) -> Evaluation:
    """Scores and answers with the model's training run; a registry that cannot take them now is said in the
    evaluation's notes, and the release goes on (the run's artifact and summary have them)."""
    try:
        where = run.stage("log_evaluation", run.workspace.registry, version, found)
    except Exception as exc:  # noqa: BLE001 - a record for people; the evaluation itself is made
        get_run_logger().warning("the evaluation is not recorded in the registry: %s", exc)
        return found.model_copy(update={"notes": [*found.notes, f"not recorded in the registry: {exc}"]})
    if where:
        return found.model_copy(update={"notes": [*found.notes, f"scores and answers recorded at {where}"]})
    return found
