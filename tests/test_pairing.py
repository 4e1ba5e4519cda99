"""Pair-building strategies: exact pairs, seeded draws, drop reasons, and the entry script."""

from __future__ import annotations

import random
import subprocess
from collections import Counter

import pytest

from collabloop.config import ConfigError, parse_config
from collabloop.jsonl import read_records
from collabloop.records import Pair, Rewarded
from collabloop.stage_configs import PairsConfig
from dpo_iteration.pairing import Candidate, future_reply_pairs, make_pair, pick
from tests.conftest import PYTHON, REPO, read_jsonl, write_jsonl

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


def rewarded(rewards, responses=None, id="c1") -> Rewarded:
    responses = responses or [f"answer {i}" for i in range(len(rewards))]
    return Rewarded(
        id=id, task_id="t1", prompt=PROMPT, turn=0, responses=responses, gen={},
        futures=[[] for _ in responses], metrics=[{} for _ in responses], rewards=rewards,
        future_rewards=[[] for _ in responses],
    )


def texts(pair: Pair | None) -> tuple[str, str] | None:
    """(chosen text, rejected text), or None for no pair."""
    return None if pair is None else (pair.chosen[0]["content"], pair.rejected[0]["content"])


def pair_of(rewards, strategy, seed=0, min_margin=0.0, id="c1", responses=None, counts=None):
    counts = Counter() if counts is None else counts
    return make_pair(rewarded(rewards, responses, id), min_margin, counts, strategy=strategy, seed=seed)


# --- each strategy, exact pairs ---------------------------------------------------------------------------------


def test_max_min_is_best_against_worst_first_index_on_shared_rewards():
    counts = Counter()
    pair = pair_of([0.25, 0.875, None, -0.125, 0.875, -0.125], "max_min", counts=counts)
    assert texts(pair) == ("answer 1", "answer 3")
    assert (pair.chosen_reward, pair.rejected_reward, pair.margin) == (0.875, -0.125, 1.0)
    assert pair.id == "c1" and pair.prompt == PROMPT
    assert counts == Counter(candidates_without_reward=1)


def test_max_max_is_best_against_second_best():
    assert texts(pair_of([0.25, 0.875, 0.5, -0.125], "max_max")) == ("answer 1", "answer 2")
    # The second best reward is shared: the first of them by index.
    assert texts(pair_of([0.875, 0.5, 0.25, 0.5], "max_max")) == ("answer 0", "answer 1")
    # A null reward is never the second best, even next to the best.
    assert texts(pair_of([0.875, None, 0.25], "max_max")) == ("answer 0", "answer 2")


def test_max_max_with_a_shared_best_reward_is_a_tie():
    counts = Counter()
    assert pair_of([0.25, 0.875, 0.875, -0.125], "max_max", counts=counts) is None
    assert counts == Counter(dropped_pair_rewards_tied=1)


def test_max_random_exact_draws():
    rewards = [0.875, 0.125, 0.5, 0.25]  # best is 0; the others are 1, 2, 3
    # Regression values of the seeded draw (random.Random("<seed>/<id>")): if these change,
    # a rerun of an old configuration no longer gives the same pairs.
    assert texts(pair_of(rewards, "max_random", seed=0)) == ("answer 0", "answer 2")
    assert texts(pair_of(rewards, "max_random", seed=1)) == ("answer 0", "answer 3")
    # With two scored candidates there is nothing to draw.
    assert texts(pair_of([0.25, None, 0.75], "max_random", seed=5)) == ("answer 2", "answer 0")


def test_max_random_draws_uniformly_among_the_others_never_the_best():
    rewards = [0.125, 0.875, 0.5, None, 0.25]  # best is 1; the others are 0, 2, 4
    drawn = Counter(texts(pair_of(rewards, "max_random", seed=s))[1] for s in range(300))
    assert set(drawn) == {"answer 0", "answer 2", "answer 4"}
    assert all(60 <= n <= 140 for n in drawn.values()), drawn  # 100 expected each


def test_random_exact_draws_and_the_higher_reward_is_chosen():
    rewards = [0.125, 0.5, 0.25, 0.875]
    # Regression values of the seeded draw, as in test_max_random_exact_draws.
    assert texts(pair_of(rewards, "random", seed=0)) == ("answer 3", "answer 1")  # drawn (3, 1)
    assert texts(pair_of(rewards, "random", seed=1)) == ("answer 2", "answer 0")  # drawn (0, 2)
    assert texts(pair_of(rewards, "random", seed=3)) == ("answer 3", "answer 1")  # drawn (1, 3)


def test_random_draws_every_pair_of_scored_candidates():
    rewards = [0.125, None, 0.5, 0.875]
    seen = Counter()
    for s in range(300):
        pair = pair_of(rewards, "random", seed=s)
        assert pair.chosen_reward > pair.rejected_reward
        seen[texts(pair)] += 1
    assert set(seen) == {("answer 2", "answer 0"), ("answer 3", "answer 0"), ("answer 3", "answer 2")}
    assert all(60 <= n <= 140 for n in seen.values()), seen


def test_unknown_strategy_fails_even_without_the_config():
    with pytest.raises(ValueError, match=r"unknown pair strategy 'best_worst'.*'max_random'"):
        pick([Candidate(0, 1.0), Candidate(1, 0.0)], "best_worst", 0, "c1")


# --- determinism ------------------------------------------------------------------------------------------------


def many_records(n=20, k=8) -> list[Rewarded]:
    rng = random.Random(7)
    return [rewarded([rng.random() for _ in range(k)], id=f"r{i}") for i in range(n)]


def pairs_by_id(records, strategy, seed) -> dict[str, tuple]:
    out = {}
    for r in records:
        p = make_pair(r, 0.0, Counter(), strategy=strategy, seed=seed)
        out[r.id] = (texts(p), p.margin)
    return out


@pytest.mark.parametrize("strategy", PairsConfig.STRATEGIES)
def test_same_seed_same_pairs_in_any_record_order(strategy):
    records = many_records()
    first = pairs_by_id(records, strategy, seed=3)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert pairs_by_id(shuffled, strategy, seed=3) == first
    assert pairs_by_id(records[::-1], strategy, seed=3) == first
    # One record alone (a shard, a resumed run) gets the pair it gets among all the others.
    assert pairs_by_id(records[5:6], strategy, seed=3) == {"r5": first["r5"]}


@pytest.mark.parametrize("strategy", ["max_random", "random"])
def test_another_seed_changes_the_draws(strategy):
    records = many_records()
    assert pairs_by_id(records, strategy, seed=3) != pairs_by_id(records, strategy, seed=4)
    # On one record with many candidates, ten seeds give several different pairs.
    one = many_records(n=1, k=8)
    assert len({pairs_by_id(one, strategy, seed=s)["r0"] for s in range(10)}) >= 3


def test_the_draw_depends_on_the_record_id():
    rewards = [0.875] + [0.5 - i / 64 for i in range(7)]
    rejected = {texts(pair_of(rewards, "max_random", seed=3, id=f"r{i}"))[1] for i in range(20)}
    assert len(rejected) >= 3


# --- drops, counted by reason ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", PairsConfig.STRATEGIES)
def test_all_rewards_tied_and_too_few_rewards_drop_for_every_strategy(strategy):
    counts = Counter()
    assert pair_of([0.5, 0.5, None, 0.5], strategy, counts=counts) is None
    assert pair_of([None, 0.25, None], strategy, counts=counts) is None
    assert pair_of([None, None], strategy, counts=counts) is None
    assert counts == Counter(
        dropped_all_rewards_tied=1, dropped_fewer_than_two_rewards=2, candidates_without_reward=5
    )


@pytest.mark.parametrize("strategy, rewards, tied_texts", [
    ("max_random", [0.875, 0.875, 0.125], ("answer 0", "answer 1")),  # best 0 drew 1
    ("random", [0.5, 0.5, 0.875], ("answer 0", "answer 1")),  # drew 0 and 1
])
def test_a_drawn_tie_drops_and_is_never_redrawn(strategy, rewards, tied_texts):
    counts = Counter()
    kept = Counter()
    for s in range(60):
        pair = pair_of(rewards, strategy, seed=s, counts=counts)
        if pair is not None:
            assert pair.chosen_reward > pair.rejected_reward and texts(pair) != tied_texts
            kept[texts(pair)] += 1
    assert counts["dropped_pair_rewards_tied"] > 0 and sum(kept.values()) > 0
    assert counts["dropped_pair_rewards_tied"] + sum(kept.values()) == 60
    assert set(counts) == {"dropped_pair_rewards_tied"}


def test_identical_texts_drop():
    counts = Counter()
    responses = ["same", "other", "same"]
    assert pair_of([0.875, 0.5, 0.125], "max_min", responses=responses, counts=counts) is None
    assert texts(pair_of([0.875, 0.5, 0.125], "max_max", responses=responses, counts=counts)) == ("same", "other")
    assert counts == Counter(dropped_identical_text=1)


@pytest.mark.parametrize("strategy, margin", [("max_min", 1.0), ("max_max", 0.75)])
def test_min_margin(strategy, margin):
    rewards = [0.0, 0.25, 1.0]
    counts = Counter()
    assert pair_of(rewards, strategy, min_margin=margin, counts=counts).margin == margin  # a gap equal to it stays
    assert pair_of(rewards, strategy, min_margin=margin + 0.125, counts=counts) is None
    assert counts == Counter(dropped_margin_below_min=1)


def test_min_margin_applies_to_the_drawn_pair():
    rewards = [0.875, 0.125, 0.5, 0.25]  # seed 0 draws 2 (gap 0.375), seed 1 draws 3 (gap 0.625)
    counts = Counter()
    assert pair_of(rewards, "max_random", seed=0, min_margin=0.5, counts=counts) is None
    assert pair_of(rewards, "max_random", seed=1, min_margin=0.5, counts=counts).margin == 0.625
    assert counts == Counter(dropped_margin_below_min=1)


# --- replies inside the futures ---------------------------------------------------------------------------------


def future(user: str | None, reply: str | None = None, error: str | None = None) -> dict:
    messages = [{"role": "user", "content": user}] if user is not None else []
    messages += [{"role": "assistant", "content": reply}] if reply is not None else []
    return {"messages": messages, "terminated": False, "error": error}


def test_future_replies_after_the_same_user_turn_are_paired_by_their_own_rewards():
    ask, guess = "Could you tell me how many?", "It is 7."
    record = Rewarded(
        id="t1/turn0", task_id="t1", prompt=PROMPT, turn=0, responses=[guess, ask], gen={},
        futures=[
            [future(None), future(None)],  # the guess ended the conversation: nothing to pair after it
            [future("He had 4.", "4 + 3 = 7."), future("He had 4.", "Is it 8?"),
             future("He had 4.", "9"),  # same user turn: three replies to one conversation
             future("Tom has some apples and gets 3 more.", "It is 5."),  # another user turn: a group of one
             future("[[TERMINATE CHAT]]"),  # the user ended: no reply
             future(None, error="simulator failed at turn 1: timeout")],
        ],
        metrics=[{}, {}], rewards=[0.0, 0.25],
        future_rewards=[[0.0, 0.0], [1.0, 0.0, -0.25, 0.0, 0.0, None]],
    )
    counts = Counter()
    pairs = future_reply_pairs(record, 0.5, counts, strategy="max_min")
    assert [p.to_dict() for p in pairs] == [{
        "id": "t1/turn0/after1.0",
        "prompt": [*PROMPT, {"role": "assistant", "content": ask}, {"role": "user", "content": "He had 4."}],
        "chosen": [{"role": "assistant", "content": "4 + 3 = 7."}],
        "rejected": [{"role": "assistant", "content": "9"}],
        "chosen_reward": 1.0, "rejected_reward": -0.25, "margin": 1.25,
    }]
    assert counts == Counter(future_reply_groups=2, future_dropped_fewer_than_two_rewards=1)
    # The strategy and the margin apply as to the candidates: max_max pairs the best with the second best (1.0
    # against 0.0), which min_margin 1.1 drops.
    counts = Counter()
    assert future_reply_pairs(record, 1.1, counts, strategy="max_max") == []
    assert counts["future_dropped_margin_below_min"] == 1


# --- config ----------------------------------------------------------------------------------------------------


def test_config_validates_the_strategy_and_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"strategy must be one of \['max_min', 'max_random', 'max_max', "
                                          r"'random'\], got 'best_worst'"):
        PairsConfig(strategy="best_worst")
    for strategy in PairsConfig.STRATEGIES:
        assert PairsConfig(strategy=strategy).strategy == strategy
    cfg = parse_config(PairsConfig, "pairs", ["--strategy", "max_max", "--seed", "7"], None)
    assert (cfg.strategy, cfg.seed) == ("max_max", 7)


# --- the entry script ------------------------------------------------------------------------------------------


def reward_row(id: str, rewards: list) -> dict:
    return {
        "id": id, "task_id": "t1", "prompt": PROMPT, "turn": 0, "gen": {},
        "responses": [f"{id} answer {k}" for k in range(len(rewards))],
        "futures": [[] for _ in rewards], "metrics": [{} for _ in rewards], "rewards": rewards,
        "future_rewards": [[] for _ in rewards],
    }


def test_pairs_script_max_random_with_a_seed(tmp_path):
    rows = [
        reward_row("r0", [0.125, 0.875, 0.375, 0.625]),  # seed 3 draws 2 among 0, 2, 3
        reward_row("r1", [0.75, None, 0.25]),  # nothing to draw
        reward_row("r2", [0.5, 0.5]),  # dropped_all_rewards_tied
        reward_row("r3", [None, 0.25]),  # dropped_fewer_than_two_rewards
        reward_row("r4", [0.875, 0.875, 0.125]),  # seed 3 draws 1: dropped_pair_rewards_tied
        reward_row("r5", [0.25, 1.0, 0.5]),  # seed 3 draws 0 among 0, 2
    ]
    rewards_path = write_jsonl(tmp_path / "rewards.jsonl", rows)
    out_path = tmp_path / "pairs.jsonl"
    cmd = [PYTHON, "dpo_iteration/pairs.py", "--rewards_path", str(rewards_path), "--output_path", str(out_path),
           "--strategy", "max_random", "--seed", "3"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "[pairs] candidates_without_reward=2, dropped_all_rewards_tied=1, dropped_fewer_than_two_rewards=1, "
        "dropped_pair_rewards_tied=1, records_in=6, records_out=3 ("
    ), result.stdout

    pairs = read_jsonl(out_path)
    assert [(p["id"], p["chosen"][0]["content"], p["rejected"][0]["content"], p["margin"]) for p in pairs] == [
        ("r0", "r0 answer 1", "r0 answer 2", 0.5),
        ("r1", "r1 answer 0", "r1 answer 2", 0.5),
        ("r5", "r5 answer 1", "r5 answer 0", 0.75),
    ]
    assert pairs[0] == {
        "id": "r0", "prompt": PROMPT, "chosen": [{"role": "assistant", "content": "r0 answer 1"}],
        "rejected": [{"role": "assistant", "content": "r0 answer 2"}],
        "chosen_reward": 0.875, "rejected_reward": 0.375, "margin": 0.5,
    }
    # The script's process drew what this one draws.
    records = read_records(rewards_path, Rewarded)
    here = [make_pair(r, 0.0, Counter(), strategy="max_random", seed=3) for r in records]
    assert [p.to_dict() for p in here if p is not None] == pairs
    # The resolved config is saved beside the output, so the run can be repeated exactly.
    saved = (tmp_path / "pairs.config.yaml").read_text()
    assert "strategy: max_random" in saved and "seed: 3" in saved

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "is up to date" in again.stdout


def test_check_up_to_date_answers_with_the_exit_status_and_does_no_work(tmp_path):
    rewards_path = write_jsonl(tmp_path / "rewards.jsonl", [reward_row("r0", [0.25, 0.75])])
    out_path = tmp_path / "pairs.jsonl"
    cmd = [PYTHON, "dpo_iteration/pairs.py", "--rewards_path", str(rewards_path), "--output_path", str(out_path)]

    def check() -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, "--check_up_to_date"], cwd=REPO, capture_output=True, text=True, timeout=300)

    before = check()
    assert before.returncode == 3, before.stderr
    assert before.stdout.strip() == f"[pairs] {out_path} is not up to date"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rewards.jsonl"]  # nothing written

    assert subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300).returncode == 0
    after = check()
    assert after.returncode == 0 and after.stdout.strip() == f"[pairs] {out_path} is up to date", after.stderr

    # Changed input: not up to date again, and the finished output is left as it was.
    written = out_path.read_bytes()
    write_jsonl(rewards_path, [reward_row("r0", [0.25, 0.75]), reward_row("r1", [0.5, 0.0])])
    assert check().returncode == 3 and out_path.read_bytes() == written

    # A bad value is an error (exit 1), not an answer.
    bad = subprocess.run([*cmd, "--min_margin", "x", "--check_up_to_date"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "min_margin" in bad.stderr
