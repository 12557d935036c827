"""Local fine-tune jobs: one trainer process per job (`python -m workspaces.local.trainer JOB_DIR`).

    <root>/jobs/<name>/spec.json     what to train (written before the process starts)
    <root>/jobs/<name>/status.json   state, pid, progress (written atomically by the trainer)
    <root>/jobs/<name>/metrics.jsonl every metric the trainer logged, with its step
    <root>/jobs/<name>/mlflow.json   the job's MLflow run, recorded once the job is over (run_record.py)
    <root>/jobs/<name>/log.txt       the trainer's output

A job is a process of its own (a new session), like a cloud job: it outlives a crashed flow and is found again
by its name. A trainer that died without writing a final state is reported as failed, with its log's tail.
"""

from __future__ import annotations

import builtins
import logging
import os
import time
from pathlib import Path

from workspaces.local.processes import (
    DamagedStateFile,
    identity,
    not_ours,
    process_matches,
    read_json,
    start_detached,
    stop_process_group,
    tail,
    tunegate_processes,
    write_json,
)
from workspaces.local.registry import MlflowRegistry
from workspaces.local.run_record import record_run, recorded_run_id
from workspaces.names import checked_name
from workspaces.ports import (
    ConflictError,
    FinetuneSpec,
    JobInfo,
    JobProgress,
    JobRef,
    JobState,
    JobStatus,
    LossHistory,
    NotFoundError,
    WorkspaceError,
)

logger = logging.getLogger("tunegate")
TRAINER_MODULE = "workspaces.local.trainer"
STATES = {state.value for state in JobState}
DAMAGED_ADVICE = (
    "tunegate cannot tell how job {name} stands: `tunegate jobs --cancel {name}` stops its trainer if it still runs; "
    "delete {folder} to forget the job (a rerun then trains again)"
)


class TrainerJobs:
    def __init__(self, root: Path, registry: MlflowRegistry, assistant_only_loss: bool = True) -> None:
        self.root = root
        self.registry = registry
        self.assistant_only_loss = assistant_only_loss

    def _dir(self, name: str) -> Path:
        return self.root / "jobs" / checked_name("job", name)

    def _status(self, name: str) -> dict:
        path = self._dir(name) / "status.json"
        status = read_json(path, DAMAGED_ADVICE.format(name=name, folder=self._dir(name)))
        if status and status.get("state") not in STATES:
            raise DamagedStateFile(
                path, f"unknown state {status.get('state')!r}", DAMAGED_ADVICE.format(name=name, folder=self._dir(name))
            )
        return status

    def _state(self, status: dict) -> JobState:
        return JobState(status["state"])

    def _ref(self, name: str) -> JobRef:
        spec = read_json(self._dir(name) / "spec.json", DAMAGED_ADVICE.format(name=name, folder=self._dir(name)))
        champion = spec.get("champion")
        return JobRef(
            name=name,
            idempotency_key=spec.get("idempotency_key", ""),
            url=self._dir(name).as_uri(),
            evaluated_champion=champion if isinstance(champion, str) else None,
        )

    def _trainer_gone(self, name: str, status: dict) -> str | None:
        """None while the recorded pid is provably this job's trainer; else why it is not."""
        return not_ours(status, TRAINER_MODULE, self._dir(name))

    def get(self, name: str) -> JobRef | None:
        return self._ref(name) if (self._dir(name) / "status.json").exists() else None

    def submit(self, spec: FinetuneSpec, name: str, idempotency_key: str) -> JobRef:
        job_dir = self._dir(name)
        try:
            job_dir.mkdir(parents=True)  # atomic: of two submissions of one name, exactly one gets here
        except FileExistsError:
            raise ConflictError(f"job {name} exists already in {job_dir.parent}") from None
        # the job exists from now on, queued by this process until its trainer starts: a run submitting the same job
        # a moment later finds it (and waits for it) instead of failing while the model folders download
        submitting = {"state": "queued", "submitter": identity(os.getpid()), "submitted": time.time()}
        write_json(job_dir / "status.json", {**submitting, "message": "being submitted"})
        try:
            model_dir = self.registry.model_folder(
                spec.model_id, self.root / "models" / spec.model_id.removeprefix("models:/").replace("/", "-")
            )
            champion_dir = None
            if spec.compare_with is not None:  # evaluated on this job's test split: the gate compares like with like
                uri = f"models:/{spec.compare_with.name}/{spec.compare_with.version}"
                folder = self.root / "models" / f"{spec.compare_with.name}-{spec.compare_with.version}"
                champion_dir = str(self.registry.model_folder(uri, folder) / "artifacts" / "hf_model")
            spec_file = {
                "job_name": name,
                "idempotency_key": idempotency_key,
                "display_name": spec.display_name,
                "experiment_name": spec.experiment_name,
                "tracking_uri": self.registry.tracking_uri,
                "model_dir": str(model_dir / "artifacts" / "hf_model"),
                "train_file": spec.data.train,
                "test_file": spec.data.test,
                "parameters": spec.parameters,
                "gpus": spec.gpus_per_node,
                "champion_model_dir": champion_dir,
                "champion": f"{spec.compare_with.name}:{spec.compare_with.version}" if spec.compare_with else None,
                "assistant_only_loss": self.assistant_only_loss,
            }
            write_json(job_dir / "spec.json", spec_file)
            self.registry.ensure_experiment(spec.experiment_name)
            process = start_detached(TRAINER_MODULE, [str(job_dir)], job_dir / "log.txt")
            write_json(job_dir / "status.json", {"state": "queued", **identity(process.pid), "submitted": time.time()})
        except BaseException as exc:  # a job that never got its trainer must not read as queued for ever
            message = f"submission failed: {type(exc).__name__}: {exc}"[:2000]
            write_json(job_dir / "status.json", {"state": "failed", "message": message, "ended": time.time()})
            raise
        return self._ref(name)

    def status(self, job: JobRef) -> JobStatus:
        status = self._status(job.name)
        if not status:
            raise NotFoundError(f"job {job.name} does not exist in {self.root / 'jobs'}")
        log = self._dir(job.name) / "log.txt"
        state = JobState(status["state"])
        if not state.terminal and "pid" not in status:  # being submitted: no trainer yet
            submitter = status.get("submitter")
            if isinstance(submitter, dict) and process_matches(submitter):
                return JobStatus(state=JobState.QUEUED, message="being submitted")
            time.sleep(0.2)  # the trainer may have been started just now
            status = self._status(job.name)
            if "pid" not in status and not JobState(status["state"]).terminal:
                return JobStatus(
                    state=JobState.FAILED,
                    message="the submission was interrupted before its trainer started (the process that submitted "
                    "it is gone); a rerun submits it again under the next name",
                )
            state = JobState(status["state"])
        if not state.terminal and self._trainer_gone(job.name, status):
            time.sleep(0.2)  # the trainer may have written its last status just as it exited
            status = self._status(job.name)
            state = JobState(status["state"])
            why = self._trainer_gone(job.name, status) if not state.terminal else None
            if why:
                self._try_record(job.name, {**status, "state": JobState.FAILED.value})
                return JobStatus(
                    state=JobState.FAILED,
                    message=f"trainer process died without a result ({why}); log tail:\n{tail(log)}",
                )
        message = status.get("message", "")
        if state is JobState.FAILED:
            message = f"{message}\nlog tail:\n{tail(log)}"
        if state.terminal:  # a job that is over has its MLflow run, its model folder among its artifacts
            self._try_record(job.name, status)
        return JobStatus(state=state, message=message)

    def _try_record(self, name: str, status: dict) -> None:
        """Recorded now if it can be; if not (the store busy or down), the next look (mlflow_run_id) says why."""
        try:
            self._record(name, status)
        except Exception as exc:  # noqa: BLE001 - the job's state stands whatever its MLflow run's fate
            logger.warning("job %s: its MLflow run is not recorded yet: %s: %s", name, type(exc).__name__, exc)

    def _record(self, name: str, status: dict) -> str | None:
        if isinstance(status.get("mlflow_run_id"), str):  # logged by the trainer itself (tunegate before issue 26)
            return status["mlflow_run_id"]
        spec = read_json(self._dir(name) / "spec.json", DAMAGED_ADVICE.format(name=name, folder=self._dir(name)))
        if "experiment_name" not in spec:  # its submission was cut before the spec was written: it never trained
            return None
        return record_run(self.registry, self._dir(name), spec, status)

    def cancel(self, job: JobRef) -> None:
        try:
            status = self._status(job.name)
        except DamagedStateFile:  # its pid is unknown: stop whatever trains in this job's folder, then say so
            for found in tunegate_processes():
                if found.kind == "trainer" and Path(found.argument).resolve() == self._dir(job.name).resolve():
                    stop_process_group(found.pid)
            write_json(
                self._dir(job.name) / "status.json",
                {
                    "state": "canceled",
                    "message": "cancelled by tunegate (its status file was damaged)",
                    "ended": time.time(),
                },
            )
            return
        if not status or JobState(status["state"]).terminal:
            return
        why = self._trainer_gone(job.name, status) if "pid" in status else None
        if "pid" in status and why is None:
            stop_process_group(int(status["pid"]))
        elif why is not None:  # nothing of ours to stop: the job only needs to say it is over
            logger.warning("job %s: not signalling pid %s (%s)", job.name, status.get("pid"), why)
        current = self._status(job.name)
        if not JobState(current["state"]).terminal:
            write_json(
                self._dir(job.name) / "status.json",
                {**current, "state": "canceled", "message": "cancelled by tunegate", "ended": time.time()},
            )

    def mlflow_run_id(self, job: JobRef) -> str | None:
        """The job's MLflow run: None while the job is not over (its run is recorded when it is)."""
        status = self._status(job.name)
        if isinstance(status.get("mlflow_run_id"), str):
            return status["mlflow_run_id"]
        if (run_id := recorded_run_id(self._dir(job.name))) is None:
            current = self.status(job)  # records it when the job is over; what failed to is tried again here
            if current.state.terminal and (run_id := recorded_run_id(self._dir(job.name))) is None:
                run_id = self._record(job.name, {**self._status(job.name), "state": current.state.value})
        return run_id

    def metrics(self, job: JobRef) -> dict[str, float]:
        run_id = self.mlflow_run_id(job)
        if not run_id:
            raise WorkspaceError(f"job {job.name} recorded no MLflow run; see {self._dir(job.name) / 'log.txt'}")
        return self.registry.run_metrics(run_id)

    def progress(self, job: JobRef) -> JobProgress:
        """What the trainer last wrote to status.json (it writes step, epoch and losses at every log step)."""
        status = self._status(job.name)
        if not status:
            raise NotFoundError(f"job {job.name} does not exist in {self.root / 'jobs'}")
        state = JobState(status["state"])
        stage = "training" if status.get("train_started") else "loading the model and data"
        return JobProgress(
            state=state,
            status_text=stage if state is JobState.RUNNING else state.value,
            step=status.get("step"),
            total_steps=status.get("total_steps"),
            epoch=status.get("epoch"),
            train_loss=status.get("train_loss"),
            eval_loss=status.get("eval_loss"),
            started=status.get("train_started"),
        )

    def loss_history(self, job: JobRef) -> LossHistory:
        run_id = self.mlflow_run_id(job)
        if not run_id:
            raise WorkspaceError(f"job {job.name} recorded no MLflow run; see {self._dir(job.name) / 'log.txt'}")
        metrics = self.registry.run_metrics(run_id)
        evals = self.registry.metric_history(run_id, "eval_loss")
        return LossHistory(
            train=self.registry.metric_history(run_id, "step_loss"),
            eval=tuple(point for point in evals if point[0] > 0),  # step 0 is the base model: its own line
            base_eval_loss=metrics.get("base_eval_loss"),
            champion_eval_loss=metrics.get("champion_eval_loss"),
        )

    def attach(self, job: JobRef, filename: str, content: bytes) -> str | None:
        """Into the job's directory (reports/) and onto its MLflow run as an artifact."""
        reports = self._dir(job.name) / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        path = reports / checked_name("report", filename)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(content)
        partial.replace(path)
        run_id = self.mlflow_run_id(job)
        return self.registry.log_artifact(run_id, path) if run_id else str(path)

    def list(self) -> builtins.list[JobInfo]:
        found = []
        for job_dir in (self.root / "jobs").glob("*") if (self.root / "jobs").exists() else []:
            if not (job_dir / "status.json").exists():
                continue  # being submitted right now
            try:
                spec = read_json(job_dir / "spec.json")
                status = self.status(JobRef(name=job_dir.name))
            except DamagedStateFile as exc:
                found.append(JobInfo(name=job_dir.name, state=JobState.FAILED, display_name=f"damaged: {exc}"))
                continue
            found.append(
                JobInfo(
                    name=job_dir.name,
                    state=status.state,
                    display_name=spec.get("display_name", ""),
                    idempotency_key=spec.get("idempotency_key", ""),
                    created=self._status(job_dir.name).get("submitted"),
                    url=job_dir.as_uri(),
                )
            )
        return sorted(found, key=lambda info: info.created or 0, reverse=True)

    def problems(self) -> builtins.list[str]:
        """Jobs whose state files are damaged, named with what to do."""
        found = []
        for job_dir in sorted((self.root / "jobs").glob("*")) if (self.root / "jobs").exists() else []:
            try:
                self._status(job_dir.name)
                read_json(job_dir / "spec.json")
            except DamagedStateFile as exc:
                found.append(str(exc))
        return found

    def running(self) -> builtins.list[tuple[str, int]]:
        """(name, pid) of every job whose trainer still runs."""
        found = []
        for job_dir in sorted((self.root / "jobs").glob("*")) if (self.root / "jobs").exists() else []:
            try:
                status = self._status(job_dir.name)
            except DamagedStateFile:
                continue  # `tunegate jobs` names it; the trainer, if it runs, is among tunegate's processes
            if status and not JobState(status["state"]).terminal and not self._trainer_gone(job_dir.name, status):
                found.append((job_dir.name, status["pid"]))
        return found
