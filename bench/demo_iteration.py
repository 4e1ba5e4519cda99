"""Benchmark: time and peak memory of one iteration of the loop, stage by stage.

    .venv/bin/python bench/demo_iteration.py [--config configs/demo.yaml --max_tasks 8]

Runs iteration 1 of the loop stage by stage through the driver run_loop.sh uses
(`python -m collabloop.driver run <stage>`: the same arguments, shards, accelerate
launch and simulator server), after `python -m collabloop.loop env` (which validates
the config and writes <run_dir>/config.yaml, as run_loop.sh does first). With
loop.simulator_backend server, the first stage that calls the simulator starts it (its
start is in that stage's time) and the benchmark stops it at the end. The evaluation of
run_loop.sh is not run.

For each stage: wall seconds (process start to exit) and the peak resident memory of
the stage's whole process tree (shards and training ranks included: RSS of the process
and all its descendants summed, polled every 0.2 s; pages shared between processes count
once per process; never less than the exact peak of its largest single process, from
wait4, so a stage shorter than the poll interval is not missed), and the server's peak
RSS (its process tree) during the stage. --run_dir (default
bench/results/demo_iteration_run) is deleted first, so every stage does its work (no
output is up to date, no simulator/judge response is cached). --max_tasks shrinks the
iteration (contexts.max_tasks). No baseline: the table gives each stage's share of the
iteration. Logs: <run_dir>/logs/<stage>.log, and each stage's own beside its output.
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

from result_files import save_result  # beside this file

REPO = Path(__file__).resolve().parent.parent
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
    parser.add_argument("--max_tasks", type=int, default=None, help="contexts.max_tasks (default: the config's)")
    parser.add_argument("--run_dir", default="bench/results/demo_iteration_run", help="deleted first")
    parser.add_argument("--port", type=int, default=0, help="simulator server port (0: a free one)")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="loop.num_shards for this run (default: the config's; 0: one per GPU, 1 on CPU)")
    args = parser.parse_args()

    import yaml

    from collabloop.config import parse_config
    from collabloop.devices import plan_devices, visible_gpus
    from collabloop.driver import SERVER_STATE
    from collabloop.loop_config import LoopConfig
    from collabloop.pipeline import iteration_stages

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
    if args.max_tasks:  # the config with contexts.max_tasks set, beside the results
        sections = yaml.safe_load((REPO / config).read_text()) or {}
        sections.setdefault("contexts", {})["max_tasks"] = args.max_tasks
        config = str(logs / "config.yaml")
        Path(config).write_text(yaml.safe_dump(sections, sort_keys=False))

    rows: list[dict] = []
    sampler = Sampler(None).start()
    driver = [py, "-m", "collabloop.driver"]
    try:
        # run_loop.sh: validate every section, write <run_dir>/config.yaml (the driver reads it).
        env_argv = [py, "-m", "collabloop.loop", "env", "--config", config, "--run_dir", str(run_dir),
                    "--simulator_port", str(port)]
        if args.num_shards is not None:
            env_argv += ["--num_shards", str(args.num_shards)]
        rows.append(run_stage("config", [[(env_argv, logs / "config.log")]], sampler, env))
        loop = parse_config(LoopConfig, "loop", ["--config", str(run_dir / "config.yaml")])
        devices = plan_devices(loop, visible_gpus())
        # Iteration 1 as run_loop.sh runs it, through the same driver; its evaluation is left out.
        for name in [n for n in iteration_stages(loop, 1) if n != "evaluate"]:
            step = [*driver, "run", name, "--run_dir", str(run_dir), "--iteration", "1"]
            rows.append(run_stage(name, [[(step, logs / f"{name}.log")]], sampler, env))
            if sampler.server_pid is None and (run_dir / SERVER_STATE).exists():  # started by this stage
                sampler.server_pid = json.loads((run_dir / SERVER_STATE).read_text())["pid"]
    finally:
        subprocess.run([*driver, "stop_server", "--run_dir", str(run_dir)], cwd=REPO, env=env)
        sampler.stop()
    num_processes, num_shards = devices.num_processes, devices.num_shards
    iter_dir = run_dir / "iter_1"

    stage_rows = [r for r in rows if r["stage"] != "config"]
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
        "seconds_including_config": round(everything_s, 2),
        "peak_rss_mib_of_any_stage": max(r["peak_rss_mib"] for r in stage_rows),
        "server_peak_rss_mib": max(r["server_peak_rss_mib"] for r in rows),
        "outputs": stage_counts(iter_dir),
    }
    save_result("demo_iteration", result)
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
          f"({everything_s:.1f}s with the config check); {biggest['stage']} took the largest share "
          f"({biggest['share_of_iteration']:.0%}), and the largest stage process tree peaked at "
          f"{result['peak_rss_mib_of_any_stage']} MiB beside the server's {result['server_peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
