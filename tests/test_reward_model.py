"""The batched reward-model scorer, the rm_score metric and reward-model annotation without futures."""

from __future__ import annotations

import pytest

from collabloop.jsonl import read_records
from collabloop.records import Rewarded
from collabloop.reward_model import RewardModelScorer, resolve_device_dtype
from tests.conftest import math_task, write_jsonl


@pytest.fixture(scope="session")
def reward_model_dir(model_dir, tmp_path_factory):
    """The embedded model with a seeded one-label score head: a real (untrained) sequence classifier."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("rm") / "rm"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}],
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "It is 6, I believe, but let me "
                                                     "explain at length why addition works the way it does."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! What would you like to work on?"},
     {"role": "user", "content": "A poem."}, {"role": "assistant", "content": "About what?"}],
    [{"role": "user", "content": "Sort [3, 1, 2]."}, {"role": "assistant", "content": "[1, 2, 3]"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}],
]


def test_batched_scores_match_one_at_a_time_in_input_order(reward_model_dir):
    batched = RewardModelScorer(str(reward_model_dir), batch_size=4).score(CONVERSATIONS)
    single = RewardModelScorer(str(reward_model_dir), batch_size=1)
    one_by_one = [single.score([c])[0] for c in CONVERSATIONS]
    # Padding a batch changes the order of float32 sums: one suite run of four saw 1.7e-4 between the two.
    assert batched == pytest.approx(one_by_one, abs=1e-3)
    assert len(set(round(s, 2) for s in batched)) == len(CONVERSATIONS)  # the texts get different scores


def test_long_conversations_keep_their_end_and_are_counted(reward_model_dir):
    scorer = RewardModelScorer(str(reward_model_dir), batch_size=2, max_length=16)
    scores = scorer.score(CONVERSATIONS)
    assert scorer.texts_truncated >= 3 and len(scores) == len(CONVERSATIONS)


def test_the_reward_model_runs_on_a_gpu_in_bf16_and_in_float32_on_a_cpu():
    assert resolve_device_dtype("auto", cuda_available=True) == ("cuda", "bfloat16")
    assert resolve_device_dtype("auto", cuda_available=False) == ("cpu", "float32")
    assert resolve_device_dtype("float32", cuda_available=True) == ("cuda", "float32")  # asked for: kept
    with pytest.raises(ValueError, match="got 'fp8'"):
        resolve_device_dtype("fp8", cuda_available=True)


def test_not_a_reward_model_is_refused(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        RewardModelScorer(str(tmp_path))


@pytest.mark.slow  # the annotate stage end to end
def test_annotate_candidates_alone_with_the_reward_model(reward_model_dir, model_dir, tmp_path):
    """Online-RLHF's annotation: generations scored by the reward model with no simulated future."""
    from annotate_data.scoring import run
    from collabloop.stage_configs import AnnotateConfig

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(0, 2, 3), math_task(1, 1, 1)])
    prompts = [[{"role": "user", "content": "Sam has 2 apples and gets 3 more. How many?"}],
               [{"role": "user", "content": "Sam has 1 apple and gets 1 more. How many?"}]]
    responses = [["5", "Sam has 5 apples.", "six"], ["2", "I am not sure.", "Two apples in all."]]
    write_jsonl(tmp_path / "generations.jsonl", [
        {"id": f"t{i}/turn0", "task_id": f"t{i}", "prompt": prompts[i], "turn": 0, "responses": responses[i],
         "gen": {"model": "m", "seed": 0}}
        for i in range(2)
    ])
    cfg = AnnotateConfig(
        simulations_path=str(tmp_path / "generations.jsonl"), tasks_path=str(tasks),
        output_path=str(tmp_path / "rewards.jsonl"), tokenizer=str(model_dir), without_futures=True,
        metric_weights={"rm_score": 1.0}, term_cap=1e6, reward_model=str(reward_model_dir), reward_batch_size=4,
    )
    meta = run(cfg)
    assert meta["counts"]["candidates"] == 6 and meta["counts"]["candidates_without_reward"] == 0
    rewards = read_records(tmp_path / "rewards.jsonl", Rewarded)
    expected = RewardModelScorer(str(reward_model_dir), batch_size=1).score(
        [[*prompts[i], {"role": "assistant", "content": r}] for i in range(2) for r in responses[i]]
    )
    got = [x for rec in rewards for x in rec.rewards]
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(per == [{"messages": [], "terminated": False, "error": None}] for rec in rewards for per in rec.futures)
    assert run(cfg) is None  # up to date
