"""The run report (collabloop/report.py) on a small hand-made run folder, and on data/runs/demo when present."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from collabloop.jsonl import read_records
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
        "simulations": ("simulate", {"records_in": n, "records_out": n, "futures": 18, "futures_failed": 2}, 40.0),
        "rewards": ("annotate", {"records_in": n, "records_out": n, "candidates_without_reward": int(iteration == 2)},
                    20.0),
        "pairs": ("pairs", {"records_in": n, "records_out": 2, "dropped_all_rewards_tied": 1}, 0.02),
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
             "metrics": {"accuracy": 1.0}, "metric_errors": {}}
            for k in range(8)
        ]
        write_jsonl(iter_dir / "eval" / "conversations.jsonl", conversations)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """Iterations 1 and 2 trained; evaluation of iteration 0 (the initial model) and 2."""
    run = tmp_path / "runs" / "tiny"
    for i in (1, 2):
        _write_iteration(run / f"iter_{i}", i)
    for i in (0, 2):
        _write_eval(run / f"iter_{i}", i)
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
    # Fewer tokens is better: the weight of token_amount in the reward is negative.
    assert _row(headline, "| token_amount |") == (
        "| token_amount | 300.0 [280.0, 320.0] | 200.0 [180.0, 220.0] | -100.0 | better |"
    )
    assert _row(headline, "| turns |") == (
        "| turns | 4.000 [3.500, 4.500] | 2.000 [1.500, 2.500] | -2.000 | lower (no reward weight) |"
    )
    assert ("**At a glance, iteration 0 → 2:** better on accuracy, token_amount; within noise on interactivity; "
            "turns lower (no reward weight).") in headline
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
        "| 1 | pairs.jsonl (pairs) | complete | 3 | 2 | all_rewards_tied: 1 | — | — | 0.0 |"
    )
    assert "futures_failed: 2" in _row(counts, "| 2 | simulations.jsonl (simulate) |")
    assert "candidates_without_reward: 1" in _row(counts, "| 2 | rewards.jsonl (annotate) |")
    assert _row(counts, "| 1 | model/ (dpo) |").endswith("| 30.0 |")
    # 0.01 + 12.5 + 40 + 20 + 0.02 + 30 seconds
    assert _row(counts, "| 1 | **all stages** |").endswith("| **102.5** |")
    assert _row(counts, "| 2 | eval/ (evaluate) |") == (
        "| 2 | eval/ (evaluate) | complete | 8 | 8 | 0 | conversation errors: 1, metric values failed: 1 "
        "| terminated: 4 | — |"
    )
    assert "Nothing missing" in _section(text, "## 5.")


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
    assert "evaluated iterations: none" in text
    assert "eval_metrics.png" not in text
    assert not (out / "eval_metrics.png").exists(), "a plot the report no longer links is stale"
    _check_linked_pngs(out / "report.md")


def test_report_single_evaluation_and_default_output_dir(run_dir):
    shutil.rmtree(run_dir / "iter_2" / "eval")
    report = write_report(run_dir)
    assert report == run_dir / "report" / "report.md"
    headline = _section(report.read_text(), "## 1.")
    assert "Only iteration 0 was evaluated" in headline
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
    text = write_report(run_dir, tmp_path / "out").read_text()
    missing = _section(text, "## 5.")
    for piece in ("pairs.jsonl", "pairs.meta.json", "model/", "model.meta.json", "metrics.json",
                  "eval/conversations.jsonl"):
        assert f"missing {piece}" in _row(missing, "- iter 2:")
    assert "rewards.jsonl.partial exists" in _row(missing, "- iter 1:")
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


def test_main_prints_the_report_path(run_dir, tmp_path, capsys):
    main(["--run_dir", str(run_dir), "--output_dir", str(tmp_path / "cli")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli" / "report.md")


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
