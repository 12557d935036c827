"""Where and how the local trainer and endpoints run: CPU, or the machine's CUDA GPUs.

`training_plan(facts, gpus, params)` is the one decision (device, processes, precision, gradient checkpointing),
a pure function of the device facts, tested with made-up facts; `device_facts()` is the one place torch is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from workspaces.errors import WorkspaceError
from workspaces.ports import parameter_bool

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class DeviceFacts:
    cuda_devices: int = 0
    bf16: bool = False  # every visible GPU computes in bfloat16 (Ampere and later)
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingPlan:
    device: Literal["cpu", "cuda"]
    processes: int  # > 1: data-parallel, one process per GPU (torchrun)
    precision: Precision
    gradient_checkpointing: bool

    @property
    def distributed(self) -> bool:
        return self.processes > 1

    def trainer_arguments(self) -> dict[str, Any]:
        """The transformers TrainingArguments this plan sets."""
        return {
            "use_cpu": self.device == "cpu",
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "gradient_checkpointing": self.gradient_checkpointing,
            # reentrant checkpointing needs inputs that require grad, which frozen LoRA embeddings do not give
            "gradient_checkpointing_kwargs": {"use_reentrant": False} if self.gradient_checkpointing else None,
            "ddp_find_unused_parameters": False if self.distributed else None,
        }

    def describe(self) -> str:
        if self.device == "cpu":
            return "CPU, fp32"
        gpus = f"{self.processes} GPUs data-parallel" if self.distributed else "1 GPU"
        checkpointing = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return f"CUDA, {gpus}, {self.precision}{checkpointing}"


def training_plan(facts: DeviceFacts, gpus: int, params: dict[str, Any]) -> TrainingPlan:
    """How a job runs: `gpus` is what the compute gives it (0 for local-cpu; for local-cuda the notebook's rule,
    the GPUs per node of the size). CPU stays as it was (fp32, no checkpointing): it must not get slower.
    `params`: the job's parameters (`precision` "16"/"32", `gradient_checkpointing`, default on)."""
    if gpus <= 0:
        return TrainingPlan(device="cpu", processes=1, precision="fp32", gradient_checkpointing=False)
    if facts.cuda_devices == 0:
        raise WorkspaceError(
            "compute local-cuda needs a CUDA GPU, and torch sees none on this machine (torch.cuda.is_available() "
            "is False: no GPU, no driver, or a CPU build of torch); use compute.size=local-cpu"
        )
    # the pipeline's `precision` input ("32" | "16"): half precision unless full is asked for; bf16 where the GPU
    # has it (fp16 needs loss scaling and overflows more easily)
    full = str(params.get("precision", "16")).strip() == "32"
    precision: Precision = "fp32" if full else ("bf16" if facts.bf16 else "fp16")
    return TrainingPlan(
        device="cuda",
        processes=min(gpus, facts.cuda_devices),
        precision=precision,
        gradient_checkpointing=parameter_bool(params.get("gradient_checkpointing", True)),
    )


def device_facts() -> DeviceFacts:
    """What this machine has, as torch sees it (imports torch: call it in the trainer or endpoint process)."""
    import torch

    if not torch.cuda.is_available():
        return DeviceFacts()
    count = torch.cuda.device_count()
    names = tuple(torch.cuda.get_device_name(index) for index in range(count))
    return DeviceFacts(cuda_devices=count, bf16=bool(torch.cuda.is_bf16_supported()), names=names)


def serving_device(instance_type: str, facts: DeviceFacts) -> str:
    """Where an endpoint's model runs: the GPU for a local-cuda instance type, else the CPU."""
    if instance_type != "local-cuda":
        return "cpu"
    if facts.cuda_devices == 0:
        raise WorkspaceError(
            "instance type local-cuda needs a CUDA GPU, and torch sees none on this machine; use "
            "endpoint.instance_type=local-cpu"
        )
    return "cuda"
