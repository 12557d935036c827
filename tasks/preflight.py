"""What can be checked before any work starts (sampling, training): the data source is there and readable, the
sizes asked for exist on this workspace (a GPU for local-cuda), local sizes are local. One line per problem; the
CLI exits 2 with them before it starts a Prefect server, and the flow stops with them before sampling."""

from __future__ import annotations

from collections.abc import Callable

from data.splits import WRITTEN_SPLITS
from workspaces.ports import Sku

GPU_SIZE = "local-cuda"


class PreflightError(ValueError):
    """The run cannot start as configured; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def problems(
    config, local_sizes: list[Sku] | None, source_problem: Callable[[str, tuple[str, ...]], str | None]
) -> list[str]:
    """Pure: `local_sizes` are the sizes of the local workspace (None on another workspace), `source_problem` tells
    what is wrong with a data source (data.sources.source_problem)."""
    found = []
    why = source_problem(config.data.source, WRITTEN_SPLITS)
    if why:
        found.append(why)
    if local_sizes is not None:
        listed = [sku.name for sku in local_sizes]
        for key, size in (
            ("compute.size", config.compute.size),
            ("endpoint.instance_type", config.endpoint.instance_type),
        ):
            if size.lower() == GPU_SIZE and GPU_SIZE not in listed:
                found.append(f"{key} {size} needs a CUDA GPU, and torch sees none on this machine: use {key}=local-cpu")
            elif size.lower() not in listed:
                found.append(f"{key} {size!r} is not a size of this machine: use {' or '.join(listed)}")
    return found


def check(config, local_sizes: list[Sku] | None, source_problem: Callable[[str, tuple[str, ...]], str | None]) -> None:
    found = problems(config, local_sizes, source_problem)
    if found:
        raise PreflightError(found)
