"""The trainer's parts that are plain functions: threads for torch, the LoRA config, the collator, token counts,
evaluating a saved model (workspaces/local/trainer.py runs them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LORA_TARGETS = "all-linear"


def read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def torch_threads(cores: int | None = None, load: float | None = None) -> int | None:
    """Threads for torch on CPU, or None to leave the user's OMP_NUM_THREADS / MKL_NUM_THREADS in charge.

    One core is left to the rest of tunegate (flow, Prefect server, endpoints) and busy cores are not counted:
    measured on 2 cores (`python -m bench`, bench/bare_trainer.py), 2 threads train a 64-wide model 1.25x faster
    than 1 when the machine is idle, but 3.4x slower when another process keeps one core busy (threads wait on
    each other), and every width from 64 to 1024 behaves alike. Oversubscribing costs far more than a free core.
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    cores = cores or len(os.sched_getaffinity(0))
    load = os.getloadavg()[0] if load is None else load
    return max(1, min(cores - 1, cores - round(load)))


def lora_config(params: dict[str, Any]) -> Any:
    """The LoRA adapters the job trains, from the pipeline's parameters (the component's names and defaults)."""
    from peft import LoraConfig

    return LoraConfig(
        r=int(params.get("lora_r", 8)),
        lora_alpha=int(params.get("lora_alpha", 128)),
        lora_dropout=float(params.get("lora_dropout", 0.0)),
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
        # a from-scratch tiny model has no useful embeddings to keep frozen: let the model's defaults train them
        modules_to_save=[m for m in str(params.get("lora_modules_to_save") or "").split(",") if m] or None,
    )


def causal_collator(tokenizer: Any) -> Any:
    """Batches for next-token loss: padded, with the padding (by attention mask, not by token id) left out of the
    loss. transformers' language-modeling collator masks every token equal to the pad token, and many chat models
    pad with their end-of-turn token: the model would never learn to end a reply."""
    if tokenizer.pad_token is None:  # padding only needs some id: the mask keeps it out of attention and loss
        tokenizer.pad_token = tokenizer.eos_token

    def collate(rows: list[dict]) -> dict:
        batch = tokenizer.pad(
            [{"input_ids": row["input_ids"], "attention_mask": row["attention_mask"]} for row in rows],
            return_tensors="pt",
        )
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        return {**batch, "labels": labels}

    return collate


def train_tokens(data: Any, epochs: float) -> int:
    return int(sum(len(ids) for ids in data["input_ids"]) * epochs)


def evaluate_model(model_dir: Path, rows: list[dict], args: Any, max_len: int) -> float:
    """Eval loss of another model (the champion) on these rows, tokenized with its own tokenizer."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    texts = [tokenizer.apply_chat_template(row["messages"], tokenize=False) for row in rows]
    encoded = tokenizer(texts, truncation=True, max_length=max_len, add_special_tokens=False)
    data = Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    evaluator = Trainer(model=model, args=args, eval_dataset=data, data_collator=causal_collator(tokenizer))
    return float(evaluator.evaluate()["eval_loss"])


# every linear layer but the output head (Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj), whatever the
# architecture an imported model has
