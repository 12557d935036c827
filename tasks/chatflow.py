"""Smoke through Prompt flow (`smoke.promptflow: true`): the smoke prompts once more, as one batch run of the chat
flow against the new deployment, so that reviewers see prompts and answers side by side and the Prompt flow path
is known to work before the deployment takes traffic. The runner (workspaces/promptflow.py) does the I/O."""

from __future__ import annotations

from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from tasks.deploy import DeployResult, smoke_messages
from tasks.errors import is_transient, stage
from tasks.settings import SmokeSettings
from workspaces.ports import ChatBatch, ChatBatchRow, ChatFlows, ServingEndpoints, WorkspaceError

ARTIFACT_KEY = "promptflow-batch"
ANSWER_CHARS = 500  # a table cell, not a transcript: the runner keeps every answer in full


class ChatFlowSmoke(BaseModel):
    ok: bool
    run: str | None = None
    rows: list[ChatBatchRow] = Field(default_factory=list)
    outputs_at: str | None = None
    error: str | None = None


def smoke_questions(test_gen_path: str, samples: int) -> list[str]:
    """The prompts the smoke request sends (the first user turn of the first rows of test_gen)."""
    return [messages[0]["content"] for messages in smoke_messages(test_gen_path, samples)]


def table_rows(batch: ChatBatch) -> list[dict[str, str]]:
    """The artifact's table: one row per prompt, in order; an unanswered prompt says why."""

    def clip(text: str) -> str:
        return text if len(text) <= ANSWER_CHARS else text[: ANSWER_CHARS - 1] + "…"

    return [
        {
            "prompt": clip(row.question),
            "answer": clip(row.answer) if row.answer is not None else "",
            "error": clip(row.error or "") if row.answer is None else "",
        }
        for row in batch.rows
    ]


def outcome(batch: ChatBatch) -> ChatFlowSmoke:
    failures = batch.failures
    return ChatFlowSmoke(
        ok=not failures,
        run=batch.run,
        rows=list(batch.rows),
        outputs_at=batch.outputs_at,
        error="; ".join(failures[:3]) + (f" (+{len(failures) - 3} more)" if len(failures) > 3 else "") or None,
    )


@stage("smoke through prompt flow")
def smoke_promptflow(
    chat_flows: ChatFlows,
    endpoints: ServingEndpoints,
    workspace_kind: str,
    deployed: DeployResult,
    settings: SmokeSettings,
    test_gen_path: str,
) -> ChatFlowSmoke:
    from prefect.artifacts import create_table_artifact

    questions = smoke_questions(test_gen_path, settings.samples)
    try:
        batch = chat_flows.batch(
            deployed.endpoint,
            endpoints.credentials(deployed.endpoint),
            deployed.deployment,
            questions,
            settings.scoring_parameters(),
            workspace_kind,
        )
    except WorkspaceError as exc:
        if is_transient(exc):
            raise
        return ChatFlowSmoke(ok=False, error=str(exc))
    result = outcome(batch)
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=table_rows(batch),
        description=f"Prompt flow batch run {batch.run} through {deployed.endpoint}/{deployed.deployment}"
        + (f"; inputs, outputs and logs in {batch.outputs_at}" if batch.outputs_at else ""),
    )
    log = get_run_logger()
    if result.ok:
        log.info("prompt flow batch %s: %d prompt(s) answered", batch.run, len(batch.rows))
    else:
        log.warning("prompt flow batch %s: %s", batch.run, result.error)
    return result
