"""Run the loop's stages: what run_loop.sh calls, one stage at a time.

    python -m collabloop.driver stages --run_dir data/runs/demo --iteration 1
        the stages of that iteration, in order (collabloop/pipeline.py);
    python -m collabloop.driver run generate --run_dir data/runs/demo --iteration 1
        runs one stage as the loop runs it: sharded over the machine's GPUs or cores for the
        per-record stages, under `accelerate launch` for the trainers, after starting the run's
        simulator server when the stage has work for it (loop.simulator_backend server);
    python -m collabloop.driver heading --run_dir data/runs/demo --iteration 1
        the iteration's heading line;
    python -m collabloop.driver stop_server --run_dir data/runs/demo
        stops the run's simulator server, if one runs.

Everything comes from <run_dir>/config.yaml, which `python -m collabloop.loop env` wrote: a stage run
by hand with these commands is run exactly as the loop runs it, and owns the run folder while it runs
(collabloop/run_lock.py): a second one, or a run_loop.sh, on the same folder stops at once and names it.
A stage whose output is up to date says so and does nothing; the server starts only for a stage that has work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from collabloop import pipeline
from collabloop.cli import run_main
from collabloop.config import ConfigError, parse_config
from collabloop.console import error, say
from collabloop.devices import Devices, plan_devices, shard_places, visible_gpus
from collabloop.loop_config import LoopConfig
from collabloop.run_lock import hold
from collabloop.stage import StageError

SERVER_STATE = "simulator_server.json"  # in the run folder: the pid and port of the run's server


class Run:
    """A run folder and its resolved loop settings."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.config = str(self.dir / "config.yaml")
        if not Path(self.config).exists():
            raise ConfigError(f"{self.config} does not exist; `python -m collabloop.loop env --config FILE "
                              f"--run_dir {run_dir}` writes it (run_loop.sh does this first)")
        self.loop = parse_config(LoopConfig, "loop", ["--config", self.config])

    def argv(self, name: str, iteration: int) -> list[str]:
        return [sys.executable, *pipeline.stage_args(name, self.loop, self.config, self.dir, iteration)]


def call(argv: list[str], **kwargs) -> int:
    """Run a command to its end; on Ctrl-C, give it the time to stop by itself (it got the signal too)."""
    process = subprocess.Popen(argv, **kwargs)
    try:
        return process.wait()
    except KeyboardInterrupt:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def up_to_date_line(argv: list[str]) -> str | None:
    """Asks the stage (`--check_up_to_date`, which does no work): its 'up to date' line, or None for any
    other answer (an error included: the stage itself then reports it)."""
    answer = subprocess.run([*argv, "--check_up_to_date"], capture_output=True, text=True)
    return answer.stdout.strip() if answer.returncode == 0 else None


def must(returncode: int) -> None:
    if returncode != 0:
        raise SystemExit(returncode)  # the stage said why on the console


# --- the simulator server of the run: one, started by the first stage that has work for it ---


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_server(run: Run) -> None:
    from collabloop.server import SimulatorServer, is_healthy

    loop, state_path = run.loop, run.dir / SERVER_STATE
    state = _read_state(state_path)
    if state and state["port"] == loop.simulator_port and _alive(state["pid"]) and is_healthy(state["port"]):
        return
    stop_server(run.dir)  # one from an earlier run of this folder, on another port or not answering
    port = loop.simulator_port
    if is_healthy(port):
        raise StageError(f"something already answers on 127.0.0.1:{port}; set loop.simulator_port to a free port")
    log = run.dir / "simulator_server.log"
    say(f"starting simulator server: {loop.simulator_model_path} on 127.0.0.1:{port} (log: {log})")
    server = SimulatorServer(loop.simulator_model_path, port, loop.simulator_served_name, log_path=str(log),
                             gpu_memory_utilization=loop.server_gpu_memory_utilization,
                             max_model_len=loop.server_max_model_len)
    server.start()  # in its own session: it outlives this process, and stop_server stops its workers too
    state_path.write_text(json.dumps({"pid": server.process.pid, "port": port}) + "\n")
    try:
        server.wait_healthy()
    except (RuntimeError, TimeoutError) as e:
        state_path.unlink(missing_ok=True)
        raise StageError(f"{e}; see {log}") from None
    say(f"simulator server healthy (pid {server.process.pid})")


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state.get("pid"), int) and isinstance(state.get("port"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


def stop_server(run_dir: str | Path) -> None:
    from collabloop.server import stop_group

    state_path = Path(run_dir) / SERVER_STATE
    state = _read_state(state_path)
    if state and _alive(state["pid"]):
        say(f"stopping simulator server (pid {state['pid']})")
        stop_group(state["pid"], lambda: not _alive(state["pid"]))
    state_path.unlink(missing_ok=True)


# --- running one stage ---


def run_stage(run: Run, name: str, iteration: int) -> None:
    stage = pipeline.STAGES[name]
    argv = run.argv(name, iteration)
    devices = plan_devices(run.loop, visible_gpus())
    if devices.gpus and not stage.trainer:
        check_gpu_memory(run, stage, argv)
    if stage.trainer:
        return train(run, stage, argv, devices)
    if stage.per_record and devices.num_shards > 1:
        return run_sharded(run, stage, argv, pipeline.output_path(name, run.dir, iteration), devices)
    if pipeline.needs_server(stage, run.loop) and up_to_date_line(argv) is None:
        ensure_server(run)
    must(call(argv))


def check_gpu_memory(run: Run, stage: pipeline.StageSpec, argv: list[str]) -> None:
    """Refuse, before any model loads, a stage whose vLLM engines (and the run's server) cannot share a GPU."""
    from collabloop.memory_plan import gpu_memory_gib, plan_engines, stage_engines

    engines = stage_engines(parse_config(stage.config, stage.name, argv[2:]), run.loop)
    if engines:
        plan_engines(engines, gpu_memory_gib(), f"stage {stage.name} on a GPU of this machine")


def run_sharded(run: Run, stage: pipeline.StageSpec, argv: list[str], output: Path, devices: Devices) -> None:
    """One process per shard (its own GPU, or its own share of the cores), the merge, then the unsharded
    command, which finds the merged output up to date (and, for evaluate, writes the summary)."""
    from collabloop.shards import merge_line

    if up_to_date_line(argv) is not None:  # nothing for the shards to do, whatever became of their own files
        return must(call(argv))
    if pipeline.needs_server(stage, run.loop):
        ensure_server(run)
    n = devices.num_shards
    output.parent.mkdir(parents=True, exist_ok=True)
    logs = [output.with_name(f"{output.stem}.shard{s}-of-{n}.log") for s in range(n)]
    say(f"[{stage.name}] {n} shards (logs: {output.with_name(f'{output.stem}.shard<i>-of-{n}.log')})")
    places = shard_places(devices, sorted(os.sched_getaffinity(0)))
    processes = []
    for s, (place, log) in enumerate(zip(places, logs)):
        with open(log, "w") as f:
            processes.append(subprocess.Popen(
                [*argv, "--num_shards", str(n), "--shard_index", str(s)], stdout=f, stderr=subprocess.STDOUT,
                env={**os.environ, **place["env"]}, preexec_fn=lambda cpus=place["cpus"]: os.sched_setaffinity(0, cpus),
            ))
    failed = False
    for s, (process, log) in enumerate(zip(processes, logs)):
        if process.wait() == 0:
            say(f"  shard {s}: {_tail(log, 1)}")
        else:
            failed = True
            error(f"error: shard {s} failed; the end of {log}:\n{_tail(log, 20)}")
    if failed:
        raise SystemExit(1)
    say(merge_line(output, n))
    must(call(argv))


def _tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def train(run: Run, stage: pipeline.StageSpec, argv: list[str], devices: Devices) -> None:
    """A trainer under accelerate launch, unless its model is up to date (asked in one plain process, which
    is quicker than starting every rank to learn it)."""
    answer = up_to_date_line(argv)
    if answer is not None:
        return say(answer)
    if pipeline.needs_server(stage, run.loop):
        ensure_server(run)
    elif devices.gpus:
        stop_server(run.dir)  # its share of GPU 0 is the trainers' now; the next stage that calls it restarts it
    env = dict(os.environ)
    # Each rank's share of the cores, said here: torchrun would pick 1 and print a warning about it.
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // devices.num_processes)))
    if not devices.num_gpus:
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would find it out, and print a line about it
    accelerate = str(Path(sys.executable).parent / "accelerate")
    must(call([accelerate, "launch", "--config_file", run.loop.accelerate_config,
               "--num_processes", str(devices.num_processes), *argv[1:]], env=env))


def heading(run: Run, iteration: int) -> str:
    loop = run.loop
    if iteration == 0:
        return "=== evaluation of the initial model ==="
    return (f"=== iteration {iteration}/{loop.num_iterations}: policy {pipeline.policy(loop, run.dir, iteration)}, "
            f"{loop.algorithm} ===")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("stages", "run", "heading", "stop_server"):
        sub = commands.add_parser(command)
        if command == "run":
            # Checked once the run's config is read: its loop.plugins may register stages of their own.
            sub.add_argument("stage", help=f"one of {', '.join(pipeline.STAGES)}, or a plugin's stage")
        sub.add_argument("--run_dir", required=True, help="the run folder, with the config.yaml loop env wrote")
        if command != "stop_server":
            sub.add_argument("--iteration", type=int, required=True, help="0: the evaluation of the initial model")
    args = parser.parse_args(argv)

    def go() -> None:
        if args.command == "stop_server":
            return stop_server(args.run_dir)
        run = Run(args.run_dir)
        if args.command == "stages":
            say(" ".join(pipeline.iteration_stages(run.loop, args.iteration)))
        elif args.command == "heading":
            say(heading(run, args.iteration))
        else:
            if args.stage not in pipeline.STAGES:
                raise ConfigError(f"no stage {args.stage!r}; the stages are {', '.join(pipeline.STAGES)}")
            took_over = hold(run.dir, f"driver run {args.stage} --iteration {args.iteration}")
            if took_over:
                say(took_over)
            run_stage(run, args.stage, args.iteration)

    try:
        run_main(go, is_stage=False)
    except KeyboardInterrupt:  # the stage got Ctrl-C too, and said what it kept
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
