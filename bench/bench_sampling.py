"""Hash-of-prompt_id sampling vs the seed script's first-N%: cost and stability, side by side.

    python bench/bench_sampling.py [rows]

Prints rows/s of both and how many of the kept rows survive a reordering of the dump (the point of hashing).
"""

from __future__ import annotations

import random
import sys
import time

from data.synthetic import generate_split
from tasks.sampling import sample_split


def first_percent(rows: list[dict], percent: float) -> list[dict]:
    return rows[: int(len(rows) * percent / 100)]  # download-dataset.py's way


def main(rows_wanted: int = 50_000) -> None:
    rows = list(generate_split("train_sft", rows_wanted))
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)

    started = time.perf_counter()
    hashed = sample_split(rows, 5, seed=0).kept
    hash_s = time.perf_counter() - started
    started = time.perf_counter()
    first = first_percent(rows, 5)
    first_s = time.perf_counter() - started

    hashed_again = {r["prompt_id"] for r in sample_split(shuffled, 5, seed=0).kept}
    first_again = {r["prompt_id"] for r in first_percent(shuffled, 5)}
    stable_hash = len(hashed_again & {r["prompt_id"] for r in hashed}) / max(len(hashed), 1)
    stable_first = len(first_again & {r["prompt_id"] for r in first}) / max(len(first), 1)

    print(f"{'':24}{'hash(prompt_id)':>18}{'first N%':>16}")
    print(f"{'rows/s':24}{len(rows) / hash_s:>18,.0f}{len(rows) / max(first_s, 1e-9):>16,.0f}")
    print(f"{'kept':24}{len(hashed):>18}{len(first):>16}")
    print(f"{'same rows after reorder':24}{stable_hash:>18.0%}{stable_first:>16.0%}")
    print(f"ratio hash/first time: {hash_s / max(first_s, 1e-9):.0f}x (validation included in hash)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
