"""The data commands: `sample` (the notebook's sampling, alone) and `synth` (a small dataset for a laptop)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from data.runs import RunStore
from workspaces.ports import WorkspaceError

if TYPE_CHECKING:
    pass

from flows.cli.common import (
    ProfileOption,
    _config,
    _fail,
    app,
    console,
    err,
)


@app.command()
def sample(
    source: Annotated[
        str,
        typer.Option("--source", help="'synthetic', a directory of split files (or the hub's data/ layout), hf:ID."),
    ],
    percent: Annotated[float, typer.Option("--percent", min=0.0001, max=100, help="Percent of each split to keep.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for train_sft/test_sft/test_gen.jsonl.")],
    seed: Annotated[int, typer.Option("--seed", help="Salt of the sampling hash: another seed, another sample.")] = 0,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Threads reading parquet (default: the cores, at most 8).")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Where generated or hub datasets are cached (default: the profile's, as a run)."),
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Sample a dataset exactly as a run's first stage does, without running the flow: the same rows, the same
    files and fingerprint. Prints rows kept of rows read per split, invalid rows by reason, and the fingerprint."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.sampling import sample_to_directory
    from tasks.settings import DataSettings

    try:
        settings = DataSettings(source=source, percent=percent, seed=seed)
    except ValueError as exc:
        _fail(exc, 2)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:>12,} rows read"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, Any] = {}  # split -> its rich TaskID

    def progress(split: str, seen: int, done: int, total: int | None) -> None:
        if split not in tasks:
            tasks[split] = bar.add_task(split, total=total, rows=0)
        bar.update(tasks[split], completed=done, rows=seen)

    try:
        with bar:
            cache_dir = cache or RunStore(_config(profile, None).workspace.state_dir).datasets_dir
            result = sample_to_directory(settings, out, cache_dir, progress=progress, workers=workers)
    except (ValueError, WorkspaceError, OSError) as exc:
        _fail(exc, 1)
    table = Table("split", Column("kept", justify="right"), Column("read", justify="right"), "invalid rows")
    for split, kept in result.rows.items():
        reasons = result.invalid.get(split, {})
        table.add_row(
            split,
            f"{kept:,}",
            f"{result.seen.get(split, 0):,}",
            Text("; ".join(f"{n:,} {why}" for why, n in sorted(reasons.items(), key=lambda i: -i[1])) or "-"),
        )
    console.print(table)
    console.print(f"fingerprint {result.fingerprint}  ->  {out}", markup=False)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write data/<split>-*.parquet into.")],
    rows: Annotated[
        int, typer.Option("--rows", min=10, help="train_sft rows; the other splits follow ultrachat_200k's ratios.")
    ] = 207_865,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="Only these splits (repeatable; default: all four).")
    ] = None,
) -> None:
    """Generate an ultrachat_200k-sized dataset in the hub's layout (for benchmarks at the real scale, offline)."""
    from rich.progress import Progress

    from data.splits import SPLITS
    from data.ultrachat_scale import split_rows, write_ultrachat_scale

    unknown = set(split or []) - set(SPLITS)
    if unknown:
        _fail(f"--split {', '.join(sorted(unknown))}: splits are {', '.join(SPLITS)}", 2)
    wanted = split or list(SPLITS)
    sizes = {name: count for name, count in split_rows(rows).items() if name in wanted}
    try:
        with Progress(console=err, transient=True) as bar:
            tasks = {name: bar.add_task(name, total=count) for name, count in sizes.items()}
            written = write_ultrachat_scale(
                out, rows, seed, wanted, progress=lambda name, count: bar.advance(tasks[name], count)
            )
    except OSError as exc:
        _fail(exc, 1)
    summary = ", ".join(f"{name}: {count:,} rows" for name, count in written.items())
    console.print(f"{summary} -> {out / 'data'}", markup=False, soft_wrap=True)
