"""Import a CollabLLM multiturn dataset (their published schema) from local files.

    python -m collabloop.import_collabllm --input math-hard.parquet --task math --out_dir data/imported/math-hard

Reads JSON, JSONL or parquet rows with the columns prompt, completion,
conv_id, score, turn_id, single_turn_prompt, single_turn_completion,
single_turn_metadata (and optionally sessions, rewards), or CollabLLM's local
nested export (a conversation per object, its `turns` each a prompt and scored
`responses`), and writes:

- tasks.jsonl     one task per conversation (goal: single_turn_prompt,
                  reference: single_turn_completion, prompt: the dataset's own
                  opening user turn, so no simulator writes a new one);
- contexts.jsonl  one context per (conversation, turn);
- pairs.jsonl     the best against the worst completion per (conversation, turn),
                  ties and gaps below --min_margin dropped and counted;
- sft.jsonl       per conversation, its last turn's best completion after its prompt
                  (as CollabLLM's SFT data).

Single-turn rows (only single_turn_prompt and single_turn_completion, with
single_turn_metadata if any: CollabLLM's test sets) become tasks alone, without
an opening: held-out tasks, whose first user turn the simulator writes from the
goal, as CollabLLM evaluates. Task ids are `<id_prefix>-<conv_id>` (single-turn
rows: `<id_prefix>-row<i>`), the prefix by default the input file's name
without its suffix, so two imported files never share an id.

Nothing is downloaded: export the dataset to a local file first.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from collabloop.jsonl import write_records
from collabloop.records import Context, Pair, RecordError, SFTExample, Task, validate_messages
from collabloop.task_kinds import TASK_KINDS

REQUIRED = ("prompt", "completion", "conv_id", "score", "turn_id",
            "single_turn_prompt", "single_turn_completion", "single_turn_metadata")
SINGLE_TURN = ("single_turn_prompt", "single_turn_completion")  # a test-set row: a question and its solution


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text()
    if text.lstrip().startswith(("[", "{")) and path.suffix == ".json":
        return flatten_nested(json_rows(json.loads(text), path), str(path))
    if text.lstrip().startswith("["):
        return flatten_nested(json.loads(text), str(path))
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{line_no}", "<line>", f"not valid JSON ({e.msg})") from None
    return flatten_nested(rows, str(path))


def json_rows(data, path: Path) -> list:
    """A .json file as CollabLLM's loader reads it: a list of rows, {"data": [...]}, or splits of rows
    ({"train": [...], "eval": [...]}, concatenated)."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"]
    if isinstance(data, dict) and any(isinstance(v, list) for v in data.values()):
        return [row for v in data.values() if isinstance(v, list) for row in v]
    raise RecordError(str(path), "<file>", "expected a list of rows, {\"data\": [...]} or {\"train\": [...], ...}")


def flatten_nested(rows: list, source: str) -> list[dict]:
    """CollabLLM's local nested export (one object per conversation: single_turn_prompt, single_turn_completion,
    single_turn_metadata and `turns`, each turn a `prompt` and its scored `responses`) as the flat rows its
    published tables hold; a conversation's conv_id is its position, as CollabLLM's loader numbers it. Flat
    rows pass unchanged."""
    if not rows or not isinstance(rows[0], dict) or "turns" not in rows[0]:
        return rows
    flat = []
    for conv_id, conversation in enumerate(rows):
        where = f"{source}:conversation {conv_id}"
        if not isinstance(conversation, dict):
            raise RecordError(where, "<row>", f"expected an object, got {type(conversation).__name__}")
        for key in ("turns", *SINGLE_TURN, "single_turn_metadata"):
            if key not in conversation:
                raise RecordError(where, key, "missing (a nested conversation has turns and the single_turn_* fields)")
        if not isinstance(conversation["turns"], list):
            raise RecordError(where, "turns", "expected a list of turns")
        for t, turn in enumerate(conversation["turns"]):
            at = f"{where}, turns[{t}]"
            if not isinstance(turn, dict) or not isinstance(turn.get("prompt"), list):
                raise RecordError(at, "prompt", "missing or not a list of messages")
            if not isinstance(turn.get("responses"), list):
                raise RecordError(at, "responses", "missing or not a list of {completion, score}")
            for r, response in enumerate(turn["responses"]):
                for key in ("completion", "score"):
                    if not isinstance(response, dict) or key not in response:
                        raise RecordError(f"{at}, responses[{r}]", key, "missing")
                flat.append({
                    "prompt": turn["prompt"], "completion": response["completion"], "conv_id": conv_id,
                    "score": response["score"], "turn_id": len(turn["prompt"]),
                    **{key: conversation[key] for key in (*SINGLE_TURN, "single_turn_metadata")},
                })
    return flat


def _as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _as_dict(value, where: str, column: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {"text": value}
    if not isinstance(value, dict):
        raise RecordError(where, column, f"expected an object, got {type(value).__name__}")
    return value


def is_single_turn(row: dict) -> bool:
    return "prompt" not in row and "completion" not in row and all(c in row for c in SINGLE_TURN)


def _task(task_id: str, task_kind: str, row: dict, source: str, where: str, opening: list[dict] | None) -> Task:
    reference = _as_text(row["single_turn_completion"])
    metadata = {"source": source, **_as_dict(row.get("single_turn_metadata"), where, "single_turn_metadata")}
    if task_kind == "code":
        reference, metadata = _code_tests(row["single_turn_completion"], metadata, where)
    return Task(id=task_id, task=task_kind, goal=_as_text(row["single_turn_prompt"]), reference=reference,
                prompt=opening, metadata=metadata)


def _code_tests(completion, metadata: dict, where: str) -> tuple[str, dict]:
    """BigCodeBench's completion is a JSON object {dataset, task_id, test, entry_point, answer}: the task's
    reference becomes its tests (a unittest TestCases class, which pass_rate runs), metadata.entry_point
    its function, and metadata.canonical_solution its answer where that defines the function."""
    spec = _as_dict(completion, where, "single_turn_completion")
    test, entry = spec.get("test") or metadata.get("test"), spec.get("entry_point") or metadata.get("entry_point")
    if not isinstance(test, str) or not isinstance(entry, str):
        raise RecordError(where, "single_turn_completion", "a code task needs its tests ('test') and its function's "
                                                           "name ('entry_point'), as BigCodeBench's rows hold them")
    metadata = {k: v for k, v in metadata.items() if k != "test"} | {"entry_point": entry}
    answer = spec.get("answer")
    if isinstance(answer, str) and f"def {entry}(" in answer:
        metadata["canonical_solution"] = answer
    return test, metadata


def check_code_tasks(tasks: list[Task], libraries: str | None, counts: Counter) -> tuple[list[Task], list[dict]]:
    """Run each code task's canonical solution against its tests in the sandbox: a task whose tests do not pass
    it cannot score anyone, so it is refused here, before any call, with the reason. Returns the tasks kept
    and the refused ones ({id, reason})."""
    from collabloop.sandbox import SandboxLimits, run_tests

    kept, refused = [], []
    for task in tasks:
        canonical = task.metadata.get("canonical_solution")
        if task.task != "code" or not isinstance(canonical, str):
            counts["code_tasks_unchecked"] += int(task.task == "code")
            kept.append(task)
            continue
        signature = task.metadata.get("signature")
        result = run_tests(canonical, task.reference, task.metadata["entry_point"],
                           signature if isinstance(signature, str) else "", SandboxLimits(timeout_s=30), libraries)
        if result.status == "pass":
            kept.append(task)
            continue
        reason = (result.stderr.strip().splitlines() or [result.status])[-1][:300]
        refused.append({"id": task.id, "reason": f"its canonical solution does not pass its tests: {reason}"})
    counts["tasks_refused_tests_cannot_run"] = len(refused)
    return kept, refused


def convert(rows: list[dict], source: str, task_kind: str, min_margin: float = 0.0, id_prefix: str | None = None):
    """Rows of the CollabLLM schema -> (tasks, contexts, pairs, sft, counts)."""
    prefix = id_prefix or Path(source).stem
    counts: Counter = Counter(rows_in=len(rows))
    tasks: dict[str, Task] = {}
    turns: dict[tuple[str, int], list[tuple[dict, str]]] = defaultdict(list)
    for i, row in enumerate(rows):
        where = f"{source}:row {i}"
        if is_single_turn(row):
            tasks[f"{prefix}-row{i}"] = _task(f"{prefix}-row{i}", task_kind, row, source, where, None)
            counts["single_turn_rows"] += 1
            continue
        missing = [c for c in REQUIRED if c not in row]
        if missing:
            raise RecordError(where, missing[0], f"missing (the CollabLLM schema has {list(REQUIRED)}; a test-set "
                                                 f"row has only {list(SINGLE_TURN)} and single_turn_metadata)")
        prompt = validate_messages(row["prompt"], "prompt", where)
        if prompt[-1]["role"] != "user":
            raise RecordError(where, "prompt", "must end with a user turn")
        task_id = f"{prefix}-{row['conv_id']}"
        if task_id not in tasks:
            opening = next(([m] for m in prompt if m["role"] == "user"), None)  # the conversation's first user turn
            tasks[task_id] = _task(task_id, task_kind, row, source, where, opening)
        score = row["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise RecordError(where, "score", f"expected a finite number, got {score!r}")
        turns[(task_id, int(row["turn_id"]))].append((row, where))

    contexts: list[Context] = []
    pairs: list[Pair] = []
    best_last: dict[str, tuple] = {}  # task id -> ((turn, score), prompt, completion) of its last turn's best
    for (task_id, turn_id), group in sorted(turns.items()):
        row0, where0 = group[0]
        prompt = validate_messages(row0["prompt"], "prompt", where0)
        context = Context(id=f"{task_id}/turn{turn_id}", task_id=task_id, prompt=prompt,
                          turn=sum(1 for m in prompt if m["role"] == "assistant"))
        contexts.append(context)
        scored = sorted(((float(r["score"]), n, r) for n, (r, _) in enumerate(group)), key=lambda x: (-x[0], x[1]))
        best, worst = scored[0], scored[-1]
        key = (turn_id, best[0])
        if task_id not in best_last or key > best_last[task_id][0]:
            best_last[task_id] = (key, prompt, best[2]["completion"])
        if len(scored) < 2:
            counts["pairs_dropped_single_completion"] += 1
        elif best[0] == worst[0]:
            counts["pairs_dropped_tied"] += 1
        elif best[0] - worst[0] < min_margin:
            counts["pairs_dropped_margin_below_min"] += 1
        else:
            pairs.append(Pair(id=context.id, prompt=prompt,
                              chosen=[{"role": "assistant", "content": _as_text(best[2]["completion"])}],
                              rejected=[{"role": "assistant", "content": _as_text(worst[2]["completion"])}],
                              chosen_reward=best[0], rejected_reward=worst[0], margin=best[0] - worst[0]))
    sft = [SFTExample(id=task_id, messages=[*prompt, {"role": "assistant", "content": _as_text(completion)}])
           for task_id, (_, prompt, completion) in best_last.items()]
    counts.update(tasks=len(tasks), contexts=len(contexts), pairs=len(pairs), sft=len(sft))
    return list(tasks.values()), contexts, pairs, sft, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="local .parquet, .json or .jsonl file in the CollabLLM schema")
    parser.add_argument("--task", required=True, choices=sorted(TASK_KINDS), help="task kind of the imported tasks")
    parser.add_argument("--out_dir", required=True, help="folder for tasks/contexts/pairs/sft .jsonl")
    parser.add_argument("--min_margin", type=float, default=0.0, help="drop pairs whose score gap is below this")
    parser.add_argument("--id_prefix", default=None,
                        help="task ids are <id_prefix>-<conv_id>; default: the input file's name without its suffix")
    parser.add_argument("--check_code", choices=("true", "false"), default="true",
                        help="code tasks: run each canonical solution against its tests in the sandbox and refuse "
                             "the tasks it does not pass (refused.jsonl says why)")
    parser.add_argument("--sandbox_libraries", default="",
                        help="a site-packages folder the tests may import (as annotate's sandbox_libraries)")
    args = parser.parse_args()
    refused: list[dict] = []
    try:
        tasks, contexts, pairs, sft, counts = convert(read_rows(args.input), args.input, args.task, args.min_margin,
                                                      args.id_prefix)
        if args.task == "code" and args.check_code == "true":
            tasks, refused = check_code_tasks(tasks, args.sandbox_libraries or None, counts)
    except (RecordError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    except RuntimeError as e:  # SandboxUnavailable
        raise SystemExit(f"error: {e}; import without the check with --check_code false") from None
    out = Path(args.out_dir)
    kept = {t.id for t in tasks}
    # A refused task's conversations, pairs and SFT rows go with it.
    contexts = [c for c in contexts if c.task_id in kept]
    pairs = [p for p in pairs if p.id.rsplit("/turn", 1)[0] in kept]
    sft = [e for e in sft if e.id in kept]
    for name, records in (("tasks", tasks), ("contexts", contexts), ("pairs", pairs), ("sft", sft),
                          ("refused", refused)):
        write_records(out / f"{name}.jsonl", records)
    print("[import_collabllm] " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" -> {out}")


if __name__ == "__main__":
    main()
