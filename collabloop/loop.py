"""Helpers for run_loop.sh: validate a run YAML, print the driver's settings, summarize an iteration.

    python -m collabloop.loop env --config configs/demo.yaml [--key value ...]
        validates every section of the YAML (unknown keys are errors) and
        prints the `loop:` settings as shell assignments for run_loop.sh;
    python -m collabloop.loop summary --iter_dir data/runs/demo/iter_1
        prints what each stage of that iteration did;
    python -m collabloop.loop check --config FILE
        validates the YAML and says so;
    python -m collabloop.loop estimate --config FILE [--run_dir DIR]
        prints the run's calls, tokens and cost before it starts (collabloop/estimate.py);
    python -m collabloop.loop plan_memory --config FILE [--gpu_memory_gib 80]
        prints each stage's vLLM engines on one GPU, or what does not fit (collabloop/memory_plan.py).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from collabloop.config import ConfigError, config_to_dict, parse_config, yaml_load
from collabloop.jsonl import atomic_file, read_records
from collabloop.loop_config import LoopConfig
from collabloop.pipeline import SECTIONS, check_inputs_not_set, iteration_files, record_stages
from collabloop.plugins import load_plugins
from collabloop.records import RecordError, Rewarded
from collabloop.rewards import candidate_values
from collabloop.stage import read_meta
from collabloop.stats import describe


def trainer_sections() -> dict[str, tuple[type, ...]]:
    """Section name -> (our arguments, the TRL config class) of every trainer."""
    from trl import GRPOConfig, RewardConfig, SFTConfig

    from collabloop.trainer_configs import GRPOArgs, PreferenceArgs, RewardModelArgs, SFTArgs
    from collabloop.training import ALGORITHMS

    sections = {name: (PreferenceArgs, spec.load("config_class")) for name, spec in ALGORITHMS.items()}
    sections["sft"] = (SFTArgs, SFTConfig)
    sections["reward"] = (RewardModelArgs, RewardConfig)
    sections["grpo"] = (GRPOArgs, GRPOConfig)
    return sections


def trainer_keys() -> dict[str, tuple[list[str], list[str]]]:
    """Section name -> (the keys it takes, the classes they come from) of every trainer.

    Importing TRL's config classes takes about 8 s on 2 cores, at every start of the loop; their fields
    are kept in the environment's folder, for these versions of TRL and transformers and this code.
    """
    from dataclasses import fields
    from importlib.metadata import version

    from collabloop.stage import code_digests

    versions = {name: version(name) for name in ("trl", "transformers")}
    key = json.dumps({**versions, **code_digests(("collabloop.trainer_configs", "collabloop.training"))})
    cache = Path(sys.prefix) / ".collabloop-trainer-keys.json"
    try:
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            return {name: (keys, classes) for name, (keys, classes) in cached["sections"].items()}
    except (OSError, ValueError, KeyError, TypeError):  # absent, or from another version: made again
        pass
    sections = {name: ([f.name for cls in classes for f in fields(cls)], [cls.__name__ for cls in classes])
                for name, classes in trainer_sections().items()}
    try:
        with atomic_file(cache) as f:
            f.write(json.dumps({"key": key, "sections": sections}))
    except OSError:  # a read-only environment: asked again next time
        pass
    return sections


def check_run_config(path: str) -> None:
    """Parse every section with its config class, so a typo fails before any stage runs."""
    from dataclasses import fields

    data = yaml_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected sections (loop:, generate:, ...) at the top level")
    load_plugins(path)  # a plugin's stages add their sections
    from collabloop.trainer_configs import SFTDataConfig

    # Sections whose configs are built by their own script (trainers: TRL's configs check the machine;
    # sft_data: its inputs come on the command line): only their keys are checked here.
    trainers = {**trainer_keys(), "sft_data": ([f.name for f in fields(SFTDataConfig)], [SFTDataConfig.__name__])}
    known = set(SECTIONS) | set(trainers)
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown section '{key}'; sections are {sorted(known)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: section '{key}' must be a mapping of settings")
    for section, classes in SECTIONS.items():
        parse_config(classes, section, ["--config", path])
    loop = parse_config(LoopConfig, "loop", ["--config", path])
    check_inputs_not_set(path, data, loop)
    if loop.max_cost_usd is not None:
        for section, settings in data.items():
            if section != "loop" and "max_cost_usd" in settings:
                raise ConfigError(
                    f"{path}, section '{section}': max_cost_usd is set, and so is loop.max_cost_usd, the budget of "
                    "the whole run that every stage shares; keep only the loop's"
                )
    for section, (valid, class_names) in trainers.items():
        if section in data:
            unknown = sorted(set(data[section]) - set(valid))
            if unknown:
                raise ConfigError(
                    f"{path}, section '{section}': unknown keys {unknown} (not in {' or '.join(class_names)})"
                )


def write_run_config(cfg: LoopConfig, config_path: str | None) -> Path:
    """Write <run_dir>/config.yaml once; a run dir made with another config is refused."""
    import yaml

    sections = yaml_load(Path(config_path).read_text()) if config_path else {}
    sections = dict(sections or {})
    sections["loop"] = config_to_dict(cfg)
    text = yaml.safe_dump(sections, sort_keys=False, allow_unicode=True)
    path = Path(cfg.run_dir) / "config.yaml"
    if path.exists():
        # Extending a run by more iterations, serving the simulator on another
        # port, or raising the budget changes nothing that was already made.
        def comparable(t: str) -> dict:
            d = yaml_load(t) or {}
            for key in ("num_iterations", "simulator_port", "num_shards", "max_cost_usd"):
                d.get("loop", {}).pop(key, None)
            return d

        if comparable(path.read_text()) != comparable(text):
            raise ConfigError(
                f"{path} holds a different config than this run's. Use another loop.run_dir (--run_dir), "
                f"or delete {cfg.run_dir} to start over."
            )
    with atomic_file(path) as f:
        f.write(text)
    return path


def check_held_out(train_tasks: str, eval_tasks: str) -> None:
    """Evaluation must not leak into training: no task id, and no goal, in both task files."""
    from collabloop.jsonl import iter_json_lines, read_tasks

    train = read_tasks(train_tasks)
    train_ids, train_goals = {t.id for t in train}, {t.goal.strip() for t in train}
    line_of = {obj.get("id"): n for n, obj in iter_json_lines(eval_tasks)}
    for task in read_tasks(eval_tasks):
        same = "id" if task.id in train_ids else "goal" if task.goal.strip() in train_goals else None
        if same:
            raise ConfigError(
                f"{eval_tasks}:{line_of[task.id]} (loop.eval_tasks): task {task.id!r} has the same {same} as a task "
                f"in {train_tasks} (loop.train_tasks); held-out tasks must differ from the training tasks by id "
                "and by goal"
            )


def shell_env(argv: list[str]) -> str:
    cfg = parse_config(LoopConfig, "loop", argv)
    config_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    if config_path:
        check_run_config(config_path)
    if cfg.eval_tasks:
        check_held_out(cfg.train_tasks, cfg.eval_tasks)
    write_run_config(cfg, config_path)
    lines = [f"LOOP_{k.upper()}={shlex.quote(str(v))}" for k, v in config_to_dict(cfg).items()]
    return "\n".join(lines)


def summarize_iteration(iter_dir: str | Path) -> dict:
    """Counts per stage, mean candidate reward, pairs built, DPO loss and reward accuracy."""
    iter_dir = Path(iter_dir)
    out: dict = {"iteration": iter_dir.name, "stages": {}}
    for name in iteration_files():
        meta = read_meta(iter_dir / f"{name}.meta.json")
        if meta:
            out["stages"][name] = {"records": meta["counts"].get("records_out"), "seconds": meta.get("seconds")}
    rewards_path = iter_dir / "rewards.jsonl"
    if rewards_path.exists():
        rewards, metric_means = candidate_values(read_records(rewards_path, Rewarded))
        scored = describe(rewards)
        out["candidates_scored"] = scored["count"] - scored["missing"]
        out["mean_candidate_reward"] = scored.get("mean")
        # A metric that failed for every candidate has no mean and is left out.
        out["metric_means"] = {m: d["mean"] for m, values in metric_means.items() if "mean" in (d := describe(values))}
    pairs_meta = read_meta(iter_dir / "pairs.meta.json")
    if pairs_meta:
        out["pairs"] = pairs_meta["counts"]
    train_metrics_path = iter_dir / "model" / "train_metrics.json"
    if train_metrics_path.exists():
        tm = json.loads(train_metrics_path.read_text())
        out["train"] = {k: v for k, v in tm.items() if k != "log_history"}
    return out


def format_summary(s: dict) -> str:
    lines = [f"== {s['iteration']} summary =="]
    for name, st in s["stages"].items():
        lines.append(f"  {name:<12} {st['records']!s:>5} records  {st['seconds'] or 0:7.1f}s")
    if "mean_candidate_reward" in s:
        mr = s["mean_candidate_reward"]
        lines.append(f"  candidates scored: {s['candidates_scored']}, mean reward: {mr:.4f}" if mr is not None
                     else "  candidates scored: 0")
        lines.append("  metric means: " + ", ".join(f"{m}={v:.4g}" for m, v in s["metric_means"].items()))
    if "pairs" in s:
        p = s["pairs"]
        dropped = {k: v for k, v in p.items() if k.startswith("dropped")}
        lines.append(f"  pairs built: {p.get('records_out', 0)} of {p.get('records_in', 0)} records; "
                     f"dropped: {dropped or 'none'}")
    if "train" in s:
        d = s["train"]
        if d.get("skipped"):
            lines.append(f"  training: skipped ({d['skipped']})")
        else:
            line = (f"  training: {d.get('steps')} steps, loss {d.get('first_loss', float('nan')):.4f} -> "
                    f"{d.get('last_loss', float('nan')):.4f}")
            if "mean_rewards/accuracies" in d:
                line += (f", reward accuracy {d['mean_rewards/accuracies']:.3f} (mean), "
                         f"{d['last_rewards/accuracies']:.3f} (last step)")
            lines.append(line)
    return "\n".join(lines)


def run_plan(config_path: str, gpu_memory_gib: float) -> list[str]:
    """The memory plan of every stage of a run YAML with vLLM engines, on one GPU of `gpu_memory_gib` (the
    policy planned as a trained model, beside a local simulator or judge of its starting model); raises a
    ConfigError for the first stage that does not fit."""
    from dataclasses import replace

    from collabloop.memory_plan import RESERVE_GIB, plan_engines, stage_engines

    argv = ["--config", config_path]
    loop = parse_config(LoopConfig, "loop", argv)
    lines = [f"memory plan of {config_path} on one GPU of {gpu_memory_gib:g} GiB (weights at 2 bytes a parameter, "
             f"{RESERVE_GIB:g} GiB reserved per engine for activations):"]
    for name, stage in record_stages().items():
        cfg = parse_config(stage.config, name, argv)
        if hasattr(cfg, "gpu_memory_utilization"):
            cfg = replace(cfg, model=loop.initial_model)
        engines = stage_engines(cfg, loop, trained_policy=True)
        if engines:
            lines.append(f"  {name}:")
            lines += [f"    {plan.line()}" for plan in plan_engines(engines, gpu_memory_gib, f"{config_path}, {name}")]
    return lines


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("env", "summary", "check", "estimate", "plan_memory"):
        raise SystemExit(__doc__)
    command, rest = argv[0], argv[1:]
    try:
        if command == "env":
            print(shell_env(rest))
        elif command == "check":
            check_run_config(rest[rest.index("--config") + 1])
            print("config ok")
        elif command == "estimate":
            from collabloop.estimate import estimate, render

            config = rest[rest.index("--config") + 1]
            check_run_config(config)
            run_dir = rest[rest.index("--run_dir") + 1] if "--run_dir" in rest else None
            print(render(estimate(config, run_dir)))
        elif command == "plan_memory":
            config = rest[rest.index("--config") + 1]
            check_run_config(config)
            gib = float(rest[rest.index("--gpu_memory_gib") + 1]) if "--gpu_memory_gib" in rest else 80.0
            print("\n".join(run_plan(config, gib)))
        else:
            iter_dir = rest[rest.index("--iter_dir") + 1]
            summary = summarize_iteration(iter_dir)
            (Path(iter_dir) / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(format_summary(summary))
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    except RecordError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
