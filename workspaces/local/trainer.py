"""The local fine-tune job: `python -m workspaces.local.trainer JOB_DIR`, run as its own process.

Reads JOB_DIR/spec.json, writes JOB_DIR/status.json (atomically) as it goes, logs params and train/eval loss,
plus the base model's eval loss, to MLflow, merges LoRA into the weights (MLflow would otherwise keep only
the adapters) and writes the MLflow model folder to JOB_DIR/outputs/mlflow_model_folder.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from workspaces.local.devices import DeviceFacts, TrainingPlan, device_facts, training_plan
from workspaces.local.processes import identity, read_json_or_empty, write_json
from workspaces.local.training_parts import (
    causal_collator,
    encode_conversations,
    evaluate_model,
    lora_config,
    read_rows,
    torch_threads,
    train_tokens,
)
from workspaces.ports import parameter_bool

METRICS_FLUSH_S = 2.0


def write_status(job_dir: Path, **fields: Any) -> None:
    path = job_dir / "status.json"
    # the trainer is the file's writer: one damaged by hand is written whole again
    write_json(path, {**read_json_or_empty(path), **fields, "updated": time.time()})


def train(job_dir: Path) -> None:
    import mlflow
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from workspaces.local.model import save_pyfunc

    spec = json.loads((job_dir / "spec.json").read_text())
    params: dict[str, Any] = spec["parameters"]
    plan = plan_for(spec)
    main_process = int(os.environ.get("RANK", "0")) == 0  # with data parallelism, one process reports

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
    threads = torch_threads()
    if threads and plan.device == "cpu":
        torch.set_num_threads(threads)
    if main_process:
        print(f"training on {plan.describe()}", flush=True)
        write_status(job_dir, device=plan.describe())
    max_len = int(params.get("max_seq_length", -1))
    max_len = max_len if max_len > 0 else 256

    assistant_only = bool(spec.get("assistant_only_loss", True))

    def encode(rows: list[dict]) -> Dataset:
        return Dataset.from_dict(encode_conversations(tokenizer, rows, max_len, assistant_only))

    train_set, eval_set = encode(read_rows(spec["train_file"])), encode(read_rows(spec["test_file"]))

    if parameter_bool(params.get("apply_lora", False)):
        from peft import get_peft_model

        # the adapters' initial weights are drawn here, before the Trainer seeds: seeded now, or the same seed
        # trains a different run each time
        set_seed(int(params.get("seed", 42)))
        model = get_peft_model(model, lora_config(params))

    mlflow.set_tracking_uri(spec["tracking_uri"])
    mlflow.set_experiment(spec["experiment_name"])

    class MlflowLoss(TrainerCallback):
        """Step metrics to MLflow in one batch every few seconds: a write per metric (3.4 ms each on sqlite) took
        a quarter of a small model's training time."""

        def __init__(self) -> None:
            self.pending: list[Any] = []
            self.flushed = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            from mlflow.entities import Metric

            if not state.is_world_process_zero:
                return
            now_ms = int(time.time() * 1000)
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
                if logs and key in logs:
                    name = f"step_{key}" if key == "loss" else key
                    self.pending.append(Metric(name, float(logs[key]), now_ms, state.global_step))
            if time.monotonic() - self.flushed > METRICS_FLUSH_S:
                self.flush()

        def on_train_end(self, args, state, control, **kwargs):
            self.flush()

        def flush(self) -> None:
            if self.pending and mlflow.active_run():
                mlflow.tracking.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=self.pending)
            self.pending, self.flushed = [], time.monotonic()

    class EvalTime(TrainerCallback):
        """Seconds spent evaluating inside train(), taken out of the training throughput: all of it, from the end of
        the epoch to the end of its evaluation (eval_runtime alone leaves out the Trainer's set-up around it, which
        measured several times the evaluation itself on a small model)."""

        def __init__(self) -> None:
            self.seconds = 0.0
            self.epoch_ended: float | None = None

        def on_epoch_end(self, args, state, control, **kwargs):
            self.epoch_ended = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.epoch_ended is None:  # an evaluation outside an epoch's end: what the Trainer measured
                self.seconds += float((metrics or {}).get("eval_runtime", 0.0))
            else:
                self.seconds += time.perf_counter() - self.epoch_ended
            self.epoch_ended = None

    eval_time = EvalTime()

    class Progress(TrainerCallback):
        """Step, epoch and the latest losses to status.json, which job_progress reads while the job runs."""

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            write_status(job_dir, step=0, total_steps=state.max_steps, epoch=0.0, train_started=time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            losses = {
                field: float(logs[key])
                for key, field in (("loss", "train_loss"), ("eval_loss", "eval_loss"))
                if logs and key in logs
            }
            write_status(
                job_dir, step=state.global_step, total_steps=state.max_steps, epoch=float(state.epoch or 0), **losses
            )

    args = TrainingArguments(
        output_dir=str(job_dir / "checkpoints"),
        num_train_epochs=float(params.get("num_train_epochs", 1)),
        per_device_train_batch_size=int(params.get("per_device_train_batch_size", 1)),
        per_device_eval_batch_size=int(params.get("per_device_eval_batch_size", 1)),
        gradient_accumulation_steps=int(params.get("gradient_accumulation_steps", 1)),
        learning_rate=float(params.get("learning_rate", 5e-6)),
        lr_scheduler_type=str(params.get("lr_scheduler_type", "linear")),
        seed=int(params.get("seed", 42)),
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=5,
        report_to="none",
        disable_tqdm=True,
        **plan.trainer_arguments(),
        dataloader_num_workers=0,
        remove_unused_columns=False,  # the collator needs loss_mask, which the model does not take
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=causal_collator(tokenizer),
        callbacks=[MlflowLoss(), eval_time, Progress()],
    )

    # everything made so far (torch, transformers, MLflow, datasets, the model: ~570k objects) lives as long as the
    # process: out of the garbage collector's sight, a full collection (accelerate's free_memory at train start,
    # the automatic ones while training) takes microseconds instead of 0.3 s each
    gc.freeze()
    if not main_process:  # the other data-parallel processes train and evaluate with rank 0, and report nothing
        trainer.evaluate()
        trainer.train()
        trainer.evaluate()
        return
    with mlflow.start_run(run_name=spec["display_name"], tags={"tunegate.job": spec["job_name"]}) as run:
        write_status(job_dir, state="running", mlflow_run_id=run.info.run_id)
        mlflow.log_params({key: str(value) for key, value in params.items()})
        mlflow.log_param("device", plan.describe())
        base_eval_loss = trainer.evaluate()["eval_loss"]
        mlflow.log_metric("base_eval_loss", base_eval_loss)
        if spec.get("champion_model_dir"):
            champion_eval_loss = evaluate_model(
                Path(spec["champion_model_dir"]), read_rows(spec["test_file"]), args, max_len, assistant_only
            )
            mlflow.log_metric("champion_eval_loss", champion_eval_loss)
            print(f"champion {spec['champion']} on this test split: eval_loss={champion_eval_loss:.4f}", flush=True)
        trained = trainer.train()
        train_loss = trained.training_loss
        train_seconds = max(1e-9, float(trained.metrics["train_runtime"]) - eval_time.seconds)
        tokens_per_s = train_tokens(train_set, args.num_train_epochs) / train_seconds
        # the last epoch's evaluation is of these very weights (eval_strategy "epoch"): not run a second time
        evaluated = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
        if evaluated and evaluated[-1].get("step") == trainer.state.global_step:
            eval_loss = float(evaluated[-1]["eval_loss"])
        else:
            eval_loss = trainer.evaluate()["eval_loss"]
        # at the last step, so the eval_loss history ends where training did (not at step 0)
        mlflow.log_metrics(
            {"train_loss": train_loss, "eval_loss": eval_loss, "train_tokens_per_s": tokens_per_s},
            step=trainer.state.global_step,
        )
        write_status(
            job_dir, train_tokens_per_s=tokens_per_s, torch_threads=torch.get_num_threads(), eval_loss=eval_loss
        )
        print(
            f"base_eval_loss={base_eval_loss:.4f} train_loss={train_loss:.4f} eval_loss={eval_loss:.4f} "
            f"train_tokens_per_s={tokens_per_s:.0f} threads={torch.get_num_threads()}",
            flush=True,
        )

        merged = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        hf_dir = job_dir / "outputs" / "hf_model"
        merged.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        save_pyfunc(hf_dir, job_dir / "outputs" / "mlflow_model_folder")
        mlflow.log_artifacts(str(job_dir / "outputs" / "mlflow_model_folder"), artifact_path="trained_model")


def plan_for(spec: dict[str, Any]) -> TrainingPlan:
    """The job's device plan: `gpus` is what the compute gives it (0 on local-cpu: torch's CUDA is not asked)."""
    gpus = int(spec.get("gpus", 0))
    return training_plan(device_facts() if gpus > 0 else DeviceFacts(), gpus, spec["parameters"])


def main(argv: list[str]) -> int:
    job_dir = Path(argv[1])
    if "LOCAL_RANK" not in os.environ:  # the launching process, not one started by torchrun
        try:
            plan = plan_for(json.loads((job_dir / "spec.json").read_text()))
        except Exception as exc:  # noqa: BLE001 - no GPU for a local-cuda job: the job fails saying so
            write_status(job_dir, state="failed", message=f"{type(exc).__name__}: {exc}"[:2000], ended=time.time())
            return 1
        if plan.distributed:
            # one process per GPU (the same pid goes on as torchrun's launcher: cancel still reaches every one)
            write_status(job_dir, state="running", **identity(os.getpid()), started=time.time())
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            torchrun += [f"--nproc_per_node={plan.processes}", "-m", "workspaces.local.trainer", str(job_dir)]
            os.execv(sys.executable, torchrun)
    if int(os.environ.get("RANK", "0")) != 0:
        train(job_dir)
        return 0
    # under torchrun the pid on record stays the launcher's, whose process group holds every worker
    launched = {} if "LOCAL_RANK" in os.environ else {**identity(os.getpid()), "started": time.time()}
    write_status(job_dir, state="running", **launched)
    try:
        train(job_dir)
    except Exception as exc:  # noqa: BLE001 - every failure ends up in status.json for job_status to report
        traceback.print_exc()
        write_status(job_dir, state="failed", message=f"{type(exc).__name__}: {exc}"[:2000], ended=time.time())
        return 1
    write_status(job_dir, state="completed", ended=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
