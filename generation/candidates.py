"""K candidate replies per context, sampled from the policy with vLLM."""

from __future__ import annotations

import logging

from collabloop import grader_talk
from collabloop.jsonl import read_records
from collabloop.policy import SamplingSettings, derive_seed, forget_prefixes, policy_engine
from collabloop.records import Context, Generation
from collabloop.stage import StageRun
from collabloop.stage_configs import GenerateConfig
from collabloop.stage_spec import StageSpec, offline_training, output_of, own_output, policy

logger = logging.getLogger(__name__)


def with_system_prompt(messages: list[dict], system_prompt: str) -> list[dict]:
    """`messages` under `system_prompt`, put before a system message of their own (one system turn: chat
    templates take one)."""
    if not system_prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{system_prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": system_prompt}, *messages]


def collaborative_replies(engine, cfg: GenerateConfig, chunk: list[Context], sampling: SamplingSettings,
                          chunk_index: int) -> list[list[str]]:
    """The collaborative candidates of each context of `chunk`. The reply opening starts the replies to an
    opening turn only: in a continued conversation the user has just answered, and a forced question would
    ask again."""
    out: list[list[str]] = [[] for _ in chunk]
    for opening, label in ((True, "collaborative"), (False, "collaborative-continued")):
        positions = [i for i, c in enumerate(chunk) if (c.turn == 0) == opening]
        if not positions:
            continue
        replies = engine.chat(
            [with_system_prompt(chunk[i].prompt, cfg.collaborative_system_prompt) for i in positions], sampling,
            n=cfg.collaborative_candidates, batch_seed=derive_seed(cfg.seed, chunk_index, label),
            reply_opening=cfg.collaborative_reply_opening if opening else "",
        )
        for i, r in zip(positions, replies):
            out[i] = r
    return out


def fitting(contexts: list[Context], cfg: GenerateConfig, counts) -> list[Context]:
    """The contexts whose every candidate prompt (the collaborative one is longer) leaves room for a whole
    reply in the policy's context length; the rest are dropped and counted (`contexts_too_long`) before the
    engine starts, the same way in every shard and rerun."""
    from transformers import AutoTokenizer

    from collabloop.memory_plan import context_length
    from collabloop.policy import prompt_tokens

    limit = cfg.max_model_len or context_length(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)

    def longest(c: Context) -> int:
        lengths = [prompt_tokens(tokenizer, c.prompt)] if cfg.num_candidates > cfg.collaborative_candidates else []
        if cfg.collaborative_candidates:
            opening = cfg.collaborative_reply_opening if c.turn == 0 else ""
            lengths.append(prompt_tokens(tokenizer, with_system_prompt(c.prompt, cfg.collaborative_system_prompt),
                                         opening))
        return max(lengths)

    kept = [c for c in contexts if longest(c) + cfg.max_new_tokens <= limit]
    counts["contexts_too_long"] += len(contexts) - len(kept)
    if len(kept) < len(contexts):
        logger.warning("%d of %d contexts leave fewer than max_new_tokens=%d tokens of max_model_len=%d: dropped",
                       len(contexts) - len(kept), len(contexts), cfg.max_new_tokens, limit)
    return kept


def run(cfg: GenerateConfig) -> dict | None:
    """Generate candidates for every context; returns the stage's meta, or None when up to date."""
    stage = StageRun(
        "generate", cfg.output_path, Generation, (cfg,), inputs={"contexts": cfg.contexts_path, "model": cfg.model},
        code=("generation.candidates", "collabloop.policy"),
    )
    if stage.up_to_date():
        return None
    contexts = fitting(read_records(cfg.contexts_path, Context), cfg, stage.counts)
    done, todo_chunks = stage.begin_chunks(contexts, cfg.batch_size)
    if todo_chunks:
        engine = policy_engine(cfg)
        sampling = SamplingSettings(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        gen_info = {
            "model": cfg.model,
            "seed": cfg.seed,
            "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens},
        }
        plain = cfg.num_candidates - cfg.collaborative_candidates
        gen_info["collaborative_candidates"] = cfg.collaborative_candidates
        for chunk_index, chunk in todo_chunks:
            forget_prefixes()
            prompts = [c.prompt for c in chunk]
            replies = engine.chat(prompts, sampling, n=plain, batch_seed=derive_seed(cfg.seed, chunk_index)) \
                if plain else [[] for _ in chunk]
            if cfg.collaborative_candidates:
                collaborative = collaborative_replies(engine, cfg, chunk, sampling, chunk_index)
                replies = [r + c for r, c in zip(replies, collaborative)]
            new = [
                Generation(**c.to_dict(), responses=r, gen=gen_info) for c, r in zip(chunk, replies) if c.id not in done
            ]
            stage.append(new)
            stage.counts["records_generated"] += len(new)
            stage.counts["responses_generated"] += sum(len(g.responses) for g in new)
            stage.counts["empty_responses"] += sum(1 for g in new for r in g.responses if not r.strip())
            stage.counts[grader_talk.COUNT] += grader_talk.count_addressing_grader(r for g in new for r in g.responses)
    return stage.finish([c.id for c in contexts])


STAGE = StageSpec(
    "generate", "generation/generate.py", GenerateConfig, "generations.jsonl", "generations", run,
    inputs={"model": policy, "contexts_path": output_of("contexts"), "output_path": own_output},
    per_record=True, runs=offline_training,
)
