"""The anchor of the trainer's throughput: the same fine-tune as a bare PyTorch loop a user would write by hand.

    python -m bench.bare_trainer JOB_DIR [--threads N]

JOB_DIR is a local job's directory (its spec.json names the model, data and parameters). Same model, same
tokenization and truncation, same LoRA config, fused AdamW with the same learning rate and linear schedule, gradient
clipping at 1.0 as the Trainer does, the same epochs and batch size; no evaluation, logging or checkpoints.
Prints one JSON line: {"train_tokens_per_s": ..., "threads": ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from workspaces.local.training_parts import lora_config, torch_threads, train_tokens
from workspaces.ports import parameter_bool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: tunegate's rule)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = json.loads((args.job_dir / "spec.json").read_text())
    params = spec["parameters"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
    threads = args.threads or torch_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(int(params.get("seed", 42)))

    max_len = int(params.get("max_seq_length", -1))
    max_len = max_len if max_len > 0 else 256
    with open(spec["train_file"], encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    texts = [tokenizer.apply_chat_template(row["messages"], tokenize=False) for row in rows]
    encoded = tokenizer(texts, truncation=True, max_length=max_len, add_special_tokens=False)
    if parameter_bool(params.get("apply_lora", False)):
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(params))  # the job's own config: the same adapters
    epochs = int(float(params.get("num_train_epochs", 1)))
    batch = int(params.get("per_device_train_batch_size", 1))
    accumulate = int(params.get("gradient_accumulation_steps", 1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for every parameter's update, what transformers' Trainer uses by default (adamw_torch_fused)
    optimizer = torch.optim.AdamW(trainable, lr=float(params.get("learning_rate", 5e-6)), weight_decay=0.0, fused=True)
    steps = epochs * -(-len(rows) // (batch * accumulate))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, steps)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = list(range(len(rows)))
    shuffle = random.Random(int(params.get("seed", 42)))

    model.train()
    started = time.perf_counter()
    for _ in range(epochs):
        shuffle.shuffle(order)
        for step, first in enumerate(range(0, len(order), batch)):
            ids = [encoded["input_ids"][i] for i in order[first : first + batch]]
            width = max(map(len, ids))
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            labels = input_ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss / accumulate
            loss.backward()
            if (step + 1) % accumulate == 0:
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
    seconds = time.perf_counter() - started
    print(json.dumps({"train_tokens_per_s": train_tokens(encoded, epochs) / seconds, "threads": threads}))


if __name__ == "__main__":
    main()
