"""The pipeline's one description (collabloop/pipeline.py) and the driver that runs it for run_loop.sh."""

import subprocess
import sys
from dataclasses import replace

import pytest

from collabloop import pipeline
from collabloop.config import ConfigError, parse_config
from collabloop.devices import parse_visible_devices, plan_devices, shard_places, visible_gpus
from collabloop.loop_config import LoopConfig
from collabloop.pipeline import SECTIONS
from tests.conftest import REPO

DEMO = LoopConfig(eval_tasks="data/tasks/eval.jsonl")


def test_the_stage_list_is_spelled_out_once_and_read_by_the_others():
    from collabloop.inspect_run.kinds import kind_by_stage
    from collabloop.records import RECORD_TYPES
    from collabloop.shards import shardable

    for stage in pipeline.STAGES.values():
        assert (REPO / stage.script).is_file(), stage.script
        assert stage.kind is None or stage.kind in RECORD_TYPES, stage
    assert set(shardable()) == {"generate", "simulate", "annotate", "evaluate"}
    assert kind_by_stage()["evaluate"] == "evaluation" and "train" not in kind_by_stage()
    assert set(SECTIONS) == {"loop", "roles", "contexts", "generate", "simulate", "annotate", "pairs", "evaluate"}
    assert pipeline.iteration_files() == ("contexts", "generations", "simulations", "rewards", "pairs")


@pytest.mark.parametrize("loop, iteration, expected", [
    (DEMO, 0, ["contexts", "evaluate"]),
    (DEMO, 1, ["contexts", "generate", "simulate", "annotate", "pairs", "train", "evaluate"]),
    (replace(DEMO, use_simulation=False), 2, ["contexts", "generate", "annotate", "pairs", "train", "evaluate"]),
    (replace(DEMO, algorithm="grpo", simulator_backend="server"), 1, ["contexts", "grpo", "evaluate"]),
    (LoopConfig(), 0, []),  # no held-out tasks: nothing to evaluate
    (LoopConfig(), 1, ["contexts", "generate", "simulate", "annotate", "pairs", "train"]),
])
def test_the_stages_of_an_iteration(loop, iteration, expected):
    assert pipeline.iteration_stages(loop, iteration) == expected


def options(argv: list[str]) -> dict[str, str]:
    """A stage's command line (script, then --key value pairs) as a dict."""
    assert len(argv) % 2 == 1 and all(a.startswith("--") for a in argv[1::2]), argv
    return dict(zip((a[2:] for a in argv[1::2]), argv[2::2]))


@pytest.mark.parametrize("backend", ["in_process", "server"])
def test_every_argument_the_driver_gives_is_a_declared_input_and_the_roles_come_from_the_config(backend, tmp_path):
    """A stage's command line, as the driver builds it, is its declared inputs, and parses with the stage's
    own config class (trainers: their keys, which TRL's classes and ours define). Who plays each role, and
    the budget, are not on it: the stage reads them from the run's config (collabloop.roles)."""
    from collabloop.loop import trainer_keys

    config = tmp_path / "run.yaml"
    config.write_text(f"loop:\n  eval_tasks: data/tasks/eval.jsonl\n  simulator_backend: {backend}\n"
                      "  max_cost_usd: 2.5\n")
    loop = parse_config(LoopConfig, "loop", ["--config", str(config)])
    trainers = trainer_keys()
    for iteration in (0, 1, 2):
        for name in pipeline.iteration_stages(loop, iteration):
            stage = pipeline.STAGES[name]
            argv = pipeline.stage_args(name, loop, str(config), "runs/x", iteration)
            assert argv[:3] == [stage.script, "--config", str(config)]
            given = options(argv)
            assert list(given) == ["config", *stage.inputs], name
            if name not in SECTIONS:
                keys = set(trainers[stage.section(loop)][0]) | {"algorithm", "config"}
                assert set(given) <= keys, (name, set(given) - keys)
                continue
            cfg = parse_config(stage.config, name, argv[1:])
            for role in stage.roles:
                assert getattr(cfg, f"{role}_model") == ("local/models/SmolLM2-135M-Instruct"
                                                         if backend == "in_process" else "hosted_vllm/simulator")
                if backend == "server":
                    assert getattr(cfg, f"{role}_api_base") == "http://127.0.0.1:8000/v1"
            assert getattr(cfg, "max_cost_usd", 2.5) == 2.5, name


def test_each_iteration_starts_from_the_last_model_and_evaluates_on_the_same_openings():
    args = {(n, i): options(pipeline.stage_args(n, DEMO, "c.yaml", "run", i))
            for i in (0, 1, 2) for n in pipeline.iteration_stages(DEMO, i)}
    assert args["contexts", 0]["output_path"] == "run/eval_contexts.jsonl"
    assert args["contexts", 0]["tasks_path"] == DEMO.eval_tasks
    assert args["contexts", 1]["tasks_path"] == DEMO.train_tasks
    assert args["contexts", 1]["continue_from"] == ""  # nothing to continue yet
    assert args["contexts", 2]["continue_from"] == "run/iter_1/rewards.jsonl"  # multi-turn data from iteration 2
    assert args["generate", 1]["model"] == DEMO.initial_model and args["generate", 2]["model"] == "run/iter_1/model"
    assert args["train", 2]["model_name_or_path"] == "run/iter_1/model"
    assert args["train", 2]["ref_model"] == DEMO.initial_model  # reference: initial
    previous = options(pipeline.stage_args("train", replace(DEMO, reference="previous"), "c.yaml", "run", 2))
    assert previous["ref_model"] == "run/iter_1/model"
    assert [args["evaluate", i]["model"] for i in (0, 1, 2)] == [DEMO.initial_model, "run/iter_1/model",
                                                                 "run/iter_2/model"]
    assert {args["evaluate", i]["contexts_path"] for i in (0, 1, 2)} == {"run/eval_contexts.jsonl"}
    unsimulated = options(pipeline.stage_args("annotate", replace(DEMO, use_simulation=False), "c.yaml", "run", 1))
    assert unsimulated["simulations_path"] == "run/iter_1/generations.jsonl"
    assert unsimulated["without_futures"] == "true"


def test_devices_and_the_places_of_shards(monkeypatch):
    cpu = plan_devices(LoopConfig(), [])
    assert (cpu.num_processes, cpu.num_shards) == (2, 1)  # ZeRO-2 over 2 gloo processes; one shard on CPU
    two = plan_devices(LoopConfig(num_shards=2), [])
    assert shard_places(two, [4, 5, 6]) == [{"env": {}, "cpus": [4]}, {"env": {}, "cpus": [5]}]
    gpus = plan_devices(LoopConfig(), ["0", "1", "2", "3"])
    assert (gpus.num_processes, gpus.num_shards) == (4, 4)
    assert [p["env"] for p in shard_places(gpus, [0, 1])] == [{"CUDA_VISIBLE_DEVICES": str(s)} for s in range(4)]
    with pytest.raises(ConfigError, match="loop.num_shards=3 but this process sees 2 GPUs"):
        plan_devices(LoopConfig(num_shards=3), ["0", "1"])
    with pytest.raises(ConfigError, match="loop.num_processes=4 but this process sees 2 GPUs"):
        plan_devices(LoopConfig(num_processes=4), ["0", "1"])


def test_the_gpus_of_a_selection_are_the_ones_used(monkeypatch):
    # SLURM or the user gave this job GPUs 2 and 5 of the node: shards and ranks stay on those two.
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    devices = plan_devices(LoopConfig(), visible_gpus())
    assert (devices.num_processes, devices.num_shards) == (2, 2)
    assert [p["env"]["CUDA_VISIBLE_DEVICES"] for p in shard_places(devices, [0])] == ["2", "5"]
    with pytest.raises(ConfigError, match=r"sees 2 GPUs \(CUDA_VISIBLE_DEVICES=2,5\)"):
        plan_devices(LoopConfig(num_shards=3), visible_gpus())
    # UUIDs pass through; CUDA stops reading at the first invalid entry; empty or -1 hides every GPU.
    uuids = "GPU-8f1c2a3b-0000-1111-2222-333344445555,MIG-1a2b3c4d-aaaa-bbbb-cccc-ddddeeeeffff"
    assert parse_visible_devices(uuids) == uuids.split(",")
    assert parse_visible_devices("1, 3,-1,4") == ["1", "3"]
    assert parse_visible_devices("") == [] and parse_visible_devices("-1") == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert plan_devices(LoopConfig(), visible_gpus()).gpus == ()  # a CPU plan, not every GPU of the node


def test_the_driver_reads_the_run_folder_and_says_what_is_missing(tmp_path):
    def driver(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "collabloop.driver", *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=60)

    run_dir = tmp_path / "run"
    missing = driver("run", "generate", "--run_dir", str(run_dir), "--iteration", "1")
    assert missing.returncode == 1 and f"{run_dir}/config.yaml does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    config = tmp_path / "c.yaml"
    config.write_text("loop:\n  eval_tasks: data/tasks/math_demo_eval.jsonl\n  algorithm: kto\n")
    env = subprocess.run([sys.executable, "-m", "collabloop.loop", "env", "--config", str(config), "--run_dir",
                          str(run_dir)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert env.returncode == 0, env.stderr
    stages = driver("stages", "--run_dir", str(run_dir), "--iteration", "1")
    assert stages.stdout.split() == ["contexts", "generate", "simulate", "annotate", "pairs", "train", "evaluate"]
    heading = driver("heading", "--run_dir", str(run_dir), "--iteration", "2")
    assert heading.stdout.strip() == f"=== iteration 2/2: policy {run_dir}/iter_1/model, kto ==="
    stop = driver("stop_server", "--run_dir", str(run_dir))  # no server: nothing to say
    assert stop.returncode == 0 and stop.stdout == ""
    unknown = driver("run", "judge", "--run_dir", str(run_dir), "--iteration", "1")
    assert unknown.returncode == 1 and "no stage 'judge'; the stages are contexts, generate" in unknown.stderr

