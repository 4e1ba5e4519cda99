"""Where a run's processes go: the GPUs this process may use, training ranks, and the shards of the
per-record stages.

The GPUs are the ones this process is allowed to see: `CUDA_VISIBLE_DEVICES` when it is set (by the
user, or by SLURM for the job's allocation), every GPU `nvidia-smi -L` lists otherwise. A shard gets one
of those, by its own name (an index or a UUID), never a GPU outside the selection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from collabloop.config_error import ConfigError
from collabloop.loop_config import LoopConfig


def parse_visible_devices(value: str) -> list[str]:
    """The GPUs a `CUDA_VISIBLE_DEVICES` value names, as CUDA reads it: comma-separated indices or UUIDs
    (GPU-..., MIG-...); an empty value names none, and the list ends at the first invalid entry (so
    '-1', a common way to hide every GPU, names none)."""
    named = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit() or entry.startswith(("GPU-", "MIG-")):
            named.append(entry)
        else:
            break
    return named


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use, by the name a child's CUDA_VISIBLE_DEVICES gives them."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_visible_devices(environ["CUDA_VISIBLE_DEVICES"])
    if not shutil.which("nvidia-smi"):
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if listing.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


@dataclass(frozen=True)
class Devices:
    """Where the processes of a run go: training ranks, and the shards of the per-record stages."""

    gpus: tuple[str, ...]  # visible GPUs, by the name CUDA_VISIBLE_DEVICES gives them
    num_processes: int  # training ranks
    num_shards: int

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)


def plan_devices(loop: LoopConfig, gpus: list[str] | tuple[str, ...]) -> Devices:
    """Training ranks and shards for the visible `gpus`: one of each per GPU unless the loop says otherwise
    (CPU only: ZeRO-2 over 2 gloo processes, one shard)."""
    gpus = tuple(gpus)
    num_processes = loop.num_processes or len(gpus) or 2
    num_shards = loop.num_shards or len(gpus) or 1
    selection = f"CUDA_VISIBLE_DEVICES={','.join(gpus)}" if "CUDA_VISIBLE_DEVICES" in os.environ else "nvidia-smi -L"
    if gpus and num_shards > len(gpus):
        raise ConfigError(f"loop.num_shards={num_shards} but this process sees {len(gpus)} GPUs ({selection}); each "
                          "shard's vLLM engine needs a GPU of its own: lower loop.num_shards, or 0 for one per GPU")
    if gpus and num_processes > len(gpus):
        raise ConfigError(f"loop.num_processes={num_processes} but this process sees {len(gpus)} GPUs ({selection}); "
                          "each training rank needs a GPU of its own: lower loop.num_processes, or 0 for one per GPU")
    return Devices(gpus, num_processes, num_shards)


def shard_places(devices: Devices, cpus: list[int]) -> list[dict]:
    """Per shard: the environment it adds (its one GPU, named as the parent sees it) and the CPU cores it may
    use (its share of `cpus`; with GPUs, all of them)."""
    per = max(1, len(cpus) // devices.num_shards)
    places = []
    for s in range(devices.num_shards):
        if devices.gpus:
            places.append({"env": {"CUDA_VISIBLE_DEVICES": devices.gpus[s]}, "cpus": cpus})
        else:
            first = (s * per) % len(cpus)
            places.append({"env": {}, "cpus": cpus[first : first + per]})
    return places
