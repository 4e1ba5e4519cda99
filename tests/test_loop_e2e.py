"""run_loop.sh end to end on the tiny config: every file is there and valid, and the model moved."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from collabloop.jsonl import read_records
from collabloop.records import Context, Generation, Pair, Rewarded, Simulation
from tests.conftest import MODEL, REPO, free_port

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)  # three loop runs: the longest test
def test_run_loop_tiny(model_dir, tmp_path):
    # The tiny config with the policy's engines in float32: the sharded run below must write the same bytes,
    # and in bf16 (the CPU default where the CPU has native bf16) a shard's engine, with fewer threads, can
    # flip a token.
    sections = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    for name in ("generate", "simulate", "evaluate"):
        sections[name]["dtype"] = "float32"
    config = tmp_path / "tiny_float32.yaml"
    config.write_text(yaml.safe_dump(sections))
    run_dir = tmp_path / "run"
    port = free_port()
    result = subprocess.run(
        ["bash", "run_loop.sh", str(config), "--run_dir", str(run_dir), "--simulator_port", str(port)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    assert "stopping simulator server" in result.stdout
    assert "== iter_1 summary ==" in result.stdout
    # A quiet console: each stage's start and end lines; vLLM's, DeepSpeed's and torch's output in its log.
    assert f"[generate] started (log: {run_dir / 'iter_1' / 'generations.log'})" in result.stdout
    assert "Loading safetensors" in (run_dir / "iter_1" / "generations.log").read_text()  # vLLM's, not ours
    assert "[dpo] started" in result.stdout and (run_dir / "iter_1" / "model.log").stat().st_size > 0
    assert "Loading safetensors" not in result.stdout + result.stderr

    it = run_dir / "iter_1"
    contexts = read_records(it / "contexts.jsonl", Context)
    generations = read_records(it / "generations.jsonl", Generation)
    simulations = read_records(it / "simulations.jsonl", Simulation)
    rewards = read_records(it / "rewards.jsonl", Rewarded)
    pairs = read_records(it / "pairs.jsonl", Pair)
    assert len(contexts) == 4  # contexts.max_tasks
    assert [g.id for g in generations] == [c.id for c in contexts]
    assert all(len(g.responses) == 2 for g in generations)  # K=2
    assert all(len(per) == 1 for s in simulations for per in s.futures)  # S=1
    assert all(len(f["messages"]) <= 2 for s in simulations for per in s.futures for f in per)  # w=1
    assert [r.id for r in rewards] == [c.id for c in contexts]
    assert 1 <= len(pairs) <= 4
    for name in ("contexts", "generations", "simulations", "rewards", "pairs"):
        meta = json.loads((it / f"{name}.meta.json").read_text())
        assert meta["status"] == "complete"
    assert (run_dir / "config.yaml").exists()
    summary = json.loads((it / "metrics.json").read_text())
    assert summary["candidates_scored"] >= 2 and summary["pairs"]["records_out"] == len(pairs)
    train = json.loads((it / "model" / "train_metrics.json").read_text())
    assert train["steps"] >= 1 and "last_loss" in train

    # Evaluation of the initial model (iteration 0) and the trained one, on the same held-out openings.
    for i in (0, 1):
        summary = json.loads((run_dir / f"iter_{i}" / "eval" / "summary.json").read_text())
        assert summary["iteration"] == i and summary["num_conversations"] == 4
        assert set(summary["metrics"]) == {"accuracy", "interactivity", "token_amount", "turns"}
    # The report is built and its path printed last.
    report_path = run_dir / "report" / "report.md"
    assert str(report_path) in result.stdout.splitlines()[-2]
    report = report_path.read_text()
    assert "| metric | iter 0 | iter 1 |" in report
    # And beside it the page to browse the run, with the data of the trained iteration and the evaluation.
    assert (run_dir / "report" / "index.html").is_file()
    assert {p.name for p in (run_dir / "report" / "viewer").glob("*_0.js")} == {"iter_1_0.js", "eval_0.js"}
    browse(run_dir / "report" / "index.html", tmp_path / "browser")

    # Every file the run wrote can be inspected, and a record shown as a conversation.
    from collabloop.inspect_run import main as inspect_main

    for path in [*sorted(it.glob("*.jsonl")), run_dir / "iter_1" / "eval" / "conversations.jsonl", it / "model"]:
        assert inspect_main([str(path)]) == 0, path
    assert inspect_main([str(it / "rewards.jsonl"), "--record", "0"]) == 0

    # The trained weights differ from the initial ones.
    from safetensors.torch import load_file

    before = load_file(MODEL / "model.safetensors")
    after = load_file(it / "model" / "model.safetensors")
    changed = [k for k in before if k in after and not before[k].to(after[k].dtype).equal(after[k])]
    assert changed, "DPO did not change any weight"

    # A second run finds every stage up to date.
    again = subprocess.run(
        ["bash", "run_loop.sh", str(config), "--run_dir", str(run_dir), "--simulator_port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "starting simulator server" not in again.stdout  # no stage had work for it
    assert "started" not in again.stdout  # no stage had work (a stage prints its start line only then)
    assert "Setting accelerator" not in again.stdout + again.stderr  # DPO answered in one process, no launch
    for stage in ("contexts", "generate", "simulate", "annotate", "pairs", "dpo", "evaluate"):
        assert f"[{stage}]" in again.stdout and "up to date" in again.stdout.split(f"[{stage}]")[1].splitlines()[0]

    # The same loop with the per-record stages split over 2 shards writes the same bytes. The outputs of
    # evaluate, generate and simulate are moved aside and remade by shards in the same run folder: the same
    # LLM cache and the same port (the cache keys a request by the server's address, and the server's
    # sampling cannot be seeded per request on CPU). The later stages (annotate, pairs, dpo) then find their
    # inputs unchanged, byte for byte, and stay up to date; annotate's shards are compared with an unsharded
    # run in tests/test_shards.py. Each shard's vLLM engine gets its own core, where the unsharded run's
    # engine had both; in float32 (the CPU default without native bf16) the samples do not depend on the
    # thread count. Iteration 1's evaluation stays: it runs the same sharded code as iteration 0's.
    per_record = ["iter_0/eval", *(f"iter_1/{name}.{ext}" for name in ("generations", "simulations")
                                   for ext in ("jsonl", "meta.json", "config.yaml"))]
    unsharded_dir = tmp_path / "unsharded"
    for path in per_record:
        (unsharded_dir / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(run_dir / path, unsharded_dir / path)
    sharded = subprocess.run(
        ["bash", "run_loop.sh", str(config), "--run_dir", str(run_dir), "--simulator_port", str(port),
         "--num_shards", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert sharded.returncode == 0, f"{sharded.stdout[-4000:]}\n{sharded.stderr[-6000:]}"
    assert sharded.stdout.count("[merge]") == 3  # evaluate of iteration 0; generate and simulate of 1
    for stage in ("contexts", "annotate", "pairs", "dpo"):  # what they read was remade the same, byte for byte
        lines = [line for line in sharded.stdout.splitlines() if line.startswith(f"[{stage}]")]
        assert lines and all("up to date" in line for line in lines), (stage, lines)
    for name in ("generations", "simulations"):
        assert (run_dir / "iter_1" / f"{name}.shard1-of-2.jsonl").stat().st_size > 0  # both shards had work
    for path in ["iter_0/eval/conversations.jsonl", *(f"iter_1/{name}.jsonl" for name in
                 ("generations", "simulations"))]:
        ours, theirs = (run_dir / path).read_text().splitlines(), (unsharded_dir / path).read_text().splitlines()
        assert [json.loads(line)["id"] for line in ours] == [json.loads(line)["id"] for line in theirs], path
        differing = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        assert not differing, f"{path}: lines {differing} differ between the sharded and the unsharded run"
    summaries = [json.loads((d / "iter_0" / "eval" / "summary.json").read_text()) for d in (run_dir, unsharded_dir)]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]


@pytest.mark.timeout(900)
def test_zero_iterations_evaluate_any_model_on_any_task_file(model_dir, tmp_path):
    """`run_loop.sh CONFIG --num_iterations 0 --initial_model M --eval_tasks F --run_dir D`: the loop's own
    evaluation and report for a model, no training."""
    tasks = tmp_path / "tasks.jsonl"
    lines = (REPO / "data" / "tasks" / "collab_heldout.jsonl").read_text().splitlines()[:2]  # one of each kind
    tasks.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "check"
    result = subprocess.run(
        ["bash", "run_loop.sh", "configs/demo.yaml", "--num_iterations", "0", "--initial_model", str(MODEL),
         "--eval_tasks", str(tasks), "--run_dir", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=840,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    assert "[dpo]" not in result.stdout and not (run_dir / "iter_1").exists()
    summary = json.loads((run_dir / "iter_0" / "eval" / "summary.json").read_text())
    assert summary["model"] == str(MODEL) and summary["num_conversations"] == 2 * 3
    assert "ask_rate" in summary["metrics"]
    assert "only iteration 0" in result.stdout and "underspecified (1 task)" in result.stdout
    assert f"done: evaluated {MODEL} in {run_dir} (no training: num_iterations 0)" in result.stdout


def browse(page_path: Path, folder: Path) -> None:
    """The page run_loop.sh wrote, in headless Chromium where there is one: a context's candidates and a
    candidate's futures open and read, an opening played by both iterations side by side, no errors."""
    from tests.cdp import Chromium, find_chromium

    if find_chromium() is None:
        return  # tests/test_run_viewer.py says, by a skip, that the browser checks did not run
    with Chromium.start(find_chromium(), folder) as page:
        page.open(page_path.as_uri())
        page.evaluate("document.querySelector('#list li').click()")
        page.wait_until("document.querySelectorAll('#detail .candidate').length === 2")  # K=2
        page.evaluate("document.querySelector('#detail .candidate details.futures summary').click()")
        page.wait_until("document.querySelector('#detail .candidate .future')")
        future = page.evaluate("document.querySelector('#detail .candidate .future').textContent")
        assert "simulated user" in future or "failed" in future, future
        page.evaluate("document.querySelector('#views button[data-view=\"eval\"]').click()")
        page.evaluate("document.querySelector('#list li').click()")
        page.wait_until("document.querySelectorAll('#detail .side-by-side .conversation').length === 2")
        heads = page.evaluate("Array.from(document.querySelectorAll('.iter-head')).map(h => h.textContent)")
        assert heads[0].startswith("iteration 0") and heads[1].startswith("iteration 1"), heads
        assert page.errors() == []
        page.screenshot(folder / "tiny.png")
