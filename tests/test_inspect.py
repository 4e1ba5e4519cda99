"""The inspection command: summaries of every record kind, one record as a conversation, loud failures."""

import json
import re
from pathlib import Path

import pytest

from collabloop.inspect_run import detect_kind, error_reason, format_summary, main, summarize
from collabloop.jsonl import write_json, write_records
from collabloop.records import (
    Context,
    EvalConversation,
    Generation,
    Pair,
    Rewarded,
    SFTExample,
    Simulation,
    Task,
)
from tests.conftest import REPO, math_task, write_jsonl

DEMO_RUN = REPO / "data" / "runs" / "demo"
USER = {"role": "user", "content": "Sam has 2 apples and gets 3 more. How many apples does Sam have now?"}


def write(path: Path, records) -> Path:
    write_records(path, records)
    return path


def future(*texts, terminated=False, error=None):
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]
    return {"messages": messages, "terminated": terminated, "error": error}


def metric(values, errors=None):
    present = [v for v in values if v is not None]
    return {
        "mean": sum(present) / len(present) if present else None,
        "values": values,
        "errors": errors or [None] * len(values),
    }


TASKS = [Task(**math_task(0, 2, 3)), Task(**math_task(1, 4, 1)), Task(**{**math_task(2, 1, 1), "task": "code"})]
CONTEXTS = [
    Context(id="t0/turn0", task_id="t0", prompt=[USER], turn=0),
    Context(id="t1/turn0", task_id="t1", prompt=[USER], turn=0),
    Context(id="t0/turn1", task_id="t0", prompt=[USER, {"role": "assistant", "content": "4"}, USER], turn=1),
]
# Candidate lengths 2 and 4 chars, so the mean response length is 3.
GENERATIONS = [
    Generation(**c.to_dict(), responses=["ab", "abcd"], gen={"model": "m", "seed": 0}) for c in CONTEXTS[:2]
]
SIMULATIONS = [
    Simulation(
        **GENERATIONS[0].to_dict(),
        futures=[
            [
                future("Is it 5?", "Yes, 5.", terminated=True),
                future(error="simulator failed at turn 1: timeout after 9s"),
            ],
            [future("thanks", "you are welcome"), future(error="simulator failed at turn 1: empty response")],
        ],
    ),
    Simulation(
        **GENERATIONS[1].to_dict(),
        futures=[[future("ok", "fine")], [future(error="simulator failed at turn 2: timeout after 9s")]],
    ),
]
REWARDS = [
    Rewarded(
        **SIMULATIONS[0].to_dict(),
        metrics=[
            {"accuracy": metric([1.0, None], [None, "future failed: simulator failed at turn 1: timeout after 9s"])},
            {"accuracy": metric([0.0, None], [None, "future failed: simulator failed at turn 1: empty response"])},
        ],
        rewards=[1.0, 0.5],
        future_rewards=[[1.0, None], [0.5, None]],
    ),
    Rewarded(
        **SIMULATIONS[1].to_dict(),
        metrics=[
            {"accuracy": metric([2.0])},
            {"accuracy": metric([None], ["judge call failed: timeout after 9s"])},
        ],
        rewards=[2.0, None],
        future_rewards=[[2.0], [None]],
    ),
]
PAIRS = [
    Pair(id="t0/turn0", prompt=[USER], chosen=[{"role": "assistant", "content": "abcd"}],
         rejected=[{"role": "assistant", "content": "ab"}], chosen_reward=1.0, rejected_reward=0.5, margin=0.5),
    Pair(id="t1/turn0", prompt=[USER], chosen=[{"role": "assistant", "content": "ab"}],
         rejected=[{"role": "assistant", "content": "abcd"}], chosen_reward=3.0, rejected_reward=1.5, margin=1.5),
]
SFT = [
    SFTExample(id="s0", messages=[USER, {"role": "assistant", "content": "5"}]),
    SFTExample(
        id="s1", messages=[USER, {"role": "assistant", "content": "5?"}, USER, {"role": "assistant", "content": "5"}]
    ),
]
EVALUATION = [
    EvalConversation(id="e0", task_id="t0", messages=[USER, {"role": "assistant", "content": "5"}], terminated=True,
                     error=None, metrics={"accuracy": 1.0, "interactivity": None},
                     metric_errors={"interactivity": "judge call failed: timeout after 9s"}),
    EvalConversation(id="e1", task_id="t1", messages=[USER, {"role": "assistant", "content": "6"}], terminated=False,
                     error="simulator failed at turn 2: empty response",
                     metrics={"accuracy": 0.0, "interactivity": 0.5},
                     metric_errors={}),
]
RECORDS_BY_KIND = {
    "tasks": TASKS, "contexts": CONTEXTS, "generations": GENERATIONS, "simulations": SIMULATIONS,
    "rewards": REWARDS, "pairs": PAIRS, "sft": SFT, "evaluation": EVALUATION,
}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A one-iteration run on disk: every stage file with its meta, like the stages write them."""
    tasks_path = tmp_path / "tasks" / "math.jsonl"
    write_records(tasks_path, TASKS)
    iteration = tmp_path / "run" / "iter_1"
    for kind, stage, inputs in (
        ("contexts", "contexts", {"tasks": str(tasks_path)}),
        ("generations", "generate", {"contexts": str(iteration / "contexts.jsonl"), "model": "models/m"}),
        ("simulations", "simulate", {"generations": str(iteration / "generations.jsonl"), "tasks": str(tasks_path)}),
        ("rewards", "annotate", {"simulations": str(iteration / "simulations.jsonl"), "tasks": str(tasks_path)}),
        ("pairs", "pairs", {"rewards": str(iteration / "rewards.jsonl")}),
    ):
        write_records(iteration / f"{kind}.jsonl", RECORDS_BY_KIND[kind])
        counts = {"records_out": len(RECORDS_BY_KIND[kind])}
        meta = {"stage": stage, "status": "complete", "inputs": inputs, "counts": counts}
        write_json(iteration / f"{kind}.meta.json", meta)
    model = iteration / "model"
    model.mkdir()
    train_metrics = {"steps": 2, "first_loss": 0.69, "last_loss": 0.5, "log_history": [{}, {}]}
    write_json(model / "train_metrics.json", train_metrics)
    write_json(iteration / "model.meta.json", {"stage": "dpo", "status": "complete", "counts": {"pairs_in": 2}})
    return tmp_path / "run"


def test_error_reason_drops_the_per_call_detail():
    assert error_reason("simulator failed at turn 1: timeout after 9s") == "simulator failed at turn 1"
    assert error_reason("no detail") == "no detail"


@pytest.mark.parametrize("kind", list(RECORDS_BY_KIND))
def test_kind_is_found_from_the_first_line_when_name_and_meta_say_nothing(tmp_path, kind):
    path = tmp_path / "some_output.jsonl"
    write_records(path, RECORDS_BY_KIND[kind])
    assert detect_kind(path) == (kind, "line 1 parses as " + kind)
    summary = summarize(path)
    assert summary["kind"] == kind
    assert summary["num_records"] == len(RECORDS_BY_KIND[kind])
    assert summary["meta"] is None
    assert f"records: {len(RECORDS_BY_KIND[kind])}" in format_summary(summary)


def test_kind_from_meta_beats_the_file_name(tmp_path):
    path = tmp_path / "contexts.jsonl"  # misleading name: the meta says the annotate stage wrote it
    write_records(path, REWARDS)
    write_json(tmp_path / "contexts.meta.json", {"stage": "annotate", "status": "running", "counts": {"x": 1}})
    summary = summarize(path)
    assert summary["kind"] == "rewards"
    assert summary["meta"]["status"] == "running"
    text = format_summary(summary)
    assert "stage 'annotate' in contexts.meta.json" in text
    assert "status running" in text and "x=1" in text


def test_summary_numbers_of_each_stage_kind(tmp_path):
    def stats(kind):
        return summarize(write(tmp_path / f"{kind}.jsonl", RECORDS_BY_KIND[kind]))

    contexts = stats("contexts")
    assert contexts["stats"]["turns"] == {0: 2, 1: 1}
    assert contexts["stats"]["distinct_tasks"] == 2
    assert contexts["fields"] == ["id", "task_id", "prompt", "turn"]

    generations = stats("generations")["stats"]
    assert generations["candidates_per_record"] == {2: 2}
    assert generations["response_length_chars"]["mean"] == pytest.approx(3.0)

    simulations = stats("simulations")["stats"]
    assert simulations["futures"] == 6
    assert simulations["futures_per_candidate"] == {1: 2, 2: 2}
    assert simulations["terminated"] == 1
    assert simulations["failed"] == 3
    assert simulations["errors_by_reason"] == {"simulator failed at turn 1": 2, "simulator failed at turn 2": 1}

    rewards = stats("rewards")["stats"]
    assert rewards["rewards"]["mean"] == pytest.approx(3.5 / 3)
    assert rewards["rewards"]["missing"] == 1
    assert rewards["candidates_without_reward"] == ["t1/turn0[1]"]
    accuracy = rewards["metrics"]["accuracy"]
    assert accuracy["values"] == 6 and accuracy["values_failed"] == 3
    assert accuracy["errors_by_reason"] == {"future failed": 2, "judge call failed": 1}
    assert accuracy["candidate_means"]["mean"] == pytest.approx(1.0)  # means 1, 0, 2 and one missing
    assert accuracy["candidate_means"]["max"] == 2.0

    pairs = stats("pairs")["stats"]
    assert pairs["margin"]["mean"] == pytest.approx(1.0)
    assert pairs["chosen_reward"]["mean"] == pytest.approx(2.0)
    assert pairs["rejected_reward"]["mean"] == pytest.approx(1.0)

    evaluation = stats("evaluation")["stats"]
    assert evaluation["metrics"]["accuracy"]["mean"] == pytest.approx(0.5)
    assert evaluation["metrics"]["accuracy"]["ci_low"] <= 0.5 <= evaluation["metrics"]["accuracy"]["ci_high"]
    assert evaluation["metrics"]["interactivity"]["n"] == 1
    assert evaluation["metrics"]["interactivity"]["missing"] == 1
    assert evaluation["metrics"]["interactivity"]["errors_by_reason"] == {"judge call failed": 1}
    assert (evaluation["terminated"], evaluation["failed"]) == (1, 1)

    tasks = stats("tasks")["stats"]
    assert tasks["by_task_kind"] == {"math": 2, "code": 1}
    assert stats("sft")["stats"]["assistant_turns"] == {1: 1, 2: 1}


def test_rewards_summary_text_shows_reward_failures_and_reasons(tmp_path):
    path = tmp_path / "rewards.jsonl"
    write_records(path, REWARDS)
    text = format_summary(summarize(path))
    assert "kind: rewards (found by: file name rewards.jsonl)" in text
    assert "fields: id, task_id, prompt, turn, responses, gen, futures, metrics, rewards" in text
    assert "mean 1.167" in text and "1 missing" in text
    assert "candidates without reward: 1 (t1/turn0[1])" in text
    assert "failed 3 of 6" in text
    assert "2 x future failed" in text and "1 x judge call failed" in text
    assert "2 x simulator failed at turn 1" in text


def test_run_model_and_iteration_summaries(run_dir, capsys):
    write(run_dir / "eval_contexts.jsonl", CONTEXTS)
    write(run_dir / "iter_1" / "eval" / "conversations.jsonl", EVALUATION)
    write_json(run_dir / "iter_1" / "eval" / "conversations.meta.json", {"stage": "evaluate", "status": "complete"})
    # A stage killed before its output was written leaves only its partial file and that file's meta.
    write_json(run_dir / "iter_2" / "generations.partial.meta.json", {"stage": "generate", "status": "running"})
    write(run_dir / "iter_2" / "contexts.jsonl", CONTEXTS)
    assert main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    for name in ("contexts.jsonl", "generations.jsonl", "simulations.jsonl", "rewards.jsonl", "pairs.jsonl", "model/"):
        assert name in out
    assert "3 failed" in out and "1 without reward" in out and "loss 0.69 -> 0.5" in out
    assert "(top level)\n    eval_contexts.jsonl" in out
    assert re.search(r"eval/conversations.jsonl +complete +2 evaluation: accuracy 0.5, interactivity 0.5", out)
    assert re.search(r"generations.jsonl +running +stage generate has no output yet", out)
    assert out.index("iter_1") < out.index("iter_2")

    assert main([str(run_dir / "iter_1" / "model")]) == 0
    out = capsys.readouterr().out
    assert "kind: trained model" in out and "first_loss: 0.69" in out and "pairs_in=2" in out

    assert main([str(run_dir / "iter_1")]) == 0
    assert "pairs.jsonl" in capsys.readouterr().out


def test_record_shows_goal_candidates_rewards_and_futures(run_dir, capsys):
    assert main([str(run_dir / "iter_1" / "rewards.jsonl"), "--record", "0"]) == 0
    out = capsys.readouterr().out
    assert TASKS[0].goal in out  # found through rewards.meta.json's inputs.tasks
    assert "reference:\n    5" in out
    assert "[user]\n      " + USER["content"] in out
    assert "CANDIDATE [0] of 2   reward 1   (accuracy 1)" in out
    assert "CANDIDATE [1] of 2   reward 0.5   (accuracy 0)" in out
    assert "future [0][0]   terminated: yes, error: none" in out
    assert "Yes, 5." in out
    assert "future [1][1]   terminated: no, error: simulator failed at turn 1: empty response" in out
    assert "accuracy FAILED (future failed: simulator failed at turn 1: timeout after 9s)" in out
    assert out.index("CANDIDATE [0]") < out.index("future [0][1]") < out.index("CANDIDATE [1]")


def test_record_by_id_finds_the_task_upstream(run_dir, capsys):
    # generations.meta.json names no tasks file; contexts.meta.json, upstream of it, does.
    assert main([str(run_dir / "iter_1" / "generations.jsonl"), "--id", "t1/turn0"]) == 0
    out = capsys.readouterr().out
    assert TASKS[1].goal in out and "abcd" in out and "record 1 of 2" in out

    # A pair has no task_id: its task is found through the rewards record it was made from.
    assert main([str(run_dir / "iter_1" / "pairs.jsonl"), "--id", "t1/turn0"]) == 0
    out = capsys.readouterr().out
    assert TASKS[1].goal in out
    assert "CHOSEN   reward 3" in out and "REJECTED   reward 1.5" in out and "margin 1.5" in out


def test_record_task_from_flag_or_omitted_with_a_note(tmp_path, capsys):
    path = tmp_path / "simulations.jsonl"
    write_records(path, SIMULATIONS)
    assert main([str(path), "--record", "1"]) == 0
    out = capsys.readouterr().out
    assert "TASK t1 omitted: pass --tasks" in out
    assert "future [1][0]   terminated: no, error: simulator failed at turn 2: timeout after 9s" in out

    tasks_path = write(tmp_path / "tasks.jsonl", TASKS)
    assert main([str(path), "--record", "1", "--tasks", str(tasks_path)]) == 0
    assert TASKS[1].goal in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["tasks", "contexts", "sft", "evaluation"])
def test_record_of_other_kinds(tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.jsonl"
    write_records(path, RECORDS_BY_KIND[kind])
    assert main([str(path), "--record", "0"]) == 0
    out = capsys.readouterr().out
    assert USER["content"] in out
    if kind == "evaluation":
        assert "interactivity: n/a (FAILED: judge call failed: timeout after 9s)" in out


def test_missing_record_or_file_exits_1(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    write_records(path, PAIRS)
    assert main([str(path), "--record", "2"]) == 1
    assert "out of range; it holds 2 records" in capsys.readouterr().err
    assert main([str(path), "--id", "nope"]) == 1
    assert main([str(tmp_path / "absent.jsonl")]) == 1


@pytest.mark.parametrize(
    "bad_line, field",
    [
        ({**REWARDS[0].to_dict(), "id": "x", "rewards": ["high", 1.0]}, "rewards[0]"),
        ({**REWARDS[0].to_dict(), "id": "x", "futures": [[{"messages": [], "terminated": "no"}], []]},
         "futures[0][0].terminated"),
        ("{not json", "<line>"),
    ],
)
@pytest.mark.parametrize("extra_args", [[], ["--record", "0"]])
def test_corrupt_line_exits_2_naming_file_line_field(tmp_path, capsys, bad_line, field, extra_args):
    path = tmp_path / "rewards.jsonl"
    good = json.dumps(REWARDS[0].to_dict())
    path.write_text(good + "\n" + (bad_line if isinstance(bad_line, str) else json.dumps(bad_line)) + "\n")
    assert main([str(path), *extra_args]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: field '{field}'" in err


def test_corrupt_line_in_a_run_folder_exits_2(run_dir, capsys):
    pairs = run_dir / "iter_1" / "pairs.jsonl"
    with pairs.open("a") as f:
        f.write(json.dumps({**PAIRS[0].to_dict(), "id": "p9", "margin": None}) + "\n")
    assert main([str(run_dir)]) == 2
    assert f"{pairs}:3: field 'margin'" in capsys.readouterr().err


def test_a_line_that_fits_no_kind_exits_2(tmp_path, capsys):
    path = write_jsonl(tmp_path / "mystery.jsonl", [{"id": "a", "what": 1}])
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: field '<record>': fits none of the record kinds" in err
    assert "as rewards:" in err and "as tasks:" in err


def test_demo_run(capsys):
    if not (DEMO_RUN / "iter_1").is_dir():
        pytest.skip("data/runs/demo is not here (data/runs is git-ignored); run `bash run_loop.sh` to make it")
    assert main([str(DEMO_RUN)]) == 0
    assert "iter_1" in capsys.readouterr().out
    for path in sorted(DEMO_RUN.glob("iter_*/*.jsonl")):
        assert main([str(path)]) == 0, path
        assert "records: " in capsys.readouterr().out
        assert main([str(path), "--record", "0"]) == 0, path
        out = capsys.readouterr().out
        assert "record 0 of" in out and "goal:" in out
    for model in sorted(DEMO_RUN.glob("iter_*/model")):
        assert main([str(model)]) == 0
        assert "kind: trained model" in capsys.readouterr().out
