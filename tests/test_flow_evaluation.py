"""The evaluation phase in the flow, on the in-memory workspace: a candidate that answers garbage ends the run as
`evaluation_failed` with nothing new live; the champion answers from its live deployment or from its record; the
policy and the person decide after it, with the answers in the review; `approval.when: before-deploy` keeps the old
order."""

from __future__ import annotations

import pytest

from tests.fakes import FakeWorkspace, ScoringServer, fair_answer
from tests.test_flow import dep, make_config, new_data, read_summary, run

pytestmark = pytest.mark.usefixtures("prefect_harness")

BETTER = {"train_loss": 1.0, "eval_loss": 1.2, "base_eval_loss": 2.5}


@pytest.fixture(scope="module")
def scoring():
    server = ScoringServer()
    yield server
    server.close()


@pytest.fixture
def workspace(scoring):
    scoring.mode, scoring.unreachable_first = "ok", 0
    scoring.requests.clear()
    return FakeWorkspace(scoring)


def garbage_from(deployment_name: str):
    """The named deployment answers as a barely-trained model does; every other one replies."""

    def answer(prompt: str, deployment: str | None) -> str:
        return (
            "ol you\x1c\ufffdllar again brief\ufffd window"
            if deployment == deployment_name
            else fair_answer(prompt, deployment)
        )

    return answer


def test_a_default_run_passes_the_evaluation_and_the_summary_has_its_numbers(tmp_path, workspace, scoring):
    config = make_config(tmp_path)
    summary = run(workspace, config).result()
    assert summary.status == "succeeded"
    found = summary.evaluation
    assert found.passed is True and found.samples == 6  # every test_gen row of this small sample (16 asked)
    assert "6 of the 16 prompts asked" in found.notes[0]
    assert found.degenerate_rate == {"candidate": 0.0} and found.similarity["candidate"] > 0.2
    assert found.win_rate is None and "no champion yet" in found.notes[1]
    assert found.latency_ms["candidate"]["p50"] > 0
    # answered through the candidate's deployment header, several prompts per request, greedy
    asked = [r for r in scoring.requests if len(r["body"]["input_data"]["input_string"]) > 1]
    assert asked and all(r["deployment"] == summary.endpoint.deployment for r in asked)
    assert all(r["body"]["input_data"]["parameters"]["do_sample"] is False for r in asked)
    metrics, answers = workspace.evaluations[f"{summary.model.name}:1"]
    assert metrics["evaluation_passed"] == 1.0 and len(answers) == found.samples
    assert set(answers[0]) == {"prompt", "reference", "champion", "candidate", "verdict", "problem"}


def test_a_candidate_that_answers_garbage_ends_as_evaluation_failed_with_traffic_as_it_was(
    tmp_path, workspace, scoring
):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()
    workspace.metrics = dict(BETTER)  # better on loss: the gate alone would let it through
    scoring.answer = garbage_from(dep("2"))
    state = run(workspace, new_data(config))
    summary = read_summary(config, state)
    assert state.is_failed() and state.name == "Evaluation failed"
    assert summary["status"] == "evaluation_failed" and summary["gate"]["passed"] is True
    evaluation = summary["evaluation"]
    assert evaluation["passed"] is False and evaluation["degenerate_rate"]["candidate"] == 1.0
    assert evaluation["champion"].endswith(":1") and evaluation["champion_source"] == f"deployment chat/{dep('1')}"
    assert evaluation["win_rate"] == 0.0 and any("max_degenerate_rate" in f for f in evaluation["failures"])
    assert summary["smoke"]["ok"] is True and summary["smoke"]["no_reply"]  # noted by the smoke, decided here
    endpoint = workspace.endpoints.get("chat")
    assert endpoint.traffic == {dep("1"): 100} and endpoint.deployments == (dep("1"),)
    assert workspace.champions[summary["model"]["name"]].version == "1"
    assert summary["approval"]["decision"] is None  # nobody was asked about a model that failed its evaluation


def test_with_the_evaluation_off_the_smoke_test_fails_on_an_answer_that_is_no_reply(tmp_path, workspace, scoring):
    config = make_config(tmp_path, evaluate={"enabled": False})
    scoring.answer = lambda prompt, deployment: "\ufffd\ufffd\ufffd"
    summary = read_summary(config, run(workspace, config))
    assert summary["status"] == "smoke_failed" and "no reply" in summary["smoke"]["error"]
    assert summary["evaluation"]["passed"] is None


def test_a_better_candidate_that_also_answers_better_goes_live_on_its_own(tmp_path, workspace, scoring):
    config = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, config).result()
    workspace.metrics = dict(BETTER)  # the fake's older model now says "I do not know."
    summary = run(workspace, new_data(config)).result()
    assert summary.status == "succeeded" and summary.approval.approver == "policy:auto-if-better"
    assert summary.evaluation.win_rate == 1.0 and summary.evaluation.win_rate_ci[0] > 0.5
    assert "win 1.00" in summary.approval.comment
    assert workspace.endpoints.get("chat").traffic == {dep("2"): 100}


def test_better_on_loss_but_not_in_its_answers_needs_a_person(tmp_path, workspace, scoring):
    config = make_config(tmp_path, teardown={"mode": "keep"}, approval={"timeout_hours": 0.001})
    run(workspace, config).result()
    workspace.metrics = dict(BETTER)
    scoring.answer = fair_answer  # both answer alike: ties, no evidence the answers are better
    state = run(workspace, new_data(config))
    summary = read_summary(config, state)
    assert summary["evaluation"]["passed"] is True and summary["evaluation"]["win_rate"] == 0.5
    assert summary["status"] == "rejected" and summary["approval"]["approver"] == "timeout"
    endpoint = workspace.endpoints.get("chat")  # the candidate waited at 0% and was deleted with the timeout
    assert endpoint.traffic == {dep("1"): 100} and endpoint.deployments == (dep("1"),)


def test_an_ephemeral_run_hears_the_champion_where_it_serves_then_from_its_record(tmp_path, workspace, scoring):
    kept = make_config(tmp_path, teardown={"mode": "keep"})
    run(workspace, kept).result()  # the champion serves on the kept endpoint `chat`
    workspace.metrics = dict(BETTER)
    first = run(workspace, make_config(tmp_path, data={"seed": 1})).result()
    assert first.evaluation.champion_source == f"deployment chat/{dep('1')}"
    workspace.endpoint_records.pop("chat")  # the kept endpoint is gone: the champion serves nowhere
    # the same data (so the same held-out prompts), trained again
    second = run(workspace, make_config(tmp_path, data={"seed": 1}, job={"fresh": True})).result()
    assert second.evaluation.champion_source == "its evaluation record"
    assert second.evaluation.similarity["champion"] == first.evaluation.similarity["champion"]
    # other generation settings: the record is not evidence for them; without a comparison a person decides
    third = make_config(
        tmp_path,
        data={"seed": 1},
        job={"fresh": True},
        evaluate={"max_new_tokens": 32},
        approval={"timeout_hours": 0.001},
    )
    summary = read_summary(third, run(workspace, third))
    assert summary["evaluation"]["champion"] is None and "of other prompts" in " ".join(summary["evaluation"]["notes"])
    assert summary["status"] == "rejected" and summary["approval"]["approver"] == "timeout"


def test_approval_before_deploy_decides_first_and_the_evaluation_still_gates(tmp_path, workspace, scoring):
    config = make_config(tmp_path, approval={"when": "before-deploy"})
    summary = run(workspace, config).result()
    assert summary.status == "succeeded" and summary.evaluation.passed
    calls = workspace.calls
    assert calls.index("registry.tag_model") < calls.index("endpoints.create_deployment")
    scoring.answer = lambda prompt, deployment: ""
    failed = read_summary(
        config, run(workspace, make_config(tmp_path, approval={"when": "before-deploy"}, data={"seed": 1}))
    )
    assert failed["status"] == "evaluation_failed" and failed["approval"]["decision"] == "approved"


class FakeJudge:
    """An OpenAI-compatible chat completions server on 127.0.0.1 that prefers any answer over "I do not know."."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                asked = body["messages"][-1]["content"]
                first = asked.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
                verdict = "B" if first == "I do not know." else "A"
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_judge_named_in_the_profile_decides_with_its_key_from_a_secret_block(tmp_path, workspace):
    from prefect.blocks.system import Secret

    Secret(value="judge-key-0123456789").save("tunegate-judge", overwrite=True)
    judge = FakeJudge()
    try:
        config = make_config(tmp_path, teardown={"mode": "keep"})
        run(workspace, config).result()
        workspace.metrics = dict(BETTER)
        judged = make_config(
            tmp_path,
            teardown={"mode": "keep"},
            data={"seed": 1},
            evaluate={"judge": True, "judge_url": judge.url, "judge_model": "fake-judge",
                      "judge_key_block": "tunegate-judge"},
        )  # fmt: skip
        state = run(workspace, judged)
        summary = read_summary(judged, state)
    finally:
        judge.close()
    evaluation = summary["evaluation"]
    assert summary["status"] == "succeeded" and evaluation["judge"] == "fake-judge" and evaluation["win_rate"] == 1.0
    # asked twice per prompt, both orders, with the key only in the header
    assert len(judge.requests) == 2 * evaluation["samples"]
    assert all(
        r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer judge-key-0123456789" for r in judge.requests
    )
    assert all(r["body"]["model"] == "fake-judge" for r in judge.requests)
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert "judge-key-0123456789" not in written
