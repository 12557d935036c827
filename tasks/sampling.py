"""Sample data: keep N% of each split, chosen by a stable hash of prompt_id, drop invalid rows, fingerprint.

The notebook's download script keeps the *first* N% of each split, which silently changes with the dump's
order and biases toward whatever comes first; a hash of prompt_id keeps the same rows whatever the order,
and a different seed draws a different sample.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import BinaryIO, cast

from pydantic import BaseModel

from data.runs import SampleFiles
from data.sources import UNPARSEABLE, UNPARSEABLE_WHY, ListBatch, Part, RowBatch, split_parts
from data.splits import WRITTEN_SPLITS
from tasks.settings import DataSettings

VALID_ROLES = frozenset({"system", "user", "assistant"})


def invalid_reason(row: object) -> str | None:
    """Why a row cannot be trained on, or None when it is fine."""
    if not isinstance(row, dict):
        return "row is not an object"
    if UNPARSEABLE in row:
        return str(row.get(UNPARSEABLE_WHY) or "line is not valid JSON")
    prompt_id = row.get("prompt_id")
    if not isinstance(prompt_id, str) or not prompt_id:
        return "missing prompt_id"
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "missing or empty messages"
    for message in messages:
        if not isinstance(message, dict):
            return "message is not an object"
        if message.get("role") not in VALID_ROLES:
            return f"role {message.get('role')!r} is not system/user/assistant"
        content = message.get("content")
        if not isinstance(content, str):
            return "message content is not a string"
        if not content.strip():
            return "empty message content"
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry "\\ud800"; no tokenizer can encode it
            return "message content is not valid text (an unpaired UTF-16 surrogate)"
    if not any(message["role"] == "user" for message in messages):
        return "no user message"  # nothing to prompt with: the smoke test and evaluation send the first user turn
    if not any(message["role"] == "assistant" for message in messages):
        return "no assistant message"
    return None


def drawn_by(percent: float, seed: int) -> Callable[[str], bool]:
    """The sampling rule for one (percent, seed): true for a stable `percent` share of prompt ids, the same id
    always giving the same answer. Built once per batch: its test runs for every row of a split."""
    limit = percent / 100 * 2**64
    salt = f"{seed}:".encode()
    sha256 = hashlib.sha256
    return lambda prompt_id: int.from_bytes(sha256(salt + prompt_id.encode()).digest()[:8], "big") < limit


def in_sample(prompt_id: str, percent: float, seed: int) -> bool:
    return drawn_by(percent, seed)(prompt_id)


class SplitSample(BaseModel):
    kept: list[dict]
    seen: int
    # reason -> count, among the rows drawn by the hash and the rows that cannot be drawn (no usable prompt_id,
    # unreadable lines): a row outside the sample is never decoded beyond its prompt_id, so it is not judged
    invalid: dict[str, int]
    invalid_at: dict[str, list[str]] = {}  # reason -> the first few file:line of unreadable lines


def training_row(row: dict) -> dict:
    """The row as the fine-tune reads it: prompt, prompt_id and role/content messages, nothing else."""
    return {
        "prompt": row.get("prompt") or row["messages"][0]["content"],
        "prompt_id": row["prompt_id"],
        "messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]],
    }


def sample_batch(batch: RowBatch, percent: float, seed: int, into: SplitSample) -> None:
    """Add one batch to `into`: hash every prompt id, decode only the rows drawn (and those with no usable id)."""
    drawn_by_hash = drawn_by(percent, seed)
    drawn = [
        position
        for position, prompt_id in enumerate(batch.prompt_ids)
        if not (isinstance(prompt_id, str) and prompt_id) or drawn_by_hash(prompt_id)
    ]
    into.seen += len(batch.prompt_ids)
    for row in batch.take(drawn):
        reason = invalid_reason(row)
        if reason is None:
            into.kept.append(training_row(cast(dict, row)))  # invalid_reason returns None only for a dict
            continue
        into.invalid[reason] = into.invalid.get(reason, 0) + 1
        if isinstance(row, dict) and UNPARSEABLE in row and len(into.invalid_at.setdefault(reason, [])) < 5:
            into.invalid_at[reason].append(str(row[UNPARSEABLE]))


def sample_split(rows: Iterable[dict], percent: float, seed: int) -> SplitSample:
    sample = SplitSample(kept=[], seen=0, invalid={})
    sample_batch(ListBatch(list(rows)), percent, seed, sample)
    return sample


def jsonl_bytes(rows: Iterable[dict]) -> bytes:
    # fixed key order and separators: same rows -> same bytes on every machine
    return b"".join(
        json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        for row in rows
    )


def fingerprint(file_digests: dict[str, bytes]) -> str:
    """Of the sampled files, from each file's sha256 digest (so a file can be hashed as it is written)."""
    digest = hashlib.sha256()
    for name in sorted(file_digests):
        digest.update(name.encode() + b"\0" + file_digests[name])
    return digest.hexdigest()[:16]


class SampledData(BaseModel):
    directory: str
    files: dict[str, str]  # split -> path
    rows: dict[str, int]
    invalid: dict[str, dict[str, int]]
    fingerprint: str
    eval_fingerprint: str = ""  # of test_sft alone: two models' eval losses compare only on the same eval rows
    seen: dict[str, int] = {}  # split -> rows read

    @property
    def dropped(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.invalid.values())


EVAL_FILE = "test_sft.jsonl"  # what the fine-tune job evaluates on


@dataclass
class PartSample:
    lines: bytes  # the kept rows as jsonl
    sample: SplitSample  # counts (its kept list is emptied once encoded)


def training_line(row: dict) -> bytes:
    """jsonl_bytes([row]) for a training row, built directly: the same bytes in a third of the time."""
    prompt = row["prompt"]
    if not isinstance(prompt, str):  # a prompt of another JSON type: the general encoder
        return jsonl_bytes([row])
    # sorted keys: messages < prompt < prompt_id, content < role; encode_basestring is json.dumps' own
    messages = ",".join(
        '{"content":' + encode_basestring(m["content"]) + ',"role":' + encode_basestring(m["role"]) + "}"
        for m in row["messages"]
    )
    line = '{"messages":[' + messages + '],"prompt":' + encode_basestring(prompt)
    return (line + ',"prompt_id":' + encode_basestring(row["prompt_id"]) + "}\n").encode("utf-8")


def _sample_part(part: Part, percent: float, seed: int) -> PartSample:
    sample = SplitSample(kept=[], seen=0, invalid={})
    for batch in part.batches():
        sample_batch(batch, percent, seed, sample)
    lines = b"".join(map(training_line, sample.kept))
    sample.kept = []
    return PartSample(lines, sample)


def _in_order(parts: list[Part], work: Callable[[Part], PartSample], workers: int) -> Iterator[PartSample]:
    """Results of `work` on each part, in the parts' order, with at most 2 x workers parts in memory at once."""
    if workers <= 1 or len(parts) <= 1:
        yield from map(work, parts)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="sample")
    try:
        pending: deque[Future[PartSample]] = deque()
        for part in parts:
            pending.append(pool.submit(work, part))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# called as progress(split, rows read, share done, share in all) while a split is read; the shares are rows or
# bytes, and None where the size is not known beforehand (a hub stream)
Progress = Callable[[str, int, int, int | None], None]


def default_workers() -> int:
    # parquet decoding releases the GIL, so threads scale with cores; past 8 the disk is the limit
    return max(1, min(os.cpu_count() or 1, 8))


def sample_to_directory(
    settings: DataSettings,
    out_dir: Path,
    cache_dir: Path,
    progress: Progress | None = None,
    workers: int | None = None,
) -> SampledData:
    """Sample every written split into `out_dir` as jsonl, streaming: memory holds a few parts, not a split."""
    digests: dict[str, bytes] = {}
    rows: dict[str, int] = {}
    seen: dict[str, int] = {}
    invalid: dict[str, dict[str, int]] = {}
    written = SampleFiles(out_dir)
    try:
        for split in WRITTEN_SPLITS:
            with written.writer(split) as handle:
                sample, rows[split], digests[f"{split}.jsonl"] = _sample_split_into(
                    handle, split, settings, cache_dir, progress, workers or default_workers()
                )
            seen[split], invalid[split] = sample.seen, sample.invalid
    except BaseException:
        written.discard()
        raise
    data_fingerprint = fingerprint(digests)
    files = written.commit(data_fingerprint)
    return SampledData(
        directory=str(out_dir),
        files=files,
        rows=rows,
        invalid=invalid,
        fingerprint=data_fingerprint,
        eval_fingerprint=fingerprint({EVAL_FILE: digests[EVAL_FILE]}),
        seen=seen,
    )


def _sample_split_into(
    handle: BinaryIO, split: str, settings: DataSettings, cache_dir: Path, progress: Progress | None, workers: int
) -> tuple[SplitSample, int, bytes]:
    """Sample one split into `handle`; returns the counts, the rows kept and the written bytes' sha256 digest."""
    percent = settings.percent_for(split)
    parts = split_parts(settings.source, split, cache_dir, settings.synthetic_rows)
    total = None if any(part.weight is None for part in parts) else sum(part.weight or 0 for part in parts)
    sample = SplitSample(kept=[], seen=0, invalid={})
    kept = done = 0
    digest = hashlib.sha256()
    work = functools.partial(_sample_part, percent=percent, seed=settings.seed)
    for part, result in zip(parts, _in_order(parts, work, workers), strict=True):
        handle.write(result.lines)
        digest.update(result.lines)
        kept += result.lines.count(b"\n")  # json.dumps escapes newlines: one line per row
        _merge_counts(sample, result.sample)
        done += part.weight or 0
        if progress:
            progress(split, sample.seen, done, total)
    if not kept:
        reasons = "; ".join(
            f"{count} x {reason}"
            + (f" (at {', '.join(sample.invalid_at[reason])})" if sample.invalid_at.get(reason) else "")
            for reason, count in sorted(sample.invalid.items(), key=lambda item: -item[1])
        )
        raise ValueError(
            f"data: split {split} kept 0 of {sample.seen} rows ({percent}%, "
            f"{sum(sample.invalid.values())} invalid: {reasons or 'none'}); raise data.percent or check data.source"
        )
    return sample, kept, digest.digest()


def _merge_counts(total: SplitSample, part: SplitSample) -> None:
    total.seen += part.seen
    for reason, count in part.invalid.items():
        total.invalid[reason] = total.invalid.get(reason, 0) + count
    for reason, places in part.invalid_at.items():
        total.invalid_at[reason] = (total.invalid_at.get(reason, []) + places)[:5]
