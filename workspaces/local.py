"""The local workspace: everything on this machine, under one state directory, no cloud.

    <root>/mlflow.db, mlartifacts/     MLflow tracking + model registry (sqlite)
    <root>/foundation/<name>/          the foundation model, built once (tokenizer + tiny Phi-3)
    <root>/data/<fingerprint>/         uploaded training files
    <root>/jobs/<job>/                 spec.json, status.json, log.txt, outputs/ of a trainer subprocess
    <root>/endpoints/<name>/           endpoint.json, server.json, secrets.json (0600), server.log

Jobs and endpoint servers are processes of their own (new sessions), like cloud resources: a job outlives
a crashed flow and is found again by its idempotency key; a server lives until its endpoint is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from workspaces.base import (
    Compute, ComputeSpec, Credentials, DataRef, Deployment, Endpoint, FinetuneSpec, FoundationModel, Inventory,
    JobRef, JobState, JobStatus, ModelVersion, NotFoundError, Sku, TransientWorkspaceError, WorkspaceError,
)

LOCAL_FOUNDATION = "tiny-phi3-chat"
LOCAL_SIZES = ("local-cpu", "local-cuda")
# the same string forms an azureml registry model carries
FOUNDATION_TAGS = {
    "finetune_compute_allow_list": "['local-cpu', 'local-cuda']",
    "inference_compute_allow_list": "['local-cpu', 'local-cuda']",
    "model_specific_defaults": (
        "{'apply_deepspeed': 'false', 'apply_lora': 'true', 'lora_r': 16, 'lora_alpha': 32, "
        "'learning_rate': 0.01, 'lr_scheduler_type': 'linear', 'num_train_epochs': 3, "
        "'per_device_train_batch_size': 8, 'per_device_eval_batch_size': 16, 'max_seq_length': 128, "
        # a from-scratch model has no embeddings worth freezing: LoRA on the layers, embeddings and head trained in full
        "'lora_modules_to_save': 'embed_tokens,lm_head'}"
    ),
    "task": "chat-completion",
}
CHAMPION = "champion"
SERVER_START_TIMEOUT_S = 90


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _stop_process_group(pid: int, grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    return
            except ChildProcessError:  # not our child: poll liveness instead
                if not _pid_alive(pid):
                    return
            time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalWorkspace:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self._client = None
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in run logs
        logging.getLogger("mlflow").setLevel(logging.WARNING)

    # ------------------------------------------------------------------ mlflow
    @property
    def client(self):
        if self._client is None:
            import mlflow
            from mlflow.tracking import MlflowClient

            mlflow.set_tracking_uri(self.tracking_uri)
            self._ensure_experiment("tunegate-registry")
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _ensure_experiment(self, name: str) -> str:
        import mlflow

        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow.create_experiment(name, artifact_location=(self.root / "mlartifacts" / name).as_uri())

    def _version(self, name: str, version: str) -> ModelVersion:
        mv = self.client.get_model_version(name, version)
        return ModelVersion(name=mv.name, version=str(mv.version), tags=dict(mv.tags))

    def _versions(self, name: str) -> list:
        return list(self.client.search_model_versions(f"name = '{name}'"))

    # ------------------------------------------------------------------ catalogue
    def get_foundation_model(self, name: str, version: str | None = None, label: str = "latest") -> FoundationModel:
        versions = self._versions(name)
        if not versions and name == LOCAL_FOUNDATION:
            self._create_foundation(name)
            versions = self._versions(name)
        if not versions:
            known = sorted({m.name for m in self.client.search_registered_models()})
            raise NotFoundError(f"model.name {name!r} is not in the local registry; registered: {known or 'none'} "
                                f"(the built-in foundation model is {LOCAL_FOUNDATION!r})")
        if version is None:
            if label != "latest":
                raise NotFoundError(f"model.label {label!r}: the local registry knows only 'latest' (or pin model.version)")
            chosen = max(versions, key=lambda mv: int(mv.version))
        else:
            chosen = next((mv for mv in versions if str(mv.version) == str(version)), None)
            if chosen is None:
                raise NotFoundError(f"model {name} has no version {version}; versions: {sorted(int(v.version) for v in versions)}")
        return FoundationModel(name=name, version=str(chosen.version), id=f"models:/{name}/{chosen.version}", tags=dict(chosen.tags))

    def _create_foundation(self, name: str) -> None:
        import mlflow

        from workspaces.local_model import build_foundation, save_pyfunc
        from workspaces.synthetic import generate_split

        texts = []
        for row in generate_split("train_sft", 2000):
            for message in row.get("messages") or []:
                if isinstance(message.get("content"), str):
                    texts.append(message["content"])
        folder = self.root / "foundation" / name
        shutil.rmtree(folder, ignore_errors=True)
        hf_dir = build_foundation(texts, folder / "hf_model")
        save_pyfunc(hf_dir, folder / "mlflow_model")
        experiment = self._ensure_experiment("tunegate-foundation")
        with mlflow.start_run(experiment_id=experiment, run_name=f"create {name}") as run:
            mlflow.log_artifacts(str(folder / "mlflow_model"), artifact_path="model")
        self.client.create_registered_model(name, tags={"task": "chat-completion"},
                                            description="tiny Phi-3 created from scratch by tunegate's local workspace")
        self.client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                         tags=FOUNDATION_TAGS)

    def _model_folder(self, model_uri: str, into: Path) -> Path:
        """Download a registered MLflow model folder (models:/name/version) to `into`, once."""
        import mlflow.artifacts

        if not (into / "MLmodel").exists():
            shutil.rmtree(into, ignore_errors=True)
            into.parent.mkdir(parents=True, exist_ok=True)
            self.client  # noqa: B018 - sets the tracking/registry uri
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into.parent / (into.name + ".part")))
            os.replace(into.parent / (into.name + ".part"), into)
        return into

    # ------------------------------------------------------------------ compute
    def list_sizes(self) -> list[Sku]:
        sizes = [Sku(name="local-cpu", gpus=0)]
        try:
            import torch

            if torch.cuda.is_available():
                sizes.append(Sku(name="local-cuda", gpus=torch.cuda.device_count()))
        except ImportError:
            pass
        return sizes

    def ensure_compute(self, spec: ComputeSpec) -> Compute:
        if spec.size.lower() not in LOCAL_SIZES:
            raise WorkspaceError(f"compute.size {spec.size!r} is not a local size; use one of {', '.join(LOCAL_SIZES)}")
        return Compute(name=spec.name, size=spec.size.lower(), provisioning_state="Succeeded")

    # ------------------------------------------------------------------ data and jobs
    def upload_data(self, train: Path, test: Path, fingerprint: str) -> DataRef:
        target = self.root / "data" / fingerprint
        target.mkdir(parents=True, exist_ok=True)
        for source in (train, test):
            shutil.copyfile(source, target / source.name)
        return DataRef(train=str(target / train.name), test=str(target / test.name), fingerprint=fingerprint)

    def _job_dir(self, name: str) -> Path:
        return self.root / "jobs" / name

    def _status(self, name: str) -> dict:
        path = self._job_dir(name) / "status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def submit_finetune(self, spec: FinetuneSpec, idempotency_key: str) -> JobRef:
        base = f"ft-{idempotency_key[:12]}"
        attempt, name = 1, base
        while self._job_dir(name).exists():
            status = self.job_status(JobRef(name=name, idempotency_key=idempotency_key))
            if status.state not in (JobState.FAILED, JobState.CANCELED):  # running or done: this is our job
                return JobRef(name=name, idempotency_key=idempotency_key, url=self._job_dir(name).as_uri(), reattached=True)
            attempt += 1
            name = f"{base}-{attempt}"
        job_dir = self._job_dir(name)
        model_dir = self._model_folder(spec.model_id, self.root / "models" / spec.model_id.removeprefix("models:/").replace("/", "-"))
        job_dir.mkdir(parents=True)
        (job_dir / "spec.json").write_text(json.dumps({
            "job_name": name, "idempotency_key": idempotency_key, "display_name": spec.display_name,
            "experiment_name": spec.experiment_name, "tracking_uri": self.tracking_uri,
            "model_dir": str(model_dir / "artifacts" / "hf_model"), "train_file": spec.data.train,
            "test_file": spec.data.test, "parameters": spec.parameters, "gpus": spec.gpus_per_node,
        }, indent=2))
        self._ensure_experiment(spec.experiment_name)
        with (job_dir / "log.txt").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "workspaces.local_trainer", str(job_dir)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        (job_dir / "status.json").write_text(json.dumps({"state": "queued", "pid": process.pid, "submitted": time.time()}))
        return JobRef(name=name, idempotency_key=idempotency_key, url=job_dir.as_uri())

    def job_status(self, job: JobRef) -> JobStatus:
        status = self._status(job.name)
        if not status:
            raise NotFoundError(f"job {job.name} does not exist in {self.root / 'jobs'}")
        state = JobState(status["state"])
        if not state.terminal and not _pid_alive(int(status.get("pid", 0)) or -1):
            time.sleep(0.2)  # the trainer may have written its last status just as it exited
            status = self._status(job.name)
            if not JobState(status["state"]).terminal:
                return JobStatus(state=JobState.FAILED,
                                 message=f"trainer process died without a result; log tail:\n{_tail(self._job_dir(job.name) / 'log.txt')}")
            state = JobState(status["state"])
        message = status.get("message", "")
        if state is JobState.FAILED:
            message = f"{message}\nlog tail:\n{_tail(self._job_dir(job.name) / 'log.txt')}"
        return JobStatus(state=state, message=message)

    def cancel_job(self, job: JobRef) -> None:
        status = self._status(job.name)
        if not status or JobState(status["state"]).terminal:
            return
        _stop_process_group(int(status["pid"]))
        from workspaces.local_trainer import write_status

        write_status(self._job_dir(job.name), state="canceled", message="cancelled by tunegate", ended=time.time())

    def job_metrics(self, job: JobRef) -> dict[str, float]:
        run_id = self._status(job.name).get("mlflow_run_id")
        if not run_id:
            raise WorkspaceError(f"job {job.name} recorded no MLflow run; see {self._job_dir(job.name) / 'log.txt'}")
        return {key: float(value) for key, value in self.client.get_run(run_id).data.metrics.items()}

    # ------------------------------------------------------------------ registry
    def register_model(self, job: JobRef, name: str, tags: dict[str, str]) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="fine-tuned by tunegate")
        for existing in self._versions(name):  # a retried registration returns the version it made
            if existing.tags.get("finetune_job") == job.name:
                return self._version(name, existing.version)
        run_id = self._status(job.name).get("mlflow_run_id")
        if not run_id:
            raise WorkspaceError(f"job {job.name} has no MLflow run to register a model from")
        run = self.client.get_run(run_id)
        mv = self.client.create_model_version(name, source=f"{run.info.artifact_uri}/trained_model", run_id=run_id,
                                              tags={**tags, "finetune_job": job.name},
                                              description=f"fine-tuned by tunegate job {job.name}")
        return self._version(name, mv.version)

    def tag_model(self, model: ModelVersion, tags: dict[str, str]) -> ModelVersion:
        for key, value in tags.items():
            self.client.set_model_version_tag(model.name, model.version, key, value)
        return self._version(model.name, model.version)

    def champion(self, name: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None
        return ModelVersion(name=mv.name, version=str(mv.version), tags=dict(mv.tags))

    def set_champion(self, model: ModelVersion | None, name: str) -> None:
        from mlflow.exceptions import MlflowException

        if model is None:
            try:
                self.client.delete_registered_model_alias(name, CHAMPION)
            except MlflowException:
                pass
            return
        self.client.set_registered_model_alias(name, CHAMPION, model.version)

    # ------------------------------------------------------------------ endpoints
    def _endpoint_dir(self, name: str) -> Path:
        return self.root / "endpoints" / name

    def _server(self, name: str) -> tuple[int, int]:
        """(pid, port) of the endpoint's running server, or an error that says it crashed."""
        directory = self._endpoint_dir(name)
        info_path = directory / "server.json"
        if not info_path.exists():
            raise NotFoundError(f"endpoint {name} has no server")
        info = json.loads(info_path.read_text())
        if not _pid_alive(info["pid"]):
            raise TransientWorkspaceError(
                f"endpoint {name}'s server (pid {info['pid']}) is not running; log tail:\n{_tail(directory / 'server.log')}"
            )
        return info["pid"], info["port"]

    def _secrets(self, name: str) -> dict[str, str]:
        return json.loads((self._endpoint_dir(name) / "secrets.json").read_text())

    def _start_server(self, name: str, owner_pid: int | None) -> None:
        directory = self._endpoint_dir(name)
        (directory / "server.json").unlink(missing_ok=True)
        tokens = self._secrets(name)
        env = {**os.environ, "TUNEGATE_ENDPOINT_KEY": tokens["key"], "TUNEGATE_ADMIN_TOKEN": tokens["admin"],
               "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "workspaces.local_server", str(directory)]
        if owner_pid:
            command += ["--owner-pid", str(owner_pid)]
        with (directory / "server.log").open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:  # crashed at start: say why, do not wait out the timeout
                raise WorkspaceError(f"endpoint {name}'s server exited with {process.returncode}:\n{_tail(directory / 'server.log')}")
            if (directory / "server.json").exists():
                try:
                    port = json.loads((directory / "server.json").read_text())["port"]
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            time.sleep(0.1)
        _stop_process_group(process.pid)
        raise TransientWorkspaceError(f"endpoint {name}'s server did not answer /health in {SERVER_START_TIMEOUT_S} s")

    def ensure_endpoint(self, name: str, description: str = "", ephemeral: bool = False) -> Endpoint:
        directory = self._endpoint_dir(name)
        if not (directory / "secrets.json").exists():
            directory.mkdir(parents=True, exist_ok=True)
            secrets_path = directory / "secrets.json"
            secrets_path.touch(mode=0o600)
            secrets_path.write_text(json.dumps({"key": secrets.token_urlsafe(32), "admin": secrets.token_urlsafe(32)}))
            (directory / "endpoint.json").write_text(json.dumps({"name": name, "description": description,
                                                                 "ephemeral": ephemeral, "deployments": {}, "traffic": {}}))
        try:
            self._server(name)
        except WorkspaceError:  # new, or its server crashed: (re)start it from endpoint.json
            self._start_server(name, owner_pid=os.getpid() if ephemeral else None)
        return self.get_endpoint(name)  # type: ignore[return-value]

    def get_endpoint(self, name: str) -> Endpoint | None:
        path = self._endpoint_dir(name) / "endpoint.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        return Endpoint(name=name, traffic=dict(state.get("traffic", {})), deployments=tuple(state.get("deployments", {})))

    def _admin(self, name: str, method: str, path: str, payload: object | None = None, timeout: float = 30) -> dict:
        _, port = self._server(name)
        try:
            response = httpx.request(method, f"http://127.0.0.1:{port}{path}", json=payload, timeout=timeout,
                                     headers={"Authorization": f"Bearer {self._secrets(name)['admin']}"})
        except httpx.TransportError as exc:
            raise TransientWorkspaceError(f"endpoint {name}: {exc}") from exc
        if response.status_code >= 500:
            raise TransientWorkspaceError(f"endpoint {name}: HTTP {response.status_code} {response.text[:300]}")
        if response.status_code >= 400:
            raise WorkspaceError(f"endpoint {name}: HTTP {response.status_code} {response.json().get('detail', response.text)}")
        return response.json()

    def create_deployment(self, endpoint: str, name: str, model: ModelVersion, instance_type: str, instance_count: int = 1) -> Deployment:
        if instance_type.lower() not in LOCAL_SIZES:
            raise WorkspaceError(f"endpoint.instance_type {instance_type!r} is not a local size; use one of {', '.join(LOCAL_SIZES)}")
        folder = self._model_folder(f"models:/{model.name}/{model.version}", self._endpoint_dir(endpoint) / "models" / name)
        self._admin(endpoint, "POST", f"/admin/deployments/{name}", {
            "model_dir": str(folder), "model": f"{model.name}:{model.version}", "instance_type": instance_type,
            "instance_count": instance_count,
        }, timeout=180)
        return Deployment(endpoint=endpoint, name=name, model=f"{model.name}:{model.version}", instance_type=instance_type)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> Endpoint:
        self._admin(endpoint, "PUT", "/admin/traffic", traffic)
        return self.get_endpoint(endpoint)  # type: ignore[return-value]

    def endpoint_credentials(self, endpoint: str) -> Credentials:
        _, port = self._server(endpoint)
        return Credentials(scoring_uri=f"http://127.0.0.1:{port}/score", key=SecretStr(self._secrets(endpoint)["key"]))

    def delete_deployment(self, endpoint: str, name: str) -> None:
        self._admin(endpoint, "DELETE", f"/admin/deployments/{name}")
        shutil.rmtree(self._endpoint_dir(endpoint) / "models" / name, ignore_errors=True)

    def delete_endpoint(self, endpoint: str) -> None:
        directory = self._endpoint_dir(endpoint)
        info_path = directory / "server.json"
        if info_path.exists():
            _stop_process_group(json.loads(info_path.read_text())["pid"])
        shutil.rmtree(directory, ignore_errors=True)

    # ------------------------------------------------------------------ leak checks
    def inventory(self) -> Inventory:
        endpoints, processes, running = {}, [], []
        for directory in sorted((self.root / "endpoints").glob("*")) if (self.root / "endpoints").exists() else []:
            endpoint = self.get_endpoint(directory.name)
            if endpoint is not None:
                endpoints[endpoint.name] = endpoint.deployments
            info = directory / "server.json"
            if info.exists() and _pid_alive(json.loads(info.read_text())["pid"]):
                processes.append(json.loads(info.read_text())["pid"])
        for job_dir in sorted((self.root / "jobs").glob("*")) if (self.root / "jobs").exists() else []:
            status = self._status(job_dir.name)
            if status and not JobState(status["state"]).terminal and _pid_alive(int(status.get("pid", 0)) or -1):
                running.append(job_dir.name)
                processes.append(int(status["pid"]))
        return Inventory(endpoints=endpoints, running_jobs=tuple(running), processes=tuple(processes))
