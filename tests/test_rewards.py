"""The best candidate of a scored record, and the values reward statistics are built from (collabloop/rewards.py)."""

from collabloop.records import Rewarded
from collabloop.rewards import best_candidate, candidate_values


def test_the_best_candidate_is_the_first_of_the_highest_and_an_unscored_one_is_passed_over():
    assert best_candidate([0.2, 0.9, 0.9, 0.1]) == 1
    assert best_candidate([None, -0.5, None, -0.2]) == 3
    assert best_candidate([0.0, -0.0]) == 0
    assert best_candidate([None, None]) is None
    assert best_candidate([]) is None


def test_candidate_values_keep_none_and_the_order_metrics_first_appear():
    def record(i, rewards, metrics):
        return Rewarded(id=f"t{i}/turn0", task_id=f"t{i}", prompt=[{"role": "user", "content": "q"}], turn=0,
                        responses=["a"] * len(rewards), gen={}, futures=[[] for _ in rewards],
                        metrics=[{m: {"mean": v, "values": [], "errors": []} for m, v in c.items()} for c in metrics],
                        rewards=rewards, future_rewards=[[] for _ in rewards])

    records = [record(0, [1.0, None], [{"accuracy": None, "turns": 2.0}, {"accuracy": None, "turns": 3.0}]),
               record(1, [0.5], [{"turns": 1.0, "accuracy": 1.0}])]
    rewards, means = candidate_values(records)
    assert rewards == [1.0, None, 0.5]
    assert list(means) == ["accuracy", "turns"]
    assert means == {"accuracy": [None, None, 1.0], "turns": [2.0, 3.0, 1.0]}
