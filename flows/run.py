"""One run's context: what every phase of the flow (flows/phases.py) works with, and what it has created so far.

A phase is a function of a `Run`; it calls stages through `run.stage(...)`, which feeds each stage's result to the
summary in one place (`RunSummary.observe`), so no phase writes summary fields by hand.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect.logging import get_run_logger

from data.runs import RunStore
from flows.params import TunegateConfig
from flows.results import Candidate, Prepared, Trained
from flows.stages import Stages
from flows.summary import RunStatus, RunSummary
from tasks.deploy import DeployResult
from tasks.evaluation import Evaluation
from tasks.gate import GateResult
from tasks.rollout import Rollout
from workspaces.ports import JobRef, ModelVersion, Workspace, WorkspaceError

T = TypeVar("T")


class RunStopped(Exception):
    """The run ended early on purpose (gate failed, rejected, smoke failed); the message says why. Not a crash: the
    flow run ends in a Failed state named after the outcome, with this message and no traceback."""

    def __init__(self, status: RunStatus, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def state_name(self) -> str:
        return DELIBERATE_ENDS[self.status]


DELIBERATE_ENDS = {
    RunStatus.GATE_FAILED: "Gate failed",
    RunStatus.REJECTED: "Rejected",
    RunStatus.SMOKE_FAILED: "Smoke failed",
    RunStatus.EVALUATION_FAILED: "Evaluation failed",
    RunStatus.ROLLED_BACK: "Rolled back",
}  # RunStopped.state_name, the start of its message


@dataclass
class RunState:
    """What this run created so far: what teardown has to take down."""

    endpoint: str | None = None
    deployment: str | None = None


def endpoint_name_for(config: TunegateConfig, run_id: str) -> str:
    # ephemeral runs get their own endpoint, as the notebook appends a timestamp: never touches a live one
    if config.teardown.mode == "ephemeral":
        return f"{config.endpoint.name}-{run_id.replace('-', '')[:8]}".lower()
    return config.endpoint.name


@dataclass
class Run:
    config: TunegateConfig
    stages: Stages
    workspace: Workspace
    store: RunStore
    summary: RunSummary
    run_id: str
    state: RunState = field(default_factory=RunState)
    # what the phases found so far, in order
    prepared: Prepared | None = None
    trained: Trained | None = None
    candidate: Candidate | None = None
    deployed: DeployResult | None = None  # the smoked candidate at 0%, until promote
    evaluation: Evaluation | None = None  # its answers judged (evaluate_answers), for the decision after it
    rollout: Rollout | None = None  # its steps on live traffic (roll_out), until promote
    # what a phase holds for the ones after it (the endpoint lock from deploy to promote); released at the latest
    # when the run ends, before teardown
    held: ExitStack = field(default_factory=ExitStack)

    def hold(self, context: AbstractContextManager[Any]) -> None:
        self.held.enter_context(context)

    def release_held(self) -> None:
        self.held.close()

    def prepared_(self) -> Prepared:
        return _after(self.prepared, "prepare_data")

    def trained_(self) -> Trained:
        return _after(self.trained, "train")

    def candidate_(self) -> Candidate:
        return _after(self.candidate, "check_and_register")

    @property
    def keep(self) -> bool:
        """The endpoint outlives the run (a shared, live endpoint), as opposed to one of its own."""
        return self.config.teardown.mode == "keep"

    @property
    def endpoint_name(self) -> str:
        return endpoint_name_for(self.config, self.run_id)

    @property
    def registered_name(self) -> str:
        return self.config.model.registered_name()

    def stage(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a stage (a retried task) and let the summary record what it returned."""
        result = getattr(self.stages, name)(*args, **kwargs)
        self.summary.observe(name, result)
        return result

    def observe(self, name: str, result: Any) -> None:
        """Something a phase found that is not one stage's return value (the summary's one entry point too)."""
        self.summary.observe(name, result)

    def gate(self, champion: ModelVersion | None, champion_error: str | None, evaluated: str | None) -> GateResult:
        """The metric gate against `champion` (as champion_or_error gave it); the job evaluated `evaluated`."""
        return self.stage(
            "check_metrics",
            self.workspace.jobs,
            self.trained_().job,
            self.config.gate,
            champion,
            champion_error=champion_error,
            eval_fingerprint=self.prepared_().sampled.eval_fingerprint,
            evaluated_champion=evaluated,
        )

    def champion_or_error(self) -> tuple[ModelVersion | None, str | None]:
        """(champion, None), or (None, why) when it could not be read after the stage's retries: the gate fails
        closed on that; never mistaken for "no champion"."""
        try:
            return self.stages.read_champion(self.workspace.registry, self.registered_name), None
        except WorkspaceError as exc:
            get_run_logger().warning("could not read the champion of %s: %s", self.registered_name, exc)
            return None, f"{type(exc).__name__}: {exc}"

    def note_links(
        self, job: JobRef | None = None, model: ModelVersion | None = None, endpoint: str | None = None
    ) -> None:
        """Pages for the summary; a workspace that cannot make one now is not a reason to stop the run."""
        try:
            self.summary.record_links(self.workspace.links(job=job, model=model, endpoint=endpoint))
        except Exception as exc:  # noqa: BLE001 - links are a convenience
            get_run_logger().info("could not make links for the run summary: %s", exc)


def _after(value: T | None, phase: str) -> T:
    if value is None:
        raise RuntimeError(f"a phase ran before {phase}, whose result it needs")
    return value
