"""Deploy blue/green: the new deployment takes 0% until a smoke request through it succeeds; then it takes
100% and the old one retires. A failed smoke deletes the new deployment and leaves traffic as it was."""

from __future__ import annotations

import hashlib
import re
import time
from itertools import islice

from prefect.logging import get_run_logger
from pydantic import BaseModel

from data.runs import read_jsonl
from tasks.answers import degenerate_reason
from tasks.approval import REJECTED, is_approved
from tasks.errors import stage
from tasks.model import INFERENCE_ALLOW_LIST, allow_list
from tasks.settings import EndpointSettings, SmokeSettings
from workspaces.ports import (
    DEPLOYMENT_NAME_MAX,
    FoundationModel,
    ModelVersion,
    ScoreResult,
    ScoringRequest,
    ServingEndpoints,
    TransientWorkspaceError,
)


class DeploymentRefused(ValueError):
    """Deploy was asked for something it must not do."""


MAX_DEPLOYMENT_NAME = DEPLOYMENT_NAME_MAX  # the strictest service's rule, so a name is valid on every workspace


def deployment_name(prefix: str, model: ModelVersion) -> str:
    """One name per model name and version, the same every time: `<prefix><model>-<version>`; a model name too long
    for Azure's 32 characters is cut and followed by a hash of the whole name, so two long names never meet."""
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", model.name.lower())).strip("-") or "model"
    version = re.sub(r"[^a-z0-9]", "", model.version.lower()) or "0"
    name = f"{prefix}{slug}-{version}"
    if len(name) > MAX_DEPLOYMENT_NAME:
        digest = hashlib.sha256(model.name.encode()).hexdigest()[:6]
        room = MAX_DEPLOYMENT_NAME - len(prefix) - len(digest) - len(version) - 2
        if room < 1:  # a version too long to keep whole: hash name and version together
            digest = hashlib.sha256(f"{model.name}:{model.version}".encode()).hexdigest()[:12]
            return f"{prefix}{slug[: MAX_DEPLOYMENT_NAME - len(prefix) - len(digest) - 1].strip('-')}-{digest}"
        name = f"{prefix}{slug[:room].strip('-')}-{digest}-{version}"
    return name if name[0].isalpha() else f"d{name}"[:MAX_DEPLOYMENT_NAME]


def check_instance_type(instance_type: str, inference_allow_list: list[str] | None) -> None:
    # the notebook only prints a hint here; deploying to a size the model cannot serve on wastes an hour
    if inference_allow_list is not None and instance_type.lower() not in [x.lower() for x in inference_allow_list]:
        raise DeploymentRefused(
            f"endpoint.instance_type {instance_type} is not in the model's inference_compute_allow_list: "
            f"{inference_allow_list}"
        )


class DeployResult(BaseModel):
    endpoint: str
    deployment: str
    previous_traffic: dict[str, int]


@stage("deploy")
def deploy_candidate(
    endpoints: ServingEndpoints,
    settings: EndpointSettings,
    endpoint_name: str,
    model: ModelVersion,
    foundation: FoundationModel,
    ephemeral: bool = False,
    approved_first: bool = True,
) -> DeployResult:
    """The candidate next to what serves, at 0%. `approved_first`: only an approved version (approval.when
    before-deploy); otherwise one not yet decided may be deployed to be evaluated, and promote checks the approval.
    A rejected version is never deployed."""
    decision = model.tags.get("decision")
    if decision == REJECTED or (approved_first and not is_approved(model)):
        raise DeploymentRefused(
            f"{model.name}:{model.version} has no recorded approval (decision={decision!r}); not deploying"
        )
    check_instance_type(settings.instance_type, allow_list(foundation, INFERENCE_ALLOW_LIST))
    endpoint = endpoints.ensure(
        endpoint_name, description=f"Online endpoint for {model.name}, fine tuned by tunegate", ephemeral=ephemeral
    )
    name = deployment_name(settings.deployment_prefix, model)
    wanted = f"{model.name}:{model.version}"
    if name in endpoint.deployments:  # a retried task finds the deployment it made: only if it serves this model
        existing = endpoints.get_deployment(endpoint_name, name)
        if existing is None or existing.model != wanted:
            raise DeploymentRefused(
                f"deployment {endpoint_name}/{name} exists and serves {existing.model if existing else 'unknown'}, "
                f"not {wanted}; not smoke-testing or promoting another model under its name"
            )
    else:
        endpoints.create_deployment(endpoint_name, name, model, settings.instance_type, settings.instance_count)
    previous = {dep: pct for dep, pct in endpoint.traffic.items() if dep != name}
    if endpoint.traffic.get(name, 0) > 0:  # found again already serving this model: its traffic stays as it is
        get_run_logger().info(
            "deployment %s/%s serves %s already, at %s", endpoint_name, name, wanted, endpoint.traffic
        )
        return DeployResult(endpoint=endpoint_name, deployment=name, previous_traffic=dict(endpoint.traffic))
    endpoints.set_traffic(endpoint_name, {**previous, name: 0})
    get_run_logger().info(
        "deployment %s/%s created at 0%% traffic; live traffic stays %s", endpoint_name, name, previous
    )
    return DeployResult(endpoint=endpoint_name, deployment=name, previous_traffic=previous)


def smoke_messages(test_gen_path: str, samples: int) -> list[list[dict[str, str]]]:
    """The first user turn of the first `samples` rows of test_gen (as the notebook sends `messages[0]`)."""
    requests = []
    for row in islice(read_jsonl(test_gen_path), samples):
        first_user = next((m for m in row.get("messages") or [] if m.get("role") == "user"), None)
        if first_user is not None:  # sampling refuses rows without one; a file from elsewhere may still hold one
            requests.append([{"role": "user", "content": first_user["content"]}])
    return requests


class SmokeResult(BaseModel):
    ok: bool
    latency_ms: float | None
    requests: int
    error: str | None = None
    sample_output: str | None = None
    no_reply: list[str] = []  # answers that are no reply (tasks/answers.degenerate_reason), with why


# the gateway answers but the new deployment is not reachable yet (a fresh Azure scoring URI: 502 for a while)
NOT_YET_REACHABLE = frozenset({429, 502, 503, 504})


def invoke_until_reachable(
    endpoints: ServingEndpoints,
    deployed: DeployResult,
    request: ScoringRequest,
    settings: SmokeSettings,
    clock=time.monotonic,
    sleep=time.sleep,
) -> ScoreResult:
    """One smoke request, retried within smoke.timeout_s while the endpoint cannot be reached (no DNS name yet,
    refused connection, 502/503/504, throttled); any other answer, good or bad, is returned at once."""
    deadline = clock() + settings.timeout_s
    delay, attempts = 1.0, 0
    while True:
        attempts += 1
        try:
            result = endpoints.invoke(
                deployed.endpoint,
                request,
                deployment=deployed.deployment,
                timeout_s=max(1.0, deadline - clock()),
            )
            if result.status_code not in NOT_YET_REACHABLE:
                return result
            why = result.error
        except TransientWorkspaceError as exc:
            result, why = None, str(exc)
        if clock() + delay > deadline:
            return ScoreResult(
                status_code=result.status_code if result else 0,
                output=None,
                latency_ms=result.latency_ms if result else 0.0,
                error=f"{deployed.deployment} not reachable within smoke.timeout_s={settings.timeout_s:g} s "
                f"({attempts} attempts): {why}",
            )
        sleep(delay)
        delay = min(delay * 2, 10.0)


@stage("smoke invoke")
def smoke_invoke(
    endpoints: ServingEndpoints,
    deployed: DeployResult,
    settings: SmokeSettings,
    test_gen_path: str,
    fail_on_no_reply: bool = True,
) -> SmokeResult:
    """The smoke prompts through the new deployment: each must be answered, in time, with a reply (not a
    degenerate answer). `fail_on_no_reply` false: a degenerate answer is noted and left to the answer evaluation
    that follows (more prompts, greedy, a threshold), instead of failing on one sampled answer."""
    parameters = settings.scoring_parameters()
    no_reply: list[str] = []
    latencies: list[float] = []
    output = None
    requests = smoke_messages(test_gen_path, settings.samples)
    for messages in requests:
        result = invoke_until_reachable(
            endpoints, deployed, ScoringRequest(messages=messages, parameters=parameters), settings
        )
        if result.error:
            return SmokeResult(ok=False, latency_ms=result.latency_ms, requests=len(requests), error=result.error)
        if result.latency_ms > settings.max_latency_ms:
            return SmokeResult(
                ok=False,
                latency_ms=result.latency_ms,
                requests=len(requests),
                error=f"latency {result.latency_ms:.0f} ms > smoke.max_latency_ms {settings.max_latency_ms:.0f}",
            )
        problem = degenerate_reason(result.output)
        if problem is not None:  # an answer, but not a reply (tasks/answers.py)
            no_reply.append(f"{problem}: {(result.output or '')[:80]!r}")
            if fail_on_no_reply:
                return SmokeResult(
                    ok=False,
                    latency_ms=result.latency_ms,
                    requests=len(requests),
                    error=f"the answer is no reply ({no_reply[-1]})",
                    sample_output=(result.output or "")[:200],
                    no_reply=no_reply,
                )
        latencies.append(result.latency_ms)
        output = output or result.output
    worst = max(latencies)
    get_run_logger().info("smoke ok: %d request(s), worst latency %.0f ms", len(latencies), worst)
    if no_reply:
        get_run_logger().warning(
            "smoke: %d of %d answers are no reply (the evaluation decides): %s", len(no_reply), len(latencies), no_reply
        )
    return SmokeResult(
        ok=True,
        latency_ms=round(worst, 1),
        requests=len(latencies),
        sample_output=(output or "")[:200],
        no_reply=no_reply,
    )
