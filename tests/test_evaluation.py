"""The answer evaluation's rules without Prefect or a server: prompts drawn, similarity and preference, the scores
and the thresholds (tasks/evaluation.py), the policy with them, the review's tables, the judge's client against a
local fake judge, and the champion's record on disk."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from data.runs import RunStore
from tasks import answers
from tasks.evaluate_settings import EvaluateSettings
from tasks.evaluation import (
    Answer,
    AnswerSet,
    EvalPrompt,
    clearly_better,
    evaluation_prompts,
    fingerprint,
    generation_parameters,
    score,
)
from tasks.evaluation_report import answer_table, evaluation_line, evaluation_metrics, evaluation_scores, side_by_side
from tasks.notify import ApprovalNotice
from workspaces.errors import TransientWorkspaceError, WorkspaceError
from workspaces.judge import OpenAIJudge

PROMPTS = [
    EvalPrompt(prompt=f"Write one sentence about a small {thing}.", reference=f"Once there was a small {thing}, and "
               f"everyone who saw the {thing} remembered it.")
    for thing in ("orchard", "pencil", "harbor", "window", "garden", "bridge", "desert", "planet")
]  # fmt: skip
GOOD = [p.reference for p in PROMPTS]
VAGUE = [f"A {p.prompt.split()[-1].rstrip('.')} is a thing." for p in PROMPTS]
GARBAGE = ["Japanis who\x07 15 hiddenadow", "\ufffd\ufffd", "", "the the the the the", "<|user|> hi", "ok", "ok", "ok"]


def answered(model: str, texts: list[str | None], source: str = "deployment e/d") -> AnswerSet:
    return AnswerSet(
        model=model, source=source, answers=[Answer(text=t, latency_ms=10.0 * i) for i, t in enumerate(texts)]
    )


def test_similarity_is_rouge_l_and_preference_prefers_a_reply_closer_to_the_reference():
    reference = "Once there was a small orchard, and everyone who saw the orchard remembered it."
    assert answers.similarity(reference, reference) == pytest.approx(1.0)
    assert answers.similarity(None, reference) == 0.0 and answers.similarity("   ", reference) == 0.0
    assert 0 < answers.similarity("a small orchard", reference) < 1
    assert answers.preference(reference, "a small orchard", reference) == answers.WIN
    assert answers.preference("a small orchard", reference, reference) == answers.LOSS
    assert answers.preference("same words", "same words", reference) == answers.TIE
    # a non-reply loses to any reply, two non-replies tie
    assert answers.preference("\ufffd", "unrelated words", reference) == answers.LOSS
    assert answers.preference("", "", reference) == answers.TIE


def test_a_judge_asked_in_both_orders_counts_only_when_it_agrees_with_itself():
    assert answers.judged(answers.WIN, answers.WIN) == answers.WIN
    assert answers.judged(answers.WIN, answers.LOSS) == answers.TIE  # the position spoke, not the answers


def test_prompts_are_drawn_with_the_seed_with_their_reference_replies(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(40)
    ]
    rows.insert(3, {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "qs"},
                                 {"role": "assistant", "content": "as"}]})  # fmt: skip
    rows.insert(5, {"messages": [{"role": "user", "content": "no reply follows"}]})
    path = tmp_path / "test_gen.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    drawn = evaluation_prompts(str(path), 10, seed=0)
    assert len(drawn) == 10 and all(p.reference == "a" + p.prompt[1:] for p in drawn if p.prompt != "qs")
    assert drawn == evaluation_prompts(str(path), 10, seed=0)
    assert drawn != evaluation_prompts(str(path), 10, seed=1)
    assert len(evaluation_prompts(str(path), 100, seed=0)) == 41  # every usable row; the one without a reply is not


def test_the_fingerprint_changes_with_the_prompts_and_with_the_generation_settings():
    settings = EvaluateSettings()
    base = fingerprint(PROMPTS, generation_parameters(settings))
    assert base == fingerprint(list(PROMPTS), generation_parameters(EvaluateSettings()))
    assert base != fingerprint(PROMPTS[:-1], generation_parameters(settings))
    assert base != fingerprint(PROMPTS, generation_parameters(EvaluateSettings(max_new_tokens=32)))
    assert generation_parameters(settings).do_sample is False  # greedy: a record stands for the model


def test_a_good_candidate_passes_and_beats_a_vague_champion_beyond_chance():
    found = score(PROMPTS, answered("m:2", GOOD), answered("m:1", VAGUE), EvaluateSettings())
    assert found.passed and found.failures == []
    assert found.degenerate_rate == {"candidate": 0.0, "champion": 0.0}
    assert found.similarity["candidate"] == 1.0 > found.similarity["champion"]
    assert found.win_rate == 1.0 and found.win_rate_ci == (1.0, 1.0) and clearly_better(found)
    assert found.latency_ms["candidate"]["p50"] == pytest.approx(35.0)
    assert [row.verdict for row in found.rows] == ["win"] * 8


def test_garbage_fails_on_degenerate_rate_and_similarity_naming_the_settings():
    found = score(PROMPTS, answered("m:2", GARBAGE), None, EvaluateSettings())
    assert not found.passed and found.win_rate is None and not clearly_better(found)
    said = " ".join(found.failures)
    assert "evaluate.max_degenerate_rate" in said and "evaluate.min_similarity" in said
    assert "no champion" not in said  # not a failure: a note, set by the phase


def test_a_candidate_clearly_worse_than_the_champion_fails_on_win_rate():
    found = score(PROMPTS, answered("m:2", VAGUE), answered("m:1", GOOD), EvaluateSettings(min_similarity=0))
    assert found.win_rate == 0.0 and found.win_rate_ci == (0.0, 0.0)
    assert not found.passed and "evaluate.min_win_rate" in found.failures[0] and "m:1" in found.failures[0]
    off = score(
        PROMPTS, answered("m:2", VAGUE), answered("m:1", GOOD), EvaluateSettings(min_similarity=0, min_win_rate=0)
    )
    assert off.passed


def test_identical_answers_tie_and_do_not_count_as_better():
    found = score(PROMPTS, answered("m:2", GOOD), answered("m:1", GOOD), EvaluateSettings())
    assert found.passed and found.win_rate == 0.5 and not clearly_better(found)


def test_no_prompts_fails_closed():
    found = score([], answered("m:2", []), None, EvaluateSettings())
    assert not found.passed and "no test_gen prompt" in found.failures[0]


def test_a_judge_decides_between_two_replies_and_is_asked_in_both_orders():
    asked = []

    def judge(prompt, reference, first, second):
        asked.append((first, second))
        return 1.0 if first.startswith("Once") else 0.0  # prefers the reference-like answer wherever it stands

    found = score(PROMPTS, answered("m:2", GOOD), answered("m:1", VAGUE), EvaluateSettings(), judge, "gpt-judge")
    assert found.win_rate == 1.0 and found.judge == "gpt-judge" and len(asked) == 16
    assert asked[0] == (GOOD[0], VAGUE[0]) and asked[1] == (VAGUE[0], GOOD[0])

    def first_wins(*_):  # position bias: cancels to ties
        return 1.0

    biased = score(PROMPTS, answered("m:2", GOOD), answered("m:1", VAGUE), EvaluateSettings(), first_wins, "j")
    assert biased.win_rate == 0.5


def test_the_review_tables_show_scores_and_every_answer_side_by_side():
    found = score(PROMPTS, answered("m:2", GARBAGE), answered("m:1", GOOD), EvaluateSettings())
    scores = evaluation_scores(found)
    assert "candidate m:2" in scores and "champion m:1" in scores and "95% interval" in scores
    table = side_by_side(found, limit=5)
    assert table.count("\n") == 6 + 2 and "3 more" in table  # header, rule, 5 rows, then the note
    assert "**[" in table  # a non-reply says why, beside the answer
    assert all(line.count(" | ") == 5 for line in table.splitlines()[2:7])  # no answer breaks its row
    rows = answer_table(found)
    assert rows[0].keys() == {"prompt", "reference", "champion", "candidate", "verdict", "problem"}
    metrics = evaluation_metrics(found)
    assert metrics["evaluation_passed"] == 0.0 and "evaluation_win_rate_low" in metrics


def test_settings_refuse_a_judge_without_where_and_what():
    with pytest.raises(ValidationError, match="judge_url and evaluate.judge_model"):
        EvaluateSettings(judge=True)
    with pytest.raises(ValidationError, match="not an http"):
        EvaluateSettings(judge_url="file:///etc/passwd")
    assert EvaluateSettings(judge=True, judge_url="http://localhost:8000/v1", judge_model="m").judge


def fake_judge(answer: str, status: int = 200, seen: list | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        body = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
        return httpx.Response(status, json=body if status == 200 else {"error": "no"})

    return httpx.MockTransport(handle)


def test_the_judge_client_speaks_chat_completions_and_keeps_the_key_in_the_header():
    seen: list[httpx.Request] = []
    judge = OpenAIJudge("http://judge.local/v1/", "j-1", SecretStr("k-123"), transport=fake_judge("A", seen=seen))
    assert judge("q", "r", "one", "two") == 1.0
    request = seen[0]
    assert str(request.url) == "http://judge.local/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer k-123" and b"k-123" not in request.content
    assert json.loads(request.content)["model"] == "j-1"
    azure = OpenAIJudge(
        "https://x.openai.azure.com/openai/v1", "d", SecretStr("k"), transport=fake_judge("b", seen=seen)
    )
    assert azure("q", "r", "one", "two") == 0.0 and seen[-1].headers["api-key"] == "k"
    assert OpenAIJudge("http://j/v1", "m", transport=fake_judge("I cannot say")).__call__("q", "r", "a", "b") == 0.5
    with pytest.raises(TransientWorkspaceError):
        OpenAIJudge("http://j/v1", "m", transport=fake_judge("A", status=503))("q", "r", "a", "b")
    with pytest.raises(WorkspaceError, match="HTTP 401"):
        OpenAIJudge("http://j/v1", "m", transport=fake_judge("A", status=401))("q", "r", "a", "b")


def test_a_champion_record_is_kept_whole_and_a_damaged_one_is_no_record(tmp_path):
    store = RunStore(tmp_path)
    path = store.write_evaluation("../../etc/passwd:1", {"fingerprint": "f", "answers": []})
    assert path.parent == tmp_path / "evaluations" and ".." not in path.name  # a name never becomes a path
    assert store.read_evaluation("../../etc/passwd:1")["fingerprint"] == "f"
    assert store.read_evaluation("other:1") is None
    path.write_text("{not json")
    assert store.read_evaluation("../../etc/passwd:1") is None
    path.write_text(json.dumps({"model": "someone-else:1"}))  # a record of another model under this name's hash
    assert store.read_evaluation("../../etc/passwd:1") is None


def test_the_notification_carries_the_scores_in_one_line():
    found = score(PROMPTS, answered("m:2", GOOD), answered("m:1", VAGUE), EvaluateSettings())
    line = evaluation_line(found)
    assert line.startswith("answers: 8 prompts, passed") and "(champion 0%)" in line and "win rate 1.00" in line
    assert evaluation_line(None) is None
    notice = ApprovalNotice("m:2", "eval_loss 1.2 vs champion m:1", "run", None, "http://ui/review", "in 24 h", line)
    assert line in notice.body() and "answers side by side" in notice.body()
