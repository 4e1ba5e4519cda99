"""What the run viewer (report/index.html) shows, built from a run's records: no writing, no HTML.

`viewer_data(data, run_dir)` takes `reading.collect`'s data (which iterations were trained and
evaluated, the stage configs naming the task files) and reads the records the
page shows whole: per trained iteration the candidates file (the deepest of generations, simulations,
rewards that exists) and its pairs; per evaluated iteration its conversations. It returns a small
index (one row per context or held-out opening, for the page's list and filters) and the details,
which `html.py` writes in chunks the page loads on demand.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from collabloop import paired
from collabloop.jsonl import read_records, read_tasks
from collabloop.metrics import direction
from collabloop.pipeline import record_stages
from collabloop.records import RECORD_TYPES, EvalConversation, Generation, Pair, Rewarded, Simulation
from collabloop.report.collaboration import resolve_tasks_path

logger = logging.getLogger(__name__)

# A metadata field becomes a filter when its tasks take at most this many values (an entry_point or a
# source URL, one value per task, would make a useless list).
MAX_FILTER_VALUES = 20
# Ids the stages derive: a pair of the policy's replies inside candidate k's futures (dpo_iteration/pairing.py)
# and the j-th sample of a held-out opening (simulate/conversations.py).
_FUTURE_PAIR_ID = re.compile(r"^(?P<record>.*)/after(?P<k>\d+)\.(?P<g>\d+)$")
_SAMPLE_ID = re.compile(r"^(?P<opening>.*)/sample(?P<j>\d+)$")

# How a conversation ended. A simulated user who ends the chat writes a last user turn; only
# `end_on_answer` ends one right after a policy turn (collabloop/rollout.py), so a terminated
# conversation whose last turn is the policy's (or a future with no turn at all) ended on an answer.
FAILED, ENDED_ON_ANSWER, USER_ENDED, TURN_LIMIT = "failed", "ended on answer", "user ended", "turn limit"


def outcome_of(messages: list[dict], terminated: bool, error: str | None) -> str:
    if error is not None:
        return FAILED
    if not terminated:
        return TURN_LIMIT
    return ENDED_ON_ANSWER if not messages or messages[-1]["role"] == "assistant" else USER_ENDED


def _turns(messages: list[dict]) -> list[list[str]]:
    return [[m["role"], m["content"]] for m in messages]


def _task_info(paths: list[str], notes: list[str]) -> dict[str, dict]:
    """{task_id: {"kind", "metadata"}} of the task files the run's stages name (first file wins)."""
    tasks: dict[str, dict] = {}
    for tasks_path in paths:
        path = resolve_tasks_path(tasks_path)
        if path is None:
            notes.append(f"task file {tasks_path} not found: its tasks have no kind or metadata here")
            continue
        for task in read_tasks(path):
            tasks.setdefault(task.id, {"kind": task.task, "metadata": task.metadata})
    return tasks


def _filters(tasks: dict[str, dict]) -> dict[str, list[str]]:
    """{field: [values]} of the category fields of the tasks' metadata (strings, true/false, null) with few
    enough values to filter by, sorted. A field holding a number anywhere is a measure (an operand, a
    length), not a category; one holding a list or object is content."""
    values: dict[str, set[str]] = {}
    numeric_or_content: set[str] = set()
    for info in tasks.values():
        for name, value in info["metadata"].items():
            if value is None or isinstance(value, (str, bool)):
                values.setdefault(name, set()).add(filter_value(value))
            else:
                numeric_or_content.add(name)
    return {name: sorted(vs) for name, vs in sorted(values.items())
            if name not in numeric_or_content and len(vs) <= MAX_FILTER_VALUES}


def filter_value(value) -> str:
    # true/false/null as JSON writes them, so a field reads the same in the page as in the task file.
    return str(value) if isinstance(value, str) else json.dumps(value)


def _candidates_file(iter_dir: Path) -> tuple[Path, type] | None:
    """The last existing record file of the pipeline whose records hold candidates (a Generation or more)."""
    found = None
    for stage in record_stages().values():
        record_type = RECORD_TYPES.get(stage.kind)
        path = iter_dir / stage.output
        if record_type is not None and issubclass(record_type, Generation) and path.is_file():
            found = (path, record_type)
    return found


def _pairs_file(iter_dir: Path) -> Path | None:
    return next((iter_dir / s.output for s in record_stages().values()
                 if RECORD_TYPES.get(s.kind) is Pair and (iter_dir / s.output).is_file()), None)


def _first_index(texts: list[str], text: str, rewards: list, reward: float) -> int | None:
    """The candidate a pair names: its text, and its reward where several share the text."""
    matches = [k for k, t in enumerate(texts) if t == text]
    return next((k for k in matches if rewards[k] == reward), matches[0] if matches else None)


def _context_detail(record: Generation, pairs: dict[str, Pair], future_pairs: dict[str, list[Pair]]) -> dict:
    rewards = list(getattr(record, "rewards", [None] * len(record.responses)))
    candidates = []
    for k, text in enumerate(record.responses):
        candidate = {"k": k, "text": text, "reward": rewards[k], "metrics": {}, "futures": None, "future_pairs": []}
        if isinstance(record, Rewarded):
            candidate["metrics"] = record.metrics[k]
        if isinstance(record, Simulation):
            candidate["futures"] = [
                {"turns": _turns(f["messages"]), "outcome": outcome_of(f["messages"], f["terminated"], f["error"]),
                 "error": f["error"],
                 "reward": record.future_rewards[k][s] if isinstance(record, Rewarded) else None}
                for s, f in enumerate(record.futures[k])]
        candidates.append(candidate)
    detail = {"id": record.id, "task_id": record.task_id, "turn": record.turn, "prompt": _turns(record.prompt),
              "gen": record.gen, "candidates": candidates, "pair": None}
    pair = pairs.get(record.id)
    if pair is not None:
        chosen = _first_index(record.responses, pair.chosen[0]["content"], rewards, pair.chosen_reward)
        rejected = _first_index(record.responses, pair.rejected[0]["content"], rewards, pair.rejected_reward)
        detail["pair"] = {"chosen": chosen, "rejected": rejected, "margin": pair.margin,
                          "chosen_reward": pair.chosen_reward, "rejected_reward": pair.rejected_reward}
    for pair in future_pairs.get(record.id, []):
        k = int(_FUTURE_PAIR_ID.match(pair.id).group("k"))
        if k >= len(candidates) or candidates[k]["futures"] is None:
            continue
        user_turn = pair.prompt[-1]["content"]
        replies = [f["turns"][1][1] if len(f["turns"]) > 1 and f["turns"][0][1] == user_turn else None
                   for f in candidates[k]["futures"]]
        future_rewards = [f["reward"] for f in candidates[k]["futures"]]
        candidates[k]["future_pairs"].append({
            "id": pair.id, "margin": pair.margin,
            "chosen": _first_index(replies, pair.chosen[0]["content"], future_rewards, pair.chosen_reward),
            "rejected": _first_index(replies, pair.rejected[0]["content"], future_rewards, pair.rejected_reward)})
    return detail


def _training(iteration: int, iter_dir: Path, notes: list[str]) -> dict | None:
    found = _candidates_file(iter_dir)
    if found is None:
        return None
    path, record_type = found
    records = read_records(path, record_type)
    pairs: dict[str, Pair] = {}
    future_pairs: dict[str, list[Pair]] = {}
    pairs_path = _pairs_file(iter_dir)
    for pair in read_records(pairs_path, Pair) if pairs_path else []:
        match = _FUTURE_PAIR_ID.match(pair.id)
        if match:
            future_pairs.setdefault(match.group("record"), []).append(pair)
        else:
            pairs[pair.id] = pair
    ids = {r.id for r in records}
    unmatched = sum(1 for p in pairs if p not in ids) + sum(len(v) for r, v in future_pairs.items() if r not in ids)
    if unmatched:
        notes.append(f"iteration {iteration}: {unmatched} pair(s) of {pairs_path.name} name no record of {path.name}")
    details = [_context_detail(r, pairs, future_pairs) for r in records]
    rows = []
    for d in details:
        scored = [c["reward"] for c in d["candidates"] if c["reward"] is not None]
        failed = sum(1 for c in d["candidates"] for f in c["futures"] or [] if f["outcome"] == FAILED)
        failed += sum(1 for c in d["candidates"] for e in c["metrics"].values() for x in e["errors"] if x)
        rows.append({"id": d["id"], "task_id": d["task_id"], "turn": d["turn"], "candidates": len(d["candidates"]),
                     "best": max(scored) if scored else None,
                     "margin": d["pair"]["margin"] if d["pair"] else None, "failures": failed})
    return {"iteration": iteration, "source": f"{iter_dir.name}/{path.name}",
            "pairs_source": f"{iter_dir.name}/{pairs_path.name}" if pairs_path else None,
            "rows": rows, "details": details}


def _opening(conversation_id: str) -> tuple[str, int]:
    match = _SAMPLE_ID.match(conversation_id)
    return (match.group("opening"), int(match.group("j"))) if match else (conversation_id, 0)


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _evaluation(run_dir: Path, evaluated: list[int]) -> dict | None:
    """Every held-out opening with its conversations per evaluated iteration, and how the task metric moved."""
    per_iteration: dict[int, dict[str, list[EvalConversation]]] = {}
    output = next(s.output for s in record_stages().values() if RECORD_TYPES.get(s.kind) is EvalConversation)
    for i in evaluated:
        path = run_dir / f"iter_{i}" / output
        if path.is_file():
            for record in read_records(path, EvalConversation):
                per_iteration.setdefault(i, {}).setdefault(_opening(record.id)[0], []).append(record)
    if not per_iteration:
        return None
    iterations = sorted(per_iteration)
    metric = paired.task_metric(dict.fromkeys(m for convs in per_iteration.values() for rs in convs.values()
                                              for r in rs for m in r.metrics))
    # Better is the direction the metric declares (register_metric), not its weight's sign; a metric that
    # declares none counts higher as better, as a task's success measure does.
    sign = direction(metric) or 1.0
    base, last = iterations[0], iterations[-1]
    openings = list(dict.fromkeys(o for i in iterations for o in per_iteration[i]))
    rows, details = [], []
    for opening in openings:
        runs = {i: sorted(per_iteration[i].get(opening, []), key=lambda r: _opening(r.id)[1]) for i in iterations}
        task_id = next(rs[0].task_id for rs in runs.values() if rs)
        means = {i: _mean([r.metrics.get(metric) for r in runs[i]]) for i in iterations}
        diffs = {i: means[i] - means[base] if None not in (means[i], means[base]) else None for i in iterations[1:]}
        outcomes = {i: "n/a" if d is None else "unchanged" if d == 0 else "better" if d * sign > 0 else "worse"
                    for i, d in diffs.items()}
        rows.append({"id": opening, "task_id": task_id, "means": means, "diffs": diffs, "outcomes": outcomes,
                     "outcome": outcomes.get(last, "n/a")})
        details.append({"id": opening, "task_id": task_id, "conversations": {i: [
            {"id": r.id, "turns": _turns(r.messages), "outcome": outcome_of(r.messages, r.terminated, r.error),
             "error": r.error, "metrics": r.metrics, "metric_errors": r.metric_errors} for r in rs]
            for i, rs in runs.items()}})
    return {"iterations": iterations, "base": base, "last": last, "metric": metric, "rows": rows, "details": details}


def viewer_data(data: dict, run_dir: str | Path) -> dict:
    """{"tasks", "filters", "training": [per trained iteration], "evaluation", "notes"} for the run viewer."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    its = data["iterations"]
    tasks_paths = [it["stages"]["contexts"]["config"].get("tasks_path") for it in its.values()
                   if "contexts" in it["stages"]]
    tasks_paths += [it["eval"]["summary"].get("tasks_path") for it in its.values() if it["eval"]]
    tasks = _task_info([p for p in dict.fromkeys(tasks_paths) if isinstance(p, str) and p], notes)
    training = [t for i, it in its.items() if it["trained"]
                and (t := _training(i, run_dir / it["dir"], notes)) is not None]
    evaluation = _evaluation(run_dir, [i for i, it in its.items() if it["eval"]])
    used = {r["task_id"] for t in training for r in t["rows"]} | {r["task_id"] for r in (evaluation or {}).get(
        "rows", [])}
    tasks = {task_id: info for task_id, info in sorted(tasks.items()) if task_id in used}
    filters = _filters(tasks)
    # The page needs a task's kind and its filterable fields only (not its goal, tests or reference).
    shown = {task_id: {"kind": info["kind"], "metadata": {f: filter_value(v) for f, v in info["metadata"].items()
                                                          if f in filters}}
             for task_id, info in tasks.items()}
    return {"tasks": shown, "filters": filters, "training": training, "evaluation": evaluation, "notes": notes}
