"""Reading raw dataset splits: the generated dataset, a local directory of split files, or a hub id.

This is I/O, so it lives here, beside the adapters; the sampling rules that run on the rows live in tasks/data.py.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from data.splits import SPLITS
from data.synthetic import generate_split
from workspaces.base import WorkspaceError

HUB_PREFIX = "hf:"


def materialize_synthetic(root: Path, train_rows: int, seed: int = 0) -> Path:
    """Write the generated dataset as parquet split files once (cached by size/seed) and return its directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = root / f"synthetic-ultrachat-{train_rows}-{seed}"
    if (target / "_SUCCESS").exists():
        return target
    # written aside and renamed into place: a run started at the same time never reads half a file
    partial = root / f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for split in SPLITS:
        rows = list(generate_split(split, train_rows, seed))
        pq.write_table(pa.Table.from_pylist(rows), partial / f"{split}.parquet")
    (partial / "_SUCCESS").write_text("ok\n")
    if not (target / "_SUCCESS").exists():
        shutil.rmtree(target, ignore_errors=True)  # an unfinished directory of an older version
        try:
            os.rename(partial, target)
        except OSError:  # another process renamed its copy first: identical content
            pass
    shutil.rmtree(partial, ignore_errors=True)
    return target


# the marker of a line that could not be read as a row: where it is and why
UNPARSEABLE, UNPARSEABLE_WHY = "_unparseable", "_why"


def _split_files(directory: Path, split: str) -> list[Path]:
    candidates = [directory / f"{split}.parquet", directory / f"{split}.jsonl"]
    found = [path for path in candidates if path.exists()]
    # the hub's own layout: data/train_sft-00000-of-00003-*.parquet
    found += sorted((directory / "data").glob(f"{split}-*.parquet")) if (directory / "data").is_dir() else []
    return found


def _read_file(path: Path) -> Iterator[dict]:
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:  # bytes: one bad line must not stop the file
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                where = f"{path.name}:{number}"
                try:
                    yield json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    # an unreadable line is an invalid row: reported through the validator with where it is
                    yield {UNPARSEABLE: where, UNPARSEABLE_WHY: "line is not valid UTF-8"}
                except json.JSONDecodeError:
                    yield {UNPARSEABLE: where, UNPARSEABLE_WHY: "line is not valid JSON"}
                except RecursionError:
                    yield {UNPARSEABLE: where, UNPARSEABLE_WHY: "line is nested too deeply"}
    else:
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()


def read_split(source: str, split: str, cache_dir: Path, synthetic_rows: int = 2000) -> Iterator[dict]:
    """Rows of one split from `source`: 'synthetic', a directory, or 'hf:<hub id>'."""
    if source == "synthetic":
        yield from read_split(str(materialize_synthetic(cache_dir, synthetic_rows)), split, cache_dir)
        return
    if source.startswith(HUB_PREFIX):
        import datasets

        try:
            dataset = datasets.load_dataset(source[len(HUB_PREFIX) :], split=split, cache_dir=str(cache_dir / "hub"))
        except Exception as exc:  # the hub is unreachable offline: say what to use instead
            raise WorkspaceError(
                f"data.source {source!r}: could not load split {split!r} from the hub ({exc}). "
                "Use a local directory of <split>.parquet/.jsonl files or 'synthetic'."
            ) from exc
        yield from dataset
        return
    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise WorkspaceError(f"data.source {source!r} is not a directory, 'synthetic' or 'hf:<hub id>'")
    files = _split_files(directory, split)
    if not files:
        raise WorkspaceError(
            f"data.source {source!r} has no file for split {split!r} (looked for {split}.parquet, {split}.jsonl, "
            f"data/{split}-*.parquet)"
        )
    for path in files:
        yield from _read_file(path)
