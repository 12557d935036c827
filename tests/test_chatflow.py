"""The Prompt flow parts that need no endpoint: the batch table and verdict, reading a batch run's per-line errors
from Prompt flow's files, the chat tool's conversation and settings, and what a user without the extra is told."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tasks.chatflow import ANSWER_CHARS, outcome, table_rows
from workspaces.ports import ChatBatch, ChatBatchRow
from workspaces.promptflow import line_errors


def batch(*rows: ChatBatchRow, status: str = "Completed") -> ChatBatch:
    return ChatBatch(run="tunegate_chat_ft-a-1_20261124", status=status, rows=rows)


def test_the_table_has_one_row_per_prompt_and_says_why_one_was_not_answered():
    long = "x" * (ANSWER_CHARS + 50)
    rows = table_rows(
        batch(ChatBatchRow(question="Hi?", answer=long), ChatBatchRow(question="Why?", error="HTTP 500: crashed"))
    )
    assert [row["prompt"] for row in rows] == ["Hi?", "Why?"]
    assert len(rows[0]["answer"]) == ANSWER_CHARS and rows[0]["answer"].endswith("…") and rows[0]["error"] == ""
    assert rows[1] == {"prompt": "Why?", "answer": "", "error": "HTTP 500: crashed"}


def test_an_empty_answer_is_an_answer_and_a_missing_one_is_not():
    assert outcome(batch(ChatBatchRow(question="Hi?", answer=""))).ok
    failed = outcome(batch(*[ChatBatchRow(question=f"q{i}", error="refused") for i in range(5)]))
    assert not failed.ok and failed.error.count("refused") == 3 and failed.error.endswith("(+2 more)")


def test_a_batch_run_that_did_not_complete_fails_even_with_answers():
    result = outcome(batch(ChatBatchRow(question="Hi?", answer="Hello"), status="Failed"))
    assert not result.ok and result.error.startswith("run tunegate_chat_ft-a-1_20261124 ended Failed")


def test_per_line_errors_are_read_from_the_runs_flow_artifacts(tmp_path):
    artifacts = tmp_path / "flow_artifacts"
    artifacts.mkdir()
    failed = {
        "line_number": 1,
        "run_info": {
            "status": "Failed",
            "error": {
                "message": "Execution failure in 'chat': (RuntimeError) the endpoint answered HTTP 500",
                "additionalInfo": [{"type": "ToolExecutionErrorDetails", "info": {"message": "HTTP 500: crashed"}}],
            },
        },
    }
    plain = {"line_number": 2, "run_info": {"status": "Failed", "error": {"message": "Line 2 timed out"}}}
    ok = {"line_number": 0, "run_info": {"status": "Completed", "error": None}}
    (artifacts / "000000000_000000002.jsonl").write_text(
        "\n".join(json.dumps(record) for record in (ok, failed, plain)) + "\nnot json\n"
    )
    assert line_errors(tmp_path) == {1: "HTTP 500: crashed", 2: "Line 2 timed out"}
    assert line_errors(tmp_path / "missing") == {}


def test_the_chat_tool_sends_the_whole_conversation_with_the_connections_settings():
    pytest.importorskip("promptflow.core")
    from promptflows.chat.chat import conversation, settings

    history = [
        {"inputs": {"question": "Capital of France?"}, "outputs": {"answer": "Paris."}, "id": "ui-extra"},
        {"inputs": {"question": "And Italy?"}, "outputs": {"answer": ""}},
    ]
    assert conversation("And Spain?", history) == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
        {"role": "user", "content": "And Spain?"},
    ]
    assert conversation("Hi", []) == [{"role": "user", "content": "Hi"}]
    chosen = settings({"endpoint": "http://x", "max_new_tokens": "7", "do_sample": "false"}, 200, 0.6)
    assert (chosen.max_new_tokens, chosen.do_sample, chosen.temperature) == (7, False, 0.6)
    with pytest.raises(ValueError, match="temperature"):
        settings({"temperature": "0"}, 200, 0.6)


WITHOUT_PROMPTFLOW = "import sys; sys.modules['promptflow'] = sys.modules['promptflow.client'] = None; "


def test_without_the_extra_the_user_is_told_what_to_install():
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMPTFLOW + "from flows.cli import app; app(['promptflow', '-e', 'x'])"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'pip install -e ".[promptflow]"' in done.stderr and "Traceback" not in done.stderr


def test_prompt_flow_as_tunegate_runs_it_sends_no_telemetry_and_keeps_its_secrets_advice_quiet():
    import json
    import logging
    import subprocess

    pytest.importorskip("promptflow.client")
    from promptflow._sdk._telemetry import is_telemetry_enabled

    from workspaces import promptflow as pf

    pf._client()  # the in-process client tunegate uses
    assert is_telemetry_enabled() is False
    command = pf.serve_command(8080, "127.0.0.1", False)
    assert command[:4] == [sys.executable, "-m", "workspaces.promptflow", "pf"]  # exec'd pf is made quiet first
    shown = subprocess.run([*command[:4], "config", "show"], capture_output=True, text=True, timeout=180)
    assert json.loads(shown.stdout[shown.stdout.index("{") :])["telemetry"]["enabled"] is False, shown.stdout
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    connection_logger = logging.getLogger("promptflow.core._connection")
    connection_logger.addHandler(handler)
    try:
        connection_logger.warning("Please use connection.secrets[key] to access secrets.")
        connection_logger.warning("something else")
    finally:
        connection_logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == ["something else"]
