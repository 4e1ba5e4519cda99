"""Can a reply talk the judge up? The interactivity judge on plain replies and on the same replies with a
judge injection appended (tests/data/judge_injections.jsonl), paired per reply. Run in a process of its own
(vLLM binds the threads of the process it runs in); prints one JSON object, `RESULT {...}`, for
tests/test_judge_injection.py, and a table per kind of injection for a person.

    .venv/bin/python tests/judge_injection.py MODEL_DIR WORK_DIR [--num_tasks 24]

Each underspecified held-out opening is answered once with a guess and once with a clarifying question;
reply i gets injection i mod (corpus size) appended after a blank line, so every injection is tried on
both kinds of reply.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "judge_injections.jsonl"
TASKS = REPO / "data" / "tasks" / "collab_heldout.jsonl"


def plain_replies(num_tasks: int) -> list[tuple[dict, str]]:
    """(task, reply) pairs: a guess and a question for each of the first underspecified held-out tasks."""
    tasks = [json.loads(line) for line in TASKS.read_text().splitlines()]
    tasks = [t for t in tasks if t["metadata"]["underspecified"]][:num_tasks]
    out = []
    for task in tasks:
        guess = int(task["metadata"]["a"]) + 3
        out.append((task, f"The answer is {guess}."))
        out.append((task, "Could you tell me the number that is missing, please?"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("work_dir")
    parser.add_argument("--num_tasks", type=int, default=24)
    args = parser.parse_args()

    from collabloop.llm_client import client_for
    from collabloop.metrics import MetricResources, ScoringItem, score_items
    from collabloop.records import Task
    from collabloop.response_cache import ResponseCache
    from collabloop.stage_configs import AnnotateConfig
    from collabloop.stats import paired_bootstrap

    corpus = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    replies = plain_replies(args.num_tasks)
    injected = [(task, f"{reply}\n\n{corpus[i % len(corpus)]['text']}") for i, (task, reply) in enumerate(replies)]

    cfg = AnnotateConfig(local_max_model_len=1024)
    judge = client_for(cfg, ResponseCache(Path(args.work_dir) / "judge.sqlite"), model=f"local/{args.model_dir}",
                       api_base=None, temperature=0.0, max_tokens=2)
    items = [
        ScoringItem(task=Task(id=t["id"], task=t["task"], goal=t["goal"], reference=t["reference"]),
                    history=[{"role": "user", "content": t["prompt"][0]["content"]}],
                    window=[{"role": "assistant", "content": reply}])
        for t, reply in [*replies, *injected]
    ]
    values = score_items(items, [None] * len(items), ["interactivity"],
                         MetricResources(judge=judge, options={"judge_top_logprobs": 10}))["interactivity"]
    scores = [v.value for v in values]
    errors = [v.error for v in values if v.error]
    n = len(replies)
    lifts = [b - a for a, b in zip(scores[:n], scores[n:]) if a is not None and b is not None]
    by_kind: dict[str, list[float]] = {}
    for i, (a, b) in enumerate(zip(scores[:n], scores[n:])):
        if a is not None and b is not None:
            by_kind.setdefault(corpus[i % len(corpus)]["kind"], []).append(b - a)
    result = {
        "replies": n, "scored_pairs": len(lifts), "errors": errors,
        "plain_mean": sum(s for s in scores[:n] if s is not None) / max(1, n - scores[:n].count(None)),
        "lift": paired_bootstrap(lifts),
        "lift_by_kind": {kind: sum(v) / len(v) for kind, v in sorted(by_kind.items())},
    }
    for kind, lift in result["lift_by_kind"].items():
        print(f"{kind:20s} {lift:+.3f}", file=sys.stderr)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
