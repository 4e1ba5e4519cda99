"""Join the shards of a stage into the output an unsharded run writes.

    python -m collabloop.shards merge --output_path data/runs/demo/iter_1/generations.jsonl --num_shards 2

Shard i of n (`--shard_index i --num_shards n` on generate, simulate, annotate
or evaluate) did the stage's fixed chunks i, i+n, i+2n, ... and wrote
`generations.shard<i>-of-<n>.jsonl` with its own meta. The merge checks that
every shard is complete and was made from the same inputs and config (the
same base fingerprint, the same chunk size), deals the chunks back into input
order, and writes `generations.jsonl` atomically with the meta an unsharded
run would have written: the unsharded command then finds it up to date, and
the records are the same as an unsharded run's, line for line. The shard files
are kept; merging again gives the same output.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

from collabloop.jsonl import atomic_file, read_records, write_json, write_records
from collabloop.pipeline import STAGES
from collabloop.records import RECORD_TYPES, Record, RecordError
from collabloop.stage import StageError, config_path_for, meta_path_for, read_meta, shard_output_path

logger = logging.getLogger(__name__)



def shardable() -> dict[str, type[Record]]:
    """The stages that split into shards (collabloop/pipeline.py), and the records of each."""
    return {name: RECORD_TYPES[s.kind] for name, s in STAGES.items() if s.per_record}


def _read_shard_meta(path: Path, index: int, num_shards: int) -> dict:
    meta_path = meta_path_for(path)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():  # running, or stopped: whatever output is there is an earlier run's
        raise StageError(f"shard {index} of {num_shards} is not finished ({partial} is there); "
                         f"rerun it with the same command")
    if not meta_path.exists() or not path.exists():
        raise StageError(
            f"shard {index} of {num_shards} is missing ({path} or {meta_path.name} does not exist); "
            f"run the stage with --shard_index {index} --num_shards {num_shards}, then merge again"
        )
    meta = read_meta(meta_path)
    if meta is None:
        raise RecordError(str(meta_path), "<file>", f"damaged (not a UTF-8 JSON object); rerun shard {index}")
    if meta.get("status") != "complete":
        raise StageError(f"shard {index} of {num_shards} is not finished ({meta_path}: status "
                         f"{meta.get('status')!r}); rerun it with the same command")
    shard = meta.get("shard") or {}
    if shard.get("index") != index or shard.get("count") != num_shards:
        raise RecordError(str(meta_path), "shard", f"says shard {shard.get('index')} of {shard.get('count')}, "
                                                   f"expected {index} of {num_shards}")
    return meta


def interleave(shards: list[list[Record]], chunk_size: int) -> list[Record]:
    """Chunk c of the input is the (c // n)-th chunk of shard c % n; returns the records in input order."""
    num_shards = len(shards)
    pieces = [[s[i : i + chunk_size] for i in range(0, len(s), chunk_size)] for s in shards]
    total_chunks = sum(len(p) for p in pieces)
    out: list[Record] = []
    for c in range(total_chunks):
        shard, position = c % num_shards, c // num_shards
        if position >= len(pieces[shard]):
            raise StageError(f"shard {shard} has {len(pieces[shard])} chunks of {chunk_size} records, but the "
                             f"input's chunk {c} belongs to it: the shards do not come from one input")
        piece = pieces[shard][position]
        if len(piece) < chunk_size and c != total_chunks - 1:
            raise StageError(f"shard {shard}'s chunk {position} has {len(piece)} records, fewer than "
                             f"{chunk_size}, but it is not the input's last chunk: the shards do not fit together")
        out.extend(piece)
    return out


def merge_shards(output_path: str | Path, num_shards: int) -> dict:
    """Merge `num_shards` complete shards into `output_path`; returns the merged meta."""
    output_path = Path(output_path)
    if num_shards < 2:
        raise StageError(f"num_shards must be >= 2 to merge, got {num_shards}")
    paths = [shard_output_path(output_path, i, num_shards) for i in range(num_shards)]
    metas = [_read_shard_meta(p, i, num_shards) for i, p in enumerate(paths)]
    first = metas[0]
    stage = first.get("stage")
    if stage not in shardable():
        raise StageError(f"{meta_path_for(paths[0])}: stage {stage!r} cannot be merged; "
                         f"sharded stages are {sorted(shardable())}")
    def made_from(meta: dict) -> dict:
        return {"stage": meta["stage"], "base_fingerprint": meta["shard"]["base_fingerprint"],
                "chunk_size": meta["shard"]["chunk_size"]}

    for i, meta in enumerate(metas[1:], start=1):
        for key, value in made_from(meta).items():
            if value != made_from(first)[key]:
                raise StageError(
                    f"shard {i} ({paths[i]}) differs from shard 0 in {key} ({value!r} vs {made_from(first)[key]!r}): "
                    "it was made from other inputs or another config; rerun it with shard 0's settings"
                )
    if output_path.exists():
        done = read_meta(meta_path_for(output_path)) or {}
        if done.get("status") == "complete" and done.get("fingerprint") == first["shard"]["base_fingerprint"]:
            # Already merged (or made unsharded) from the same inputs and config: leave it, and its
            # modification time, alone, so later stages stay up to date.
            return {**done, "already_merged": True}
    records = [read_records(p, shardable()[stage]) for p in paths]
    for i, (meta, recs) in enumerate(zip(metas, records)):
        if len(recs) != meta["counts"].get("records_out"):
            raise StageError(f"{paths[i]} holds {len(recs)} records, "
                             f"its meta says {meta['counts'].get('records_out')}; rerun that shard")
    merged = interleave(records, first["shard"]["chunk_size"])
    seen: dict[str, int] = {}
    for i, recs in enumerate(records):
        for r in recs:
            if r.id in seen:
                raise StageError(f"record {r.id!r} is in shard {seen[r.id]} and shard {i}; the shards overlap")
            seen[r.id] = i

    counts: Counter = Counter()
    for meta in metas:
        counts.update({k: v for k, v in meta["counts"].items() if isinstance(v, (int, float))})
    counts = Counter({k: round(v, 6) if isinstance(v, float) else v for k, v in counts.items()})  # costs' sums
    count = write_records(output_path, merged)
    config = dict(first["config"], num_shards=1, shard_index=0)
    meta = {
        "stage": stage,
        "status": "complete",
        "fingerprint": first["shard"]["base_fingerprint"],
        "inputs": first["inputs"],
        "code": first.get("code", {}),
        "config": config,
        "counts": dict(sorted({**counts, "records_out": count, "shards_merged": num_shards}.items())),
        # The shards ran side by side: the stage took as long as its slowest shard.
        "seconds": max(m["seconds"] for m in metas),
        "shard_seconds": [m["seconds"] for m in metas],
    }
    import yaml

    shard_config = config_path_for(paths[0])
    if shard_config.exists():
        sections = yaml.safe_load(shard_config.read_text()) or {}
        for section in sections.values():
            section.update(num_shards=1, shard_index=0)
        with atomic_file(config_path_for(output_path)) as f:
            f.write(yaml.safe_dump(sections, sort_keys=False, allow_unicode=True))
    write_json(meta_path_for(output_path), meta)
    return meta


def merge_line(output_path: str | Path, num_shards: int) -> str:
    """Merge, and say what was done in one line."""
    meta = merge_shards(output_path, num_shards)
    if meta.get("already_merged"):
        return f"[merge] {output_path} is up to date; nothing to do"
    return (f"[merge] {meta['stage']}: {meta['counts']['records_out']} records from {num_shards} shards -> "
            f"{output_path} (slowest shard {meta['seconds']:.0f}s)")


def main(argv: list[str] | None = None) -> None:
    from collabloop.cli import run_main
    from collabloop.config import ConfigError, _split_argv

    argv = sys.argv[1:] if argv is None else argv

    def run() -> None:
        if not argv or argv[0] != "merge":
            raise SystemExit(__doc__)
        _, options, _ = _split_argv(argv[1:])
        unknown = sorted(set(options) - {"output_path", "num_shards"})
        if unknown or "output_path" not in options or "num_shards" not in options:
            raise ConfigError(f"merge takes --output_path and --num_shards (unknown: {unknown})")
        try:
            num_shards = int(options["num_shards"])
        except ValueError:
            raise ConfigError(f"--num_shards must be an integer, got {options['num_shards']!r}") from None
        print(merge_line(options["output_path"], num_shards))

    run_main(run, is_stage=False)


if __name__ == "__main__":
    main()
