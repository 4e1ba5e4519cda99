"""Faults: every stage killed mid-run and while it finishes, damaged partial files, the simulator server dying
mid-stage, and a full disk. Each ends with the records an uninterrupted run writes, or a clear error
that loses nothing.

Stages whose records depend on the simulator or judge share the uninterrupted run's LLM cache: the
local server's sampling cannot be seeded per request on CPU, so a redone call would draw new text;
with the cache every call is answered as before, and what is tested is the stage's own bookkeeping.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from annotate_data.scoring import run as annotate
from collabloop.records import RecordError
from collabloop.stage import StageError
from collabloop.stage_configs import AnnotateConfig
from tests import warm
from tests.conftest import PYTHON, REPO, free_port, math_task, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def run_stage(script: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    result = warm.run([PYTHON, script, *map(str, args)], cwd=REPO, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def assert_same_as_uninterrupted(output: Path, reference: Path) -> None:
    assert output.read_bytes() == reference.read_bytes()
    assert not output.with_name(output.name + ".partial").exists()
    meta = json.loads(output.with_name(output.stem + ".meta.json").read_text())
    assert meta["status"] == "complete"


def contexts_rows(n: int) -> list[dict]:
    return [{"id": f"t{i}/turn0", "task_id": f"t{i}", "turn": 0, "prompt": math_task(i, 2 + i, 1 + i % 3)["prompt"]}
            for i in range(n)]


def scored_inputs(tmp_path: Path, second_reply: str, n: int = 6) -> tuple[Path, Path]:
    """A task file and a simulations file for annotate: n tasks, two candidates each (the right answer and
    `second_reply`), two futures each with no simulated turns."""
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2 + i, 1 + i % 3) for i in range(n)])
    sims = write_jsonl(tmp_path / "simulations.jsonl", [
        {**row, "responses": [f"It is {3 + i}.", second_reply], "gen": {},
         "futures": [[{"messages": [], "terminated": False, "error": None}] for _ in range(2)]}
        for i, row in enumerate(contexts_rows(n))
    ])
    return tasks, sims


def rewards_rows(rewards: list[float]) -> list[dict]:
    """Six rewarded records of three candidates each, with these rewards, for the pairs stage."""
    return [{**row, "responses": [f"It is {3 + i}.", "No idea.", "Maybe 4?"], "gen": {},
             "futures": [[] for _ in range(3)], "metrics": [{} for _ in range(3)], "rewards": rewards,
             "future_rewards": [[] for _ in range(3)]}
            for i, row in enumerate(contexts_rows(6))]


# --- every stage killed mid-run, and while it finishes -----------------------------------------------------


def stage_cases(tmp_path: Path, model_dir: Path, server) -> dict[str, tuple[str, list, int, int]]:
    """stage -> (script, arguments but --output_path, records, the appended batch after which a fail point
    kills it); inputs are written under tmp_path. Generate is killed from outside at a random moment in
    tests/test_stages.py::test_generate_killed_at_a_random_moment_resumes_to_the_same_output, and
    evaluate at a fail point in tests/test_evaluate.py, beside its reproducibility check."""
    n = 6
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2 + i, 1 + i % 3, with_prompt=i % 2 == 0)
                                                  for i in range(n)])
    generations = write_jsonl(tmp_path / "inputs" / "generations.jsonl", [
        {**row, "responses": [f"It is {3 + i}.", "Could you tell me more?"], "gen": {}}
        for i, row in enumerate(contexts_rows(n))
    ])
    cache = tmp_path / "llm_cache.sqlite"
    remote = ["--simulator_api_base", server.api_base, "--llm_cache_path", cache]
    judge = ["--judge_api_base", server.api_base, "--tokenizer", model_dir]
    policy = ["--model", model_dir, "--max_new_tokens", 24, "--batch_size", 2]  # 3 batches of 2 records
    simulations = tmp_path / "inputs" / "simulations.jsonl"
    return {
        # The openings the tasks give are appended first, then those the simulator writes.
        "contexts": ("simulate/make_contexts.py", ["--tasks_path", tasks, *remote], n, 1),
        "simulate": ("simulate/simulate_futures.py",
                     ["--generations_path", generations, "--tasks_path", tasks, "--num_futures", 1,
                      "--window_turns", 1, "--simulator_max_tokens", 24, *policy, *remote], n, 1),
        "annotate": ("annotate_data/annotate.py",
                     ["--simulations_path", simulations, "--tasks_path", tasks, "--batch_size", 1, *judge, *remote[2:],
                      "--metric_weights", "{accuracy: 1, interactivity: 1, token_amount: -1e-4}"], n, 3),
        # One batch: the kill lands between the last append and the output.
        "pairs": ("dpo_iteration/pairs.py", ["--rewards_path", tmp_path / "inputs" / "rewards.jsonl"], n, 1),
    }


OUTPUTS = {"contexts": "contexts.jsonl", "simulate": "simulations.jsonl", "annotate": "rewards.jsonl",
           "pairs": "pairs.jsonl"}


def killed_at(failpoint: str, script: str, *args) -> subprocess.CompletedProcess:
    """Run the stage with a fail point (collabloop/failpoints.py) that SIGKILLs it; it must die there."""
    result = warm.run([PYTHON, script, *map(str, args)], cwd=REPO, timeout=900,
                      env={**os.environ, "COLLABLOOP_FAILPOINT": failpoint})
    assert result.returncode == -signal.SIGKILL, f"{failpoint}: {result.returncode}\n{result.stderr[-3000:]}"
    return result


def test_every_stage_killed_mid_run_ends_with_the_uninterrupted_records(simulator, model_dir, tmp_path):
    cases = stage_cases(tmp_path, model_dir, simulator)
    for name, (script, args, total, batch) in cases.items():
        reference = tmp_path / "inputs" / OUTPUTS[name]
        run_stage(script, *args, "--output_path", reference)
        output = tmp_path / "killed" / name / OUTPUTS[name]
        killed_at(f"append:{batch}", script, *args, "--output_path", output)
        partial = output.with_name(output.name + ".partial")
        kept = lines(partial)
        assert 0 < kept <= total and not output.exists(), (name, kept)
        if name != "pairs":
            assert kept < total, f"{name}: the kill must land mid-run ({kept} of {total} records)"
        final = run_stage(script, *args, "--output_path", output)
        assert "Traceback" not in final.stderr
        assert f"resuming, {kept} records already finished" in final.stderr, final.stderr[-2000:]
        assert_same_as_uninterrupted(output, reference)


def test_simulate_on_the_per_conversation_schedule_killed_mid_run_ends_with_the_uninterrupted_records(
        model_dir, tmp_path):
    # The simulator a vLLM engine in the stage's process, as in the demo: no clock decides which turns share a
    # step, so the batch redone after the kill samples the text the uninterrupted run did.
    no_server = SimpleNamespace(api_base="http://127.0.0.1:9/v1")  # replaced: the simulator is local
    script, args, total, batch = stage_cases(tmp_path, model_dir, no_server)["simulate"]
    at = args.index("--simulator_api_base")
    args = [*args[:at], "--simulator_model", f"local/{model_dir}", "--simulation_schedule", "per_conversation",
            *args[at + 2:]]
    reference = tmp_path / "whole" / "simulations.jsonl"
    run_stage(script, *args, "--output_path", reference)
    output = tmp_path / "killed" / "simulations.jsonl"
    killed_at(f"append:{batch}", script, *args, "--output_path", output)
    kept = lines(output.with_name(output.name + ".partial"))
    assert 0 < kept < total
    final = run_stage(script, *args, "--output_path", output)
    assert f"resuming, {kept} records already finished" in final.stderr, final.stderr[-2000:]
    assert_same_as_uninterrupted(output, reference)
    futures = [f for row in read_jsonl(reference) for candidate in row["futures"] for f in candidate]
    assert futures and all(f["error"] is None and f["messages"] for f in futures)


@pytest.mark.parametrize("point", ["output_written", "output_renamed", "meta_written"])
def test_a_kill_while_a_stage_finishes_ends_with_the_uninterrupted_records(tmp_path, point):
    """Killed before the output's rename, between the output and its meta, or before the partial file is
    removed: the rerun ends with the same output, marked complete, and no partial file."""
    rewards = rewards_rows([1.0, 0.0, 0.5])
    args = ["--rewards_path", write_jsonl(tmp_path / "rewards.jsonl", rewards)]
    reference = tmp_path / "reference" / "pairs.jsonl"
    run_stage("dpo_iteration/pairs.py", *args, "--output_path", reference)
    output = tmp_path / "killed" / "pairs.jsonl"
    killed_at(point, "dpo_iteration/pairs.py", *args, "--output_path", output)
    # The output's meta exists once complete; until then the partial's says "running".
    meta_path = output.with_name("pairs.meta.json")
    assert meta_path.exists() == (point == "meta_written")
    if point == "meta_written":
        assert json.loads(meta_path.read_text())["status"] == "complete"
    assert json.loads(output.with_name("pairs.partial.meta.json").read_text())["status"] == "running"
    assert output.exists() == (point != "output_written")
    assert not list(output.parent.glob(".pairs.jsonl.*.tmp")) or point == "output_written"
    final = run_stage("dpo_iteration/pairs.py", *args, "--output_path", output)
    assert "Traceback" not in final.stderr
    assert_same_as_uninterrupted(output, reference)


# A killed training run: tests/test_trainers.py::test_a_killed_training_run_leaves_no_model_and_resumes_...


# --- damaged partial files -------------------------------------------------------------------------------


def annotate_config(tmp_path: Path, model_dir: Path, out: str) -> AnnotateConfig:
    tasks, sims = scored_inputs(tmp_path, "No idea.")
    return AnnotateConfig(simulations_path=str(sims), tasks_path=str(tasks),
                          output_path=str(tmp_path / out / "rewards.jsonl"), tokenizer=str(model_dir),
                          metric_weights={"accuracy": 1.0, "token_amount": -1e-3}, batch_size=1)


def interrupted(cfg: AnnotateConfig) -> tuple[Path, bytes]:
    """A run of `cfg` as a kill after its last append leaves it: the partial file and its 'running' meta."""
    annotate(cfg)
    out = Path(cfg.output_path)
    data = out.read_bytes()
    meta_path = out.with_name("rewards.meta.json")
    meta = json.loads(meta_path.read_text())
    out.with_name("rewards.partial.meta.json").write_text(json.dumps({**meta, "status": "running"}))
    meta_path.unlink()
    out.with_name("rewards.config.yaml").unlink()
    partial = out.with_name("rewards.jsonl.partial")
    partial.write_bytes(data)
    out.unlink()
    return partial, data


def test_a_partial_file_cut_at_any_byte_is_repaired_and_resumed(model_dir, tmp_path):
    reference = annotate_config(tmp_path, model_dir, "reference")
    annotate(reference)
    expected = Path(reference.output_path).read_bytes()
    cfg = annotate_config(tmp_path, model_dir, "cut")
    partial, data = interrupted(cfg)
    newlines = [i for i, b in enumerate(data) if b == ord("\n")]
    rng = random.Random(7)
    # Line boundaries, just after and before them, and random bytes: every kind of cut.
    cuts = sorted({0, len(data) - 1, *(i + 1 for i in newlines[:3]), *(i for i in newlines[:3]),
                   *(rng.randrange(len(data)) for _ in range(6))})
    for cut in cuts:
        partial.write_bytes(data[:cut])
        meta = annotate(cfg)
        assert Path(cfg.output_path).read_bytes() == expected, f"cut at byte {cut}"
        whole_lines = data[:cut].count(b"\n")
        assert meta["counts"]["resumed"] == whole_lines
        assert meta["counts"].get("repaired_torn_lines", 0) == int(cut > 0 and data[cut - 1] != ord("\n"))
        partial, data = interrupted(cfg)


def test_damage_inside_a_partial_file_is_refused_with_file_line_and_fix(model_dir, tmp_path):
    cfg = annotate_config(tmp_path, model_dir, "damaged")
    partial, data = interrupted(cfg)
    rows = data.splitlines(keepends=True)
    damaged = b"".join([rows[0], rows[1][:40] + b"\x00garbage\n", *rows[2:]])
    partial.write_bytes(damaged)
    result = run_stage("annotate_data/annotate.py", "--simulations_path", cfg.simulations_path, "--tasks_path",
                       cfg.tasks_path, "--output_path", cfg.output_path, "--tokenizer", cfg.tokenizer,
                       "--metric_weights", "{accuracy: 1.0, token_amount: -0.001}", "--batch_size", 1, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{partial}:2: field '<line>': not valid JSON" in result.stderr
    assert f"delete {partial} to redo this stage" in result.stderr
    assert partial.read_bytes() == damaged and not Path(cfg.output_path).exists()  # nothing touched

    # A line that parses but breaks the record format is refused the same way, naming the field.
    bad = json.loads(rows[2])
    bad["rewards"] = "high"
    partial.write_bytes(b"".join([rows[0], rows[1], (json.dumps(bad) + "\n").encode()]))
    with pytest.raises(RecordError, match=r"rewards.jsonl.partial:3: field 'rewards'"):
        annotate(cfg)

    # A partial file whose meta is damaged cannot be checked against the config: refused, not guessed at.
    partial.write_bytes(data)
    Path(cfg.output_path).with_name("rewards.partial.meta.json").write_text('{"stage": "annot')
    with pytest.raises(StageError, match=r"no readable meta file .*damaged.*Delete it"):
        annotate(cfg)


# --- the simulator server dies mid-stage ---------------------------------------------------------------


def test_simulator_server_dying_mid_stage_fails_cleanly_and_resumes_after_restart(simulator, model_dir, tmp_path):
    n = 6
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2 + i, 1 + i % 3) for i in range(n)])
    generations = write_jsonl(tmp_path / "generations.jsonl", [
        {**row, "responses": [f"It is {3 + i}.", "Could you say more?"], "gen": {}}
        for i, row in enumerate(contexts_rows(n))
    ])
    port = free_port()
    output = tmp_path / "simulations.jsonl"
    partial = output.with_name("simulations.jsonl.partial")
    argv = [PYTHON, "simulate/simulate_futures.py", "--generations_path", str(generations), "--tasks_path", str(tasks),
            "--output_path", str(output), "--model", str(model_dir), "--num_futures", "1", "--window_turns", "2",
            "--max_new_tokens", "24", "--simulator_max_tokens", "24", "--batch_size", "2",
            "--simulator_api_base", f"http://127.0.0.1:{port}/v1", "--llm_max_retries", "1", "--llm_timeout_s", "20"]
    # The stage reaches the session's server through a relay (tests/relay.py); SIGKILL on the relay is, to
    # the stage, the server crashing: the calls in flight reset, every later one refused.
    relay = subprocess.Popen([PYTHON, "tests/relay.py", str(port), str(simulator.port)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout.readline().strip() == "relaying"
        process = warm.start(argv, cwd=REPO)
        deadline = time.time() + 600
        while process.poll() is None and lines(partial) < 2 and time.time() < deadline:
            time.sleep(0.05)
        relay.kill()  # a crash, not a clean stop
        relay.wait()
        _, stderr = process.communicate(timeout=600)
    finally:
        relay.kill()
    assert process.returncode == 1, stderr[-3000:]
    assert "above max_failure_fraction" in stderr and "Finished records are kept" in stderr
    assert "Traceback" not in stderr
    kept = partial.read_bytes()
    assert 2 <= len(kept.splitlines()) < n and not output.exists()

    # The restart: the session's server, at another address (how calls reach a server is not part of what
    # a stage's output is made from, so the interrupted run resumes).
    dead_api_base = f"http://127.0.0.1:{port}/v1"
    resumed = run_stage(*[simulator.api_base if a == dead_api_base else a for a in argv[1:]])
    assert f"resumed={len(kept.splitlines())}" in resumed.stdout
    records = read_jsonl(output)
    assert [r["id"] for r in records] == [f"t{i}/turn0" for i in range(n)]  # none lost, none doubled
    assert output.read_bytes().startswith(kept)  # what was finished before the crash is kept as it was
    assert all(f["error"] is None for r in records for per in r["futures"] for f in per)


# --- a full disk -----------------------------------------------------------------------------------------


def small_disk_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=8k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not small_disk_available(), reason="needs unshare and tmpfs mounts (root) to make a small disk")
def test_a_full_disk_gives_a_clear_error_and_no_corrupt_output(model_dir, tmp_path):
    reference = annotate_config(tmp_path, model_dir, "reference")
    annotate(reference)
    expected = Path(reference.output_path).read_bytes()

    cfg = annotate_config(tmp_path, model_dir, "full")
    disk = Path(cfg.output_path).parent  # on a tmpfs of a few pages, in a private mount namespace
    saved = tmp_path / "saved"
    args = ["annotate_data/annotate.py", "--simulations_path", cfg.simulations_path, "--tasks_path", cfg.tasks_path,
            "--output_path", cfg.output_path, "--tokenizer", cfg.tokenizer,
            "--metric_weights", "{accuracy: 1.0, token_amount: -0.001}", "--batch_size", "1"]
    results = []
    # Metrics without a judge open no LLM cache (test_the_llm_cache_on_a_full_disk covers it), so the stage's
    # own files (config, meta, partial, output) meet the full disk; one size keeps a cache path there anyway.
    for size_kib, cache_elsewhere in ((16, False), (8, True), (12, True), (16, True), (20, True), (24, True)):
        shutil.rmtree(disk, ignore_errors=True)
        shutil.rmtree(saved, ignore_errors=True)
        disk.mkdir()
        saved.mkdir()
        cache = ["--llm_cache_path", str(tmp_path / "llm_cache.sqlite")] if cache_elsewhere else []
        script = (f"mount -t tmpfs -o size={size_kib}k tmpfs {disk} && "
                  f"{shlex.join([PYTHON, *map(str, args), *cache])}; "
                  f"rc=$?; cp -a {disk}/. {saved}/; exit $rc")
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            continue  # it all fitted
        assert result.returncode == 1, f"{size_kib} KiB: {result.stderr[-2000:]}"
        assert "error: no space left on the device writing" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        if (saved / "rewards.jsonl").exists():  # written whole before the meta's write failed: still whole
            assert (saved / "rewards.jsonl").read_bytes() == expected
            meta = saved / "rewards.meta.json"
            assert not meta.exists() or json.loads(meta.read_text())["status"] == "complete"
        partial = saved / "rewards.jsonl.partial"
        kept = partial.read_bytes() if partial.exists() else b""
        assert kept == expected[: len(kept)] and (not kept or kept.endswith(b"\n"))  # whole lines, nothing torn
        results.append(kept.count(b"\n"))
        # With space again, the same command resumes from what the full disk left and ends as an
        # uninterrupted run does.
        shutil.rmtree(disk)
        shutil.copytree(saved, disk)
        resumed = run_stage(*args, *cache)
        assert f"resumed={results[-1]}" in resumed.stdout
        assert_same_as_uninterrupted(Path(cfg.output_path), Path(reference.output_path))
    assert len(results) >= 2 and max(results) >= 1, f"records kept when the disk filled, per size: {results}"


@pytest.mark.skipif(not small_disk_available(), reason="needs unshare and tmpfs mounts (root) to make a small disk")
def test_the_llm_cache_on_a_full_disk_gives_a_clear_error(model_dir, tmp_path):
    """SQLite says "database or disk is full", or only "disk I/O error" when its write-ahead log cannot grow:
    either way the stage names the cache file and says what to do. The judge's address answers nothing; the
    cache is opened, on a disk too small for it, before the first call."""
    cfg = annotate_config(tmp_path, model_dir, "out")
    disk = tmp_path / "small"
    args = ["annotate_data/annotate.py", "--simulations_path", cfg.simulations_path, "--tasks_path", cfg.tasks_path,
            "--output_path", cfg.output_path, "--tokenizer", cfg.tokenizer, "--metric_weights", "{interactivity: 1}",
            "--judge_api_base", f"http://127.0.0.1:{free_port()}/v1", "--llm_max_retries", "0",
            "--llm_cache_path", str(disk / "llm_cache.sqlite")]
    errors = []
    for size_kib in (4, 8, 12):
        shutil.rmtree(disk, ignore_errors=True)
        disk.mkdir()
        script = f"mount -t tmpfs -o size={size_kib}k tmpfs {disk} && {shlex.join([PYTHON, *map(str, args)])}"
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        errors.append(result.stderr)
    assert any(f"error: no space left on the device writing {disk / 'llm_cache.sqlite'}" in e for e in errors), errors


def test_a_failed_rerun_leaves_the_complete_earlier_output_as_it_was(tmp_path):
    """A rerun with other settings that dies mid-run leaves the earlier output, its meta and its config byte
    for byte; its own work waits in the partial file (with that file's meta) and is resumed, and only then
    replaces them."""
    rewards = rewards_rows([1.0, 0.0, 0.4])
    args = ["--rewards_path", write_jsonl(tmp_path / "rewards.jsonl", rewards)]
    output = tmp_path / "out" / "pairs.jsonl"
    run_stage("dpo_iteration/pairs.py", *args, "--output_path", output)
    before = {p.name: p.read_bytes() for p in output.parent.iterdir()}
    assert set(before) == {"pairs.jsonl", "pairs.meta.json", "pairs.config.yaml"}
    other = [*args, "--min_margin", "0.5", "--output_path", output]
    killed_at("append:1", "dpo_iteration/pairs.py", *other)
    after = {p.name: p.read_bytes() for p in output.parent.iterdir()}
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"pairs.jsonl.partial", "pairs.partial.meta.json"}
    final = run_stage("dpo_iteration/pairs.py", *other)
    assert "resuming, 6 records already finished" in final.stderr, final.stderr[-2000:]
    assert json.loads(output.with_name("pairs.meta.json").read_text())["config"]["min_margin"] == 0.5
    assert "min_margin: 0.5" in output.with_name("pairs.config.yaml").read_text()
    assert not output.with_name("pairs.jsonl.partial").exists()
    assert not output.with_name("pairs.partial.meta.json").exists()
    reference = tmp_path / "reference" / "pairs.jsonl"
    run_stage("dpo_iteration/pairs.py", *args, "--min_margin", "0.5", "--output_path", reference)
    assert_same_as_uninterrupted(output, reference)
