"""Reading raw dataset splits: the generated dataset, a local directory of split files, or a hub id.

A split is read as a list of *parts* (a few parquet row groups, a byte range of a jsonl file, a hub stream), each
yielding *batches*. A batch shows its prompt ids first and hands over whole rows only for the positions asked
for: the sampler hashes every id but turns only the rows it keeps into Python objects, which is most of the cost
of a 5% sample of ultrachat. Parts are independent, so they can be read on several threads (parquet decoding
runs outside the GIL) and stitched back in order.

This is I/O, so it lives here, beside the adapters; the sampling rules that run on the rows live in tasks/data.py.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from data.splits import SPLITS
from data.synthetic import generate_split
from workspaces.ports import WorkspaceError

HUB_PREFIX = "hf:"
COLUMNS = ("prompt", "prompt_id", "messages")  # all a sample keeps or checks; other columns are never decoded
PART_ROWS = 1_000  # row groups are read together until a part has this many rows...
PART_BYTES = 16 * 2**20  # ...or this many decoded bytes; a bigger row group is streamed in batches instead
BATCH_ROWS = 2_048
JSONL_PART_BYTES = 8 * 2**20


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


class RowBatch:
    """Rows in file order: `prompt_ids` for every row (None where there is no usable one), whole rows on request."""

    prompt_ids: list[object]

    def take(self, positions: Sequence[int]) -> list[object]:
        raise NotImplementedError


class ListBatch(RowBatch):
    def __init__(self, rows: list[object]) -> None:
        self.rows = rows
        self.prompt_ids = [
            row.get("prompt_id") if isinstance(row, dict) and UNPARSEABLE not in row else None for row in rows
        ]

    def take(self, positions: Sequence[int]) -> list[object]:
        return [self.rows[i] for i in positions]


class ArrowBatch(RowBatch):
    def __init__(self, table) -> None:  # a pyarrow Table or RecordBatch
        self.table = table
        names = table.schema.names
        self.prompt_ids = (
            table.column(names.index("prompt_id")).to_pylist() if "prompt_id" in names else [None] * table.num_rows
        )

    def take(self, positions: Sequence[int]) -> list[object]:
        import pyarrow as pa

        return self.table.take(pa.array(positions, pa.int64())).to_pylist() if positions else []


@dataclass(frozen=True)
class Part:
    """One independently readable piece of a split; `weight` is its share of the progress (rows or bytes)."""

    weight: int | None

    def batches(self) -> Iterator[RowBatch]:
        raise NotImplementedError


@dataclass(frozen=True)
class ParquetPart(Part):
    path: Path
    row_groups: tuple[int, ...]
    streamed: bool  # one row group too big to decode at once: read in batches

    def batches(self) -> Iterator[RowBatch]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path, memory_map=True) as handle:
            columns = [name for name in COLUMNS if name in handle.schema_arrow.names]
            if self.streamed:
                for batch in handle.iter_batches(
                    BATCH_ROWS, row_groups=list(self.row_groups), columns=columns, use_threads=False
                ):
                    yield ArrowBatch(batch)
            else:
                yield ArrowBatch(handle.read_row_groups(list(self.row_groups), columns=columns, use_threads=False))


@dataclass(frozen=True)
class JsonlPart(Part):
    path: Path
    start: int  # byte offset of the part's first line
    end: int
    first_line: int

    def batches(self) -> Iterator[RowBatch]:
        rows: list[object] = []
        with self.path.open("rb") as handle:  # bytes: one bad line must not stop the file
            handle.seek(self.start)
            number = self.first_line - 1
            while handle.tell() < self.end:
                raw = handle.readline()
                number += 1
                if raw.strip():
                    rows.append(_parse_line(raw, f"{self.path.name}:{number}"))
                if len(rows) >= BATCH_ROWS:
                    yield ListBatch(rows)
                    rows = []
        if rows:
            yield ListBatch(rows)


@dataclass(frozen=True)
class HubPart(Part):
    hub_id: str
    split: str
    cache_dir: Path

    def batches(self) -> Iterator[RowBatch]:
        import datasets

        try:
            # streamed: rows arrive as the files download, without writing an Arrow copy of the whole split
            stream = datasets.load_dataset(
                self.hub_id, split=self.split, streaming=True, cache_dir=str(self.cache_dir / "hub")
            )
            rows: list[object] = []
            for row in stream:
                rows.append(row)
                if len(rows) >= BATCH_ROWS:
                    yield ListBatch(rows)
                    rows = []
        except Exception as exc:  # the hub is unreachable offline: say what to use instead
            raise WorkspaceError(
                f"data.source 'hf:{self.hub_id}': could not load split {self.split!r} from the hub ({exc}). "
                "Use a local directory of <split>.parquet/.jsonl files or 'synthetic'."
            ) from exc
        if rows:
            yield ListBatch(rows)


def _parse_line(raw: bytes, where: str) -> object:
    try:
        row = json.loads(raw.decode("utf-8"))
        if b"\\u" in raw:  # an escaped lone surrogate ("\\ud800") parses, but is no text: it could not be written
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        return row
    except UnicodeEncodeError:
        return {UNPARSEABLE: where, UNPARSEABLE_WHY: "line has an escaped lone surrogate (not valid Unicode)"}
    except UnicodeDecodeError:
        # an unreadable line is an invalid row: reported through the validator with where it is
        return {UNPARSEABLE: where, UNPARSEABLE_WHY: "line is not valid UTF-8"}
    except json.JSONDecodeError:
        return {UNPARSEABLE: where, UNPARSEABLE_WHY: "line is not valid JSON"}
    except RecursionError:
        return {UNPARSEABLE: where, UNPARSEABLE_WHY: "line is nested too deeply"}


def _split_files(directory: Path, split: str) -> list[Path]:
    candidates = [directory / f"{split}.parquet", directory / f"{split}.jsonl"]
    found = [path for path in candidates if path.exists()]
    # the hub's own layout: data/train_sft-00000-of-00003-*.parquet
    found += sorted((directory / "data").glob(f"{split}-*.parquet")) if (directory / "data").is_dir() else []
    return found


def _parquet_parts(path: Path) -> list[Part]:
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as exc:  # a truncated or foreign file: name it
        raise WorkspaceError(f"{path} is not a readable parquet file ({exc})") from exc
    parts: list[Part] = []
    groups: list[int] = []
    rows = size = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if group.total_byte_size > PART_BYTES:
            if groups:
                parts.append(ParquetPart(rows, path, tuple(groups), streamed=False))
                groups, rows, size = [], 0, 0
            parts.append(ParquetPart(group.num_rows, path, (index,), streamed=True))
            continue
        groups.append(index)
        rows += group.num_rows
        size += group.total_byte_size
        if rows >= PART_ROWS or size >= PART_BYTES:
            parts.append(ParquetPart(rows, path, tuple(groups), streamed=False))
            groups, rows, size = [], 0, 0
    if groups:
        parts.append(ParquetPart(rows, path, tuple(groups), streamed=False))
    return parts


def _jsonl_parts(path: Path) -> list[Part]:
    """Byte ranges that end on line ends, with the number of each range's first line (for file:line errors)."""
    parts: list[Part] = []
    total = path.stat().st_size
    start, line = 0, 1
    with path.open("rb") as handle:
        while start < total:
            handle.seek(min(start + JSONL_PART_BYTES, total))
            handle.readline()  # finish the line the boundary fell in
            end = min(handle.tell(), total)
            parts.append(JsonlPart(end - start, path, start, end, line))
            handle.seek(start)
            line += handle.read(end - start).count(b"\n")
            start = end
    return parts


def split_parts(source: str, split: str, cache_dir: Path, synthetic_rows: int = 2000) -> list[Part]:
    """The parts of one split of `source` ('synthetic', a directory, or 'hf:<hub id>'), in row order."""
    if source == "synthetic":
        return split_parts(str(materialize_synthetic(cache_dir, synthetic_rows)), split, cache_dir)
    if source.startswith(HUB_PREFIX):
        return [HubPart(None, source[len(HUB_PREFIX) :], split, cache_dir)]
    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise WorkspaceError(f"data.source {source!r} is not a directory, 'synthetic' or 'hf:<hub id>'")
    files = _split_files(directory, split)
    if not files:
        raise WorkspaceError(
            f"data.source {source!r} has no file for split {split!r} (looked for {split}.parquet, {split}.jsonl, "
            f"data/{split}-*.parquet)"
        )
    parts_of = {".jsonl": _jsonl_parts, ".parquet": _parquet_parts}
    return [part for path in files for part in parts_of[path.suffix](path)]


def source_problem(source: str, splits: tuple[str, ...]) -> str | None:
    """What is wrong with `source` that can be told before reading a row (a folder that is not there, not readable,
    or without a file for one of `splits`), or None. The hub and the synthetic generator are checked when read."""
    if source == "synthetic" or source.startswith(HUB_PREFIX):
        return None
    directory = Path(source).expanduser()
    if not directory.exists():
        return f"data.source {source!r}: no such folder (give a folder of split files, 'synthetic' or 'hf:<hub id>')"
    if not directory.is_dir():
        return (
            f"data.source {source!r} is a file, not a folder of split files ('synthetic' and 'hf:<hub id>' also work)"
        )
    if not os.access(directory, os.R_OK | os.X_OK):
        return f"data.source {source!r}: this user cannot read the folder"
    missing = [split for split in splits if not _split_files(directory, split)]
    if missing:
        return (
            f"data.source {source!r} has no file for split(s) {', '.join(missing)} (looked for <split>.parquet, "
            "<split>.jsonl, data/<split>-*.parquet)"
        )
    unreadable = [
        str(path) for split in splits for path in _split_files(directory, split) if not os.access(path, os.R_OK)
    ]
    if unreadable:
        return f"data.source {source!r}: this user cannot read {', '.join(unreadable[:3])}"
    return None
