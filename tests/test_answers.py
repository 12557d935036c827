"""The answer rules (tasks/answers.py) as pure functions: what is degenerate, win rate, its interval."""

from __future__ import annotations

import pytest

from tasks.answers import (
    LOSS,
    TIE,
    WIN,
    bootstrap_interval,
    degenerate_rate,
    degenerate_reason,
    percentile,
    win_rate,
)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (None, "empty"),
        ("Japanis who\x07 15 hiddenadow\n$\ufffd\ufffd is window", "U+0007"),  # the answer issue 23 quotes
        ("hidden\n$\ufffd\ufffd is window", "replacement character"),
        ("Paris\x07 is the capital", "control"),
        ("Paris is the capital.<|end|><|user|>and Rome?", "leaks the chat template"),
        ("Sure.\nUser: what about Rome?", "speaks as another role"),
        ("the the the the the", "runaway repetition"),
        ("Paris is nice. Paris is nice. Paris is nice. Paris is nice.", "runaway repetition"),
    ],
)
def test_degenerate_answers_say_why(answer, why):
    reason = degenerate_reason(answer)
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize(
    "answer",
    [
        "Paris is the capital of France.",
        "Line one.\nLine two:\n\t- a tab-indented item",
        "Très bien, c'est Paris — la capitale. 東京 is Tokyo.",
        "I think, I think it is Paris.",  # said twice is emphasis, not a runaway
        "The user asked about Paris: it is the capital.",  # the word "user" in prose is fine
    ],
)
def test_ordinary_replies_are_not_degenerate(answer):
    assert degenerate_reason(answer) is None


def test_a_reply_cut_off_at_the_limit_is_degenerate_only_when_the_server_says_so():
    assert degenerate_reason("Paris is the", cut_off=True) == "cut off at the token limit"
    assert degenerate_reason("Paris is the") is None


def test_degenerate_rate_counts_answers_and_no_answers_is_the_worst():
    assert degenerate_rate(["Paris.", "", "Rome.", "\ufffd"]) == 0.5
    assert degenerate_rate([]) == 1.0


def test_win_rate_counts_a_tie_as_half_and_refuses_other_verdicts():
    assert win_rate([WIN, TIE, LOSS, WIN]) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="verdicts are"):
        win_rate([WIN, 0.7])
    with pytest.raises(ValueError, match="no verdicts"):
        win_rate([])


def test_bootstrap_interval_is_seeded_contains_the_mean_and_narrows_with_more_prompts():
    verdicts = [WIN] * 14 + [TIE] * 2 + [LOSS] * 4
    low, high = bootstrap_interval(verdicts, seed=7)
    assert (low, high) == bootstrap_interval(verdicts, seed=7)  # the same run twice: the same interval
    assert low < win_rate(verdicts) < high and 0 <= low and high <= 1
    wide = bootstrap_interval(verdicts[:5] + verdicts[-3:])
    narrow = bootstrap_interval(verdicts * 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert bootstrap_interval([WIN] * 8) == (1.0, 1.0)  # all wins: no doubt left in the sample


def test_percentile_interpolates_like_numpy():
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([5], 95) == 5
    assert percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
