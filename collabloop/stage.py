"""What every stage does around its own work: resume, skip, finish atomically.

A stage output `X.jsonl` comes with:
- `X.jsonl.partial`: finished records appended while the stage works;
- `X.meta.json`: the fingerprint of the inputs and config, the status
  (`running` or `complete`) and the counts;
- `X.config.yaml`: the resolved config, rerunnable with `--config`.

Rerunning a stage whose output is complete and was made from the same inputs
and config does nothing. Rerunning an interrupted stage with the same inputs
and config resumes it; with different ones it refuses to mix the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from collabloop.config import config_to_dict, save_config
from collabloop.jsonl import PartialOutput, write_json
from collabloop.records import Record

logger = logging.getLogger(__name__)

# Files bigger than this are fingerprinted by size and modification time, not content.
_CONTENT_HASH_MAX_BYTES = 64 * 2**20

# How calls reach a server, not what they ask: changing these does not make an
# output stale (the server's model is an input of the run, not of the stage).
NOT_FINGERPRINTED = frozenset({
    "simulator_api_base", "judge_api_base", "llm_max_concurrency", "llm_timeout_s", "llm_max_retries",
    "llm_cache_path", "max_failure_fraction",
})


def fingerprint_path(path: str | Path) -> str:
    """A digest of a file or a folder (a model directory) for up-to-date checks."""
    path = Path(path)
    h = hashlib.sha256()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        stat = f.stat()
        if stat.st_size > _CONTENT_HASH_MAX_BYTES:
            h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            h.update(f.read_bytes())
    return h.hexdigest()


def meta_path_for(output_path: str | Path) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".meta.json")


def config_path_for(output_path: str | Path) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".config.yaml")


class StageRun:
    """One run of a stage over its input records, writing `output_path`."""

    def __init__(
        self,
        name: str,
        output_path: str | Path,
        record_type: type[Record],
        configs: tuple[Any, ...],
        inputs: dict[str, str | Path],
    ):
        self.name = name
        self.output_path = Path(output_path)
        self.record_type = record_type
        self.configs = configs
        self.inputs = {k: str(v) for k, v in inputs.items()}
        self.meta_path = meta_path_for(self.output_path)
        self.partial = PartialOutput(self.output_path, record_type)
        self.counts: Counter = Counter()
        self.started = time.time()
        config_dict: dict[str, Any] = {}
        for c in configs:
            config_dict.update(config_to_dict(c))
        self.config_dict = config_dict
        fingerprinted = {k: v for k, v in config_dict.items() if k not in NOT_FINGERPRINTED}
        digest = hashlib.sha256(json.dumps({"stage": name, "config": fingerprinted}, sort_keys=True).encode())
        for key in sorted(self.inputs):
            digest.update(f"{key}={fingerprint_path(self.inputs[key])}".encode())
        self.fingerprint = digest.hexdigest()

    def _read_meta(self) -> dict | None:
        if not self.meta_path.exists():
            return None
        try:
            return json.loads(self.meta_path.read_text())
        except json.JSONDecodeError:
            return None

    def up_to_date(self) -> bool:
        meta = self._read_meta()
        return (
            self.output_path.exists()
            and meta is not None
            and meta.get("status") == "complete"
            and meta.get("fingerprint") == self.fingerprint
        )

    def begin(self) -> dict[str, Record]:
        """Load the records an interrupted run finished; returns them by id."""
        meta = self._read_meta()
        if self.partial.path.exists():
            if meta is None or meta.get("fingerprint") != self.fingerprint:
                from collabloop.cli import StageError

                raise StageError(
                    f"{self.partial.path} was written by a run with other inputs or config. "
                    f"Rerun with the same settings to resume it, or delete it to start this stage over."
                )
        done = self.partial.load()
        if self.partial.repaired_bytes:
            self.counts["repaired_torn_lines"] += 1
        write_json(self.meta_path, self._meta("running"))
        save_config(config_path_for(self.output_path), self.name, *self.configs)
        if done:
            logger.info("%s: resuming, %d records already finished in %s", self.name, len(done), self.partial.path)
        return done

    def begin_chunks(self, records: list[Record], batch_size: int) -> tuple[dict[str, Record], list[tuple[int, list]]]:
        """Begin, count the input, and return (finished records, the fixed chunks still to do)."""
        done = self.begin()
        self.counts["records_in"] = len(records)
        self.counts["resumed"] = len(done)
        todo = [(i, c) for i, c in fixed_chunks(records, batch_size) if any(r.id not in done for r in c)]
        return done, todo

    def append(self, records: list[Record]) -> None:
        self.partial.append(records)

    def finish(self, order: list[str]) -> dict:
        count = self.partial.finalize(order)
        self.counts["records_out"] = count
        meta = self._meta("complete")
        write_json(self.meta_path, meta)
        return meta

    def _meta(self, status: str) -> dict:
        return {
            "stage": self.name,
            "status": status,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "config": self.config_dict,
            "counts": dict(sorted(self.counts.items())),
            "seconds": round(time.time() - self.started, 2),
        }


def fixed_chunks(items: list, size: int) -> list[tuple[int, list]]:
    """Fixed chunks of a stage's input: a chunk redone after a kill is the same batch as before."""
    return [(i // size, items[i : i + size]) for i in range(0, len(items), size)]


def format_counts(name: str, counts: dict) -> str:
    parts = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    return f"[{name}] {parts}"
