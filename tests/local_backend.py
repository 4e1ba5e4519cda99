"""The in-process simulator/judge backend, run in a process of its own (vLLM binds the threads of the
process it runs in, which must not be pytest's). Prints one JSON object of observations for
tests/test_local_llm.py to check.

    python tests/local_backend.py MODEL_DIR WORK_DIR first|rerun

"rerun" only asks again what "first" asked, in a new process: every answer must come from the cache,
without vLLM even being imported.
"""

import json
import sys
from pathlib import Path


def main(model_dir: str, work: str, mode: str) -> None:
    from collabloop.llm_client import Request, client_for
    from collabloop.metrics import MetricResources, ScoringItem, score_items
    from collabloop.policy import _ENGINES, PolicyEngine, SamplingSettings, forget_prefixes
    from collabloop.records import Task
    from collabloop.response_cache import ResponseCache
    from collabloop.stage_configs import EvaluateConfig

    cfg = EvaluateConfig(local_max_model_len=512)
    out: dict = {}

    def client(cache):
        return client_for(cfg, cache, model=f"local/{model_dir}", api_base="http://127.0.0.1:1/v1",
                          temperature=1.0, max_tokens=24)

    turns = [Request(messages=[{"role": "user", "content": f"Name a fruit, number {i}."}], salt=f"s{i}")
             for i in range(6)]
    too_long = Request(messages=[{"role": "user", "content": "word " * 700}], salt="long")
    requests = [*turns, turns[0], too_long]  # turns[0] twice: one call
    if mode == "rerun":
        again = client(ResponseCache(Path(work) / "a.sqlite"))
        results = again.complete_many(requests[:-1])  # the failed one was not cached: it would ask the engine
        out = {"texts": [r.text for r in results], "errors": [r.error for r in results],
               "cached": [r.cached for r in results], "stats": dict(again.stats),
               "engine_starts": again.local.engine_starts, "vllm_imported": "vllm" in sys.modules}
        print("RESULT " + json.dumps(out))
        return
    first = client(ResponseCache(Path(work) / "a.sqlite"))
    results = first.complete_many(requests)
    out["first"] = {"texts": [r.text for r in results], "errors": [r.error for r in results],
                    "stats": dict(first.stats), "batches": first.local.batches,
                    "engine_starts": first.local.engine_starts, "api_base": first.endpoint.api_base}

    # The same batch, no response cache, as a stage's next batch starts (an empty prefix cache): the same text.
    forget_prefixes()
    fresh = client(ResponseCache(Path(work) / "b.sqlite"))
    out["fresh_texts"] = [r.text for r in fresh.complete_many(requests)]

    judge = client_for(cfg, ResponseCache(Path(work) / "c.sqlite"), model=f"local/{model_dir}", api_base=None,
                       temperature=0.0, max_tokens=2)
    task = Task(id="t", task="math", goal="Know what 2 + 3 is.", reference="5")
    items = [ScoringItem(task=task, history=[{"role": "user", "content": "What is 2 + 3?"}],
                         window=[{"role": "assistant", "content": reply}])
             for reply in ("2 + 3 = 5.", "Do you mean 2 + 3 in base 10? Then it is 5.")]
    values = score_items(items, [None, None], ["interactivity"],
                         MetricResources(judge=judge, options={"judge_top_logprobs": 10}))
    # The same prompts again (answered from the cache): each grade must be the expected grade under the
    # first-token log-probabilities the engine returned, or, where those hold too little mass on A/B/C,
    # the letter written.
    from collabloop.judges import INTERACTIVITY_PROMPT, expected_grade, parse_grade, render_transcript

    again = judge.complete_many([
        Request(messages=[{"role": "user", "content": INTERACTIVITY_PROMPT.format(
            history=render_transcript(item.history), window=render_transcript(item.window))}], top_logprobs=10)
        for item in items
    ])
    logprobs = judge.complete_many([Request(messages=[{"role": "user", "content": "Say A."}], top_logprobs=5)])[0]
    out["judge"] = {"values": [v.value for v in values["interactivity"]],
                    "errors": [v.error for v in values["interactivity"]],
                    "expected_from_logprobs": [expected_grade(r.first_token_logprobs) for r in again],
                    "letters": [parse_grade(r.text) for r in again],
                    "alternatives": [len(r.first_token_logprobs or {}) for r in again],
                    "cached": [r.cached for r in again],
                    "first_token_logprobs": logprobs.first_token_logprobs, "stats": dict(judge.stats)}

    policy = PolicyEngine(model_dir, seed=0)  # the same model: the simulator's engine, not a second one
    replies = policy.chat([[{"role": "user", "content": "Hi"}]], SamplingSettings(0.8, 1.0, 8), n=1, batch_seed=1,
                          progress=False)
    out["engines"] = len(_ENGINES)
    out["policy_reply"] = replies[0][0]

    # Lengths: the engine's context length is the first user's (512); a conversation that leaves no room for a
    # whole reply is not sent (vLLM would refuse the batch), the others are answered.
    out["policy_max_model_len"] = policy.max_model_len
    out["too_long_replies"] = policy.chat([[{"role": "user", "content": "word " * 600}], [{"role": "user",
                                           "content": "Hi"}]], SamplingSettings(0.8, 1.0, 8), n=1, batch_seed=1,
                                          progress=False)
    # A future whose reply after the simulated user's turn would not fit: ended there and counted, no error.
    from collabloop.rollout import Rollout, roll_out

    history = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "In base 10?"}]
    room = policy.max_model_len - policy.prompt_tokens(history)  # fits now; not once the user has spoken
    future = Rollout(task=task, salt="long", history=list(history))
    counts = roll_out([future], 3, client(ResponseCache(Path(work) / "d.sqlite")), policy,
                      SamplingSettings(0.8, 1.0, room), ("t",), "text")
    out["too_long_future"] = {"future": future.future, "error": future.error, "too_long": future.too_long,
                              "counted": counts["conversations_ended_too_long"]}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
