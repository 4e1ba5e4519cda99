"""What every stage does around its own work: resume, skip, finish atomically.

A stage output `X.jsonl` comes with:
- `X.meta.json`: the fingerprint of the inputs and config, the status
  (`complete`) and the counts;
- `X.config.yaml`: the resolved config, rerunnable with `--config`;
and, while the stage works or after it was stopped, with
- `X.jsonl.partial`: finished records appended while the stage works;
- `X.partial.meta.json`: the same meta for the partial file, status `running`.
The meta and config of a complete output are replaced only when a new output
is in place: a run that fails leaves a complete earlier output as it was.

Rerunning a stage whose output is complete and was made from the same inputs,
config and code (the source of the modules that shape its output, named by the
stage) does nothing. Rerunning an interrupted stage with the same inputs
and config resumes it; with different ones it refuses to mix the two.

A sharded run (`num_shards` > 1, `ShardArgs`) does the fixed chunks whose
index is `shard_index` modulo `num_shards` and writes `X.shard<i>-of-<n>.jsonl`
with its own partial, meta and config files. `collabloop.shards` merges the
shards into `X.jsonl` with the meta an unsharded run would have written, so
the unsharded command then finds its output up to date.

`--check_up_to_date` on a stage's command line (handled by `cli.run_main`, like
`make -q`) answers whether its output is up to date, with the exit status, and
does no work: run_loop.sh uses it to start the simulator server only when a
stage needs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from collabloop.config import config_to_dict, save_config
from collabloop.failpoints import failpoint
from collabloop.jsonl import PartialOutput, write_json
from collabloop.records import Record

logger = logging.getLogger(__name__)

# Files bigger than this are fingerprinted by size and modification time, not content.
_CONTENT_HASH_MAX_BYTES = 64 * 2**20

# How calls reach a server, not what they ask: changing these does not make an
# output stale (the server's model is an input of the run, not of the stage).
NOT_FINGERPRINTED = frozenset({
    "simulator_api_base", "judge_api_base", "llm_max_concurrency", "llm_timeout_s", "llm_max_retries",
    "llm_cache_path", "max_failure_fraction", "llm_max_requests_per_minute", "llm_max_tokens_per_minute",
    # A budget stops a stage, it does not shape its records: raising it resumes the stopped stage.
    "max_cost_usd",
    # How the work is split, not what it makes: shards and an unsharded run share one fingerprint.
    "num_shards", "shard_index",
    # How a trainer's ranks talk (set only under a launcher), not what the model is made from.
    "ddp_backend",
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


def code_digests(modules: tuple[str, ...]) -> dict[str, str]:
    """module -> digest of its source, for the modules whose code shapes a stage's output (its prompt
    templates, metrics, sampling): an edit of one makes the outputs it shaped stale, and no others."""
    import importlib.util

    out = {}
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not Path(spec.origin).is_file():
            raise ValueError(f"code that shapes a stage's output: no source file for module {name!r}")
        out[name] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]
    return out


def meta_path_for(output_path: str | Path) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".meta.json")


def partial_meta_path_for(output_path: str | Path) -> Path:
    """The meta of `X.jsonl.partial`, the work in progress: `X.partial.meta.json`."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".partial.meta.json")


def read_meta(path: str | Path) -> dict | None:
    """A meta file (`meta_path_for`, `partial_meta_path_for`) as a dict, or None when there is none.

    The one policy for every reader: a damaged file (not UTF-8, not JSON, not a JSON object) is logged and
    read as none, so its stage is not up to date and runs again. A reader that cannot go on without it
    (resuming a partial file, merging shards) turns that None into its own error.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both are
        problem = "not UTF-8" if isinstance(e, UnicodeDecodeError) else f"not JSON: {e}"
    else:
        if isinstance(meta, dict):
            return meta
        problem = f"a JSON {type(meta).__name__}, not an object"
    logger.warning("%s is damaged (%s); it is read as no meta file, so its stage is not up to date", path, problem)
    return None


def config_path_for(output_path: str | Path) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".config.yaml")


def shard_output_path(output_path: str | Path, shard_index: int, num_shards: int) -> Path:
    """`X.jsonl` -> `X.shard<i>-of-<n>.jsonl`: where shard i of n writes."""
    output_path = Path(output_path)
    return output_path.with_name(f"{output_path.stem}.shard{shard_index}-of-{num_shards}{output_path.suffix}")


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do."""


class UpToDateAnswer(Exception):
    """Raised by `StageRun.up_to_date` in check-only mode, before any work: the answer."""

    def __init__(self, stage: str, output_path: Path, up_to_date: bool):
        super().__init__(f"[{stage}] {output_path} is {'up to date' if up_to_date else 'not up to date'}")
        self.up_to_date = up_to_date


class StageRun:
    """One run of a stage over its input records, writing `output_path`."""

    # True for `--check_up_to_date` (set by `cli.run_main`): `up_to_date()` raises its answer as
    # `UpToDateAnswer`, and every stage asks it before doing anything.
    check_only: bool = False

    def __init__(
        self,
        name: str,
        output_path: str | Path,
        record_type: type[Record] | None,
        configs: tuple[Any, ...],
        inputs: dict[str, str | Path],
        code: tuple[str, ...] = (),
    ):
        """`code`: the modules whose source shapes the output (see `code_digests`); part of the fingerprint."""
        self.name = name
        self.final_output_path = Path(output_path)
        self.num_shards = next((c.num_shards for c in configs if hasattr(c, "num_shards")), 1)
        self.shard_index = next((c.shard_index for c in configs if hasattr(c, "shard_index")), 0)
        self.output_path = (
            shard_output_path(output_path, self.shard_index, self.num_shards) if self.num_shards > 1
            else self.final_output_path
        )
        self.record_type = record_type
        self.configs = configs
        self.inputs = {k: str(v) for k, v in inputs.items()}
        self.chunk_size: int | None = None
        self.shard_ids: set[str] | None = None
        self.meta_path = meta_path_for(self.output_path)
        self.partial_meta_path = partial_meta_path_for(self.output_path)
        self.partial = PartialOutput(self.output_path, record_type) if record_type is not None else None
        self.counts: Counter = Counter()
        self.started = time.time()
        config_dict: dict[str, Any] = {}
        for c in configs:
            config_dict.update(config_to_dict(c))
        self.config_dict = config_dict
        fingerprinted = {k: v for k, v in config_dict.items() if k not in NOT_FINGERPRINTED}
        self.code = code_digests(code)
        digest = hashlib.sha256(json.dumps({"stage": name, "config": fingerprinted, "code": self.code},
                                           sort_keys=True).encode())
        for key in sorted(self.inputs):
            digest.update(f"{key}={fingerprint_path(self.inputs[key])}".encode())
        # What the whole (unsharded) output is made from; a shard's own fingerprint adds which shard it is.
        self.base_fingerprint = digest.hexdigest()
        self.fingerprint = (
            self.base_fingerprint if self.num_shards == 1
            else hashlib.sha256(
                f"{self.base_fingerprint}/shard{self.shard_index}-of-{self.num_shards}".encode()
            ).hexdigest()
        )

    def up_to_date(self) -> bool:
        meta = read_meta(self.meta_path)
        complete = self.output_path.exists() and meta is not None and meta.get("status") == "complete"
        if complete and self.partial is not None and self.partial.path.is_file():
            if meta.get("fingerprint") == self.fingerprint:
                # Killed after the output and its meta were written, before the partial file was removed.
                self._discard_partial()
        answer = complete and meta.get("fingerprint") == self.fingerprint
        if StageRun.check_only:
            raise UpToDateAnswer(self.name, self.output_path, answer)
        if not answer:
            from collabloop import console

            console.announce(self.name)  # the console's start line, now that there is work
        return answer

    def begin(self) -> dict[str, Record]:
        """Load the records an interrupted run finished; returns them by id.

        The partial file's meta says "running"; the output's meta and config stay as they are until
        `finish` has the new output in place.
        """
        meta = read_meta(self.partial_meta_path)
        if self.partial.path.exists():
            if meta is None:
                raise StageError(
                    f"{self.partial.path} has no readable meta file ({self.partial_meta_path} is missing or "
                    f"damaged), so what it was made from cannot be checked. Delete it to start this stage over."
                )
            if meta.get("fingerprint") != self.fingerprint:
                raise StageError(
                    f"{self.partial.path} was written by a run with other inputs or config. "
                    f"Rerun with the same settings to resume it, or delete it to start this stage over."
                )
        done = self.partial.load()
        if self.partial.repaired_bytes:
            self.counts["repaired_torn_lines"] += 1
        write_json(self.partial_meta_path, self.meta("running"))
        if done:
            logger.info("%s: resuming, %d records already finished in %s", self.name, len(done), self.partial.path)
        return done

    def begin_chunks(self, records: list[Record], batch_size: int) -> tuple[dict[str, Record], list[tuple[int, list]]]:
        """Begin, count the input, and return (finished records, the fixed chunks still to do).

        A shard keeps the chunks whose index is its shard_index modulo num_shards.
        """
        self.chunk_size = batch_size
        mine = [(i, c) for i, c in fixed_chunks(records, batch_size) if i % self.num_shards == self.shard_index]
        if self.num_shards > 1:
            self.shard_ids = {r.id for _, c in mine for r in c}
        done = self.begin()
        self.counts["records_in"] = sum(len(c) for _, c in mine)
        self.counts["resumed"] = len(done)
        todo = [(i, c) for i, c in mine if any(r.id not in done for r in c)]
        return done, todo

    def append(self, records: list[Record]) -> None:
        self.partial.append(records)

    def finish(self, order: list[str]) -> dict:
        """Write the output in `order` (input order; a shard keeps its own ids), then the meta, then drop the
        partial."""
        if self.shard_ids is not None:
            order = [i for i in order if i in self.shard_ids]
        # The earlier output's meta goes first: a kill between the new output's rename and its meta must not
        # leave the earlier run's "complete" beside the new records.
        self.meta_path.unlink(missing_ok=True)
        count = self.partial.write_output(order)
        failpoint("output_renamed")
        self.counts["records_out"] = count
        save_config(config_path_for(self.output_path), self.name, *self.configs)
        meta = self.meta("complete")
        write_json(self.meta_path, meta)
        failpoint("meta_written")
        self._discard_partial()
        return meta

    def _discard_partial(self) -> None:
        self.partial.discard()
        self.partial_meta_path.unlink(missing_ok=True)

    def meta(self, status: str) -> dict:
        """What the meta file says of this run: its stage, status, fingerprint, inputs, code, config, counts."""
        meta = {
            "stage": self.name,
            "status": status,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "code": self.code,
            "config": self.config_dict,
            "counts": dict(sorted(self.counts.items())),
            "seconds": round(time.time() - self.started, 2),
        }
        if self.num_shards > 1:
            meta["shard"] = {
                "index": self.shard_index, "count": self.num_shards, "chunk_size": self.chunk_size,
                "base_fingerprint": self.base_fingerprint, "output_path": str(self.final_output_path),
            }
        return meta


class ModelRun(StageRun):
    """A trainer's run: its output is a model folder, trained in `<name>.partial/` and published whole."""

    def __init__(self, name: str, output_dir: str | Path, configs: tuple[Any, ...], inputs: dict[str, str | Path],
                 code: tuple[str, ...] = ()):
        super().__init__(name, output_dir, None, configs, inputs, code)

    def publish(self, partial_dir: Path) -> None:
        """Move the finished model into place, then mark the stage complete (main process only).

        The old meta goes first: a kill between replacing the model and writing the new meta must not leave
        another config's "complete" beside the new weights.
        """
        self.meta_path.unlink(missing_ok=True)
        if self.output_path.exists():
            shutil.rmtree(self.output_path)
        partial_dir.rename(self.output_path)
        write_json(self.meta_path, self.meta("complete"))


def fixed_chunks(items: list, size: int) -> list[tuple[int, list]]:
    """Fixed chunks of a stage's input: a chunk redone after a kill is the same batch as before."""
    return [(i // size, items[i : i + size]) for i in range(0, len(items), size)]


def format_counts(name: str, counts: dict) -> str:
    parts = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    return f"[{name}] {parts}"
