"""The run report (collabloop/report/) on a small hand-made run folder, and on data/runs/demo when present."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from collabloop.jsonl import read_records
from collabloop.paired import task_values
from collabloop.records import EvalConversation, Pair, RecordError, Rewarded
from collabloop.report import collect, main, write_report
from tests.conftest import REPO, write_jsonl

DEMO_RUN = REPO / "data" / "runs" / "demo"
WEIGHTS = {"accuracy": 1.0, "interactivity": 1.0, "token_amount": -0.0001}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The evaluation summaries of the fixture: iteration -> metric -> (mean, ci_low, ci_high).
EVAL = {
    0: {"accuracy": (0.12, 0.0, 0.31), "interactivity": (0.5, 0.4, 0.6),
        "token_amount": (300.0, 280.0, 320.0), "turns": (4.0, 3.5, 4.5)},
    2: {"accuracy": (0.56, 0.38, 0.81), "interactivity": (0.55, 0.45, 0.65),
        "token_amount": (200.0, 180.0, 220.0), "turns": (2.0, 1.5, 2.5)},
}

# Per-conversation values for the paired comparison: iteration -> metric -> task -> one value per sample.
# Task t2 has a failed accuracy in iteration 0; t5 is only in iteration 0 and t4 only in iteration 2.
# Per-task differences 2 - 0: accuracy +0.5 on every task (0.25 -> 0.75), interactivity +0.1, -0.1, +0.1, -0.1,
# token_amount -100, turns -1.
PAIRED = {
    0: {"accuracy": {"t0": [0.0, 0.0], "t1": [0.0, 1.0], "t2": [0.0, None], "t3": [0.5, 0.5], "t5": [1.0]},
        "interactivity": {"t0": [0.5, 0.5], "t1": [0.5, 0.5], "t2": [0.5, 0.5], "t3": [0.5, 0.5], "t5": [0.5]},
        "token_amount": {t: [300.0] * k for t, k in (("t0", 2), ("t1", 2), ("t2", 2), ("t3", 2), ("t5", 1))},
        "turns": {t: [4.0] * k for t, k in (("t0", 2), ("t1", 2), ("t2", 2), ("t3", 2), ("t5", 1))}},
    2: {"accuracy": {"t0": [0.5, 0.5], "t1": [1.0, 1.0], "t2": [0.5, 0.5], "t3": [1.0, 1.0], "t4": [0.0, 0.0]},
        "interactivity": {"t0": [0.6, 0.6], "t1": [0.4, 0.4], "t2": [0.6, 0.6], "t3": [0.4, 0.4], "t4": [0.5, 0.5]},
        "token_amount": {t: [200.0, 200.0] for t in ("t0", "t1", "t2", "t3", "t4")},
        "turns": {t: [3.0, 3.0] for t in ("t0", "t1", "t2", "t3", "t4")}},
}


def _rewarded(rid: str, rewards: list[float | None], accuracy: list[float]) -> dict:
    """A valid rewards.jsonl record: 2 futures per candidate, metrics per candidate."""
    future = {"messages": [{"role": "user", "content": "thanks"}], "terminated": False, "error": None}
    metrics = [
        {
            "accuracy": {"mean": a, "values": [a, a], "errors": [None, None]},
            "interactivity": {"mean": 0.9, "values": [0.9, 0.9], "errors": [None, None]},
            "token_amount": {"mean": 120.0, "values": [100.0, 140.0], "errors": [None, None]},
        }
        for a in accuracy
    ]
    if None in rewards:  # a candidate whose judge calls all failed: no accuracy, no reward
        k = rewards.index(None)
        metrics[k]["accuracy"] = {"mean": None, "values": [None, None], "errors": ["judge timeout", "judge timeout"]}
    return {
        "id": rid, "task_id": rid.split("/")[0], "prompt": [{"role": "user", "content": "What is 2+3?"}], "turn": 0,
        "responses": [f"answer {k}" for k in range(len(rewards))], "gen": {"model": "m", "seed": 0},
        "futures": [[future, future] for _ in rewards], "metrics": metrics, "rewards": rewards,
        "future_rewards": [[r, r] for r in rewards],
    }


def _pair(pid: str, chosen: float, rejected: float) -> dict:
    return {
        "id": pid, "prompt": [{"role": "user", "content": "What is 2+3?"}],
        "chosen": [{"role": "assistant", "content": "5"}], "rejected": [{"role": "assistant", "content": "6"}],
        "chosen_reward": chosen, "rejected_reward": rejected, "margin": chosen - rejected,
    }


def _meta(stage: str, counts: dict, seconds: float, config: dict | None = None) -> dict:
    return {"stage": stage, "status": "complete", "fingerprint": "f" * 64, "inputs": {}, "config": config or {},
            "counts": counts, "seconds": seconds}


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _write_iteration(iter_dir: Path, iteration: int) -> None:
    rewards = [
        _rewarded("t1/turn0", [1.9, 0.9, 1.1], [1.0, 0.0, 0.0]),
        _rewarded("t2/turn0", [0.95, 0.95, 0.95], [0.0, 0.0, 0.0]),  # all tied: dropped by the pairs stage
        _rewarded("t3/turn0", [1.8, None, 0.7] if iteration == 2 else [1.8, 0.8, 0.7], [1.0, 0.0, 0.0]),
    ]
    pairs = [_pair("t1/turn0", 1.9, 0.9), _pair("t3/turn0", 1.8, 0.7)]
    write_jsonl(iter_dir / "contexts.jsonl", [{k: r[k] for k in ("id", "task_id", "prompt", "turn")} for r in rewards])
    write_jsonl(iter_dir / "generations.jsonl",
                [{k: r[k] for k in ("id", "task_id", "prompt", "turn", "responses", "gen")} for r in rewards])
    write_jsonl(iter_dir / "simulations.jsonl", [{k: v for k, v in r.items() if k not in ("metrics", "rewards")}
                                                 for r in rewards])
    write_jsonl(iter_dir / "rewards.jsonl", rewards)
    write_jsonl(iter_dir / "pairs.jsonl", pairs)
    n = len(rewards)
    stage_counts = {
        "contexts": ("contexts", {"records_in": n, "records_out": n, "resumed": 0}, 0.01),
        "generations": ("generate", {"records_in": n, "records_out": n, "empty_responses": 0}, 12.5),
        "simulations": ("simulate", {"records_in": n, "records_out": n, "futures": 18, "futures_failed": 2,
                                     "simulator_cost_usd": 0.25}, 40.0),
        "rewards": ("annotate", {"records_in": n, "records_out": n, "candidates_without_reward": int(iteration == 2),
                                 "judge_cost_usd": 0.0512}, 20.0),
        "pairs": ("pairs", {"records_in": n, "records_out": 2, "dropped_all_rewards_tied": 1,
                            "future_dropped_margin_below_min": 3}, 0.02),
    }
    for name, (stage, counts, seconds) in stage_counts.items():
        config = {"metric_weights": WEIGHTS} if name == "rewards" else None
        _write_json(iter_dir / f"{name}.meta.json", _meta(stage, counts, seconds, config))
    _write_json(iter_dir / "metrics.json", {
        "iteration": iter_dir.name,
        "stages": {name: {"records": c[1]["records_out"], "seconds": c[2]} for name, c in stage_counts.items()},
    })
    _write_json(iter_dir / "model.meta.json", _meta("dpo", {"pairs_in": 2, "world_size": 1}, 30.0))
    log_history = [
        {"loss": 0.69 - 0.01 * s, "learning_rate": 5e-6, "rewards/accuracies": 0.5, "rewards/margins": 0.01 * s,
         "rewards/chosen": 0.0, "rewards/rejected": 0.0, "epoch": s / 4, "step": s}
        for s in range(1, 5)
    ]
    log_history.append({"train_runtime": 3.0, "train_loss": 0.67, "epoch": 1.0, "step": 4})
    _write_json(iter_dir / "model" / "train_metrics.json", {"steps": 4, "log_history": log_history})


def _write_eval(iter_dir: Path, iteration: int, with_conversations: bool = True) -> None:
    metrics = {m: {"mean": v[0], "ci_low": v[1], "ci_high": v[2], "n": 8, "failed": 0}
               for m, v in EVAL[iteration].items()}
    metrics["interactivity"]["failed"] = 1 if iteration == 2 else 0
    _write_json(iter_dir / "eval" / "summary.json", {
        "iteration": iteration, "model": "models/m", "tasks_path": "data/tasks/t.jsonl", "num_conversations": 8,
        "confidence": 0.95, "bootstrap_samples": 1000, "seed": 0, "metrics": metrics,
    })
    if with_conversations:
        conversations = [
            {"id": f"e{k}", "task_id": f"t{k}", "terminated": k % 2 == 0,
             "error": "simulator timeout" if k == 0 else None,
             "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
             # Iteration 2 solves 5 tasks more than iteration 0: the paired verdict on accuracy is "better".
             "metrics": {"accuracy": float(k >= 2 if iteration == 2 else k == 7)}, "metric_errors": {}}
            for k in range(8)
        ]
        write_jsonl(iter_dir / "eval" / "conversations.jsonl", conversations)


def _write_conversations(eval_dir: Path, values: dict[str, dict[str, list[float | None]]]) -> None:
    """conversations.jsonl with several samples per task ("<task>/sample<j>"), from {metric: {task: values}}."""
    tasks = {t: len(v) for per_task in values.values() for t, v in per_task.items()}
    rows = [
        {"id": f"{t}/sample{j}", "task_id": t, "terminated": True, "error": None,
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "metrics": {m: per_task[t][j] for m, per_task in values.items() if t in per_task},
         "metric_errors": {m: "judge timeout" for m, per_task in values.items() if per_task.get(t, [0])[j] is None}}
        for t, k in tasks.items() for j in range(k)
    ]
    write_jsonl(eval_dir / "conversations.jsonl", rows)


def write_run(run: Path) -> Path:
    """Iterations 1 and 2 trained; evaluation of iteration 0 (the initial model) and 2."""
    for i in (1, 2):
        _write_iteration(run / f"iter_{i}", i)
    for i in (0, 2):
        _write_eval(run / f"iter_{i}", i)
    return run


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = write_run(tmp_path / "runs" / "tiny")
    # The fixture's files are real records: the report must read what the stages write.
    read_records(run / "iter_1" / "rewards.jsonl", Rewarded)
    read_records(run / "iter_1" / "pairs.jsonl", Pair)
    read_records(run / "iter_2" / "eval" / "conversations.jsonl", EvalConversation)
    return run


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _row(text: str, first_cells: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(first_cells)]
    assert len(rows) == 1, f"expected one row starting {first_cells!r}, got {rows}"
    return rows[0]


def _check_linked_pngs(report: Path) -> list[Path]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    paths = [report.parent / link for link in links]
    for path in paths:
        assert path.is_file(), f"{report} links {path}, which is missing"
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the signature
        assert width >= 300 and height >= 200 and len(data) > 5000, f"{path}: {width}x{height}, {len(data)} bytes"
    return paths


def test_report_headline_plots_counts(run_dir, tmp_path):
    report = write_report(run_dir, tmp_path / "out")
    assert report == tmp_path / "out" / "report.md"
    text = report.read_text()

    headline = _section(text, "## 1.")
    assert "| metric | iter 0 | iter 2 | change 0 → 2 | verdict |" in headline
    assert _row(headline, "| conversations |") == "| conversations | 8 | 8 |  |  |"
    assert _row(headline, "| accuracy |") == (
        "| accuracy | 0.120 [0.000, 0.310] | 0.560 [0.380, 0.810] | +0.440 | better |"
    )
    # Overlapping intervals are no verdict; a failed value is shown beside its cell.
    assert _row(headline, "| interactivity |") == (
        "| interactivity | 0.500 [0.400, 0.600] | 0.550 [0.450, 0.650] (1 failed) | +0.050 | within noise |"
    )
    # Fewer tokens is better: token_amount declares lower is better (register_metric), whatever its weight.
    assert _row(headline, "| token_amount |") == (
        "| token_amount | 300.0 [280.0, 320.0] | 200.0 [180.0, 220.0] | -100.0 | better |"
    )
    assert _row(headline, "| turns |") == (
        "| turns | 4.000 [3.500, 4.500] | 2.000 [1.500, 2.500] | -2.000 | lower (no declared direction) |"
    )
    assert ("**At a glance, iteration 0 → 2:** better on accuracy, token_amount; within noise on interactivity; "
            "turns lower (no declared direction).") in headline
    assert "No evaluation" not in text

    pngs = {p.name for p in _check_linked_pngs(report)}
    assert pngs == {"eval_metrics.png", "reward_distribution.png", "candidate_metrics.png", "pair_margins.png",
                    "training_curves.png"}

    # Training candidates: 9 candidates per iteration, one without a reward in iteration 2.
    candidates = _section(text, "## 2.")
    assert _row(candidates, "| 1 |").startswith("| 1 | 9 (0) |")
    assert _row(candidates, "| 2 |").startswith("| 2 | 9 (1) |")
    assert "(1 failed)" in _row(candidates, "| 2 |")  # the accuracy of that candidate

    training = _section(text, "## 3.")
    assert _row(training, "| 1 |") == (
        "| 1 | dpo | 4 | 0.680 → 0.650 (mean 0.665) | 0.500 → 0.500 (mean 0.500) | 0.010 → 0.040 (mean 0.025) |"
    )

    counts = _section(text, "## 4.")
    assert _row(counts, "| 1 | pairs.jsonl (pairs) |") == (
        "| 1 | pairs.jsonl (pairs) | complete | 3 | 2 | all_rewards_tied: 1, margin_below_min (future): 3 | — | — "
        "| 0.0 | — |"
    )
    # What the API calls cost: per stage in its own column (not among the other counts), and per iteration.
    simulate = _row(counts, "| 1 | simulations.jsonl (simulate) |")
    assert simulate.endswith("| 40.0 | 0.2500 |") and "cost" not in simulate
    assert "futures_failed: 2" in _row(counts, "| 2 | simulations.jsonl (simulate) |")
    assert "candidates_without_reward: 1" in _row(counts, "| 2 | rewards.jsonl (annotate) |")
    assert _row(counts, "| 1 | model/ (dpo) |").endswith("| 30.0 | — |")
    # 0.01 + 12.5 + 40 + 20 + 0.02 + 30 seconds; $0.25 + $0.0512
    assert _row(counts, "| 1 | **all stages** |").endswith("| **102.5** | **0.3012** |")
    assert _row(counts, "| 2 | eval/ (evaluate) |") == (
        "| 2 | eval/ (evaluate) | complete | 8 | 8 | 0 | conversation errors: 1, metric values failed: 1 "
        "| terminated: 4 | — | — |"
    )
    assert "Nothing missing" in _section(text, "## 5.")


@pytest.mark.slow  # renders the whole report twice
def test_report_is_deterministic(run_dir, tmp_path):
    first = write_report(run_dir, tmp_path / "a").read_text()
    # Again into the same folder (overwriting) and into a fresh one: the same bytes.
    assert write_report(run_dir, tmp_path / "a").read_text() == first
    assert write_report(run_dir, tmp_path / "b").read_text() == first
    for png in (tmp_path / "a").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "b" / png.name).read_bytes(), png.name


def test_report_without_evaluation(run_dir, tmp_path):
    out = tmp_path / "out"
    write_report(run_dir, out)
    assert (out / "eval_metrics.png").exists()
    for i in (0, 2):
        shutil.rmtree(run_dir / f"iter_{i}" / "eval")
    shutil.rmtree(run_dir / "iter_0")
    text = write_report(run_dir, out).read_text()
    assert "**No evaluation**" in _section(text, "## 1.")
    assert text.splitlines()[2] == "**Headline:** no evaluation yet, so no held-out comparison of the models."
    assert "evaluated iterations: none" in text
    assert "eval_metrics.png" not in text
    assert not (out / "eval_metrics.png").exists(), "a plot the report no longer links is stale"
    _check_linked_pngs(out / "report.md")


def test_report_single_evaluation_and_default_output_dir(run_dir):
    shutil.rmtree(run_dir / "iter_2" / "eval")
    report = write_report(run_dir)
    assert report == run_dir / "report" / "report.md"
    assert report.read_text().splitlines()[2] == (
        "**Headline:** only iteration 0 (the initial model) was evaluated: nothing to compare."
    )
    headline = _section(report.read_text(), "## 1.")
    assert "Only iteration 0 was evaluated" in headline
    assert "Paired with iteration 0" not in headline
    assert _row(headline, "| accuracy |") == "| accuracy | 0.120 [0.000, 0.310] |"
    # The report folder inside the run is not mistaken for an iteration.
    assert list(collect(run_dir)["iterations"]) == [0, 1, 2]


def test_missing_pieces_are_reported_not_fatal(run_dir, tmp_path):
    it2 = run_dir / "iter_2"
    for name in ("pairs.jsonl", "pairs.meta.json", "model.meta.json", "metrics.json"):
        (it2 / name).unlink()
    shutil.rmtree(it2 / "model")
    (it2 / "eval" / "conversations.jsonl").unlink()
    (run_dir / "iter_1" / "rewards.jsonl.partial").write_text("")
    (run_dir / "iter_1" / "simulations.meta.json").write_text('{"stage": "simul')  # damaged: read as none
    text = write_report(run_dir, tmp_path / "out").read_text()
    missing = _section(text, "## 5.")
    for piece in ("pairs.jsonl", "pairs.meta.json", "model/", "model.meta.json", "metrics.json",
                  "eval/conversations.jsonl"):
        assert f"missing {piece}" in _row(missing, "- iter 2:")
    assert "rewards.jsonl.partial exists" in _row(missing, "- iter 1:")
    assert "simulations.meta.json is damaged" in _row(missing, "- iter 1:")
    assert _row(_section(text, "## 4."), "| 1 | simulations.jsonl").startswith(
        "| 1 | simulations.jsonl | damaged meta file |")
    assert _row(_section(text, "## 3."), "| 2 |") == "| 2 | — | missing | — | — | — |"
    assert _row(_section(text, "## 4."), "| 2 | pairs.jsonl |").startswith("| 2 | pairs.jsonl | missing |")
    _check_linked_pngs(tmp_path / "out" / "report.md")


def test_corrupt_line_raises_and_keeps_the_old_report(run_dir, tmp_path):
    out = tmp_path / "out"
    old = write_report(run_dir, out).read_text()
    with (run_dir / "iter_1" / "pairs.jsonl").open("a") as f:
        f.write('{"id": "t9/turn0", "margin": \n')
    with pytest.raises(RecordError, match=r"iter_1/pairs\.jsonl:3"):
        write_report(run_dir, out)
    assert (out / "report.md").read_text() == old, "a failed build must leave the previous report whole"
    assert not list(out.glob(".report.md.*")), "no temporary file is left behind"

    # A well-formed line with a bad field names the field.
    lines = (run_dir / "iter_1" / "pairs.jsonl").read_text().splitlines()[:2]
    bad = json.loads(lines[1])
    bad["id"], bad["margin"] = "t9/turn0", "large"
    (run_dir / "iter_1" / "pairs.jsonl").write_text("\n".join(lines + [json.dumps(bad)]) + "\n")
    with pytest.raises(RecordError, match=r"pairs\.jsonl:3: field 'margin'"):
        collect(run_dir)


def test_eval_summary_in_the_wrong_folder_is_an_error(run_dir):
    path = run_dir / "iter_2" / "eval" / "summary.json"
    summary = json.loads(path.read_text())
    summary["iteration"] = 1
    path.write_text(json.dumps(summary))
    with pytest.raises(RecordError, match="says 1 but the file is in iter_2"):
        collect(run_dir)


def test_main_prints_the_headline_and_the_report_path(run_dir, tmp_path, capsys):
    main(["--run_dir", str(run_dir), "--output_dir", str(tmp_path / "cli")])
    headline, path = capsys.readouterr().out.strip().splitlines()
    assert path == str(tmp_path / "cli" / "report.md")
    assert headline.startswith("Headline: accuracy: iteration 2 ") and headline.endswith("better.")
    assert f"**{headline.replace('Headline:', 'Headline:**')}" in (tmp_path / "cli" / "report.md").read_text()


def test_report_on_demo_run(tmp_path):
    if not any(DEMO_RUN.glob("iter_*")):
        pytest.skip(f"{DEMO_RUN} not present (data/runs is not in git; run `bash run_loop.sh` to make it)")
    report = write_report(DEMO_RUN, tmp_path / "demo_report")
    text = report.read_text()
    _check_linked_pngs(report)
    evaluated = sorted(DEMO_RUN.glob("iter_*/eval/summary.json"))
    if evaluated:
        assert "No evaluation" not in text
    else:
        assert "**No evaluation**" in text
    counts = _section(text, "## 4.")
    for meta_path in sorted(DEMO_RUN.glob("iter_*/pairs.meta.json")):
        i = int(meta_path.parent.name.split("_")[1])
        meta = json.loads(meta_path.read_text())
        row = _row(counts, f"| {i} | pairs.jsonl (pairs) |")
        assert f"| {meta['counts']['records_in']} | {meta['counts']['records_out']} |" in row
    assert write_report(DEMO_RUN, tmp_path / "demo_report").read_text() == text


def test_task_values_groups_samples_by_task(tmp_path):
    _write_conversations(tmp_path, {"accuracy": {"t1": [1.0, None, 0.0], "t2": [0.5]}, "turns": {"t1": [2.0] * 3}})
    records = read_records(tmp_path / "conversations.jsonl", EvalConversation)
    assert [r.id for r in records] == ["t1/sample0", "t1/sample1", "t1/sample2", "t2/sample0"]
    assert task_values(records) == {"accuracy": {"t1": [1.0, 0.0], "t2": [0.5]}, "turns": {"t1": [2.0, 2.0, 2.0]}}


def test_report_paired_headline_and_table(run_dir, tmp_path):
    for i, values in PAIRED.items():
        _write_conversations(run_dir / f"iter_{i}" / "eval", values)
    text = write_report(run_dir, tmp_path / "out").read_text()
    # The top of the report: the last evaluated iteration against iteration 0 on accuracy, paired by task.
    assert text.splitlines()[:3] == [
        "# Run report: tiny",
        "",
        "**Headline:** accuracy: iteration 2 0.750 vs iteration 0 0.250, paired difference +0.500 "
        "[95% +0.500, +0.500] over 4 tasks (7 vs 8 conversations): better "
        "(2 tasks with a value in only one of the two left out).",
    ]
    headline = _section(text, "## 1.")
    assert ("| iteration | metric | iter 0 mean | iter i mean | difference [95% CI] | verdict | tasks paired "
            "| conversations (iter 0 vs i) | tasks left out (only 0 / only i) |") in headline
    assert _row(headline, "| 2 | accuracy |") == (
        "| 2 | accuracy | 0.250 | 0.750 | +0.500 [+0.500, +0.500] | better | 4 | 7 vs 8 | 1 / 1 |")
    assert _row(headline, "| 2 | interactivity |") == (
        "| 2 | interactivity | 0.500 | 0.500 | +0.000 [-0.100, +0.100] | within noise | 4 | 8 vs 8 | 1 / 1 |")
    # Fewer tokens is better (token_amount declares it); turns is no metric and declares nothing, so it only moved.
    assert _row(headline, "| 2 | token_amount |") == (
        "| 2 | token_amount | 300.0 | 200.0 | -100.0 [-100.0, -100.0] | better | 4 | 8 vs 8 | 1 / 1 |")
    assert _row(headline, "| 2 | turns |") == (
        "| 2 | turns | 4.000 | 3.000 | -1.000 [-1.000, -1.000] | lower (no declared direction) | 4 | 8 vs 8 | 1 / 1 |")
    assert write_report(run_dir, tmp_path / "again").read_text() == text


def test_report_paired_without_conversations_or_accuracy(run_dir, tmp_path):
    for i, values in PAIRED.items():
        _write_conversations(run_dir / f"iter_{i}" / "eval", values)
    # Iteration 1 evaluated, but its conversations are gone: listed, not compared; the headline is iteration 2.
    summary = json.loads((run_dir / "iter_0" / "eval" / "summary.json").read_text())
    _write_json(run_dir / "iter_1" / "eval" / "summary.json", {**summary, "iteration": 1})
    text = write_report(run_dir, tmp_path / "out").read_text()
    assert text.splitlines()[2].startswith("**Headline:** accuracy: iteration 2 0.750 vs iteration 0 0.250,")
    headline = _section(text, "## 1.")
    assert "- iteration 1: not compared, iter_1/eval/conversations.jsonl is missing." in headline
    assert not [line for line in headline.splitlines() if line.startswith("| 1 |")]

    # Without accuracy the headline takes the evaluation's first metric.
    _write_conversations(run_dir / "iter_0" / "eval", {m: v for m, v in PAIRED[0].items() if m != "accuracy"})
    _write_conversations(run_dir / "iter_2" / "eval", {m: v for m, v in PAIRED[2].items() if m != "accuracy"})
    text = write_report(run_dir, tmp_path / "out").read_text()
    assert text.splitlines()[2] == (
        "**Headline:** interactivity: iteration 2 0.500 vs iteration 0 0.500, paired difference +0.000 "
        "[95% -0.100, +0.100] over 4 tasks (8 vs 8 conversations): within noise "
        "(2 tasks with a value in only one of the two left out)."
    )

    (run_dir / "iter_2" / "eval" / "conversations.jsonl").unlink()
    text = write_report(run_dir, tmp_path / "out").read_text()
    assert text.splitlines()[2] == (
        "**Headline:** no paired comparison of iteration 2: iter_2/eval/conversations.jsonl is missing."
    )
    shutil.rmtree(run_dir / "iter_0" / "eval")
    text = write_report(run_dir, tmp_path / "out").read_text()
    assert text.splitlines()[2] == (
        "**Headline:** no paired comparison: iteration 0 (the initial model) was not evaluated."
    )
