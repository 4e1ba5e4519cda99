"""Writing task files, for the scripts of this folder."""

import json
import random
from pathlib import Path


def write_split(name: str, tasks: list[dict], num_eval: int) -> None:
    """`<name>_eval.jsonl` the first `num_eval` tasks, `<name>_train.jsonl` the rest: split by task, so no
    conversation of an eval task is ever trained on."""
    write_task_files({f"{name}_train": tasks[num_eval:], f"{name}_eval": tasks[:num_eval]})


def write_task_files(parts: dict[str, list[dict]]) -> None:
    """Each part to `<this folder>/<name>.jsonl`, one task a line."""
    out = Path(__file__).parent
    for name, tasks in parts.items():
        with open(out / f"{name}.jsonl", "w") as f:
            for task in tasks:
                f.write(json.dumps(task) + "\n")
        print(f"wrote {len(tasks)} tasks to {out / name}.jsonl")


def write_phrasings(name: str, make_tasks, train_templates: list[str], held_out_templates: list[str],
                    num_train: int, num_held_out: int) -> None:
    """`<name>_train.jsonl` from the training wordings, `<name>_heldout.jsonl` from the held-out ones, drawn
    in that order from one seeded generator."""
    rng = random.Random(0)
    write_task_files({
        f"{name}_train": make_tasks(f"{name}-train", train_templates, num_train, rng),
        f"{name}_heldout": make_tasks(f"{name}-heldout", held_out_templates, num_held_out, rng),
    })
