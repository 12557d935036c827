"""An ultrachat_200k-sized dataset written in the hub's own layout, generated in code (no download).

The small generated dataset (data/synthetic.py) is made for learning; this one is made for measuring: the real
row counts of each split (207,865 train_sft rows at scale 1), conversations of realistic length (1-7 turn pairs,
user messages of a few sentences, assistant answers of one to three paragraphs: ~5,000 characters a row), the
hub's parquet layout (`data/<split>-0000i-of-0000n.parquet`, 1,000-row row groups as `push_to_hub` writes them)
and the hub's schema (prompt, prompt_id = sha256 of the prompt, messages: list<struct<content, role>>).

Text is drawn from a pool of pseudo-English sentences with numpy, so 200k rows take seconds, not minutes, and the
same (rows, seed) always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from data.splits import SPLITS

# HuggingFaceH4/ultrachat_200k as published: rows and parquet files per split
REAL_ROWS = {"train_sft": 207_865, "test_sft": 23_110, "train_gen": 256_032, "test_gen": 28_304}
REAL_FILES = {"train_sft": 3, "test_sft": 1, "train_gen": 3, "test_gen": 1}
ROW_GROUP_ROWS = 1_000
MARKER = ".tunegate-synth"  # in data/: a directory this generator may replace

FUNCTION_WORDS = "the a of to and in that is for it as with was on be by this are or from at an which can".split()
SYLLABLES = "ka lo mi ne ru sa te vi do pe la ri no ta me si ko ba de fi ga hu ji lu ma".split()


def split_rows(train_rows: int) -> dict[str, int]:
    """Rows per split at the real ratios for a given train_sft size (207,865 gives the real counts)."""
    return {split: max(10, round(train_rows * REAL_ROWS[split] / REAL_ROWS["train_sft"])) for split in SPLITS}


def _sentence_pool(seed: int, size: int = 50_000) -> list[str]:
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    # 4,000 words of 1-4 syllables drawn with Zipf's law, like English: a few words make most of the text,
    # which is what gives real text its ~2x snappy compression
    shapes = rng.integers(0, len(SYLLABLES), size=(4_000, 4))
    lengths = rng.integers(1, 5, size=4_000)
    vocabulary = FUNCTION_WORDS + [
        "".join(SYLLABLES[s] for s in shape[:n]) for shape, n in zip(shapes, lengths, strict=True)
    ]
    weights = 1.0 / (np.arange(len(vocabulary)) + 2.7)
    words = rng.choice(len(vocabulary), size=(size, 24), p=weights / weights.sum())
    sizes = rng.integers(8, 25, size=size)
    pool = []
    for row, n in zip(words, sizes, strict=True):
        sentence = " ".join(vocabulary[w] for w in row[:n])
        pool.append(sentence[0].upper() + sentence[1:] + ".")
    return pool


def _rows(split: str, count: int, seed: int, pool: list[str]) -> Iterator[list[dict]]:
    """Rows in chunks of ROW_GROUP_ROWS; lengths follow ultrachat's: ~3.3 turn pairs, answers ~4x questions."""
    import numpy as np

    rng = np.random.default_rng([seed, SPLITS.index(split) + 2])
    turn_weights = np.array([0.12, 0.18, 0.25, 0.2, 0.13, 0.08, 0.04])
    done = 0
    while done < count:
        n = min(ROW_GROUP_ROWS, count - done)
        turns = rng.choice(np.arange(1, 8), size=n, p=turn_weights)
        chunk = []
        for index in range(n):
            messages = []
            for _ in range(int(turns[index])):
                question = rng.integers(0, len(pool), size=int(rng.integers(1, 6)))
                answer = rng.integers(0, len(pool), size=int(rng.integers(6, 25)))
                messages.append({"content": " ".join(pool[i] for i in question), "role": "user"})
                paragraphs = np.array_split(answer, max(1, len(answer) // 8))
                text = "\n\n".join(" ".join(pool[i] for i in part) for part in paragraphs)
                messages.append({"content": text, "role": "assistant"})
            if (done + index) % 9_973 == 9_972:  # the odd broken record of a real dump
                messages[-1]["content"] = ""
            prompt = messages[0]["content"]
            chunk.append(
                {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(), "messages": messages}
            )
        done += n
        yield chunk


def write_ultrachat_scale(
    out: Path,
    train_rows: int = REAL_ROWS["train_sft"],
    seed: int = 0,
    splits: Iterable[str] = SPLITS,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write `splits` under `out/data/` and return rows per split. `progress(split, rows)` is told as it goes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("prompt", pa.string()),
            ("prompt_id", pa.string()),
            ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ]
    )
    target = out / "data"
    if target.exists() and not (target / MARKER).exists():  # never replace a directory someone else wrote
        raise FileExistsError(f"{target} exists and was not written by tunegate synth: choose another --out")
    pool = _sentence_pool(seed)
    wanted = set(splits)
    counts = {split: rows for split, rows in split_rows(train_rows).items() if split in wanted}
    partial = out / f".data.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for split, count in counts.items():
        files = REAL_FILES[split] if count >= 10 * ROW_GROUP_ROWS else 1
        chunks = _rows(split, count, seed, pool)
        per_file = -(-count // files)
        for number in range(files):
            path = partial / f"{split}-{number:05d}-of-{files:05d}.parquet"
            with pq.ParquetWriter(path, schema) as writer:
                written = 0
                for chunk in chunks:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema), row_group_size=ROW_GROUP_ROWS)
                    written += len(chunk)
                    if progress:
                        progress(split, len(chunk))
                    if written >= per_file:
                        break
    (partial / MARKER).write_text("written by tunegate synth\n")
    shutil.rmtree(target, ignore_errors=True)  # checked above: only an earlier output of this generator
    os.rename(partial, target)
    return counts
