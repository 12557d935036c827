"""Sampling and row validation, and the generated dataset."""

from __future__ import annotations

import json
import random

import pytest

from data.synthetic import generate_split
from tasks.sampling import in_sample, invalid_reason, sample_split, sample_to_directory
from tasks.settings import DataSettings
from workspaces.ports import WorkspaceError


def good(i: int) -> dict:
    return {
        "prompt": f"q{i}",
        "prompt_id": f"id-{i}",
        "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
    }


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt_id": "x", "messages": []}, "missing or empty messages"),
        ({"prompt_id": "x", "messages": None}, "missing or empty messages"),
        ({"prompt_id": "x"}, "missing or empty messages"),
        ({"prompt_id": "x", "messages": [{"role": "tool", "content": "hi"}]}, "role 'tool'"),
        ({"prompt_id": "x", "messages": [{"role": "user", "content": 3}]}, "not a string"),
        ({"prompt_id": "x", "messages": [{"role": "user", "content": "  "}]}, "empty message content"),
        ({"prompt_id": "x", "messages": [{"role": "user", "content": "only a question"}]}, "no assistant"),
        ({"messages": good(1)["messages"]}, "missing prompt_id"),
        ("not a row", "not an object"),
        ({"_unparseable": "f:3"}, "not valid JSON"),
    ],
)
def test_invalid_rows_are_named(row, reason):
    assert reason in invalid_reason(row)


def test_valid_row_passes():
    assert invalid_reason(good(1)) is None
    assert invalid_reason({**good(1), "messages": [{"role": "system", "content": "s"}, *good(1)["messages"]]}) is None


def test_sample_is_by_hash_not_position_and_keeps_about_the_share():
    rows = [good(i) for i in range(4000)]
    kept = {r["prompt_id"] for r in sample_split(rows, 10, seed=0).kept}
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert {r["prompt_id"] for r in sample_split(shuffled, 10, seed=0).kept} == kept  # order does not matter
    assert 320 < len(kept) < 480
    assert kept != {f"id-{i}" for i in range(len(kept))}  # not the first N%
    assert {r["prompt_id"] for r in sample_split(rows, 10, seed=1).kept} != kept  # another seed, another sample
    assert all(in_sample(pid, 10, 0) for pid in kept)
    assert {r["prompt_id"] for r in sample_split(rows, 20, seed=0).kept} >= kept  # growing the share keeps the old rows


def test_invalid_rows_are_dropped_and_counted():
    rows = [
        good(1),
        {"prompt_id": "bad", "messages": []},
        good(2),
        {"prompt_id": "t", "messages": [{"role": "tool", "content": "x"}]},
    ]
    sample = sample_split(rows, 100, seed=0)
    assert [r["prompt_id"] for r in sample.kept] == ["id-1", "id-2"]
    assert sample.seen == 4 and sum(sample.invalid.values()) == 2


def test_same_inputs_give_byte_identical_files(tmp_path):
    settings = DataSettings(percent=20, synthetic_rows=300)
    first = sample_to_directory(settings, tmp_path / "a", tmp_path / "cache")
    second = sample_to_directory(settings, tmp_path / "b", tmp_path / "cache-2")  # regenerated from scratch
    for split in ("train_sft", "test_sft", "test_gen"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    assert first.fingerprint == second.fingerprint
    assert (
        sample_to_directory(
            DataSettings(percent=20, synthetic_rows=300, seed=5), tmp_path / "c", tmp_path / "cache"
        ).fingerprint
        != first.fingerprint
    )
    row = json.loads((tmp_path / "a" / "train_sft.jsonl").read_text().splitlines()[0])
    assert set(row) == {"prompt", "prompt_id", "messages"} and set(row["messages"][0]) == {"role", "content"}


def test_reads_a_directory_of_jsonl_and_counts_broken_lines(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for split in ("train_sft", "test_sft", "test_gen"):
        lines = [json.dumps(good(i)) for i in range(50)] + ["{not json"]
        (source / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    result = sample_to_directory(DataSettings(source=str(source), percent=100), tmp_path / "out", tmp_path / "cache")
    assert result.rows == {"train_sft": 50, "test_sft": 50, "test_gen": 50}
    assert result.invalid["train_sft"] == {"line is not valid JSON": 1}


def test_per_split_percent_and_empty_sample_error(tmp_path):
    settings = DataSettings(percent=100, percent_per_split={"test_gen": 1}, synthetic_rows=20)
    with pytest.raises(ValueError, match="test_gen kept 0 .*raise data.percent"):
        sample_to_directory(settings, tmp_path / "out", tmp_path / "cache")


def test_missing_source_says_what_is_accepted(tmp_path):
    with pytest.raises(WorkspaceError, match="not a directory, 'synthetic' or 'hf:"):
        sample_to_directory(DataSettings(source=str(tmp_path / "nope")), tmp_path / "o", tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkspaceError, match="no file for split 'train_sft'"):
        sample_to_directory(DataSettings(source=str(tmp_path / "empty")), tmp_path / "o", tmp_path / "c")


def test_generated_dataset_is_deterministic_and_ultrachat_shaped():
    rows = list(generate_split("train_sft", 200))
    assert rows == list(generate_split("train_sft", 200))
    assert len({r["prompt_id"] for r in rows}) == len(rows)
    assert all(len(r["prompt_id"]) == 64 for r in rows)
    assert sum(invalid_reason(r) is not None for r in rows) >= 1  # a few broken rows, like a real dump


def test_invalid_utf8_and_pathological_nesting_are_invalid_rows_with_where(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for split in ("train_sft", "test_sft", "test_gen"):
        lines = [json.dumps(good(i)).encode() for i in range(20)]
        lines.insert(3, b'{"prompt_id": "x", "messages": "\xff\xfe broken"}')
        lines.insert(7, b"[" * 200_000 + b"]" * 200_000)
        (source / f"{split}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = sample_to_directory(DataSettings(source=str(source), percent=100), tmp_path / "out", tmp_path / "cache")
    assert result.rows["train_sft"] == 20
    assert result.invalid["train_sft"] == {"line is not valid UTF-8": 1, "line is nested too deeply": 1}


def test_when_every_row_is_invalid_the_error_lists_reasons_counts_and_places(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for split in ("train_sft", "test_sft", "test_gen"):
        (source / f"{split}.jsonl").write_bytes(b"{not json\n\xff\xff\n{also not\n")
    with pytest.raises(ValueError) as error:
        sample_to_directory(DataSettings(source=str(source), percent=100), tmp_path / "out", tmp_path / "cache")
    text = str(error.value)
    assert "kept 0 of 3 rows" in text and "3 invalid" in text
    assert "2 x line is not valid JSON (at train_sft.jsonl:1, train_sft.jsonl:3)" in text
    assert "1 x line is not valid UTF-8 (at train_sft.jsonl:2)" in text
