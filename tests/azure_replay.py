"""An HTTP-level replay of Azure ML for the real azure-ai-ml SDK, built from the official REST examples.

`FakeAzureML` answers, through `responses` (requests-level), what the SDK sends to management.azure.com and the
registry front end. Response bodies start from the official examples in tests/fixtures/azureml/rest-examples
(compute get, VM sizes, online endpoint/deployment create and delete, pipeline job get), copied and patched with
the names the flow uses; what the examples lack (GPU sizes, registry discovery, registry model and component,
job create, model create, endpoint keys, LRO status) is added here in the same shapes. State is kept, so a
created endpoint is there on the next GET, a deleted one is gone.

Every request is recorded in `calls` (method, path, json body) for assertions. A request nothing here answers
fails the test with its URL, instead of passing silently.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses
from azure.core.credentials import AccessToken, AccessTokenInfo

# copied into the repository (see fixtures/azureml/README.md for where each file comes from)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "azureml"
EXAMPLES = FIXTURES / "rest-examples"

SUB, RG, WS = "00000000-1111-2222-3333-444444444444", "test-rg", "my-aml-workspace"
REG_SUB, REG_RG = "reg-sub-0000", "registry-rg"
ARM = "https://management.azure.com"
REGISTRY_HOST = "https://eastus.api.azureml.ms"
WS_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
REG_PATH = (
    f"/mferp/managementfrontend/subscriptions/{REG_SUB}/resourceGroups/{REG_RG}"
    "/providers/Microsoft.MachineLearningServices/registries/azureml"
)
ENDPOINT_KEY = "replayed-primary-key-do-not-log"
BLOB_CONTAINER = "https://replayacct.blob.core.windows.net/azureml-blobstore"

FOUNDATION_TAGS = {
    "finetune_compute_allow_list": "['Standard_NC24ads_A100_v4', 'Standard_NC48ads_A100_v4', 'Standard_ND96asr_v4']",
    "inference_compute_allow_list": "['Standard_NC6s_v3', 'Standard_NC24ads_A100_v4']",
    "model_specific_defaults": (
        "{'apply_deepspeed': 'true', 'deepspeed_stage': 2, 'apply_lora': 'true', 'max_seq_length': 2048}"
    ),
}


def _fake_jwt(scopes: tuple[str, ...] = ()) -> str:
    # the SDK decodes the token's claims (unverified) when it submits a pipeline job: give it a JWT's shape
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    audience = scopes[0].removesuffix("/.default") if scopes else "https://management.azure.com"
    claims = {
        "aud": audience,
        "exp": int(time.time()) + 3600,
        "oid": "0000-replay",
        "tid": "tenant-replay",
        "upn": "replay@example.com",
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


class FakeCredential:
    """A token credential that never leaves the machine."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(_fake_jwt(scopes), int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(_fake_jwt(scopes), int(time.time()) + 3600)


def example(name: str, status: str = "200") -> dict:
    return copy.deepcopy(json.loads((EXAMPLES / name).read_text())["responses"][status]["body"])


def system_data() -> dict:
    return {
        "createdAt": "2026-11-01T12:00:00Z",
        "createdBy": "tunegate",
        "createdByType": "User",
        "lastModifiedAt": "2026-11-01T12:00:00Z",
        "lastModifiedBy": "tunegate",
        "lastModifiedByType": "User",
    }


class FakeAzureML:
    def __init__(self, rsps: responses.RequestsMock, scoring_uri: str, component_spec: Path | None = None) -> None:
        self.rsps = rsps
        self.scoring_uri = scoring_uri
        self.calls: list[dict] = []
        self.faults: dict[str, list[int]] = {}  # "METHOD path-regex" -> status codes to answer first
        self.compute_size = "Standard_NC24ads_A100_v4"
        self.compute_exists = True
        self.compute_state = "Succeeded"
        self.foundation_tags = dict(FOUNDATION_TAGS)
        self.registry_models = {"Phi-3-mini-4k-instruct", "Phi-3-medium-4k-instruct"}
        self.job_status_sequence = ["Running", "Completed"]
        self.jobs: dict[str, dict] = {}
        self.models: dict[str, dict[str, dict]] = {}
        self.endpoints: dict[str, dict] = {}
        self.deployments: dict[str, dict[str, dict]] = {}
        self.served: dict[str, list[tuple[int, int, float]]] = {}
        self.scoring: Any = None  # a tests.fakes.ScoringServer: the metrics count what it answered
        self.metrics_lag_s = 0.0  # deployment -> per minute (requests, errors, p95)
        self.finetune_metrics = {"train_loss": 1.31, "eval_loss": 1.42, "loss": 1.25, "epoch": 3.0}
        # per-step values the finetune step's run logged (HF Trainer's MLflow callback): key -> [(step, value)]
        self.finetune_history: dict[str, list[tuple[int, float]]] = {
            "loss": [(step, 2.0 - step / 100) for step in range(10, 101, 10)],
            "eval_loss": [(50, 1.6), (100, 1.42)],
        }
        self.run_tree_shape = "nested"  # "flat": steps as direct children of the job's run (an older shape)
        self.rival_registrations = 0  # PUTs of a new model version that another run beats to the same number
        self.run_artifacts: dict[str, list[str]] = {}  # run id -> artifact paths (command jobs log their model)
        self.run_errors: dict[str, str] = {}  # step name -> the error its run history reports
        self.component_spec = component_spec or FIXTURES / "chat_completion_pipeline.spec.yaml"
        self._routes()

    # ------------------------------------------------------------------ plumbing
    def _routes(self) -> None:
        for method in (responses.GET, responses.PUT, responses.POST, responses.DELETE, responses.PATCH, responses.HEAD):
            self.rsps.add_callback(method, re.compile(r"https://.*"), callback=self._dispatch)

    def _dispatch(self, request) -> tuple[int, dict, str]:
        url = urlparse(request.url)
        body = None
        if request.body:
            raw = request.body.decode() if isinstance(request.body, bytes) else request.body
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        call = {
            "method": request.method,
            "host": url.netloc,
            "path": url.path,
            "query": parse_qs(url.query),
            "json": body,
        }
        self.calls.append(call)
        for key, codes in self.faults.items():
            method, pattern = key.split(" ", 1)
            if codes and method == request.method and re.search(pattern, url.path):
                code = codes.pop(0)
                return (
                    code,
                    {"x-ms-error-code": "Injected", "Retry-After": "0"},
                    json.dumps(
                        {
                            "error": {
                                "code": "Injected" if code != 429 else "TooManyRequests",
                                "message": f"injected {code}",
                            }
                        }
                    ),
                )
        if url.netloc.endswith(".blob.core.windows.net"):
            return self.blob(call, request)
        if "/api/2.0/mlflow/" in url.path:
            return self.mlflow(call, request)
        for method, pattern, handler in self._table():
            if method == request.method and (match := re.fullmatch(pattern, url.path)):
                status, payload, *headers = handler(call, **match.groupdict())
                return (
                    status,
                    {"Content-Type": "application/json", **(headers[0] if headers else {})},
                    json.dumps(payload),
                )
        raise AssertionError(f"the Azure replay has no answer for {request.method} {request.url}")

    def _table(self):
        w, r = re.escape(WS_PATH), re.escape(REG_PATH)
        return [
            ("GET", r"/registrymanagement/v1.0/registries/(?P<name>[^/]+)/discovery", self.discovery),
            ("GET", rf"{r}/models/(?P<name>[^/]+)/versions", self.registry_model_versions),
            ("GET", rf"{r}/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.registry_model),
            ("GET", rf"{r}/components/(?P<name>[^/]+)/versions", self.registry_component_versions),
            ("GET", rf"{r}/components/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.registry_component),
            ("GET", w, self.workspace),
            ("GET", rf"{w}/computes/(?P<name>[^/]+)", self.compute_get),
            ("PUT", rf"{w}/computes/(?P<name>[^/]+)", self.compute_put),
            (
                "GET",
                rf"/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/(?P<loc>[^/]+)/vmSizes",
                self.vm_sizes,
            ),
            ("GET", rf"{w}/jobs", self.job_list),
            ("GET", rf"{w}/jobs/(?P<name>[^/]+)", self.job_get),
            ("GET", r"/discovery", self.workspace_discovery),
            ("GET", rf"/history/v1\.0{w}/runs/(?P<run_id>[^/]+)/children", self.run_children),
            ("GET", rf"/history/v1\.0{w}/runs/(?P<run_id>[^/]+)/details", self.run_details),
            (
                "GET",
                rf"/history/v1\.0{w}/experiments/(?P<experiment>[^/]+)/runs/(?P<run_id>[^/]+)/artifacts",
                self.run_artifact_list,
            ),
            ("PUT", rf"{w}/jobs/(?P<name>[^/]+)", self.job_put),
            ("POST", rf"{w}/jobs/(?P<name>[^/]+)/cancel", self.job_cancel),
            ("GET", rf"{w}/models/(?P<name>[^/]+)/versions", self.model_list),
            ("GET", rf"{w}/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.model_get),
            ("PUT", rf"{w}/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.model_put),
            ("PUT", rf"{w}/models/(?P<name>[^/]+)", self.model_container_put),
            ("GET", rf"{w}/models/(?P<name>[^/]+)", self.model_container_get),
            ("GET", rf"{w}/onlineEndpoints", self.endpoint_list),
            ("GET", rf"{w}/onlineEndpoints/(?P<name>[^/]+)", self.endpoint_get),
            ("PUT", rf"{w}/onlineEndpoints/(?P<name>[^/]+)", self.endpoint_put),
            ("PATCH", rf"{w}/onlineEndpoints/(?P<name>[^/]+)", self.endpoint_put),
            ("DELETE", rf"{w}/onlineEndpoints/(?P<name>[^/]+)", self.endpoint_delete),
            ("POST", rf"{w}/onlineEndpoints/(?P<name>[^/]+)/listKeys", self.endpoint_keys),
            ("GET", rf"{w}/onlineEndpoints/(?P<endpoint>[^/]+)/deployments", self.deployment_list),
            ("GET", rf"{w}/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)", self.deployment_get),
            ("PUT", rf"{w}/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)", self.deployment_put),
            ("DELETE", rf"{w}/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)", self.deployment_delete),
            ("GET", r"/operations/(?P<op>[^/]+)", self.operation),
            ("GET", rf"{w}/datastores/(?P<name>[^/]+)", self.datastore),
            ("GET", rf"{w}/environments/(?P<name>[^/]+)/versions", self.environment_versions),
            ("GET", rf"{w}/environments/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.environment),
            ("GET", rf"{w}/codes/(?P<name>[^/]+)/versions", self.code_list),
            ("GET", rf"{w}/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.code_get),
            ("PUT", rf"{w}/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.code_put),
            (
                "POST",
                rf"{w}/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload",
                self.code_pending_upload,
            ),
            ("POST", rf"{w}/datastores/(?P<name>[^/]+)/listSecrets", self.datastore_secrets),
            (
                "GET",
                rf"{w}/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)/providers/"
                r"(?i:microsoft\.insights)/metrics",
                self.deployment_metrics,
            ),
        ]

    def deployment_metrics(self, call, endpoint, name):
        """Azure Monitor's metrics of one deployment (REST: Metrics - List), from `self.served`: what the test says
        each deployment served per minute, {deployment: [(requests, errors, p95 ms)]}. Strict as the service:
        the metric names, interval and aggregation the adapter needs are checked."""
        query = {key: values[0] for key, values in call["query"].items()}
        if name not in self.deployments.get(endpoint, {}):
            return 404, {"error": {"code": "ResourceNotFound", "message": f"deployment {endpoint}/{name} not found"}}
        names = query.get("metricnames", "").split(",")
        if not set(names) <= {"RequestsPerMinute", "RequestLatency_P95"} or "timespan" not in query:
            return 400, {"error": {"code": "BadRequest", "message": f"unknown metrics or no timespan: {query}"}}
        if query.get("interval") != "PT1M" or query.get("aggregation", "").lower() != "average":
            return 400, {"error": {"code": "BadRequest", "message": f"interval/aggregation not supported: {query}"}}
        minutes = self.served.get(name) or self._served_from_scoring(endpoint, name, query["timespan"])
        start = "2026-12-01T10:%02d:00Z"
        metrics = []
        for metric in names:
            if metric == "RequestsPerMinute":
                series = [
                    {
                        "metadatavalues": [{"name": {"value": "envoy_response_code"}, "value": code}],
                        "data": [
                            {"timeStamp": start % i, "average": float(count)} for i, count in enumerate(counts) if count
                        ],
                    }
                    for code, counts in (
                        ("200", [ok - bad for ok, bad, _ in minutes]),
                        ("503", [bad for _, bad, _ in minutes]),
                    )
                ]
                unit = "Count"
            else:
                series = [
                    {
                        "metadatavalues": [],
                        "data": [{"timeStamp": start % i, "average": p} for i, (*_, p) in enumerate(minutes)],
                    }
                ]
                unit = "MilliSeconds"
            metrics.append(
                {
                    "id": f"{call['path']}/{metric}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": metric, "localizedValue": metric},
                    "unit": unit,
                    "timeseries": series,
                    "errorCode": "Success",
                }
            )
        return 200, {
            "cost": 0,
            "timespan": query["timespan"],
            "interval": "PT1M",
            "value": metrics,
            "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
            "resourceregion": "eastus",
        }

    def _served_from_scoring(self, endpoint: str, name: str, timespan: str) -> list[tuple[int, int, float]]:
        """What the loopback scoring server answered for `name` within the timespan, as one minute: requests with
        its deployment header, and those without one as the endpoint's split would route them (all to the largest
        share; the mirrored deployment a copy of every n-th for its share). Nothing newer than `metrics_lag_s`:
        Azure Monitor publishes a minute's numbers minutes late."""
        if self.scoring is None:
            return []
        start, end = (datetime.fromisoformat(part.replace("Z", "+00:00")).timestamp() for part in timespan.split("/"))
        end = min(end, time.time() - self.metrics_lag_s)
        properties = self.endpoints.get(endpoint, {}).get("properties", {})
        traffic, mirror = properties.get("traffic") or {}, properties.get("mirrorTraffic") or {}
        busiest = max(traffic, key=lambda d: int(traffic[d]), default=None) if any(traffic.values()) else None
        targeted = [r for r in self.scoring.requests if start <= r["at"] <= end and r["deployment"] == name]
        split = [r for r in self.scoring.requests if start <= r["at"] <= end and r["deployment"] is None]
        count = len(targeted) + (len(split) if name == busiest else 0)
        if name in mirror:
            count += len(split) * int(mirror[name]) // 100
        errors = sum(1 for r in targeted if r.get("status", 200) >= 500)
        return [(count, errors, 120.0)] if count else []

    def requests(self, method: str, path_regex: str) -> list[dict]:
        return [c for c in self.calls if c["method"] == method and re.search(path_regex, c["path"])]

    @staticmethod
    def _lro_headers() -> dict:
        # long-running operations: status at an Azure-AsyncOperation URL, polled at once
        return {"Azure-AsyncOperation": f"{ARM}/operations/op-{time.time_ns()}", "Retry-After": "0"}

    def operation(self, call, op):
        return 200, {"status": "Succeeded"}

    # ------------------------------------------------------------------ registry
    def discovery(self, call, name):
        return 200, {
            "registryName": name,
            "primaryRegionResourceProviderUri": f"{REGISTRY_HOST}/",
            "subscriptionId": REG_SUB,
            "resourceGroup": REG_RG,
            "primaryRegion": "eastus",
            "regions": ["eastus"],
        }

    def _registry_model_body(self, name: str, version: str) -> dict:
        return {
            "id": f"azureml://registries/azureml/models/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/registries/models/versions",
            "properties": {
                "modelType": "mlflow_model",
                "modelUri": f"azureml://registries/azureml/models/{name}/versions/{version}",
                "description": f"{name} foundation model",
                "tags": dict(self.foundation_tags),
                "properties": {},
                "flavors": {
                    "python_function": {"data": {"loader_module": "mlflow.transformers"}},
                    "transformers": {"data": {"task": "chat-completion"}},
                },
                "isArchived": False,
            },
            "systemData": system_data(),
        }

    def registry_model_versions(self, call, name):
        if name not in self.registry_models:
            return 200, {"value": []}
        return 200, {"value": [self._registry_model_body(name, "7")]}

    def registry_model(self, call, name, version):
        if name not in self.registry_models:
            return 404, {"error": {"code": "UserError", "message": f"model {name} not found in registry azureml"}}
        return 200, self._registry_model_body(name, version)

    def _registry_component_body(self) -> dict:
        from azure.ai.ml import load_component

        component = load_component(source=str(self.component_spec))
        rest = json.loads(json.dumps(component._to_rest_object().as_dict(), default=str))
        rest.update(
            id=f"azureml://registries/azureml/components/{component.name}/versions/{component.version}",
            name=component.version,
            type="Microsoft.MachineLearningServices/registries/components/versions",
            systemData=system_data(),
        )
        return rest

    def registry_component_versions(self, call, name):
        return 200, {"value": [self._registry_component_body()]}

    def registry_component(self, call, name, version):
        return 200, self._registry_component_body()

    # ------------------------------------------------------------------ workspace, compute
    def workspace(self, call):
        return 200, {
            "id": WS_PATH,
            "name": WS,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": "eastus",
            "properties": {
                "friendlyName": WS,
                "mlFlowTrackingUri": "azureml://eastus.api.azureml.ms/mlflow/v1.0" + WS_PATH,
                "discoveryUrl": "https://eastus.api.azureml.ms/discovery",
            },
            "systemData": system_data(),
        }

    def _compute_body(self, name: str) -> dict:
        body = example("Compute_get_AmlCompute.2025-12-01.json")
        body["id"] = f"{WS_PATH}/computes/{name}"
        body["name"] = name
        body["properties"]["properties"]["vmSize"] = self.compute_size
        body["properties"]["provisioningState"] = self.compute_state
        return body

    def compute_get(self, call, name):
        if not self.compute_exists:
            return 404, {"error": {"code": "ResourceNotFound", "message": f"compute {name} not found"}}
        return 200, self._compute_body(name)

    def compute_put(self, call, name):
        self.compute_exists = True
        self.compute_size = call["json"]["properties"]["properties"]["vmSize"]
        return 201, self._compute_body(name), self._lro_headers()

    def vm_sizes(self, call, loc):
        body = example("VirtualMachineSize_list.2025-12-01.json")
        template = body["value"][0]
        for name, gpus in (
            ("Standard_NC24ads_A100_v4", 1),
            ("Standard_NC48ads_A100_v4", 2),
            ("Standard_NC6s_v3", 1),
            ("STANDARD_NC6", 1),
        ):
            body["value"].append({**copy.deepcopy(template), "name": name, "family": "standardNCFamily", "gpus": gpus})
        return 200, body

    # ------------------------------------------------------------------ datastore and blob upload
    def datastore(self, call, name):
        return 200, {
            "id": f"{WS_PATH}/datastores/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": "replayacct",
                "containerName": "azureml-blobstore",
                "endpoint": "core.windows.net",
                "protocol": "https",
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
            },
            "systemData": system_data(),
        }

    def datastore_secrets(self, call, name):
        return 200, {"secretsType": "AccountKey", "key": "cmVwbGF5LWtleQ=="}

    def blob(self, call, request) -> tuple[int, dict, str]:
        """Blob storage as the SDK's uploader sees it: nothing there yet, every PUT accepted."""
        self.uploads = getattr(self, "uploads", [])
        headers = {"x-ms-request-id": "replay", "x-ms-version": "2021-08-06", "Date": "Mon, 23 Nov 2026 12:00:00 GMT"}
        if request.method == "PUT":
            is_content = "comp=" not in urlparse(request.url).query  # comp=metadata etc. update, answered 200
            if is_content:
                self.uploads.append(call["path"])
            return (
                (201 if is_content else 200),
                {**headers, "ETag": '"0x1"', "Last-Modified": "Mon, 23 Nov 2026 12:00:00 GMT"},
                "",
            )
        if "comp=list" in request.url:
            return (
                200,
                {**headers, "Content-Type": "application/xml"},
                (
                    '<?xml version="1.0" encoding="utf-8"?>'
                    '<EnumerationResults ServiceEndpoint="https://replayacct.blob.core.windows.net/" '
                    'ContainerName="azureml-blobstore"><Blobs /><NextMarker /></EnumerationResults>'
                ),
            )
        return 404, {**headers, "x-ms-error-code": "BlobNotFound"}, ""

    # ------------------------------------------------------------------ environment and code (E2E guide)
    def _environment_body(self, name: str, version: str) -> dict:
        return {
            "id": f"{WS_PATH}/environments/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
            "properties": {
                "image": "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04",
                "osType": "Linux",
                "condaFile": "dependencies: [python=3.10]",
                "tags": {},
                "properties": {},
            },
            "systemData": system_data(),
        }

    def environment_versions(self, call, name):
        return 200, {"value": [self._environment_body(name, "3")]}

    def environment(self, call, name, version):
        return 200, self._environment_body(name, version)

    def code_list(self, call, name):  # looked up by content hash: nothing uploaded yet
        return 200, {"value": []}

    def code_get(self, call, name, version):
        self.codes = getattr(self, "codes", {})
        if (name, version) not in self.codes:
            return 404, {"error": {"code": "UserError", "message": "code not found"}}
        return 200, self.codes[(name, version)]

    def code_put(self, call, name, version):
        self.codes = getattr(self, "codes", {})
        body = copy.deepcopy(call["json"])
        body.update(id=f"{WS_PATH}/codes/{name}/versions/{version}", name=version, systemData=system_data())
        self.codes[(name, version)] = body
        return 200, body

    def code_pending_upload(self, call, name, version):
        return 200, {
            "blobReferenceForConsumption": {
                "blobUri": f"https://replayacct.blob.core.windows.net/azureml-blobstore/LocalUpload/{name}",
                "credential": {
                    "credentialType": "SAS",
                    "sasUri": f"{BLOB_CONTAINER}/LocalUpload/{name}?sv=1&sig=x",
                },
            },
            "pendingUploadId": "u1",
            "pendingUploadType": "TemporaryBlobReference",
        }

    # ------------------------------------------------------------------ MLflow (the workspace's tracking server)
    STEPS = (  # the registry pipeline component's steps, as its spec names them
        "ft_nlp_common_validation",
        "chat_completion_model_import",
        "chat_completion_datapreprocess",
        "chat_completion_finetune",
        "ft_nlp_model_converter",
    )

    def run_tree(self, job: str) -> list[dict]:
        """The runs of a pipeline job as Azure ML records them: the job's run, one run for the pipeline-component
        node one level down, and the component's steps one level below that. Step metrics stay on the step's run.
        `run_tree_shape = "flat"` keeps the older shape (steps as direct children of the job's run)."""
        runs = [self._run(job, self.jobs.get(job, {}).get("properties", {}).get("displayName") or job, None, job, {})]
        if self.finetune_mode(job) == "command":
            runs[0] = self._run(job, job, None, job, self.finetune_metrics)
            return runs
        step_parent = job
        if self.run_tree_shape == "nested":
            node = f"{job}_node"
            runs.append(self._run(node, "chat_completion_pipeline", job, job, {}))
            step_parent = node
        for step in self.STEPS:
            metrics = self.finetune_metrics if step == "chat_completion_finetune" else {}
            runs.append(self._run(f"{job}_{step}", step, step_parent, job, metrics))
        return runs

    def finetune_mode(self, job: str) -> str:
        return "command" if self.jobs.get(job, {}).get("properties", {}).get("jobType") == "Command" else "pipeline"

    def _run(self, run_id: str, name: str, parent: str | None, root: str, metrics: dict[str, float]) -> dict:
        tags = [{"key": "mlflow.runName", "value": name}, {"key": "mlflow.rootRunId", "value": root}]
        if parent:
            tags += [{"key": "mlflow.parentRunId", "value": parent}, {"key": "azureml.nodeid", "value": name}]
        return {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "experiment_id": "1",
                "run_name": name,
                "status": "FINISHED",
                "start_time": 1,
                "end_time": 2,
                "lifecycle_stage": "active",
                "artifact_uri": f"azureml://replay/{run_id}",
            },
            "data": {
                "metrics": [{"key": k, "value": v, "timestamp": 1, "step": 0} for k, v in metrics.items()],
                "params": [],
                "tags": tags,
            },
        }

    def mlflow(self, call, request) -> tuple[int, dict, str]:
        """MLflow's REST API on the workspace: runs/get, runs/search (filters on rootRunId or parentRunId, paged as
        the server pages) and artifacts/list (what a command job's script logged)."""
        headers = {"Content-Type": "application/json"}
        all_runs = [run for job in self.jobs for run in self.run_tree(job)]
        if call["path"].endswith("/runs/get"):
            run_id = call["query"]["run_id"][0]
            found = [run for run in all_runs if run["info"]["run_id"] == run_id]
            if not found:
                return (
                    404,
                    headers,
                    json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"run {run_id} not found"}),
                )
            return 200, headers, json.dumps({"run": found[0]})
        if call["path"].endswith("/runs/search"):
            query = call["json"]
            match = re.fullmatch(r"tags\.mlflow\.(rootRunId|parentRunId) = '([^']+)'", query.get("filter", ""))
            if not match:
                return 400, headers, json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad filter"})
            tag, value = f"mlflow.{match.group(1)}", match.group(2)
            hits = [r for r in all_runs if {t["key"]: t["value"] for t in r["data"]["tags"]}.get(tag) == value]
            page, start = int(query.get("max_results") or 1000), int(query.get("page_token") or 0)
            answer: dict[str, Any] = {"runs": hits[start : start + page]}
            if start + page < len(hits):
                answer["next_page_token"] = str(start + page)
            return 200, headers, json.dumps(answer)
        if call["path"].endswith("/metrics/get-history"):
            run_id, key = call["query"]["run_id"][0], call["query"]["metric_key"][0]
            if not any(run["info"]["run_id"] == run_id for run in all_runs):
                return 404, headers, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": run_id})
            points = self.finetune_history.get(key, []) if run_id.endswith("_chat_completion_finetune") else []
            page, start = (
                int(call["query"].get("max_results", ["25000"])[0]),
                int(call["query"].get("page_token", ["0"])[0] or 0),
            )
            answer = {
                "metrics": [
                    {"key": key, "value": value, "timestamp": 1000 + step, "step": step}
                    for step, value in points[start : start + page]
                ]
            }
            if start + page < len(points):
                answer["next_page_token"] = str(start + page)
            return 200, headers, json.dumps(answer)
        if call["path"].endswith("/artifacts/list"):  # not a route Azure ML's tracking server documents or serves
            return 404, headers, json.dumps({"error_code": "ENDPOINT_NOT_FOUND", "message": "no such route"})
        raise AssertionError(f"the MLflow replay has no answer for {request.method} {request.url}")

    ARTIFACT_PAGE = 2  # run history pages a run's artifact list (continuationToken + nextLink)

    def run_artifact_list(self, call, experiment, run_id):
        """Run history's artifact list of a run (what azureml-mlflow's artifact repository lists): every file the
        run logged, paged. The experiment must be the job's own."""
        job = self.jobs.get(run_id)
        if job is None or job["properties"].get("experimentName") != experiment:
            return 404, {
                "error": {"code": "UserError", "message": f"run {run_id} not found in experiment {experiment}"}
            }
        files = self.run_artifacts.get(run_id, [])
        start = int(call["query"].get("continuationToken", ["0"])[0] or 0)
        page = files[start : start + self.ARTIFACT_PAGE]
        answer: dict[str, Any] = {
            "value": [
                {
                    "artifactId": f"ExperimentRun/dcid.{run_id}/{path}",
                    "origin": "ExperimentRun",
                    "container": f"dcid.{run_id}",
                    "path": path,
                }
                for path in page
            ]  # fmt: skip
        }
        if start + self.ARTIFACT_PAGE < len(files):
            token = str(start + self.ARTIFACT_PAGE)
            answer["continuationToken"] = token
            answer["nextLink"] = f"{REGISTRY_HOST}{call['path']}?continuationToken={token}"
        return 200, answer

    # ------------------------------------------------------------------ run history (what jobs.stream reads)
    def workspace_discovery(self, call):
        return 200, {"api": REGISTRY_HOST, "history": REGISTRY_HOST, "studio": "https://ml.azure.com"}

    def _history_run(self, run: dict) -> dict:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        run_id, step = run["info"]["run_id"], run["info"]["run_name"]
        root = tags["mlflow.rootRunId"]
        failed = root in self.jobs and self.jobs[root]["properties"]["status"] == "Failed"
        under_failed = [s for s in self.run_errors if run_id == f"{root}_{s}" or run_id == f"{root}_node"]
        status = "Failed" if failed and (run_id == root or under_failed) else "Completed"
        body = {
            "runId": run_id,
            "rootRunId": root,
            "parentRunId": tags.get("mlflow.parentRunId"),
            "experimentId": "1",
            "status": status,
            "displayName": step,
            "runType": "azureml.StepRun" if tags.get("mlflow.parentRunId") else "azureml.PipelineRun",
            "tags": {},
            "properties": {"azureml.nodeid": step},
        }
        if status == "Failed":
            message = self.run_errors.get(step) or (
                "Pipeline has failed child jobs. Failed nodes: /chat_completion_pipeline. "
                "For more details and logs, please go to the job detail page and check the child jobs."
            )
            body["error"] = {"error": {"code": "UserError", "message": message}}
        return body

    def run_children(self, call, run_id):
        tree = [run for job in self.jobs for run in self.run_tree(job)]
        children = [
            self._history_run(run)
            for run in tree
            if {t["key"]: t["value"] for t in run["data"]["tags"]}.get("mlflow.parentRunId") == run_id
        ]
        return 200, {"value": children}

    def run_details(self, call, run_id):
        tree = {run["info"]["run_id"]: run for job in self.jobs for run in self.run_tree(job)}
        if run_id not in tree:
            return 404, {"error": {"code": "UserError", "message": f"run {run_id} not found"}}
        return 200, self._history_run(tree[run_id])

    # ------------------------------------------------------------------ jobs
    def job_list(self, call):
        return 200, {"value": [self._job_now(name) for name in self.jobs]}

    def _job_now(self, name: str) -> dict:
        """The job as the service reports it now: each look moves it one step along its status sequence."""
        job = self.jobs[name]
        sequence = job["_statuses"]
        job["properties"]["status"] = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def job_get(self, call, name):
        if name not in self.jobs:
            return 404, {"error": {"code": "UserError", "message": f"job {name} not found"}}
        return 200, self._job_now(name)

    def job_put(self, call, name):
        if name in self.jobs:  # a job is immutable once submitted (stricter than a PUT that updates tags)
            return 409, {"error": {"code": "UserError", "message": f"Job {name} already exists and cannot be updated"}}
        template = example("Job_PipelineJob_get.2025-12-01.json")
        body = copy.deepcopy(call["json"])
        body.update(
            id=f"{WS_PATH}/jobs/{name}",
            name=name,
            type="Microsoft.MachineLearningServices/workspaces/jobs",
            systemData=template["systemData"],
        )
        body["properties"]["status"] = "NotStarted"
        body["properties"]["services"] = {
            "Studio": {"jobServiceType": "Studio", "endpoint": f"https://ml.azure.com/runs/{name}?wsid={WS_PATH}"}
        }
        body["_statuses"] = list(self.job_status_sequence)
        self.jobs[name] = body
        return 201, {k: v for k, v in body.items() if not k.startswith("_")}

    def job_cancel(self, call, name):
        if name in self.jobs:
            self.jobs[name]["_statuses"] = ["Canceled"]
        return 202, {}, {"Location": f"{ARM}/operations/cancel-{name}", "Retry-After": "0"}

    # ------------------------------------------------------------------ models
    def model_container_get(self, call, name):
        if name not in self.models:
            return 404, {"error": {"code": "UserError", "message": f"model {name} not found"}}
        latest = max((int(v) for v in self.models[name] if v.isdigit()), default=0)
        properties = {"latestVersion": str(latest), "nextVersion": str(latest + 1)}
        return 200, {"id": f"{WS_PATH}/models/{name}", "name": name, "properties": properties}

    def model_container_put(self, call, name):
        self.models.setdefault(name, {})
        return 200, {"id": f"{WS_PATH}/models/{name}", "name": name, "properties": {}}

    def model_list(self, call, name):
        return 200, {"value": list(self.models.get(name, {}).values())}

    def model_get(self, call, name, version):
        if version not in self.models.get(name, {}):
            return 404, {"error": {"code": "UserError", "message": f"model {name}:{version} not found"}}
        return 200, self.models[name][version]

    def model_put(self, call, name, version):
        sent_uri = call["json"]["properties"].get("modelUri")
        if self.rival_registrations and version not in self.models.get(name, {}):
            # another run read the same nextVersion a moment earlier and registered it first
            self.rival_registrations -= 1
            rival = copy.deepcopy(call["json"])
            rival["properties"].update(modelUri="azureml://jobs/rival-job/outputs/trained_model", tags={})
            self.model_put({**call, "json": rival}, name, version)
        existing = self.models.get(name, {}).get(version)
        if existing is not None and existing["properties"].get("modelUri") != sent_uri:
            # versions are immutable: only tags and description of an existing version may change; the service
            # answers a new path for an existing version as azure-ai-ml's ASSET_PATH_ERROR expects it
            return 400, {"error": {"code": "UserError", "message": "Asset paths cannot be updated."}}
        body = copy.deepcopy(call["json"])
        body.update(
            id=f"{WS_PATH}/models/{name}/versions/{version}",
            name=version,
            type="Microsoft.MachineLearningServices/workspaces/models/versions",
            systemData=system_data(),
        )
        # the service reads flavors from the MLmodel file of an mlflow_model
        body["properties"]["flavors"] = body["properties"].get("flavors") or {
            "python_function": {"data": {"loader_module": "mlflow.transformers"}}
        }
        self.models.setdefault(name, {})[version] = body
        return 200, body

    # ------------------------------------------------------------------ endpoints
    def _endpoint_body(self, name: str) -> dict:
        return self.endpoints[name]

    def endpoint_list(self, call):
        return 200, {"value": list(self.endpoints.values())}

    def endpoint_get(self, call, name):
        if name not in self.endpoints:
            return 404, {"error": {"code": "UserError", "message": f"endpoint {name} not found"}}
        return 200, self.endpoints[name]

    def endpoint_put(self, call, name):
        body = example("Workspace_OnlineEndpoint_createOrUpdate.2025-12-01.json", "201")
        sent = call["json"]
        traffic = sent["properties"].get("traffic") or {}
        unknown = sorted(set(traffic) - set(self.deployments.get(name, {})))
        if unknown:
            return 400, {"error": {"code": "BadArgument", "message": f"Deployment(s) {unknown} do not exist on {name}"}}
        if any(int(v) < 0 for v in traffic.values()) or sum(int(v) for v in traffic.values()) not in (0, 100):
            return 400, {"error": {"code": "BadArgument", "message": f"Traffic must add up to 100 (or 0): {traffic}"}}
        # the safe-rollout guide's rules: one mirrored deployment, at most 50%, and it takes no live traffic
        mirror = {k: int(v) for k, v in (sent["properties"].get("mirrorTraffic") or {}).items() if int(v)}
        if set(mirror) - set(self.deployments.get(name, {})):
            return 400, {"error": {"code": "BadArgument", "message": f"Mirror deployment(s) {sorted(mirror)} missing"}}
        if len(mirror) > 1 or any(not 0 < v <= 50 for v in mirror.values()):
            return 400, {
                "error": {"code": "BadArgument", "message": f"Mirror traffic: one deployment, <= 50%: {mirror}"}
            }
        if any(int(traffic.get(k, 0)) > 0 for k in mirror):
            return 400, {
                "error": {"code": "BadArgument", "message": "A deployment cannot take live and mirror traffic"}
            }
        body.update(
            id=f"{WS_PATH}/onlineEndpoints/{name}",
            name=name,
            location=sent.get("location", "eastus"),
            tags=sent.get("tags", {}),
            identity=sent.get("identity") or {"type": "SystemAssigned"},
            kind="Managed",
        )
        body.pop("sku", None)
        properties = body["properties"]
        properties.update(
            description=sent["properties"].get("description"),
            authMode=sent["properties"].get("authMode"),
            traffic=sent["properties"].get("traffic") or {},
            mirrorTraffic=mirror,
            scoringUri=self.scoring_uri,
            provisioningState="Succeeded",
            properties={},
        )
        properties.pop("compute", None)
        self.endpoints[name] = body
        return 201, body, self._lro_headers()

    def endpoint_delete(self, call, name):
        if name not in self.endpoints:
            return 404, {"error": {"code": "UserError", "message": f"endpoint {name} not found"}}
        self.endpoints.pop(name, None)
        self.deployments.pop(name, None)
        return 202, {}, {"Location": f"{ARM}/operations/delete-{name}", "Retry-After": "0"}

    def endpoint_keys(self, call, name):
        return 200, {"primaryKey": ENDPOINT_KEY, "secondaryKey": "replayed-secondary-key"}

    def deployment_list(self, call, endpoint):
        return 200, {"value": list(self.deployments.get(endpoint, {}).values())}

    def deployment_get(self, call, endpoint, name):
        if name not in self.deployments.get(endpoint, {}):
            return 404, {"error": {"code": "UserError", "message": f"deployment {name} not found"}}
        return 200, self.deployments[endpoint][name]

    def deployment_put(self, call, endpoint, name):
        body = example("OnlineDeployment_ManagedOnlineDeployment_createOrUpdate.2025-12-01.json", "201")
        sent = call["json"]
        body.update(
            id=f"{WS_PATH}/onlineEndpoints/{endpoint}/deployments/{name}",
            name=name,
            location="eastus",
            tags=sent.get("tags", {}),
            sku={"name": "Default", "capacity": 1},
        )
        body["properties"].update({key: value for key, value in sent["properties"].items() if value is not None})
        body["properties"]["provisioningState"] = "Succeeded"
        self.deployments.setdefault(endpoint, {})[name] = body
        return 201, body, self._lro_headers()

    def deployment_delete(self, call, endpoint, name):
        if name not in self.deployments.get(endpoint, {}):
            return 404, {"error": {"code": "UserError", "message": f"deployment {name} not found"}}
        share = int((self.endpoints.get(endpoint, {}).get("properties", {}).get("traffic") or {}).get(name, 0))
        if share > 0:
            return 400, {
                "error": {
                    "code": "BadArgument",
                    "message": f"Deployment {name} has {share}% of traffic; set it to 0 before deleting",
                }
            }
        self.deployments.get(endpoint, {}).pop(name, None)
        return 202, {}, {"Location": f"{ARM}/operations/delete-{endpoint}-{name}", "Retry-After": "0"}
