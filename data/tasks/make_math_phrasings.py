"""Write the demo's addition task sets: training tasks in one wording, held-out tasks in others.

The demo claims that training made the model better at the task, not at one
sentence pattern, so the held-out tasks are worded differently from every
training task (different templates, same kind of sums). The numbers are small:
the embedded 135M model answers about a quarter of them right per sample, so
its candidates disagree and right-versus-wrong pairs exist. Deterministic;
rerun to regenerate:

    python data/tasks/make_math_phrasings.py
"""

import random

from task_files import write_phrasings

NAMES = ["Sam", "Mia", "Leo", "Ana", "Tom", "Eva", "Ben", "Zoe", "Max", "Ivy", "Kai", "Lua", "Noa", "Ada"]
ITEMS = ["apples", "pens", "books", "cards", "stickers", "coins", "shells", "cookies", "marbles", "stamps",
         "shirts", "cups"]
TRAIN_TEMPLATES = [
    "{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
    "{name} has {a} {item} and finds {b} more. How many {item} does {name} have now?",
    "{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
]
HELD_OUT_TEMPLATES = [
    "There are {a} {item} on the table. {name} puts {b} more on it. How many {item} are on the table now?",
    "{name} had {a} {item}. A friend gave {name} {b} more. What is the total number of {item}?",
    "In a box there are {a} {item}, and {name} adds {b}. How many {item} are in the box?",
    "Add {b} {item} to {a} {item}. How many {item} is that?",
]
NUM_TRAIN, NUM_HELD_OUT = 48, 48


def make_tasks(prefix: str, templates: list[str], count: int, rng: random.Random) -> list[dict]:
    tasks = []
    for i in range(count):
        a, b = rng.randint(2, 6), rng.randint(1, 5)  # a >= 2: "1 apples" reads badly
        question = rng.choice(templates).format(name=rng.choice(NAMES), item=rng.choice(ITEMS), a=a, b=b)
        tasks.append(addition_task(f"{prefix}-{i:03d}", question, a, b))
    return tasks


def addition_task(task_id: str, question: str, a: int, b: int, opening: str | None = None, **metadata) -> dict:
    """The task record of `question` (a + b): its goal the whole question, its opening `opening` (the question
    itself by default), `metadata` added after a, b and the operation."""
    return {
        "id": task_id,
        "task": "math",
        "goal": f"You want to know the answer to this question: {question} "
        "You want the final number, and you are happy once the assistant gives the right one.",
        "reference": str(a + b),
        "prompt": [{"role": "user", "content": question if opening is None else opening}],
        "metadata": {"a": a, "b": b, "operation": "add", **metadata},
    }


def main() -> None:
    write_phrasings("math", make_tasks, TRAIN_TEMPLATES, HELD_OUT_TEMPLATES, NUM_TRAIN, NUM_HELD_OUT)


if __name__ == "__main__":
    main()
