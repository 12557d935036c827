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


def assistant_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as the chat template renders it, and the character spans of the assistant's turns (each
    from after its generation prompt to the end of its turn, end-of-turn marker included: the model learns to stop).
    A template whose prefixes do not render as prefixes of the whole gives no spans (then every token counts)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        # a template may close the whole conversation (Phi-3 ends it with <|endoftext|>): the part shared with the
        # whole is what the turn is
        start, end = len(os.path.commonprefix([before, text])), len(os.path.commonprefix([through, text]))
        if start != len(before) or end <= start or str(message.get("content", "")).strip() not in text[start:end]:
            return text, []
        spans.append((start, end))
    return text, spans


def encode_conversations(tokenizer: Any, rows: list[dict], max_len: int, assistant_only: bool) -> dict[str, list]:
    """input_ids, attention_mask and loss_mask per row: with `assistant_only`, 1 only on the tokens of the assistant's
    turns (TRL's assistant_only_loss, Axolotl's train_on_inputs: false), else 1 on every token."""
    rendered = [assistant_spans(tokenizer, row["messages"]) if assistant_only else (None, []) for row in rows]
    texts = [
        text if text is not None else tokenizer.apply_chat_template(row["messages"], tokenize=False)
        for (text, _), row in zip(rendered, rows, strict=True)
    ]
    encoded = tokenizer(
        texts, truncation=True, max_length=max_len, add_special_tokens=False, return_offsets_mapping=assistant_only
    )
    masks = []
    for index, ids in enumerate(encoded["input_ids"]):
        spans = rendered[index][1]
        if not assistant_only or not spans:
            masks.append([1] * len(ids))
            continue
        offsets = encoded["offset_mapping"][index]
        # a token counts when it lies inside a turn: the next turn's marker, cut where the turn ends, does not
        masks.append([int(any(start <= first and last <= end for start, end in spans)) for first, last in offsets])
    # a row cut before any reply (a prompt longer than max_seq_length) has nothing to learn: a batch of only such rows
    # would have a loss over no tokens (NaN)
    kept = [index for index, mask in enumerate(masks) if any(mask)]
    if not kept:
        raise ValueError(
            f"no conversation keeps an assistant reply within max_seq_length {max_len}: raise finetune.max_seq_length "
            "or turn workspace.local.assistant_only_loss off"
        )
    return {
        "input_ids": [encoded["input_ids"][i] for i in kept],
        "attention_mask": [encoded["attention_mask"][i] for i in kept],
        "loss_mask": [masks[i] for i in kept],
    }


def encoded_rows(tokenizer: Any, rows: list[dict], max_len: int, assistant_only: bool) -> list[dict[str, list[int]]]:
    """encode_conversations as one dict per row, what the Trainer's data loader indexes: a plain list (a
    datasets.Dataset costs its import and an Arrow round trip for every batch)."""
    columns = encode_conversations(tokenizer, rows, max_len, assistant_only)
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def causal_collator(tokenizer: Any) -> Any:
    """Batches for next-token loss: padded, with the padding (by attention mask, not by token id) left out of the
    loss. transformers' language-modeling collator masks every token equal to the pad token, and many chat models
    pad with their end-of-turn token: the model would never learn to end a reply."""
    if tokenizer.pad_token is None:  # padding only needs some id: the mask keeps it out of attention and loss
        tokenizer.pad_token = tokenizer.eos_token

    pad_id = tokenizer.pad_token_id

    def collate(rows: list[dict]) -> dict:
        import torch

        # padded by hand, a list each: tokenizer.pad's per-row checks cost as much as a small model's optimizer step
        width = max(len(row["input_ids"]) for row in rows)
        left = tokenizer.padding_side == "left"

        def padded(values: list[int], fill: int) -> list[int]:
            padding = [fill] * (width - len(values))
            return padding + values if left else values + padding

        input_ids = torch.tensor([padded(row["input_ids"], pad_id) for row in rows])
        attention_mask = torch.tensor([padded(row["attention_mask"], 0) for row in rows])
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        if all("loss_mask" in row for row in rows):  # only the assistant's tokens count (encode_conversations)
            counted = torch.tensor([padded(row["loss_mask"], 0) for row in rows])
            labels = labels.masked_fill(counted == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    return collate


def train_tokens(data: Any, epochs: float) -> int:
    """Tokens trained on in `epochs` of `data` (columns, or a row each)."""
    ids = [row["input_ids"] for row in data] if isinstance(data, list) else data["input_ids"]
    return int(sum(len(row) for row in ids) * epochs)


def evaluate_model(model_dir: Path, rows: list[dict], args: Any, max_len: int, assistant_only: bool) -> float:
    """Eval loss of another model (the champion) on these rows, tokenized with its own tokenizer, on the same tokens
    (the assistant's, or all) as the candidate: like with like."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = encoded_rows(tokenizer, rows, max_len, assistant_only)
    evaluator = Trainer(model=model, args=args, eval_dataset=data, data_collator=causal_collator(tokenizer))
    return float(evaluator.evaluate()["eval_loss"])


# every linear layer but the output head (Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj), whatever the
# architecture an imported model has
