"""The local fine-tune job: `python -m workspaces.local.trainer JOB_DIR`, run as its own process.

Reads JOB_DIR/spec.json, writes JOB_DIR/status.json (atomically) as it goes, appends train/eval loss, plus the
base model's eval loss, to JOB_DIR/metrics.jsonl, merges LoRA into the weights (a model folder would otherwise keep
only the adapters) and saves them to JOB_DIR/outputs/hf_model. It never imports MLflow: the process that watches
the job records its MLflow run from these files (workspaces/local/run_record.py).
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
from workspaces.local.run_record import METRICS_FILE, append_metrics
from workspaces.local.training_parts import (
    causal_collator,
    encoded_rows,
    evaluate_model,
    lora_config,
    read_rows,
    torch_threads,
    train_tokens,
)
from workspaces.ports import parameter_bool


def write_status(job_dir: Path, durable: bool = True, **fields: Any) -> None:
    path = job_dir / "status.json"
    # the trainer is the file's writer: one damaged by hand is written whole again
    write_json(path, {**read_json_or_empty(path), **fields, "updated": time.time()}, durable=durable)


def train(job_dir: Path) -> None:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

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

    train_set = encoded_rows(tokenizer, read_rows(spec["train_file"]), max_len, assistant_only)
    eval_set = encoded_rows(tokenizer, read_rows(spec["test_file"]), max_len, assistant_only)

    if parameter_bool(params.get("apply_lora", False)):
        from peft import get_peft_model

        # the adapters' initial weights are drawn here, before the Trainer seeds: seeded now, or the same seed
        # trains a different run each time
        set_seed(int(params.get("seed", 42)))
        model = get_peft_model(model, lora_config(params))

    class MetricsFile(TrainerCallback):
        """Step metrics to metrics.jsonl, a line per log (microseconds: the MLflow run is recorded afterwards)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            names = {"loss": "step_loss", "eval_loss": "eval_loss", "learning_rate": "learning_rate"}
            names["grad_norm"] = "grad_norm"
            logged = {name: float(logs[key]) for key, name in names.items() if key in logs}
            if logged:
                append_metrics(job_dir, logged, state.global_step)

    class LoopTime(TrainerCallback):
        """The training loop's seconds, the span a hand-written loop times (from its first step to its last, the
        optimizer and data loader already made), less the evaluations inside it: all of each, from the end of the
        epoch to the end of its evaluation (eval_runtime alone leaves out the Trainer's set-up around it, which
        measured several times the evaluation itself on a small model)."""

        def __init__(self) -> None:
            self.evaluating = 0.0
            self.epoch_ended: float | None = None
            self.began = self.ended = 0.0

        @property
        def seconds(self) -> float:
            return max(1e-9, self.ended - self.began - self.evaluating)

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.ended = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.epoch_ended = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.epoch_ended is None:  # an evaluation outside an epoch's end: what the Trainer measured
                self.evaluating += float((metrics or {}).get("eval_runtime", 0.0))
            else:
                self.evaluating += time.perf_counter() - self.epoch_ended
            self.epoch_ended = None

    loop_time = LoopTime()

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
            write_status(  # progress, replaced at the next log: not flushed to disk (the loop would wait on it)
                job_dir,
                durable=False,
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=float(state.epoch or 0),
                **losses,
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

    class LeanTrainer(Trainer):
        """transformers' Trainer less two costs of its own, each a walk over every parameter at every step: for its
        FLOPs figure it counted them again (their number does not change while training), and it clipped the
        gradients of all of them, the frozen ones too (they have none). On one CPU process the clip takes the
        trainable ones alone, the same norm; elsewhere (DDP, mixed precision) the Trainer's own way stands."""

        counted: int | None = None
        trainable: list[Any] | None = None

        def _clip_grad_norm(self, model: Any) -> Any:
            if plan.device != "cpu" or plan.distributed:
                return super()._clip_grad_norm(model)
            if self.trainable is None:
                self.trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
            return self.accelerator.clip_grad_norm_(self.trainable, self.args.max_grad_norm)

        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
            if ids is None or not hasattr(self.model, "num_parameters"):
                return 0
            if self.counted is None:
                self.counted = int(self.model.num_parameters(exclude_embeddings=True))
            return 6 * ids.numel() * self.counted

    trainer = LeanTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=causal_collator(tokenizer),
        callbacks=[MetricsFile(), loop_time, Progress()],
    )

    # everything made so far (torch, transformers, datasets, the model: ~570k objects) lives as long as the
    # process: out of the garbage collector's sight, a full collection (accelerate's free_memory at train start,
    # the automatic ones while training) takes microseconds instead of 0.3 s each
    gc.freeze()
    if not main_process:  # the other data-parallel processes train and evaluate with rank 0, and report nothing
        trainer.evaluate()
        trainer.train()
        trainer.evaluate()
        return
    (job_dir / METRICS_FILE).unlink(missing_ok=True)  # a job's metrics are this run's alone
    base_eval_loss = trainer.evaluate()["eval_loss"]
    append_metrics(job_dir, {"base_eval_loss": base_eval_loss}, 0)
    if spec.get("champion_model_dir"):
        champion_eval_loss = evaluate_model(
            Path(spec["champion_model_dir"]), read_rows(spec["test_file"]), args, max_len, assistant_only
        )
        append_metrics(job_dir, {"champion_eval_loss": champion_eval_loss}, 0)
        print(f"champion {spec['champion']} on this test split: eval_loss={champion_eval_loss:.4f}", flush=True)
    trained = trainer.train()
    train_loss = trained.training_loss
    tokens_per_s = train_tokens(train_set, args.num_train_epochs) / loop_time.seconds
    # the last epoch's evaluation is of these very weights (eval_strategy "epoch"): not run a second time
    evaluated = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluated and evaluated[-1].get("step") == trainer.state.global_step:
        eval_loss = float(evaluated[-1]["eval_loss"])
    else:
        eval_loss = trainer.evaluate()["eval_loss"]
    # at the last step, so the eval_loss history ends where training did (not at step 0)
    final = {"train_loss": train_loss, "eval_loss": eval_loss, "train_tokens_per_s": tokens_per_s}
    append_metrics(job_dir, final, trainer.state.global_step)
    write_status(job_dir, train_tokens_per_s=tokens_per_s, torch_threads=torch.get_num_threads(), eval_loss=eval_loss)
    print(
        f"base_eval_loss={base_eval_loss:.4f} train_loss={train_loss:.4f} eval_loss={eval_loss:.4f} "
        f"train_tokens_per_s={tokens_per_s:.0f} threads={torch.get_num_threads()}",
        flush=True,
    )

    merged = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    hf_dir = job_dir / "outputs" / "hf_model"
    merged.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)


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
