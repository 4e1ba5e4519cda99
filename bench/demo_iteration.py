"""Benchmark: time and peak memory of one iteration of the loop, stage by stage.

    .venv/bin/python bench/demo_iteration.py [--config configs/demo.yaml --max_tasks 8]

Runs the stage commands of iteration 1 in sequence with the arguments run_loop.sh
gives them (contexts, generate, simulate, annotate, pairs, train: DPO or the config's
algorithm under accelerate launch), after `python -m collabloop.loop env` (which
validates the config and writes <run_dir>/config.yaml, as run_loop.sh does first).
It starts the simulator/judge server itself (collabloop.server.SimulatorServer, on a
free port) and stops it at the end. The evaluation of run_loop.sh is not run.

For each stage: wall seconds (process start to exit) and the peak resident memory of
the stage's whole process tree (RSS of the process and all its descendants summed,
polled every 0.2 s; pages shared between processes count once per process; never less
than the exact peak of its largest single process, from wait4, so a stage shorter than
the poll interval is not missed), and the
server's peak RSS (its process tree) during the stage. --run_dir (default
bench/results/demo_iteration_run) is deleted first, so every stage does its work
(no output is up to date, no simulator/judge response is cached). --max_tasks
shrinks the iteration (make_contexts --max_tasks). With loop.num_shards > 1 (or
--num_shards), generate, simulate and annotate run as run_loop.sh runs them then: one
process per shard (taskset to its share of the cores, or CUDA_VISIBLE_DEVICES), the
merge, and the unsharded command that finds its output up to date; the stage's time
and memory cover all of that. No baseline: the table gives each stage's share of the
iteration. Logs: <run_dir>/logs/<stage>[.shard<i>-of-<n>|.merge].log.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MIB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int | None) -> int:
    """Summed RSS of a process and all its descendants (0 when it is gone)."""
    import psutil

    if pid is None:
        return 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class Sampler:
    """Every 0.2 s: the RSS of the running stage processes' trees and of the server's tree; peaks since take()."""

    def __init__(self, server_pid: int | None, interval_s: float = 0.2):
        self.server_pid, self.interval_s = server_pid, interval_s
        self.stage_pids: list[int] = []
        self.stage_peak = self.server_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            stage, server = sum(tree_rss(p) for p in list(self.stage_pids)), tree_rss(self.server_pid)
            with self._lock:
                self.stage_peak = max(self.stage_peak, stage)
                self.server_peak = max(self.server_peak, server)
            self._stop.wait(self.interval_s)

    def take(self) -> tuple[int, int]:
        with self._lock:
            out = (self.stage_peak, self.server_peak)
            self.stage_peak = self.server_peak = 0
        return out

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(name: str, steps: list[list[tuple[list[str], Path]]], sampler: Sampler, env: dict) -> dict:
    """Run a stage: its steps in sequence, the commands of a step in parallel (shards), each with its log."""
    sampler.take()  # peaks from here on belong to this stage
    start = time.perf_counter()
    largest = 0
    try:
        for step in steps:
            procs = []
            try:
                for argv, log_path in step:
                    print(f"--- {name}: {shlex.join(argv)}", file=sys.stderr, flush=True)
                    with open(log_path, "w") as log:
                        # Its own session, so an interrupted benchmark can stop it and all its children.
                        procs.append((subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                       start_new_session=True), log_path))
                    sampler.stage_pids = [p.pid for p, _ in procs]
                failed = []
                for proc, log_path in procs:
                    # wait4: also the exact peak RSS of the largest single process of its tree (those reaped).
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    largest = max(largest, usage.ru_maxrss * 1024)  # KiB on Linux
                    if proc.returncode != 0:
                        failed.append((proc.returncode, log_path))
            except BaseException:
                for proc, _ in procs:
                    if proc.returncode is None:
                        os.killpg(proc.pid, signal.SIGTERM)
                        proc.wait()
                raise
            finally:
                sampler.stage_pids = []
            if failed:
                rc, log_path = failed[0]
                sys.stderr.write(log_path.read_text()[-6000:])
                raise SystemExit(f"stage {name} failed with exit code {rc}; log: {log_path}")
    finally:
        seconds = time.perf_counter() - start
    stage_peak, server_peak = sampler.take()
    return {"stage": name, "seconds": seconds, "peak_rss_mib": max(stage_peak, largest) / MIB,
            "largest_process_peak_rss_mib": largest / MIB, "server_peak_rss_mib": server_peak / MIB}


def per_record(name: str, output: Path, argv: list[str], py: str, logs: Path, num_shards: int, num_gpus: int):
    """The steps run_loop.sh's per_record runs: the command alone; or, with num_shards > 1, one process per
    shard (its own GPU, or its own share of the CPU cores), the merge, and the unsharded command again."""
    if num_shards <= 1:
        return [[([py, *argv], logs / f"{name}.log")]]
    cores = os.cpu_count() or 1
    per = max(1, cores // num_shards)
    shards = []
    for s in range(num_shards):
        place: list[str] = []
        if num_gpus > 0:
            place = ["env", f"CUDA_VISIBLE_DEVICES={s}"]
        elif shutil.which("taskset"):
            first = (s * per) % cores
            place = ["taskset", "-c", f"{first}-{first + per - 1}"]
        shards.append(([*place, py, *argv, "--num_shards", str(num_shards), "--shard_index", str(s)],
                       logs / f"{name}.shard{s}-of-{num_shards}.log"))
    merge = [py, "-m", "collabloop.shards", "merge", "--output_path", str(output), "--num_shards", str(num_shards)]
    return [shards, [(merge, logs / f"{name}.merge.log")], [([py, *argv], logs / f"{name}.log")]]


def stage_counts(iter_dir: Path) -> dict:
    """What each stage wrote (records_out from its meta; train steps)."""
    from collabloop.stage import read_meta

    out = {}
    for name in ("contexts", "generations", "simulations", "rewards", "pairs", "model"):
        meta = read_meta(iter_dir / f"{name}.meta.json")
        if meta is not None:
            counts = meta.get("counts", {})
            keep = ("records_out", "train_steps", "pairs_in", "responses_generated") if name != "model" else (
                "train_steps", "pairs_in", "world_size")
            out[name] = {k: counts[k] for k in keep if k in counts}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--max_tasks", type=int, default=None, help="make_contexts --max_tasks (default: the config's)")
    parser.add_argument("--run_dir", default="bench/results/demo_iteration_run", help="deleted first")
    parser.add_argument("--port", type=int, default=0, help="simulator server port (0: a free one)")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="loop.num_shards for this run (default: the config's; 0: one per GPU, 1 on CPU)")
    args = parser.parse_args()

    run_dir = (REPO / args.run_dir).resolve()
    looks_like_ours = run_dir.exists() and ((run_dir / "config.yaml").exists()
                                            or {p.name for p in run_dir.iterdir()} <= {"logs"})
    if run_dir.exists() and not looks_like_ours:
        raise SystemExit(f"--run_dir {run_dir}: exists and is not a run folder (no config.yaml); refusing to delete it")
    shutil.rmtree(run_dir, ignore_errors=True)
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    venv = Path(os.environ.get("COLLABLOOP_VENV", REPO / ".venv"))
    if not venv.is_absolute():
        venv = REPO / venv
    py = str(venv / "bin" / "python")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", LITELLM_LOCAL_MODEL_COST_MAP="True")
    port = args.port or free_port()
    config = args.config

    rows: list[dict] = []
    sampler = Sampler(None).start()
    try:
        # run_loop.sh: validate every section, write <run_dir>/config.yaml, read the loop: settings.
        env_argv = [py, "-m", "collabloop.loop", "env", "--config", config, "--run_dir", str(run_dir),
                    "--simulator_port", str(port)]
        if args.num_shards is not None:
            env_argv += ["--num_shards", str(args.num_shards)]
        rows.append(run_stage("config", [[(env_argv, logs / "config.log")]], sampler, env))
        loop = {}
        for line in (logs / "config.log").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("LOOP_"):
                loop[key[5:]] = (shlex.split(value) or [""])[0]
        if loop["ALGORITHM"] == "grpo":
            raise SystemExit("loop.algorithm grpo has no generate/simulate/annotate/pairs stages; not benchmarked here")
        num_gpus = 0
        if shutil.which("nvidia-smi"):
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
            num_gpus = len(listing.stdout.splitlines()) if listing.returncode == 0 else 0
        num_processes = int(loop["NUM_PROCESSES"]) or num_gpus or 2  # CPU-only: ZeRO-2 over 2 gloo processes
        num_shards = int(loop.get("NUM_SHARDS", "1")) or num_gpus or 1
        if num_gpus and num_shards > num_gpus:
            raise SystemExit(f"loop.num_shards={num_shards} but this machine has {num_gpus} GPUs")
        cache = str(run_dir / "llm_cache.sqlite")
        iter_dir = run_dir / "iter_1"
        iter_dir.mkdir()
        policy = loop["INITIAL_MODEL"]
        ref = loop["INITIAL_MODEL"]  # iteration 1: reference 'initial' and 'previous' are the same model
        tasks = loop["TRAIN_TASKS"]

        server = None
        sim_args: list[str] = []
        judge_args: list[str] = []
        if loop["SIMULATOR_MODEL_PATH"]:
            from collabloop.server import SimulatorServer

            print(f"--- server: {loop['SIMULATOR_MODEL_PATH']} on 127.0.0.1:{port}", file=sys.stderr, flush=True)
            sampler.take()
            start = time.perf_counter()
            server = SimulatorServer(loop["SIMULATOR_MODEL_PATH"], port, loop["SIMULATOR_SERVED_NAME"],
                                     log_path=str(run_dir / "simulator_server.log"))
            server.__enter__()
            sampler.server_pid = server.process.pid
            seconds = time.perf_counter() - start
            _, server_peak = sampler.take()
            server_peak = max(server_peak, tree_rss(server.process.pid))
            rows.append({"stage": "server start", "seconds": seconds, "peak_rss_mib": server_peak / MIB,
                         "largest_process_peak_rss_mib": None, "server_peak_rss_mib": server_peak / MIB})
            api_base = server.api_base
            name = f"hosted_vllm/{loop['SIMULATOR_SERVED_NAME']}"
            sim_args = ["--simulator_model", name, "--simulator_api_base", api_base]
            judge_args = ["--judge_model", name, "--judge_api_base", api_base]
        try:
            max_tasks = ["--max_tasks", str(args.max_tasks)] if args.max_tasks else []
            def shardable(name: str, output: Path, argv: list[str]):
                return name, per_record(name, output, argv, py, logs, num_shards, num_gpus)

            def single(name: str, argv: list[str]):
                return name, [[(argv, logs / f"{name}.log")]]

            stages = [
                single("contexts", [py, "simulate/make_contexts.py", "--config", config, "--tasks_path", tasks,
                                    "--iteration", "1", "--output_path", str(iter_dir / "contexts.jsonl"),
                                    "--llm_cache_path", cache, *sim_args, *max_tasks]),
                shardable("generate", iter_dir / "generations.jsonl",
                          ["generation/generate.py", "--config", config, "--model", policy,
                           "--contexts_path", str(iter_dir / "contexts.jsonl"),
                           "--output_path", str(iter_dir / "generations.jsonl")]),
            ]
            if loop["USE_SIMULATION"] == "True":
                stages.append(shardable("simulate", iter_dir / "simulations.jsonl",
                                        ["simulate/simulate_futures.py", "--config", config, "--model", policy,
                                         "--tasks_path", tasks, "--generations_path",
                                         str(iter_dir / "generations.jsonl"),
                                         "--output_path", str(iter_dir / "simulations.jsonl"),
                                         "--llm_cache_path", cache, *sim_args]))
                scored = ["--simulations_path", str(iter_dir / "simulations.jsonl")]
            else:
                scored = ["--simulations_path", str(iter_dir / "generations.jsonl"), "--without_futures", "true"]
            stages += [
                shardable("annotate", iter_dir / "rewards.jsonl",
                          ["annotate_data/annotate.py", "--config", config, "--tokenizer", policy,
                           "--tasks_path", tasks, *scored, "--output_path", str(iter_dir / "rewards.jsonl"),
                           "--llm_cache_path", cache, *judge_args]),
                single("pairs", [py, "dpo_iteration/pairs.py", "--config", config,
                                 "--rewards_path", str(iter_dir / "rewards.jsonl"),
                                 "--output_path", str(iter_dir / "pairs.jsonl")]),
                single("train", [str(venv / "bin" / "accelerate"), "launch",
                                 "--config_file", loop["ACCELERATE_CONFIG"], "--num_processes", str(num_processes),
                                 "dpo_iteration/train_preference.py", "--algorithm", loop["ALGORITHM"],
                                 "--config", config, "--pairs_path", str(iter_dir / "pairs.jsonl"),
                                 "--rewards_path", str(iter_dir / "rewards.jsonl"),
                                 "--model_name_or_path", policy, "--ref_model", ref,
                                 "--output_dir", str(iter_dir / "model")]),
            ]
            for name, steps in stages:
                rows.append(run_stage(name, steps, sampler, env))
        finally:
            if server is not None:
                print("--- stopping the simulator server", file=sys.stderr, flush=True)
                server.stop()
    finally:
        sampler.stop()

    stage_rows = [r for r in rows if r["stage"] not in ("config", "server start")]
    iteration_s = sum(r["seconds"] for r in stage_rows)
    everything_s = sum(r["seconds"] for r in rows)
    for r in rows:
        r["share_of_iteration"] = round(r["seconds"] / iteration_s, 3) if r in stage_rows else None
        r["seconds"] = round(r["seconds"], 2)
        r["peak_rss_mib"] = round(r["peak_rss_mib"])
        if r["largest_process_peak_rss_mib"] is not None:
            r["largest_process_peak_rss_mib"] = round(r["largest_process_peak_rss_mib"])
        r["server_peak_rss_mib"] = round(r["server_peak_rss_mib"])
    result = {
        "config": config,
        "max_tasks": args.max_tasks,
        "run_dir": str(run_dir),
        "train_processes": num_processes,
        "shards": num_shards,
        "stages": rows,
        "iteration_seconds": round(iteration_s, 2),
        "seconds_including_config_and_server_start": round(everything_s, 2),
        "peak_rss_mib_of_any_stage": max(r["peak_rss_mib"] for r in stage_rows),
        "server_peak_rss_mib": max(r["server_peak_rss_mib"] for r in rows),
        "outputs": stage_counts(iter_dir),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_iteration.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\n{'stage':<14}{'seconds':>10}{'share':>8}{'peak RSS MiB':>14}{'largest proc':>14}{'server RSS MiB':>16}")
    for r in rows:
        share = f"{r['share_of_iteration']:.0%}" if r["share_of_iteration"] is not None else "-"
        largest = r["largest_process_peak_rss_mib"] if r["largest_process_peak_rss_mib"] is not None else "-"
        print(f"{r['stage']:<14}{r['seconds']:>10.1f}{share:>8}{r['peak_rss_mib']:>14}{largest:>14}"
              f"{r['server_peak_rss_mib']:>16}")
    print(f"{'iteration':<14}{iteration_s:>10.1f}{'100%':>8}{result['peak_rss_mib_of_any_stage']:>14}{'':>14}"
          f"{result['server_peak_rss_mib']:>16}")
    biggest = max(stage_rows, key=lambda r: r["seconds"])
    print(f"one iteration of {config} took {iteration_s:.1f}s over {len(stage_rows)} stages "
          f"({everything_s:.1f}s with config check and server start); {biggest['stage']} took the largest share "
          f"({biggest['share_of_iteration']:.0%}), and the largest stage process tree peaked at "
          f"{result['peak_rss_mib_of_any_stage']} MiB beside the server's {result['server_peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
