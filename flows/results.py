"""What each phase of the flow leaves on the run for the next ones (flows/phases.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.compute import ValidatedCompute
from tasks.gate import GateResult
from tasks.sampling import SampledData
from workspaces.ports import DataRef, FinetuneSpec, FoundationModel, JobRef, ModelVersion


@dataclass(frozen=True)
class Prepared:
    """prepare_data: the sampled files, the foundation model, the compute, and the files where a job reads them."""

    sampled: SampledData
    foundation: FoundationModel
    compute: ValidatedCompute
    data: DataRef


@dataclass(frozen=True)
class Trained:
    """train: the finished job, what it was asked to do, which champion it evaluated, and its loss curve."""

    job: JobRef
    spec: FinetuneSpec
    evaluated_champion: str | None  # "name:version" of the champion the job re-evaluated on its split
    loss_curve: bytes | None = None


@dataclass(frozen=True)
class Candidate:
    """check_and_register: the model version that passed the gate (and, after decide, its recorded decision)."""

    gate: GateResult
    version: ModelVersion
    champion: ModelVersion | None  # what the gate compared with
    # the champion is this job's own model (an earlier run promoted it): nothing to register or decide
    already_champion: bool = False
