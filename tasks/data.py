"""Sample data: keep N% of each split, chosen by a stable hash of prompt_id, drop invalid rows, fingerprint.

The notebook's download script keeps the *first* N% of each split, which silently changes with the dump's
order and biases toward whatever comes first; a hash of prompt_id keeps the same rows whatever the order,
and a different seed draws a different sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from data.runs import write_sample
from data.sources import UNPARSEABLE, UNPARSEABLE_WHY, read_split
from data.splits import WRITTEN_SPLITS
from tasks.errors import stage
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
    if not any(message["role"] == "assistant" for message in messages):
        return "no assistant message"
    return None


def in_sample(prompt_id: str, percent: float, seed: int) -> bool:
    """True for a stable `percent` share of prompt ids: the same id, percent and seed always give the same answer."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < percent / 100 * 2**64


class SplitSample(BaseModel):
    kept: list[dict]
    seen: int
    invalid: dict[str, int]  # reason -> count
    invalid_at: dict[str, list[str]] = {}  # reason -> the first few file:line of unreadable lines


def sample_split(rows: Iterable[dict], percent: float, seed: int) -> SplitSample:
    kept: list[dict] = []
    invalid: dict[str, int] = {}
    invalid_at: dict[str, list[str]] = {}
    seen = 0
    for row in rows:
        seen += 1
        reason = invalid_reason(row)
        if reason is not None:
            invalid[reason] = invalid.get(reason, 0) + 1
            if isinstance(row, dict) and UNPARSEABLE in row and len(invalid_at.setdefault(reason, [])) < 5:
                invalid_at[reason].append(str(row[UNPARSEABLE]))
            continue
        if in_sample(row["prompt_id"], percent, seed):
            kept.append(
                {
                    "prompt": row.get("prompt") or row["messages"][0]["content"],
                    "prompt_id": row["prompt_id"],
                    "messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]],
                }
            )
    return SplitSample(kept=kept, seen=seen, invalid=invalid, invalid_at=invalid_at)


def jsonl_bytes(rows: Iterable[dict]) -> bytes:
    # fixed key order and separators: same rows -> same bytes on every machine
    return b"".join(
        json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        for row in rows
    )


def fingerprint(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


class SampledData(BaseModel):
    directory: str
    files: dict[str, str]  # split -> path
    rows: dict[str, int]
    invalid: dict[str, dict[str, int]]
    fingerprint: str
    eval_fingerprint: str = ""  # of test_sft alone: two models' eval losses compare only on the same eval rows

    @property
    def dropped(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.invalid.values())


EVAL_FILE = "test_sft.jsonl"  # what the fine-tune job evaluates on


def sample_to_directory(settings: DataSettings, out_dir: Path, cache_dir: Path) -> SampledData:
    contents: dict[str, bytes] = {}
    rows: dict[str, int] = {}
    invalid: dict[str, dict[str, int]] = {}
    for split in WRITTEN_SPLITS:
        sample = sample_split(
            read_split(settings.source, split, cache_dir, settings.synthetic_rows),
            settings.percent_for(split),
            settings.seed,
        )
        if not sample.kept:
            reasons = "; ".join(
                f"{count} x {reason}"
                + (f" (at {', '.join(sample.invalid_at[reason])})" if sample.invalid_at.get(reason) else "")
                for reason, count in sorted(sample.invalid.items(), key=lambda item: -item[1])
            )
            raise ValueError(
                f"data: split {split} kept 0 of {sample.seen} rows ({settings.percent_for(split)}%, "
                f"{sum(sample.invalid.values())} invalid: {reasons or 'none'}); raise data.percent or check data.source"
            )
        contents[f"{split}.jsonl"] = jsonl_bytes(sample.kept)
        rows[split] = len(sample.kept)
        invalid[split] = sample.invalid
    data_fingerprint = fingerprint(contents)
    files = write_sample(out_dir, contents, data_fingerprint)
    return SampledData(
        directory=str(out_dir),
        files=files,
        rows=rows,
        invalid=invalid,
        fingerprint=data_fingerprint,
        eval_fingerprint=fingerprint({EVAL_FILE: contents[EVAL_FILE]}),
    )


@stage("sample data")
def sample_data(settings: DataSettings, out_dir: str, cache_dir: str) -> SampledData:
    from prefect import get_run_logger

    result = sample_to_directory(settings, Path(out_dir), Path(cache_dir))
    get_run_logger().info(
        "sampled %s from %s; dropped %d invalid rows %s; fingerprint %s",
        result.rows,
        settings.source,
        result.dropped,
        result.invalid,
        result.fingerprint,
    )
    return result
