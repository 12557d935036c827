"""The streaming sampler writes the same bytes as the sampler before it, for every kind of source.

The fingerprints below were recorded with the previous sampler (read a whole split into Python dicts, validate
every row, keep the drawn ones) on the inputs built here; the fingerprint is a hash of each file's sha256, so an
equal fingerprint is byte-identical files. The reference sampler below is that old algorithm, kept as an oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.sources import _parse_line, split_parts
from data.splits import WRITTEN_SPLITS
from data.ultrachat_scale import REAL_ROWS, split_rows, write_ultrachat_scale
from tasks.sampling import in_sample, invalid_reason, jsonl_bytes, sample_to_directory, training_line, training_row
from tasks.settings import DataSettings


def good(i: int) -> dict:
    return {
        "prompt": f"q{i}",
        "prompt_id": f"id-{i}",
        "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
    }


def awkward_rows(n: int = 400) -> list[dict]:
    """Every way a row can be odd: null/empty prompt and id, null/empty/short messages, null messages, bad roles."""
    rows = []
    for i in range(n):
        row = good(i)
        kind = i % 13
        if kind == 1:
            row["prompt"] = None
        elif kind == 2:
            row["prompt_id"] = None
        elif kind == 3:
            row["prompt_id"] = ""
        elif kind == 4:
            row["messages"] = None
        elif kind == 5:
            row["messages"] = []
        elif kind == 6:
            row["messages"] = [None, *row["messages"]]
        elif kind == 7:
            row["messages"][1]["content"] = None
        elif kind == 8:
            row["messages"][0]["role"] = "tool"
        elif kind == 9:
            row["messages"][1]["content"] = "   "
        elif kind == 10:
            row["messages"] = row["messages"][:1]
        elif kind == 11:
            row["prompt"] = ""
        elif kind == 12:
            row["messages"].insert(0, {"role": "system", "content": "é 你好 \u2028"})
        rows.append(row)
    return rows


def write_awkward_parquet(directory: Path) -> None:
    """Hub layout, two files per split, tiny and uneven row groups, an extra column and an extra message field."""
    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("name", pa.string())])
    schema = pa.schema(
        [("prompt_id", pa.string()), ("extra", pa.int64()), ("prompt", pa.string()), ("messages", pa.list_(message))]
    )
    (directory / "data").mkdir(parents=True, exist_ok=True)
    for split in WRITTEN_SPLITS:
        rows = [
            {
                **row,
                "extra": i,
                "messages": None
                if row["messages"] is None
                else [None if m is None else {**m, "name": "n"} for m in row["messages"]],
            }
            for i, row in enumerate(awkward_rows())
        ]
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table.slice(0, 150), directory / "data" / f"{split}-00000-of-00002.parquet", row_group_size=7)
        pq.write_table(table.slice(150), directory / "data" / f"{split}-00001-of-00002.parquet", row_group_size=64)


def write_no_prompt_column(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split in WRITTEN_SPLITS:
        rows = [{"prompt_id": r["prompt_id"], "messages": r["messages"]} for r in (good(i) for i in range(300))]
        pq.write_table(pa.Table.from_pylist(rows), directory / f"{split}.parquet", row_group_size=50)


def write_awkward_jsonl(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split in WRITTEN_SPLITS:
        lines = [json.dumps(r, ensure_ascii=bool(i % 2)).encode() for i, r in enumerate(awkward_rows(300))]
        lines.insert(5, b"{not json")
        lines.insert(9, b'{"prompt_id": "x", "messages": "\xff broken"}')
        lines.insert(11, b"[" * 5000 + b"]" * 5000)
        lines.insert(13, b'"just a string"')
        lines.insert(15, b"  ")
        lines.insert(17, b'{"prompt_id": 7, "messages": []}')
        (directory / f"{split}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


# recorded with the sampler as it was before it streamed (commit 06c33e0)
BEFORE = {
    "synthetic-3000-p20": "a6dfc2ff4f52578e",
    "synthetic-3000-p7-s4": "9f6728afe3c8033d",
    "parquet-p60": "8057f630383bdf9d",
    "noprompt-p30": "f742e7d44e51351a",
    "jsonl-p100": "352878c33ecce720",
    "jsonl-p45": "5cb24e402a4497d3",
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    write_awkward_parquet(root / "parquet")
    write_no_prompt_column(root / "noprompt")
    write_awkward_jsonl(root / "jsonl")
    write_ultrachat_scale(root / "ultrachat", train_rows=5_000, seed=1)
    return root


def case_settings(name: str, root: Path) -> DataSettings:
    return {
        "synthetic-3000-p20": DataSettings(percent=20, synthetic_rows=3000),
        "synthetic-3000-p7-s4": DataSettings(percent=7, synthetic_rows=3000, seed=4),
        "parquet-p60": DataSettings(source=str(root / "parquet"), percent=60),
        "noprompt-p30": DataSettings(source=str(root / "noprompt"), percent=30, seed=2),
        "jsonl-p100": DataSettings(source=str(root / "jsonl"), percent=100),
        "jsonl-p45": DataSettings(source=str(root / "jsonl"), percent=45, seed=9),
    }[name]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", sorted(BEFORE))
def test_output_is_byte_identical_to_the_sampler_before(sources, tmp_path, case, workers):
    result = sample_to_directory(case_settings(case, sources), tmp_path / "out", tmp_path / "cache", workers=workers)
    assert result.fingerprint == BEFORE[case]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "FINGERPRINT",
        "test_gen.jsonl",
        "test_sft.jsonl",
        "train_sft.jsonl",
    ]


def reference_sample(source: Path, split: str, percent: float, seed: int) -> bytes:
    """The sampler as it was: every row into Python, every row validated, the drawn valid rows kept."""
    rows: list[object] = []
    for part in split_parts(str(source), split, Path("/nonexistent")):
        for batch in part.batches():
            rows += batch.take(range(len(batch.prompt_ids)))
    kept = [
        training_row(row)
        for row in rows
        if invalid_reason(row) is None and in_sample(row["prompt_id"], percent, seed)  # type: ignore[index]
    ]
    return jsonl_bytes(kept)


@pytest.mark.parametrize("workers", [1, 2])
def test_ultrachat_sized_rows_in_many_parts_come_out_in_order_as_the_reference(sources, tmp_path, workers):
    settings = DataSettings(source=str(sources / "ultrachat"), percent=30, seed=3)
    assert len(split_parts(settings.source, "train_sft", tmp_path)) >= 3  # several parts on several threads
    result = sample_to_directory(settings, tmp_path / "out", tmp_path / "cache", workers=workers)
    for split in WRITTEN_SPLITS:
        expected = reference_sample(sources / "ultrachat", split, 30, 3)
        assert (tmp_path / "out" / f"{split}.jsonl").read_bytes() == expected
    assert result.seen["train_sft"] == 5_000 and 1_300 < result.rows["train_sft"] < 1_700


def test_a_long_jsonl_is_read_in_parts_and_still_names_the_line_of_a_broken_row(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    filler = "word " * 2_000  # ~10 KB a row: 2,000 rows make more than two 8 MiB parts
    for split in WRITTEN_SPLITS:
        lines = [
            json.dumps({**good(i), "messages": [{"role": "user", "content": filler}, good(i)["messages"][1]]})
            for i in range(2_000)
        ]
        lines[1_950] = "{broken"
        (source / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    assert len(split_parts(str(source), "train_sft", tmp_path)) >= 3
    with pytest.raises(ValueError, match=r"kept 0 of 2000 rows .*at train_sft.jsonl:1951\)"):
        sample_to_directory(
            DataSettings(source=str(source), percent=0.0001), tmp_path / "out", tmp_path / "cache", workers=2
        )
    assert not list((tmp_path / "out").iterdir())  # a failed sample leaves no partial files behind
    result = sample_to_directory(DataSettings(source=str(source), percent=100), tmp_path / "ok", tmp_path / "c")
    assert result.rows["train_sft"] == 1_999 and result.invalid["train_sft"] == {"line is not valid JSON": 1}


def test_invalid_rows_are_counted_among_the_drawn_rows_and_the_undrawable_ones(sources, tmp_path):
    everything = sample_to_directory(
        DataSettings(source=str(sources / "parquet"), percent=100), tmp_path / "all", tmp_path / "cache"
    )
    sampled = sample_to_directory(
        DataSettings(source=str(sources / "parquet"), percent=10), tmp_path / "some", tmp_path / "cache"
    )
    # rows without a usable prompt_id can never be drawn: always reported; the others only when drawn
    assert sampled.invalid["train_sft"]["missing prompt_id"] == everything.invalid["train_sft"]["missing prompt_id"]
    assert 0 < sum(sampled.invalid["train_sft"].values()) < sum(everything.invalid["train_sft"].values())
    assert sampled.seen["train_sft"] == everything.seen["train_sft"] == 400


def test_an_escaped_lone_surrogate_is_an_invalid_line_not_a_crash(tmp_path):
    assert _parse_line(b'{"prompt_id": "\\ud800", "messages": []}', "f:1")["_why"].startswith("line has an escaped")
    assert _parse_line(b'{"prompt_id": "\\u00e9", "messages": []}', "f:2") == {"prompt_id": "é", "messages": []}


@pytest.mark.parametrize(
    "text", ["plain", 'quote " and \\ backslash', "tab\tnew\nline\r\x00\x1f", "é 你好 \u2028\u2029 😀", ""]
)
def test_the_direct_line_encoder_writes_what_json_dumps_writes(text):
    row = {"prompt": text, "prompt_id": text + "x", "messages": [{"role": "user", "content": text}]}
    assert training_line(row) == jsonl_bytes([row])
    assert training_line({**row, "prompt": 5}) == jsonl_bytes([{**row, "prompt": 5}])


def test_the_generated_ultrachat_has_the_real_shape_and_ratios(sources):
    assert split_rows(REAL_ROWS["train_sft"]) == REAL_ROWS
    files = sorted(p.name for p in (sources / "ultrachat" / "data").glob("*.parquet"))
    assert files[0] == "test_gen-00000-of-00001.parquet" and len(files) == 4  # 5,000 rows: one file a split
    table = pq.read_table(sources / "ultrachat" / "data" / "train_sft-00000-of-00001.parquet")
    assert table.schema.names == ["prompt", "prompt_id", "messages"] and table.num_rows == 5_000
    rows = table.slice(0, 500).to_pylist()
    characters = sum(len(m["content"]) for r in rows for m in r["messages"]) / len(rows)
    assert 3_000 < characters < 9_000  # ultrachat_200k averages ~6 KB of text a conversation
    assert all(r["prompt"] == r["messages"][0]["content"] for r in rows)


def test_a_hub_id_is_streamed_and_gives_the_same_files_as_the_directory(sources, tmp_path):
    # `hf:` goes through datasets' streaming loader; pointed at a local copy of the hub layout it needs no network
    local = sample_to_directory(DataSettings(source=str(sources / "ultrachat"), percent=20), tmp_path / "a", tmp_path)
    hub = sample_to_directory(DataSettings(source=f"hf:{sources / 'ultrachat'}", percent=20), tmp_path / "b", tmp_path)
    assert hub.fingerprint == local.fingerprint and hub.seen == local.seen
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("*.arrow"))  # no Arrow copy written


def test_synth_never_replaces_a_data_directory_it_did_not_write(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.parquet").write_text("a user's file")
    with pytest.raises(FileExistsError, match="not written by tunegate synth"):
        write_ultrachat_scale(tmp_path, train_rows=20)
    assert (tmp_path / "data" / "mine.parquet").read_text() == "a user's file"
    write_ultrachat_scale(tmp_path / "ours", train_rows=20, splits=["train_sft"])
    assert write_ultrachat_scale(tmp_path / "ours", train_rows=30, splits=["train_sft"]) == {"train_sft": 30}


def test_rows_without_a_user_turn_or_with_text_no_tokenizer_can_take_are_invalid_by_reason(tmp_path):
    from tasks.sampling import invalid_reason

    only_assistant = {"prompt_id": "a", "messages": [{"role": "assistant", "content": "hi"}]}
    system_and_assistant = {
        "prompt_id": "b",
        "messages": [{"role": "system", "content": "be nice"}, *only_assistant["messages"]],
    }
    surrogate = {
        "prompt_id": "c",
        "messages": [{"role": "user", "content": "x\ud800"}, {"role": "assistant", "content": "y"}],
    }
    assert invalid_reason(only_assistant) == invalid_reason(system_and_assistant) == "no user message"
    assert "unpaired UTF-16 surrogate" in invalid_reason(surrogate)
    # in a test_gen file they are counted like the other invalid rows; the smoke step never meets one
    source = tmp_path / "source"
    source.mkdir()
    good = [
        {
            "prompt_id": f"p{i}",
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
        }
        for i in range(20)
    ]
    for split in ("train_sft", "test_sft"):
        (source / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in good))
    (source / "test_gen.jsonl").write_text("".join(json.dumps(row) + "\n" for row in [*good, only_assistant]))
    result = sample_to_directory(DataSettings(source=str(source), percent=100), tmp_path / "out", tmp_path / "cache")
    assert result.invalid["test_gen"] == {"no user message": 1} and result.rows["test_gen"] == 20
