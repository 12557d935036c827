"""Chat flows (Prompt flow), beside the workspace: the smoke step's optional batch over a few prompts."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workspaces.ports.values import Value
from workspaces.scoring import Credentials, ScoringParameters


class ChatBatchRow(Value):
    question: str
    answer: str | None = None
    error: str | None = None


class ChatBatch(Value):
    """A batch run of the chat flow over a few prompts: one row per prompt, in order."""

    run: str  # the chat flow runner's name for the run (Prompt flow: `pf run show --name <run>`)
    status: str
    rows: tuple[ChatBatchRow, ...]
    outputs_at: str | None = None  # where the runner keeps the run's inputs, outputs and logs

    @property
    def failures(self) -> list[str]:
        failed = [f"{row.question[:60]!r}: {row.error}" for row in self.rows if row.answer is None]
        if self.status.lower() not in ("completed", "succeeded"):
            failed.insert(0, f"run {self.run} ended {self.status}")
        return failed


@runtime_checkable
class ChatFlows(Protocol):
    """Runs the chat flow (promptflows/chat) against an endpoint: the smoke step's optional batch."""

    def check(self) -> None:
        """WorkspaceError naming what to install or fix when batches cannot run here."""

    def batch(
        self,
        endpoint: str,
        credentials: Credentials,
        deployment: str | None,
        questions: list[str],
        parameters: ScoringParameters,
        workspace_kind: str,
    ) -> ChatBatch: ...
