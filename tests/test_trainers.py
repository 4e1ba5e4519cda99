"""Every preference algorithm end to end on CPU: accelerate launch, DeepSpeed ZeRO-2, 2 gloo processes,
the embedded model, a few pairs. The loss moves and the weights change."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO, write_jsonl

pytestmark = pytest.mark.slow

QUESTIONS = [(2, 3), (4, 1), (3, 3), (5, 2)]
ALGORITHMS = ["dpo", "cpo", "simpo", "orpo", "kto"]
DPO_STEPS = 3  # the others train 2 steps (preference_argv)
USES_REF = ("dpo", "kto")


def pairs_rows() -> list[dict]:
    rows = []
    for i, (a, b) in enumerate(QUESTIONS):
        rows.append({
            "id": f"t{i}/turn0",
            "prompt": [{"role": "user", "content": f"Sam has {a} apples and gets {b} more. How many apples now?"}],
            "chosen": [{"role": "assistant", "content": f"Sam has {a} + {b} = {a + b} apples."}],
            "rejected": [{"role": "assistant", "content": "I cannot know that. Apples are a kind of fruit."}],
            "chosen_reward": 1.5, "rejected_reward": 0.5, "margin": 1.0,
        })
    return rows


def rewards_rows() -> list[dict]:
    rows = []
    for i, (a, b) in enumerate(QUESTIONS):
        responses = [f"{a + b}", "No idea.", f"It is {a + b + 1}."]
        rows.append({
            "id": f"t{i}/turn0", "task_id": f"t{i}",
            "prompt": [{"role": "user", "content": f"Sam has {a} apples and gets {b} more. How many apples now?"}],
            "turn": 0, "responses": responses, "gen": {},
            "futures": [[] for _ in responses], "metrics": [{} for _ in responses], "rewards": [1.0, 0.0, 0.5],
            "future_rewards": [[] for _ in responses],
        })
    return rows


ACCELERATE = str(REPO / ".venv/bin/accelerate") if (REPO / ".venv/bin/accelerate").exists() else "accelerate"
COMMON = ["--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--seed", "0"]


def preference_argv(out, algorithm: str, pairs, *extra: str, common: list[str] = COMMON, max_steps: int = 2
                    ) -> list[str]:
    # Steps of 2 pairs (one per rank): 2 are enough for the loss to move (each step costs about 6 s here);
    # DPO takes 3, so that a run killed after its second checkpoint still has a step to resume.
    # KTO's KL estimate needs at least 2 examples per device batch.
    batch_size = "2" if algorithm == "kto" else "1"
    return ["--algorithm", algorithm, "--pairs_path", str(pairs),
            "--model_name_or_path", "models/SmolLM2-135M-Instruct", "--output_dir", str(out / "model"),
            "--learning_rate", "5e-5", "--num_train_epochs", "2", "--max_steps", str(max_steps),
            "--per_device_train_batch_size", batch_size, "--max_length", "128", *common, *extra]


def launch_many(tmp_path, runs: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """The runs (name -> script, arguments) in one `accelerate launch` of ZeRO-2 over 2 gloo processes
    (tests/train_many.py); returns each run's console output."""
    spec = [{"script": script, "argv": argv} for script, argv in runs.values()]
    spec_path = tmp_path / f"runs-{next(iter(runs))}.json"
    spec_path.write_text(json.dumps(spec))
    result = subprocess.run(
        [ACCELERATE, "launch", "--config_file", "configs/zero2.yaml", "--num_processes", "2",
         "tests/train_many.py", str(spec_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    outputs = result.stdout.split("=== run ")
    assert len(outputs) == len(runs) + 1, result.stdout[-3000:]
    return {name: outputs[i] for i, name in enumerate(runs)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every trainer variant below, trained once in one launch; each test checks its own."""
    from collabloop.trainer_configs import SFTDataConfig
    from sft.sft_data import build

    tmp = tmp_path_factory.mktemp("trainers")
    pairs = write_jsonl(tmp / "pairs.jsonl", pairs_rows())
    rewards = write_jsonl(tmp / "rewards.jsonl", rewards_rows())
    build(SFTDataConfig(rewards_paths=[str(rewards)], output_path=str(tmp / "sft.jsonl"), min_reward=0.9))
    ref = ["--ref_model", "models/SmolLM2-135M-Instruct"]
    train = "dpo_iteration/train_preference.py"
    runs = {
        algorithm: (train, preference_argv(tmp / algorithm, algorithm, pairs, *(ref if algorithm in USES_REF else []),
                                           max_steps=DPO_STEPS if algorithm == "dpo" else 2))
        for algorithm in ALGORITHMS
    }
    runs["dpo_rpo_lora"] = (train, preference_argv(
        tmp / "dpo_rpo_lora", "dpo", pairs, "--rpo_alpha", "0.5", "--use_peft", "true", "--lora_r", "8",
        "--precompute_ref_log_probs", "true", *ref,  # the reference is the model trained, as in iteration 1
        "--bf16", "true", "--gradient_checkpointing", "true"))  # the recipes' combination, on CPU as on GPUs
    runs["kto_rewards"] = (train, preference_argv(
        tmp / "kto_rewards", "kto", pairs, "--kto_source", "rewards", "--rewards_path", str(rewards),
        "--desirable_weight", "1.0", "--undesirable_weight", "1.5"))
    runs["sft"] = ("sft/run_sft.py", [
        "--sft_path", str(tmp / "sft.jsonl"), "--model_name_or_path", "models/SmolLM2-135M-Instruct",
        "--output_dir", str(tmp / "sft" / "model"), "--learning_rate", "5e-5", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "1", "--max_length", "128", *COMMON])
    runs["rm"] = ("dpo_iteration/run_rm.py", [
        "--pairs_path", str(pairs), "--model_name_or_path", "models/SmolLM2-135M-Instruct",
        "--output_dir", str(tmp / "rm" / "model"), "--learning_rate", "1e-4", "--num_train_epochs", "3",
        "--per_device_train_batch_size", "1", "--max_length", "128", "--center_rewards_coefficient", "0.01",
        *COMMON])
    # Two launches of at most 5 runs: the memory a rank does not give back grows with each run.
    names = list(runs)
    outputs = {}
    for group in (names[:5], names[5:]):
        outputs.update(launch_many(tmp, {name: runs[name] for name in group}))
    return tmp, outputs


def assert_trained(model_dir, expected_world_size: int = 2, min_logged_steps: int = 2, loss_moves: bool = True) -> dict:
    from safetensors.torch import load_file

    metrics = json.loads((model_dir / "train_metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert len(losses) >= min_logged_steps, f"{len(losses)} logged losses, expected at least {min_logged_steps}"
    if loss_moves:
        assert len(set(round(x, 6) for x in losses)) > 1, f"the loss did not move: {losses}"
    before = load_file(REPO / "models/SmolLM2-135M-Instruct/model.safetensors")
    after = load_file(model_dir / "model.safetensors")
    assert set(before) <= set(after)
    changed = [k for k in before if not before[k].to(after[k].dtype).equal(after[k])]
    assert changed, "no weight changed"
    meta = json.loads(model_dir.with_name("model.meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["counts"]["world_size"] == expected_world_size and meta["counts"]["deepspeed_zero_stage"] == 2
    return meta




@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_trains_under_zero2(trained, algorithm):
    tmp, outputs = trained
    meta = assert_trained(tmp / algorithm / "model", min_logged_steps=DPO_STEPS if algorithm == "dpo" else 2)
    assert f"[{algorithm}]" in outputs[algorithm]
    if algorithm == "simpo":  # ms-swift's defaults, not TRL's
        assert meta["config"]["loss_type"] == "simpo" and meta["config"]["beta"] == 2.0
        assert meta["config"]["simpo_gamma"] == 1.0
    if algorithm == "kto":
        assert meta["counts"]["kto_desirable"] == 4 and meta["counts"]["kto_undesirable"] == 4


def test_dpo_with_rpo_alpha_lora_and_precomputed_reference(trained):
    tmp, _ = trained
    model_dir = tmp / "dpo_rpo_lora" / "model"
    meta = assert_trained(model_dir)
    assert meta["config"]["loss_type"] == ["sigmoid", "sft"] and meta["config"]["loss_weights"] == [1.0, 0.5]
    # LoRA, bf16 and gradient checkpointing under ZeRO-2, as the CollabLLM recipes train (tests/test_gpu_path.py
    # checks that each recipe asks for this combination).
    assert meta["config"]["bf16"] is True and meta["config"]["gradient_checkpointing"] is True
    # Under LoRA the adapter-disabled policy is the reference: no second copy of the model was loaded (full
    # fine-tuning with the same reference loads one).
    assert meta["counts"]["reference_copies_loaded"] == 0
    assert json.loads((tmp / "dpo" / "model.meta.json").read_text())["counts"]["reference_copies_loaded"] == 1
    assert (model_dir / "adapter" / "adapter_config.json").exists()
    # The merged model is a plain checkpoint that the next iteration's vLLM engine loads.
    assert not (model_dir / "adapter_config.json").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_dpo_across_two_machines(tmp_path):
    """The multi-node launch of examples/slurm/train_multinode.sbatch, as two machines on 127.0.0.1: each
    `accelerate launch` is one machine (its own machine_rank) with one process; ZeRO-2 spans both."""
    from tests.conftest import free_port

    accelerate = str(REPO / ".venv/bin/accelerate") if (REPO / ".venv/bin/accelerate").exists() else "accelerate"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows())
    output_dir = tmp_path / "multinode" / "model"
    port = str(free_port())
    machines = [
        subprocess.Popen(
            [accelerate, "launch", "--config_file", "configs/zero2.yaml", "--num_machines", "2",
             "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
             "--main_process_port", port, "--rdzv_backend", "static",
             "dpo_iteration/train_preference.py", "--pairs_path", str(pairs),
             "--model_name_or_path", "models/SmolLM2-135M-Instruct", "--ref_model", "models/SmolLM2-135M-Instruct",
             "--output_dir", str(output_dir), "--learning_rate", "5e-5", "--num_train_epochs", "1",
             "--per_device_train_batch_size", "1", "--max_length", "128", "--logging_steps", "1",
             "--save_strategy", "no", "--report_to", "none", "--seed", "0"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [m.communicate(timeout=900)[0] for m in machines]
    for rank, (machine, output) in enumerate(zip(machines, outputs)):
        assert machine.returncode == 0, f"machine {rank}:\n{output[-5000:]}"
    meta = assert_trained(output_dir)  # one epoch: 4 pairs, 2 per step
    assert meta["counts"]["world_size"] == 2
    assert "[dpo]" in outputs[0] and "[dpo]" not in outputs[1]  # only the main process reports and writes


def test_kto_from_scored_candidates(trained):
    tmp, _ = trained
    meta = assert_trained(tmp / "kto_rewards" / "model")
    # Rewards 1.0, 0.0, 0.5 around their mean 0.5: one desirable, one undesirable, one at the mean dropped.
    assert meta["counts"]["kto_desirable"] == 4 and meta["counts"]["kto_undesirable"] == 4
    assert meta["counts"]["kto_dropped_at_mean"] == 4


def test_sft_recipe_and_training_on_assistant_turns(trained, tmp_path):
    from collabloop.trainer_configs import SFTDataConfig
    from sft.sft_data import build, load_examples, prompt_completion_rows

    tmp, outputs = trained
    rewards = write_jsonl(tmp_path / "rewards.jsonl", rewards_rows())
    counts = build(SFTDataConfig(rewards_paths=[str(rewards)], output_path=str(tmp_path / "sft.jsonl"),
                                 min_reward=0.9))
    assert counts["records_out"] == 4
    examples = load_examples(str(tmp_path / "sft.jsonl"))
    assert [e.messages[-1]["content"] for e in examples] == [f"{a + b}" for a, b in QUESTIONS]  # the best candidate
    assert build(SFTDataConfig(rewards_paths=[str(rewards)], output_path=str(tmp_path / "none.jsonl"),
                               min_reward=2.0))["dropped_below_min_reward"] == 4
    # The fixture trained on a file built the same way.
    assert (tmp / "sft.jsonl").read_bytes() == (tmp_path / "sft.jsonl").read_bytes()

    assert "[sft]" in outputs["sft"]
    meta = assert_trained(tmp / "sft" / "model")  # one epoch: 4 examples, 2 per step
    assert meta["counts"]["assistant_turns"] == 4

    # Every assistant turn of a multi-turn conversation is a completion; user turns never are.
    from collabloop.records import SFTExample

    convo = SFTExample(id="c", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}])
    rows = prompt_completion_rows([convo])
    assert [r["completion"][0]["content"] for r in rows] == ["b", "d"]
    assert rows[1]["prompt"] == convo.messages[:3]


def test_reward_model_learns_the_pairs_and_scores_candidates(trained):
    from collabloop.reward_model import RewardModelScorer

    tmp, _ = trained
    model_out = tmp / "rm" / "model"
    metrics = json.loads((model_out / "train_metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert losses[-1] < losses[0], f"reward-model loss did not fall: {losses}"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_out)
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1

    scorer = RewardModelScorer(str(model_out), batch_size=4)
    rows = pairs_rows()
    chosen = scorer.score([[*r["prompt"], *r["chosen"]] for r in rows])
    rejected = scorer.score([[*r["prompt"], *r["rejected"]] for r in rows])
    assert all(c > r for c, r in zip(chosen, rejected)), (chosen, rejected)


def test_a_killed_training_run_leaves_no_model_and_resumes_from_its_last_checkpoint_to_the_same_weights(
        trained, tmp_path):
    """DPO with a checkpoint every step, killed (the launcher and its ranks, SIGKILL) once its second checkpoint
    is complete: no model is published, and the rerun resumes from the last complete checkpoint and ends
    with the weights of the fixture's uninterrupted run of the same settings, tensor for tensor."""
    import signal
    import time

    from safetensors.torch import load_file

    tmp, _ = trained
    out = tmp_path / "resumed"
    common = [arg for arg in COMMON if arg not in ("--save_strategy", "no")]
    argv = [ACCELERATE, "launch", "--config_file", "configs/zero2.yaml", "--num_processes", "2",
            "dpo_iteration/train_preference.py",
            *preference_argv(out, "dpo", tmp / "pairs.jsonl", "--ref_model", "models/SmolLM2-135M-Instruct",
                             "--save_strategy", "steps", "--save_steps", "1", common=common, max_steps=DPO_STEPS)]
    checkpoint = out / "model.partial" / "checkpoint-2" / "trainer_state.json"
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 600
    while process.poll() is None and not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    # The launcher and every rank at once, as a crash of the machine would: torchrun starts each rank in a
    # session of its own, so killing the launcher's process group alone leaves the ranks training.
    import psutil

    launcher = psutil.Process(process.pid)
    ranks = launcher.children(recursive=True)
    assert ranks, "no rank process to kill"
    for proc in [launcher, *ranks]:
        proc.send_signal(signal.SIGKILL)
    process.wait()
    psutil.wait_procs(ranks, timeout=30)
    assert not (out / "model").exists() and not (out / "model.meta.json").exists()

    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "model" / "model.safetensors").exists() and not (out / "model.partial").exists()
    assert json.loads((out / "model.meta.json").read_text())["status"] == "complete"
    meta = assert_trained(out / "model", min_logged_steps=1)
    assert meta["counts"]["resumed_from_step"] in (2, 3)  # the kill may land after the third checkpoint
    assert not list((out / "model").glob("checkpoint-*")) and not (out / "model" / "collabloop_run.json").exists()
    resumed, uninterrupted = load_file(out / "model" / "model.safetensors"), load_file(tmp / "dpo" / "model" /
                                                                                         "model.safetensors")
    differing = [k for k in uninterrupted if not resumed[k].equal(uninterrupted[k])]
    assert not differing, f"{len(differing)} of {len(uninterrupted)} tensors differ from the uninterrupted run"
