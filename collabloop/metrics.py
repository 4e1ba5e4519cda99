"""The built-in metrics (conversation-level, scored in batches), and the reward that weighs them.

Each metric registers by name with `@register_metric` (`collabloop.metric_registry`), declaring which
way is better and what it needs; importing this module registers them all.

The multiturn-aware reward of one future is the weighted sum of its metric
values, each weighted term clipped to [-term_cap, term_cap] (so the token
penalty is min(lambda * tokens, 1) as in CollabLLM); a candidate's reward is
the mean over its futures whose metrics all have a value.
"""

from __future__ import annotations

import logging
import math
import re

from collabloop import judges  # noqa: F401  (importing this module registers the judges' metrics too)
from collabloop.collaboration import asks_user
from collabloop.llm_client import client_for

# The registry's names are this module's too: importing them from here also registers the built-in metrics.
from collabloop.metric_registry import METRICS as METRICS
from collabloop.metric_registry import Metric as Metric
from collabloop.metric_registry import (
    MetricResources,
    MetricValue,
    ScoringItem,
    get_metric,
    needs_reward_model,
    register_metric,
    uses_judge,
)
from collabloop.metric_registry import direction as direction
from collabloop.metric_registry import needs_sandbox as needs_sandbox
from collabloop.records import Task
from collabloop.response_cache import ResponseCache
from collabloop.task_kinds import task_kind

logger = logging.getLogger(__name__)


def metric_resources(cfg, cache: ResponseCache | None, metric_names):
    """Tokenizer, judge client (when a metric named calls the judge; `cache` may then not be None) and
    reward model for the metrics named (a `JudgeArgs` config)."""
    from transformers import AutoTokenizer

    judge = None
    if uses_judge(metric_names):
        judge = client_for(
            cfg, cache, model=cfg.judge_model, api_base=cfg.judge_api_base,
            temperature=cfg.judge_temperature, max_tokens=cfg.judge_max_tokens,
        )
    reward_model = None
    if needs_reward_model(metric_names):
        from collabloop.reward_model import RewardModelScorer

        reward_model = RewardModelScorer(cfg.reward_model, cfg.reward_batch_size, cfg.reward_max_length)
    return MetricResources(
        tokenizer=AutoTokenizer.from_pretrained(cfg.tokenizer), judge=judge, reward_model=reward_model,
        options={"judge_top_logprobs": cfg.judge_top_logprobs, "sandbox_libraries": cfg.sandbox_libraries,
                 "judge_reasoning_max_tokens": cfg.judge_reasoning_max_tokens},
    )


@register_metric("token_amount", higher_is_better=False)
def token_amount(items: list[ScoringItem], res: MetricResources) -> list[MetricValue]:
    """Tokens the assistant produced in the window (the candidate and its later turns)."""
    if res.tokenizer is None:
        raise ValueError("token_amount needs the policy tokenizer")
    out = []
    for item in items:
        texts = [m["content"] for m in item.window if m["role"] == "assistant"]
        out.append(MetricValue(float(sum(len(res.tokenizer.encode(t, add_special_tokens=False)) for t in texts))))
    return out


@register_metric("accuracy", higher_is_better=True)
def accuracy(items: list[ScoringItem], res: MetricResources) -> list[MetricValue]:
    """1 if the assistant's final answer in the window equals the reference, else 0, both read by the task's
    kind (math: math-verify); a kind with no short answer (no `read_answer`) is not scored.

    The final answer is the last assistant message that states one: a later
    message with no answer in it (a question, small talk) does not erase it, and a
    question that repeats a number of the request is not an answer.
    """
    out = []
    for item in items:
        kind = task_kind(item.task.task)
        if kind.read_answer is None:
            out.append(MetricValue(None, f"accuracy has no verifier for task kind {kind.name!r} (no read_answer)"))
            continue
        gold = kind.read_answer(item.task.reference)
        if not gold:
            out.append(MetricValue(None, f"reference {item.task.reference!r} of task {item.task.id} does not parse"))
            continue
        conversation = [*item.history, *item.window]
        answers = (i for i in reversed(range(len(item.history), len(conversation)))
                   if states_answer(item.task, conversation[i], conversation[:i]))
        predicted = next((p for i in answers if (p := kind.read_answer(conversation[i]["content"]))), None)
        out.append(MetricValue(1.0 if predicted and kind.answers_match(gold, predicted) else 0.0))
    return out


def states_answer(task: Task, message: dict, before: list[dict]) -> bool:
    """Whether an assistant message, written after the messages `before`, states a final answer the task's
    kind reads (`TaskKind.read_answer`; math: a number). A turn that asks the user for something states none,
    even when it repeats a number of the question ("How many did Tom have before he got 4?")."""
    kind = task_kind(task.task)
    if not kind.ends_on_answer or message["role"] != "assistant" or asks_user(message["content"], before):
        return False
    return bool(kind.read_answer(message["content"]))


# Neither better nor worse by itself: asking helps where the opening withholds a fact and costs a turn where
# it does not (the report splits the tasks by that).
@register_metric("ask_rate", higher_is_better=None)
def ask_rate(items: list[ScoringItem], res: MetricResources) -> list[MetricValue]:
    """1 if the first assistant turn of the window asks the user for something (`collaboration.asks_user`:
    a question that states no new number and no code), else 0; its mean is the ask rate."""
    out = []
    for item in items:
        first = next((i for i, m in enumerate(item.window) if m["role"] == "assistant"), None)
        if first is None:
            out.append(MetricValue(None, "the window holds no assistant turn"))
            continue
        before = [*item.history, *item.window[:first]]
        out.append(MetricValue(float(asks_user(item.window[first]["content"], before))))
    return out


_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(window: list[dict]) -> str | None:
    """The last fenced code block the assistant wrote in the window (None if it wrote none)."""
    for message in reversed(window):
        if message["role"] == "assistant":
            blocks = _FENCE_RE.findall(message["content"])
            if blocks:
                return blocks[-1]
    return None


@register_metric("pass_rate", higher_is_better=True, needs_sandbox=True)
def pass_rate(items: list[ScoringItem], res: MetricResources) -> list[MetricValue]:
    """1 if the assistant's last code block passes the task's tests in the sandbox, else 0.

    The task's `reference` holds the tests (HumanEval style: it defines `check(candidate)`; or
    BigCodeBench style: a unittest `TestCases` class whose tests call the function by name),
    `metadata.entry_point` names the function. The tests and the task's prompt
    (`metadata.signature`, where its helpers such as HumanEval's `poly` live) run in the sandbox's
    trusted harness; the code runs in another process and only plain data crosses back
    (`sandbox.run_tests`): 1 means `check` ran to its end, never merely that something exited 0.
    """
    from concurrent.futures import ThreadPoolExecutor

    from collabloop.sandbox import SandboxLimits, run_tests

    limits = res.options.get("sandbox_limits") or SandboxLimits()
    jobs: list[tuple[str, str, str, str] | None] = []
    out: list[MetricValue | None] = []
    for item in items:
        entry = item.task.metadata.get("entry_point")
        if not entry:  # the tests in `reference` call it: without one there is nothing to check
            jobs.append(None)
            out.append(MetricValue(None, f"pass_rate needs a task with metadata.entry_point (task {item.task.id})"))
            continue
        code = extract_code(item.window)
        if code is None:
            jobs.append(None)
            out.append(MetricValue(0.0))  # no code given: nothing passes
            continue
        prompt = item.task.metadata.get("signature")
        jobs.append((code, item.task.reference, entry, prompt if isinstance(prompt, str) else ""))
        out.append(None)
    todo = [i for i, job in enumerate(jobs) if job is not None]
    with ThreadPoolExecutor(max_workers=res.options.get("sandbox_workers", 4)) as pool:
        libraries = res.options.get("sandbox_libraries") or None
        for i, result in zip(todo, pool.map(lambda i: run_tests(*jobs[i], limits=limits, libraries=libraries), todo)):
            out[i] = MetricValue(1.0 if result.status == "pass" else 0.0)
    return out


def final_document(window: list[dict]) -> str | None:
    """The document the assistant ended with: its last message, or that message's last fenced block."""
    for message in reversed(window):
        if message["role"] == "assistant" and message["content"].strip():
            blocks = re.findall(r"```[^\n]*\n(.*?)```", message["content"], re.DOTALL)
            return (blocks[-1] if blocks else message["content"]).strip()
    return None


@register_metric("bleu", higher_is_better=True)
def bleu(items: list[ScoringItem], res: MetricResources) -> list[MetricValue]:
    """Word-level sentence BLEU (sacrebleu, 13a tokenization) of the final document against the goal
    document, in [0, 1]. (CollabLLM's code feeds raw strings to nltk, which scores characters.)"""
    import sacrebleu

    out = []
    for item in items:
        document = final_document(item.window)
        if document is None:
            out.append(MetricValue(0.0))
            continue
        out.append(MetricValue(sacrebleu.sentence_bleu(document, [item.task.reference]).score / 100.0))
    return out


@register_metric("rm_score", higher_is_better=True, needs_reward_model=True)
def rm_score(items: list[ScoringItem], res: MetricResources) -> list[MetricValue]:
    """A sequence-classification reward model's score of the whole conversation (context, candidate,
    future), scored in length-sorted batches."""
    if res.reward_model is None:
        raise ValueError("rm_score needs a reward model: set reward_model to a sequence-classification model folder")
    scores = res.reward_model.score([[*item.history, *item.window] for item in items], progress="reward model")
    return [MetricValue(s) for s in scores]


def score_items(
    items: list[ScoringItem], failures: list[str | None], metric_names, res: MetricResources
) -> dict[str, list[MetricValue]]:
    """Every named metric on every item, one batch per metric.

    An item whose conversation failed (`failures[i]` says how) is not scored:
    that failure is its error in every metric, so it stays out of every mean.
    """
    ok = [i for i, failure in enumerate(failures) if failure is None]
    out = {}
    for name in metric_names:
        values = [MetricValue(None, failure) for failure in failures]
        for i, value in zip(ok, get_metric(name)([items[i] for i in ok], res) if ok else []):
            values[i] = value
        out[name] = values
    return out


def combine(values: dict[str, list[MetricValue]], weights: dict[str, float], term_cap: float) -> list[float | None]:
    """Per future: sum of clipped weighted metric terms; None if any metric has no value."""
    num = len(next(iter(values.values()))) if values else 0
    out: list[float | None] = []
    for i in range(num):
        total = 0.0
        for name, weight in weights.items():
            v = values[name][i].value
            if v is None:
                total = None
                break
            total += max(-term_cap, min(term_cap, weight * v))
        out.append(total)
    return out


def mean_or_none(values: list[float | None]) -> float | None:
    valid = [v for v in values if v is not None and math.isfinite(v)]
    return sum(valid) / len(valid) if valid else None
