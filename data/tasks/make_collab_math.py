"""Write the collaboration demo's task sets: addition problems whose opening leaves out a number only the
user knows, beside problems of the same kind stated in full.

An underspecified task is a plain task record: the opening (`prompt`) says "some" where a number was, the
goal holds the whole question with that number, the reference is the sum, and `metadata.underspecified` is
true. A guess is right by chance only; asking, then adding, is how to get it right. The simulated user works
from the goal's text alone, as with any task file.

Training tasks use one set of wordings and the held-out tasks others, so the evaluation measures asking and
adding, not a sentence pattern. Either number may be the missing one, and it never equals the number the
opening states (so "the user revealed it" is readable from the numbers a message holds). Deterministic;
rerun to regenerate:

    python data/tasks/make_collab_math.py
"""

import random

from make_math_phrasings import HELD_OUT_TEMPLATES as PHRASING_HELD_OUT_TEMPLATES
from make_math_phrasings import ITEMS, NAMES, addition_task
from task_files import write_phrasings

# {a} the first amount, {b} the amount added; "some"/"a few" stand in for the one left out.
TRAIN_TEMPLATES = [
    "{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
    "{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
    "{name} has {a} {item} and finds {b} more. How many {item} does {name} have now?",
]
HELD_OUT_TEMPLATES = PHRASING_HELD_OUT_TEMPLATES[:3]  # the fourth ('Add {b} to {a}') has no room for 'some'
MISSING_WORDS = {"a": "some", "b": "a few"}
NUM_TRAIN, NUM_HELD_OUT = 48, 48  # half of each underspecified


def make_tasks(prefix: str, templates: list[str], count: int, rng: random.Random) -> list[dict]:
    tasks = []
    for i in range(count):
        underspecified = i % 2 == 0
        a, b = rng.randint(2, 6), rng.randint(1, 5)  # a >= 2: "1 apples" reads badly
        while underspecified and a == b:  # the withheld number must not be the one the opening states
            b = rng.randint(1, 5)
        template, name, item = rng.choice(templates), rng.choice(NAMES), rng.choice(ITEMS)
        question = template.format(name=name, item=item, a=a, b=b)
        missing = rng.choice(["a", "b"]) if underspecified else None
        opening = question
        if missing:
            opening = template.format(name=name, item=item, **{"a": a, "b": b, missing: MISSING_WORDS[missing]})
        tasks.append(addition_task(f"{prefix}-{i:03d}", question, a, b, opening,
                                   underspecified=underspecified, withheld=missing))
    return tasks


def main() -> None:
    write_phrasings("collab", make_tasks, TRAIN_TEMPLATES, HELD_OUT_TEMPLATES, NUM_TRAIN, NUM_HELD_OUT)


if __name__ == "__main__":
    main()
