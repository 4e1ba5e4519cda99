"""Sharded stages: shards merge into exactly the unsharded output, and a bad set of shards is refused.

The annotate stage runs here with metrics that need no server (the math
verifier and the policy's tokenizer), so these tests take seconds; the loop
test (tests/test_loop_e2e.py) compares a sharded run of every per-record stage
with an unsharded one on the real engines.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from annotate_data.scoring import run as annotate
from collabloop.config import ConfigError
from collabloop.records import RecordError
from collabloop.shards import merge_shards
from collabloop.stage import StageError, shard_output_path
from collabloop.stage_configs import AnnotateConfig
from tests.conftest import PYTHON, REPO, math_task, write_jsonl

NUM_RECORDS = 5


def simulations(tmp_path):
    tasks = [math_task(i, 2 + i, 1 + i % 3) for i in range(NUM_RECORDS)]
    rows = []
    for i, t in enumerate(tasks):
        answer = int(t["reference"])
        rows.append({
            "id": f"t{i}/turn0", "task_id": t["id"], "prompt": t["prompt"], "turn": 0, "gen": {},
            "responses": [f"It is {answer}.", f"Maybe {answer + 1}?"],
            "futures": [[{"messages": [{"role": "user", "content": "Sure?"},
                                       {"role": "assistant", "content": f"Yes, {answer + k}."}],
                          "terminated": False, "error": None}] for k in range(2)],
        })
    return write_jsonl(tmp_path / "tasks.jsonl", tasks), write_jsonl(tmp_path / "simulations.jsonl", rows)


def config(tmp_path, model_dir, out_dir: str, **kw) -> AnnotateConfig:
    tasks, sims = simulations(tmp_path)
    return AnnotateConfig(
        simulations_path=str(sims), tasks_path=str(tasks), output_path=str(tmp_path / out_dir / "rewards.jsonl"),
        tokenizer=str(model_dir), metric_weights={"accuracy": 1.0, "token_amount": -1e-3}, batch_size=1, **kw,
    )


def test_two_shards_merge_to_the_unsharded_output(model_dir, tmp_path):
    whole = config(tmp_path, model_dir, "whole")
    annotate(whole)

    shards = [config(tmp_path, model_dir, "sharded", num_shards=2, shard_index=i) for i in range(2)]
    metas = [annotate(cfg) for cfg in shards]
    # Chunks of 1 record dealt round-robin: shard 0 has chunks 0, 2, 4 and shard 1 has chunks 1, 3.
    assert [m["counts"]["records_out"] for m in metas] == [3, 2]
    out = tmp_path / "sharded" / "rewards.jsonl"
    shard0 = shard_output_path(out, 0, 2)
    assert shard0.name == "rewards.shard0-of-2.jsonl"
    assert [json.loads(x)["id"] for x in shard0.read_text().splitlines()] == ["t0/turn0", "t2/turn0", "t4/turn0"]
    assert not out.exists()

    merged = merge_shards(out, 2)
    assert out.read_bytes() == (tmp_path / "whole" / "rewards.jsonl").read_bytes()
    assert merged["counts"]["records_out"] == NUM_RECORDS and merged["counts"]["shards_merged"] == 2
    assert merged["counts"]["candidates"] == 2 * NUM_RECORDS
    # The unsharded command finds the merged output up to date: same fingerprint as an unsharded run.
    unsharded = config(tmp_path, model_dir, "sharded")
    assert annotate(unsharded) is None
    assert (tmp_path / "sharded" / "rewards.config.yaml").exists()
    # Merging again changes nothing, not even the modification time later stages may fingerprint by.
    mtime = out.stat().st_mtime_ns
    assert merge_shards(out, 2)["already_merged"]
    assert out.stat().st_mtime_ns == mtime
    assert out.read_bytes() == (tmp_path / "whole" / "rewards.jsonl").read_bytes()


def test_merge_refuses_missing_unfinished_and_mismatched_shards(model_dir, tmp_path):
    out = tmp_path / "sharded" / "rewards.jsonl"
    annotate(config(tmp_path, model_dir, "sharded", num_shards=2, shard_index=0))
    with pytest.raises(StageError, match=r"shard 1 of 2 is missing .*--shard_index 1 --num_shards 2"):
        merge_shards(out, 2)

    # A shard made with another config is refused, by the field that differs.
    other = config(tmp_path, model_dir, "sharded", num_shards=2, shard_index=1)
    other.metric_weights = {"accuracy": 2.0, "token_amount": -1e-3}
    annotate(other)
    with pytest.raises(StageError, match=r"shard 1 .* differs from shard 0 in base_fingerprint"):
        merge_shards(out, 2)
    assert not out.exists()

    # A shard that is still running (killed mid-run) is refused.
    meta_path = tmp_path / "sharded" / "rewards.shard1-of-2.meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running"}))
    with pytest.raises(StageError, match=r"shard 1 of 2 is not finished .*status 'running'"):
        merge_shards(out, 2)
    # So is one rerun with other settings and stopped: its partial file is there, beside the earlier output.
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "sharded" / "rewards.shard1-of-2.jsonl.partial").write_text("")
    with pytest.raises(StageError, match=r"shard 1 of 2 is not finished \(.*rewards.shard1-of-2.jsonl.partial is"):
        merge_shards(out, 2)
    # A damaged meta (here cut short by a full disk) cannot say what the shard was made from.
    (tmp_path / "sharded" / "rewards.shard1-of-2.jsonl.partial").unlink()
    meta_path.write_text(json.dumps(meta)[:40])
    with pytest.raises(RecordError, match=r"rewards.shard1-of-2.meta.json: field '<file>': damaged .*rerun shard 1"):
        merge_shards(out, 2)


def test_shard_settings_are_checked_and_the_merge_command_reports(model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"shard_index must be in 0..1 \(num_shards=2\), got 2"):
        config(tmp_path, model_dir, "x", num_shards=2, shard_index=2)
    with pytest.raises(ConfigError, match="num_shards must be >= 1"):
        config(tmp_path, model_dir, "x", num_shards=0)
    for i in range(2):
        annotate(config(tmp_path, model_dir, "cli", num_shards=2, shard_index=i))
    out = tmp_path / "cli" / "rewards.jsonl"
    merged = subprocess.run(
        [PYTHON, "-m", "collabloop.shards", "merge", "--output_path", str(out), "--num_shards", "2"],
        cwd=REPO, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    assert f"[merge] annotate: {NUM_RECORDS} records from 2 shards -> {out}" in merged.stdout
    missing = subprocess.run(
        [PYTHON, "-m", "collabloop.shards", "merge", "--output_path", str(out), "--num_shards", "3"],
        cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("error: shard 0 of 3 is missing")
    assert "Traceback" not in missing.stderr


def test_metrics_without_a_judge_open_no_llm_cache(model_dir, tmp_path):
    cfg = config(tmp_path, model_dir, "whole")  # accuracy and token_amount: no judge
    assert annotate(cfg)["counts"]["records_out"] == NUM_RECORDS
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == [
        "rewards.config.yaml", "rewards.jsonl", "rewards.meta.json"]


def test_evaluate_refuses_bad_input_before_it_makes_its_folder(model_dir, tmp_path):
    from collabloop.records import RecordError
    from collabloop.stage_configs import EvaluateConfig
    from simulate.conversations import run as evaluate

    tasks, _ = simulations(tmp_path)
    contexts = write_jsonl(tmp_path / "contexts.jsonl", [
        {"id": "t0/turn0", "task_id": "t0", "turn": 0, "prompt": [{"role": "user", "content": "hi"}]},
        {"id": "x/turn0", "task_id": "not-a-task", "turn": 0, "prompt": [{"role": "user", "content": "hi"}]},
    ])
    cfg = EvaluateConfig(contexts_path=str(contexts), tasks_path=str(tasks), output_dir=str(tmp_path / "eval"),
                         model=str(model_dir), tokenizer=str(model_dir))
    with pytest.raises(RecordError, match=r"contexts.jsonl:2: field 'task_id'"):
        evaluate(cfg)
    assert not (tmp_path / "eval").exists()
