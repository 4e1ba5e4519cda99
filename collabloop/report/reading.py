"""What the run report shows, read and checked from a run folder: no plotting, no writing.

`collect(run_dir)` returns one dict per `iter_<i>` folder (its stages' meta
files and counts, the candidates' rewards, the pairs, the training log, the
evaluation) with what is missing noted rather than fatal, and the held-out
tasks split by opening (`report/collaboration.py`); a corrupt JSONL line or
summary field raises `RecordError` (file:line:field).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

from collabloop import paired
from collabloop.jsonl import read_records
from collabloop.pipeline import iteration_files
from collabloop.plugins import load_plugins
from collabloop.records import EvalConversation, Pair, RecordError, Rewarded
from collabloop.report.collaboration import compare_splits, read_splits
from collabloop.rewards import candidate_values
from collabloop.stage import read_meta
from collabloop.stats import BOOTSTRAP_RESAMPLES, bootstrap_ci

logger = logging.getLogger(__name__)

# Intervals of the training-candidate metrics; the evaluation brings its own (summary.json).
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0

# The model folder is a stage output like the JSONL files: `model/` beside `model.meta.json`.
MODEL_STAGE = "model"
# Keys of a log_history entry that are the x axis, not a curve.
LOG_AXIS_KEYS = ("step", "epoch")
# Curves drawn first, in this order; any other numeric key follows in order of first appearance.
LOG_KEYS_FIRST = ("loss", "rewards/accuracies", "rewards/margins")

_ITER_DIR = re.compile(r"^iter_(\d+)$")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}", "<file>", f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RecordError(str(path), "<file>", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ci(values: list[float]) -> dict:
    return bootstrap_ci(values, confidence=CONFIDENCE, num_samples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)


def _iteration_dirs(run_dir: Path) -> dict[int, Path]:
    found = {}
    for path in run_dir.iterdir():
        match = _ITER_DIR.match(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _collect_stage(iter_dir: Path, name: str, loop_metrics: dict | None) -> dict:
    output = iter_dir / (name if name == MODEL_STAGE else f"{name}.jsonl")
    meta_path = iter_dir / f"{name}.meta.json"
    meta = read_meta(meta_path)  # a damaged one is read as none (and logged), as the stage itself reads it
    damaged = meta is None and meta_path.exists()
    counts = (meta or {}).get("counts") or {}
    if not isinstance(counts, dict):
        raise RecordError(str(meta_path), "counts", f"expected an object, got {type(counts).__name__}")
    # metrics.json is the loop's record of the stage; the meta file's own clock is the fallback
    # (the loop summary has no entry for the model).
    seconds = ((loop_metrics or {}).get("stages", {}).get(name) or {}).get("seconds")
    if seconds is None and meta is not None:
        seconds = meta.get("seconds")
    if meta is not None:
        status = str(meta.get("status", "unknown"))
    elif damaged:
        status = "damaged meta file"
    else:
        status = "no meta file" if output.exists() else "missing"
    return {
        "output": output.name + ("/" if name == MODEL_STAGE else ""),
        "exists": output.exists(),
        "meta_file": meta_path.name,
        "has_meta": meta is not None,
        "damaged_meta": damaged,
        "stage": (meta or {}).get("stage"),
        "status": status,
        "counts": counts,
        "seconds": seconds,
        "partial": output.with_name(output.name + ".partial").exists(),
        "config": (meta or {}).get("config") or {},
    }


def _collect_rewards(path: Path) -> dict:
    records = read_records(path, Rewarded)
    rewards, metric_means = candidate_values(records)
    scored = [r for r in rewards if r is not None]
    metrics = {}
    for metric, means in metric_means.items():
        # Per-candidate metric means (each already a mean over that candidate's futures); None = every future failed.
        values = [v for v in means if v is not None]
        metrics[metric] = {"values": values, "missing": len(means) - len(values), "ci": _ci(values)}
    return {
        "records": len(records),
        "candidates": len(rewards),
        "rewards": scored,
        "rewards_missing": len(rewards) - len(scored),
        "reward_ci": _ci(scored),
        "metrics": metrics,
    }


def _collect_pairs(path: Path) -> dict:
    margins = [p.margin for p in read_records(path, Pair)]
    return {"pairs": len(margins), "margins": margins, "margin_ci": _ci(margins)}


def _training_curves(log_history: list, path: Path) -> tuple[dict[str, list[tuple[float, float]]], Counter]:
    """{key: [(step, value)]} for every numeric key a trainer logged, and how many non-finite values were left out."""
    curves: dict[str, list[tuple[float, float]]] = {}
    non_finite: Counter = Counter()
    for index, entry in enumerate(log_history):
        if not isinstance(entry, dict):
            raise RecordError(str(path), f"log_history[{index}]", f"expected an object, got {type(entry).__name__}")
        # The Trainer's last entry sums up the whole run (train_runtime, train_loss): not a step.
        if "train_runtime" in entry:
            continue
        step = entry.get("step", index + 1)
        if not is_number(step):
            raise RecordError(str(path), f"log_history[{index}].step", f"expected a number, got {step!r}")
        for key, value in entry.items():
            if key in LOG_AXIS_KEYS or not is_number(value):
                continue
            if not math.isfinite(value):
                non_finite[key] += 1
                continue
            curves.setdefault(key, []).append((step, float(value)))
    first = [k for k in LOG_KEYS_FIRST if k in curves]
    ordered = {k: curves[k] for k in first}
    ordered.update({k: v for k, v in curves.items() if k not in ordered})
    return ordered, non_finite


def _collect_training(model_dir: Path, trainer: str | None) -> dict:
    path = model_dir / "train_metrics.json"
    data = _read_json(path)
    log_history = data.get("log_history", [])
    if not isinstance(log_history, list):
        raise RecordError(str(path), "log_history", f"expected a list, got {type(log_history).__name__}")
    curves, non_finite = _training_curves(log_history, path)
    return {
        "trainer": trainer,
        "summary": {k: v for k, v in data.items() if k != "log_history"},
        "skipped": data.get("skipped"),
        "curves": curves,
        "non_finite": dict(non_finite),
    }


def _read_eval_summary(path: Path, iteration: int) -> dict:
    """summary.json of one evaluation, checked field by field (it is the headline, so it must be right)."""
    summary = _read_json(path)
    if summary.get("iteration") != iteration:
        raise RecordError(
            str(path), "iteration", f"says {summary.get('iteration')!r} but the file is in iter_{iteration}"
        )
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict):
        raise RecordError(
            str(path), "metrics", "missing or not an object of {metric: {mean, ci_low, ci_high, n, failed}}"
        )
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            raise RecordError(str(path), f"metrics.{name}", f"expected an object, got {type(entry).__name__}")
        for key in ("mean", "ci_low", "ci_high"):
            value = entry.get(key)
            if value is not None and not (is_number(value) and math.isfinite(value)):
                raise RecordError(
                    str(path), f"metrics.{name}.{key}", f"expected a finite number or null, got {value!r}"
                )
        for key in ("n", "failed"):
            value = entry.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RecordError(str(path), f"metrics.{name}.{key}", f"expected a count >= 0, got {value!r}")
    return summary


def _collect_eval(eval_dir: Path, iteration: int, missing: list[str]) -> dict | None:
    summary_path = eval_dir / "summary.json"
    if not summary_path.exists():
        if eval_dir.exists():
            missing.append("eval/summary.json (the eval folder exists: unfinished evaluation?)")
        return None
    out = {"summary": _read_eval_summary(summary_path, iteration), "conversations": None,
           "counts": (read_meta(eval_dir / "conversations.meta.json") or {}).get("counts") or {}}
    conversations_path = eval_dir / "conversations.jsonl"
    if conversations_path.exists():
        records = read_records(conversations_path, EvalConversation)
        out["conversations"] = {
            "count": len(records),
            "errors": sum(1 for r in records if r.error is not None),
            "terminated": sum(1 for r in records if r.terminated),
            "metric_errors": sum(len(r.metric_errors) for r in records),
            "task_values": paired.task_values(records),
        }
    else:
        missing.append("eval/conversations.jsonl")
    return out


def _collect_iteration(iteration: int, iter_dir: Path) -> dict:
    out: dict = {"dir": iter_dir.name, "trained": False, "stages": {}, "missing": [], "notes": [],
                 "rewards": None, "pairs": None, "training": None, "eval": None}
    names = (*iteration_files(), MODEL_STAGE)
    # iter_0 holds only the evaluation of the initial model; an iteration with any stage output was trained.
    out["trained"] = any(
        (iter_dir / n).exists() or (iter_dir / f"{n}.jsonl").exists() or (iter_dir / f"{n}.meta.json").exists()
        for n in names
    )
    if out["trained"]:
        metrics_path = iter_dir / "metrics.json"
        loop_metrics = _read_json(metrics_path) if metrics_path.exists() else None
        if loop_metrics is None:
            out["missing"].append("metrics.json")
        for name in names:
            stage = _collect_stage(iter_dir, name, loop_metrics)
            out["stages"][name] = stage
            if not stage["exists"]:
                out["missing"].append(stage["output"])
            if stage["damaged_meta"]:
                out["notes"].append(f"{stage['meta_file']} is damaged (not a UTF-8 JSON object): read as none")
            elif not stage["has_meta"]:
                out["missing"].append(stage["meta_file"])
            if stage["partial"]:
                out["notes"].append(f"{stage['output']}.partial exists: the stage is running or was interrupted")
            if stage["has_meta"] and stage["status"] != "complete":
                out["notes"].append(f"{stage['meta_file']} has status {stage['status']!r}, not 'complete'")
        if (iter_dir / "rewards.jsonl").exists():
            out["rewards"] = _collect_rewards(iter_dir / "rewards.jsonl")
        if (iter_dir / "pairs.jsonl").exists():
            out["pairs"] = _collect_pairs(iter_dir / "pairs.jsonl")
        for name, key, made in (("rewards", "records", out["rewards"]), ("pairs", "pairs", out["pairs"])):
            claimed = out["stages"][name]["counts"].get("records_out")
            if made is not None and claimed is not None and claimed != made[key]:
                out["notes"].append(f"{name}.meta.json says records_out={claimed} but {name}.jsonl holds {made[key]}")
        model_dir = iter_dir / MODEL_STAGE
        if (model_dir / "train_metrics.json").exists():
            out["training"] = _collect_training(model_dir, out["stages"][MODEL_STAGE]["stage"])
            for key, n in out["training"]["non_finite"].items():
                out["notes"].append(
                    f"model/train_metrics.json: {n} non-finite value(s) of {key!r} left out of the plot"
                )
        elif model_dir.exists():
            out["missing"].append("model/train_metrics.json")
    out["eval"] = _collect_eval(iter_dir / "eval", iteration, out["missing"])
    return out


def collect(run_dir: str | Path) -> dict:
    """Everything the report shows, read and validated from a run folder (no plotting, no writing)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    iter_dirs = _iteration_dirs(run_dir)
    if not iter_dirs:
        raise FileNotFoundError(f"{run_dir}: no iter_<i> folders; expected a run folder such as data/runs/<run>")
    # The run's own task kinds and metrics: their task metric heads the report, their directions judge it.
    load_plugins(run_dir / "config.yaml")
    iterations = {}
    for i, path in iter_dirs.items():
        logger.info("reading %s", path)
        iterations[i] = _collect_iteration(i, path)
    # Each conversation's task says whether its opening withholds a fact (the split by opening).
    summaries = {i: it["eval"]["summary"] for i, it in iterations.items() if it["eval"]}
    splits = read_splits(summaries, run_dir)
    return {"run_name": run_dir.resolve().name, "iterations": iterations,
            "paired": paired.compare_iterations(iterations),
            "collaboration": {**splits, **compare_splits(iterations, splits["by_task"])}}


def collect_evaluations(run_dir: str | Path) -> dict[int, dict]:
    """{i: {"eval": ...}} of the evaluated iterations only, read as `collect` reads them (for `compare`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    load_plugins(run_dir / "config.yaml")  # as `collect`: the run's own task metrics and metric directions
    out = {}
    for i, path in _iteration_dirs(run_dir).items():
        evaluation = _collect_eval(path / "eval", i, [])
        if evaluation is not None:
            out[i] = {"eval": evaluation}
    return out
