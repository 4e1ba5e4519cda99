"""Pair building and the metrics that need no server: exact expected values."""

import math
from collections import Counter

import pytest

from collabloop.judges import expected_grade, expected_verdict, parse_grade, parse_verdict
from collabloop.metrics import MetricResources, MetricValue, ScoringItem, combine, get_metric
from collabloop.records import Rewarded, Task
from dpo_iteration.pairing import make_pair

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


def rewarded(rewards, responses=None):
    responses = responses or [f"answer {i}" for i in range(len(rewards))]
    return Rewarded(
        id="c1", task_id="t1", prompt=PROMPT, turn=0, responses=responses, gen={},
        futures=[[] for _ in responses], metrics=[{} for _ in responses], rewards=rewards,
        future_rewards=[[] for _ in responses],
    )


def test_max_min_pair_and_drop_reasons():
    counts = Counter()
    pair = make_pair(rewarded([0.2, 0.9, None, -0.1]), min_margin=0.5, counts=counts)
    assert pair.chosen == [{"role": "assistant", "content": "answer 1"}]
    assert pair.rejected == [{"role": "assistant", "content": "answer 3"}]
    assert pair.margin == pytest.approx(1.0)
    assert pair.prompt == PROMPT
    assert make_pair(rewarded([0.5, 0.5]), 0.0, counts) is None
    assert make_pair(rewarded([0.5, None]), 0.0, counts) is None
    assert make_pair(rewarded([0.5, 0.6]), 0.5, counts) is None
    assert counts == Counter(
        dropped_all_rewards_tied=1, dropped_fewer_than_two_rewards=1, dropped_margin_below_min=1,
        candidates_without_reward=2,
    )


def item(answer: str, reference: str = "5", kind: str = "math") -> ScoringItem:
    task = Task(id="t1", task=kind, goal="g", reference=reference)
    return ScoringItem(task=task, history=PROMPT, window=[{"role": "assistant", "content": answer}])


def test_accuracy_uses_a_real_verifier():
    accuracy = get_metric("accuracy")
    values = accuracy(
        [item("2 + 3 = 5"), item("The answer is $5$."), item("It is 6."), item("I need more details."),
         item("5", kind="doc")],
        MetricResources(),
    )
    assert [v.value for v in values] == [1.0, 1.0, 0.0, 0.0, None]
    assert "no verifier" in values[-1].error


def test_accuracy_reads_the_final_answer_given():
    accuracy = get_metric("accuracy")
    asked_first = item("Do you mean apples?")
    asked_first.window += [{"role": "user", "content": "yes"}, {"role": "assistant", "content": "Then 5."}]
    corrected = item("It is 5.")
    corrected.window += [{"role": "user", "content": "sure?"}, {"role": "assistant", "content": "Sorry, it is 6."}]
    answered_then_chatted = item("It is 5.")
    answered_then_chatted.window += [
        {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "Glad to help!"},
    ]
    values = accuracy([asked_first, corrected, answered_then_chatted], MetricResources())
    assert [v.value for v in values] == [1.0, 0.0, 1.0]


def test_token_amount_counts_assistant_tokens_with_the_policy_tokenizer(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    it = item("five apples")
    it.window += [{"role": "user", "content": "a long user message that is not counted"},
                  {"role": "assistant", "content": "ok"}]
    expected = len(tokenizer.encode("five apples", add_special_tokens=False)) + len(
        tokenizer.encode("ok", add_special_tokens=False))
    assert get_metric("token_amount")([it], MetricResources(tokenizer=tokenizer))[0].value == expected


def test_combine_clips_terms_and_propagates_missing_values():
    values = {
        "accuracy": [MetricValue(1.0), MetricValue(0.0), MetricValue(None, "judge failed")],
        "token_amount": [MetricValue(50.0), MetricValue(20000.0), MetricValue(10.0)],
    }
    out = combine(values, {"accuracy": 1.0, "token_amount": -1e-4}, term_cap=1.0)
    assert out[0] == pytest.approx(1.0 - 0.005)
    assert out[1] == pytest.approx(-1.0)  # token penalty capped at 1
    assert out[2] is None


@pytest.mark.parametrize("text, grade", [("A", 1.0), ("B.", 0.5), ("Answer: C", 0.0), ("I think b", None), ("", None)])
def test_parse_grade(text, grade):
    assert parse_grade(text) == grade


def test_expected_grade_from_first_token_logprobs():
    lp = {"A": math.log(0.6), " B": math.log(0.3), "C": math.log(0.05), "The": math.log(0.05)}
    # (0.6 * 1 + 0.3 * 0.5 + 0.05 * 0) / 0.95
    assert expected_grade(lp) == pytest.approx(0.75 / 0.95)
    assert expected_grade({"The": math.log(0.9), "A": math.log(0.1)}) is None  # not answering the rubric
    assert expected_grade(None) is None


@pytest.mark.parametrize("text,verdict", [("Yes", 1.0), ("no.", 0.0), ("Yes, it matches", 1.0), (" NO", 0.0),
                                          ("Maybe", None), ("", None)])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_expected_verdict_from_first_token_logprobs():
    lp = {"Yes": math.log(0.6), " yes": math.log(0.1), "No": math.log(0.2), "The": math.log(0.1)}
    assert expected_verdict(lp) == pytest.approx(0.7 / 0.9)
    assert expected_verdict({"The": math.log(0.9), "No": math.log(0.1)}) is None  # not answering the question
    assert expected_verdict(None) is None
