"""Write the demo math task set: very easy word problems with checkable answers.

The embedded 135M model gets about a third of these right per sample (51 of
160 samples on 40 such problems), and most problems get mixed results over 4
samples, so candidates' rewards differ. Deterministic; rerun to regenerate:

    python data/tasks/make_math_demo.py
"""

import random

from task_files import write_split

NAMES = ["Sam", "Mia", "Leo", "Ana", "Tom", "Eva", "Ben", "Zoe", "Max", "Ivy", "Kai", "Lua"]
ITEMS = ["apples", "pens", "books", "cards", "stickers", "coins", "shells", "cookies", "marbles", "stamps"]
VERBS = ["gets {b} more", "finds {b} more", "buys {b} more", "is given {b} more"]
NUM_TASKS, NUM_EVAL = 48, 16


def make_tasks(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    tasks = []
    for i in range(NUM_TASKS):
        a, b = rng.randint(2, 5), rng.randint(1, 4)  # a >= 2: "1 apples" reads badly
        name, item, verb = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(VERBS).format(b=b)
        question = f"{name} has {a} {item} and {verb}. How many {item} does {name} have now?"
        tasks.append(
            {
                "id": f"math-demo-{i:03d}",
                "task": "math",
                "goal": f"You want to know the answer to this question: {question} "
                f"You want the final number, and you are happy once the assistant gives the right one.",
                "reference": str(a + b),
                "prompt": [{"role": "user", "content": question}],
                "metadata": {"a": a, "b": b, "operation": "add"},
            }
        )
    return tasks


def main() -> None:
    write_split("math_demo", make_tasks(), NUM_EVAL)


if __name__ == "__main__":
    main()
