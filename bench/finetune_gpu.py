"""Fine-tune throughput against the limit: tunegate's training setup beside a bare PyTorch loop, same model, data,
LoRA and precision, interleaved; tokens/s and model FLOPs utilisation (MFU) against the device's peak.

    python -m bench.finetune_gpu [--size phi3-400m] [--steps 20] [--batch 8] [--seq 1024] [--reps 3]
                                 [--peak-tflops 989] [--device cuda|cpu]

The model is a randomly initialised Phi-3-architecture model (generated, no download); the data random token ids
(no padding, every token counts). tunegate's side is what its trainer runs on local-cuda: transformers' Trainer with
the device plan (workspaces/local/devices.py: bf16 where the GPU has it, gradient checkpointing) and the LoRA of
workspaces/local/trainer.py; the bare side is a hand-written loop with torch.autocast, the same LoRA and AdamW.

MFU counts the FLOPs the model needs per trained token with LoRA: the forward pass (2N) and the backward pass through
the frozen weights for the activations' gradients (2N), N the model's parameters; a recomputed forward (gradient
checkpointing) is not counted, as MFU counts model FLOPs, not hardware FLOPs. 6N (full fine-tuning's figure) is
printed beside it. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

SIZES = {
    # ~400 M parameters (24 layers x 1024 wide, Phi-3's 32064 vocabulary): "hundreds of millions"
    "phi3-400m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16),
    # a few million: for a CPU or a smoke run of this harness
    "phi3-tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
}
# dense bf16 peak of the GPUs named in `nvidia-smi` (TFLOP/s, the vendor's sheet, no sparsity)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def build_model(size: str, seq: int, device: str) -> Any:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    config = Phi3Config(vocab_size=32064, max_position_embeddings=max(4096, seq), **SIZES[size])
    return Phi3ForCausalLM(config).to(device)


def lora(model: Any) -> Any:
    from peft import get_peft_model

    from workspaces.local.training_parts import lora_config

    return get_peft_model(model, lora_config({"lora_r": 16, "lora_alpha": 32}))


def random_batches(steps: int, batch: int, seq: int, seed: int = 0) -> list[Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 32064, (batch, seq), generator=generator) for _ in range(steps)]


def tunegate_side(size: str, batches: list[Any], plan: Any, device: str, warmup: int) -> float:
    """tokens/s of transformers' Trainer set up as tunegate's trainer sets it up on this device."""
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = lora(build_model(size, batches[0].shape[1], device))
    rows = torch.cat(batches).tolist()
    data = Dataset.from_dict({"input_ids": rows, "labels": rows})
    timing: dict[str, float] = {}

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                timing["start"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            timing["end"] = time.perf_counter()

    args = TrainingArguments(
        output_dir="/tmp/tunegate-bench-trainer",
        per_device_train_batch_size=batches[0].shape[0],
        max_steps=len(batches),
        learning_rate=2e-4,
        lr_scheduler_type="linear",
        save_strategy="no",
        logging_steps=10_000,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **plan.trainer_arguments(),
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[StepClock()]).train()
    measured = len(batches) - warmup
    return measured * batches[0].numel() / (timing["end"] - timing["start"])


def bare_side(size: str, batches: list[Any], plan: Any, device: str, warmup: int) -> float:
    """tokens/s of a hand-written loop: autocast in the plan's precision, AdamW, clipping at 1.0 as the Trainer."""
    import torch

    model = lora(build_model(size, batches[0].shape[1], device))
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)
    scaler = torch.amp.GradScaler(enabled=plan.precision == "fp16")
    start = 0.0
    for step, ids in enumerate(batches):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        ids = ids.to(device)
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, labels=ids).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return (len(batches) - warmup) * batches[0].numel() / (time.perf_counter() - start)


def peak_of(device: str, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "given"
    if device != "cuda":
        return None, "unknown for a CPU (give --peak-tflops)"
    import torch

    name = torch.cuda.get_device_name(0)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops, name
    return None, f"unknown for {name} (give --peak-tflops)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="phi3-400m")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per measurement (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each side")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    args = parser.parse_args()

    import torch

    from workspaces.local.devices import DeviceFacts, device_facts, training_plan

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    facts = device_facts() if device == "cuda" else DeviceFacts()
    plan = training_plan(facts, 1 if device == "cuda" else 0, {})
    batches = random_batches(args.steps + args.warmup, args.batch, args.seq)
    parameters = build_model(args.size, args.seq, "cpu").num_parameters()
    results: dict[str, list[float]] = {"tunegate": [], "bare": []}
    for rep in range(args.reps):
        order = ["tunegate", "bare"] if rep % 2 == 0 else ["bare", "tunegate"]
        for side in order:
            run = tunegate_side if side == "tunegate" else bare_side
            results[side].append(run(args.size, batches, plan, device, args.warmup))
            if device == "cuda":
                torch.cuda.empty_cache()
    tunegate, bare = statistics.median(results["tunegate"]), statistics.median(results["bare"])
    peak, peak_source = peak_of(device, args.peak_tflops)

    def mfu(tokens_per_s: float, flops_per_token: float) -> float | None:
        return tokens_per_s * flops_per_token / (peak * 1e12) if peak else None

    report = {
        "device": plan.describe() if device == "cuda" else "CPU",
        "peak_tflops": peak,
        "peak_source": peak_source,
        "model": args.size,
        "parameters": parameters,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "reps": args.reps,
        "tunegate_tokens_per_s": round(tunegate, 1),
        "bare_tokens_per_s": round(bare, 1),
        "ratio": round(tunegate / bare, 3),
        "tunegate_mfu_lora_4n": mfu(tunegate, 4 * parameters),
        "bare_mfu_lora_4n": mfu(bare, 4 * parameters),
        "tunegate_mfu_6n": mfu(tunegate, 6 * parameters),
        "all": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
