"""Local compute: this machine, as `local-cpu` and, where torch sees CUDA, `local-cuda` with its GPU count."""

from __future__ import annotations

import sys
from pathlib import Path

from workspaces.ports import Compute, ComputeSpec, Sku, WorkspaceError

LOCAL_SIZES = ("local-cpu", "local-cuda")


class LocalCompute:
    """This machine as the compute role: nothing to create, sizes from what torch sees."""

    def list_sizes(self) -> list[Sku]:
        return list_sizes()

    def ensure(self, spec: ComputeSpec) -> Compute:
        return ensure_compute(spec)


def gpu_device_nodes() -> bool:
    """Whether this machine may have a GPU torch can use, without importing torch (seconds): on Linux a CUDA GPU
    needs its device node (/dev/nvidia0..., WSL's /dev/dxg; ROCm's /dev/kfd). Elsewhere: ask torch."""
    if sys.platform != "linux":
        return True
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "dxg").exists() or (dev / "kfd").exists()


def list_sizes() -> list[Sku]:
    sizes = [Sku(name="local-cpu", gpus=0)]
    if not gpu_device_nodes():
        return sizes
    try:
        import torch

        if torch.cuda.is_available():
            sizes.append(Sku(name="local-cuda", gpus=torch.cuda.device_count()))
    except ImportError:
        pass
    return sizes


def ensure_compute(spec: ComputeSpec) -> Compute:
    if spec.size.lower() not in LOCAL_SIZES:
        raise WorkspaceError(f"compute.size {spec.size!r} is not a local size; use one of {', '.join(LOCAL_SIZES)}")
    return Compute(name=spec.name, size=spec.size.lower(), provisioning_state="Succeeded")
