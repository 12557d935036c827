"""The Workspace port, split by role: what the flow needs from a place that trains, registers and serves models.

    registry.py   ModelRegistry     foundation models, registered versions, the champion label   (models.py)
    compute.py    ComputeTargets    the training cluster, the sizes on offer
    data.py       DataStore         the sampled files, where a job can read them
    jobs.py       TrainingJobs      submit, find again, follow, measure
    serving.py    ServingEndpoints  endpoints, deployments, traffic, scoring
    workspace.py  Workspace         the typed bundle of those roles, links, inventory
    chat.py       ChatFlows         the chat flow runner beside the workspace (Prompt flow)

Adapters (workspaces/local, workspaces/azure, the in-memory fake in tests/) implement the roles; tasks only talk
to these protocols and value types. The port offers primitives; the policies built on them (re-attach or
resubmit, idempotent registration) live once, in tasks/. Errors are transient (worth a retry) or permanent, so
the retry condition decides without knowing which backend raised. tests/contract/ states what every adapter
must do, role by role.
"""

from workspaces.errors import (
    RETRYABLE_STATUS,
    ConflictError,
    InvalidNameError,
    MetricsNotFound,
    NotFoundError,
    TransientWorkspaceError,
    WorkspaceError,
)
from workspaces.ports.chat import ChatBatch, ChatBatchRow, ChatFlows
from workspaces.ports.compute import Compute, ComputeSpec, ComputeTargets, Sku
from workspaces.ports.data import DataRef, DataStore
from workspaces.ports.jobs import (
    FinetuneSpec,
    JobInfo,
    JobProgress,
    JobRef,
    JobState,
    JobStatus,
    LossHistory,
    TrainingJobs,
    parameter_bool,
    per_step,
)
from workspaces.ports.models import FoundationModel, ModelVersion
from workspaces.ports.registry import ModelImports, ModelRegistry
from workspaces.ports.serving import (
    DEPLOYMENT_NAME_MAX,
    Deployment,
    DeploymentTraffic,
    Endpoint,
    ServingBase,
    ServingEndpoints,
    TrafficReading,
)
from workspaces.ports.workspace import Inventory, Workspace
from workspaces.scoring import Credentials, ScoreResult, ScoringParameters, ScoringRequest

__all__ = [
    "DEPLOYMENT_NAME_MAX",
    "RETRYABLE_STATUS",
    "ChatBatch",
    "ChatBatchRow",
    "ChatFlows",
    "Compute",
    "ComputeSpec",
    "ComputeTargets",
    "ConflictError",
    "Credentials",
    "DataRef",
    "DataStore",
    "Deployment",
    "DeploymentTraffic",
    "Endpoint",
    "FinetuneSpec",
    "FoundationModel",
    "InvalidNameError",
    "Inventory",
    "JobInfo",
    "JobProgress",
    "JobRef",
    "JobState",
    "JobStatus",
    "LossHistory",
    "MetricsNotFound",
    "ModelImports",
    "ModelRegistry",
    "ModelVersion",
    "NotFoundError",
    "ScoreResult",
    "ServingBase",
    "ScoringParameters",
    "ScoringRequest",
    "ServingEndpoints",
    "Sku",
    "TrafficReading",
    "TrainingJobs",
    "TransientWorkspaceError",
    "Workspace",
    "WorkspaceError",
    "parameter_bool",
    "per_step",
]
