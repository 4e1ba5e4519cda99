"""K candidate replies per context, sampled from the policy with vLLM."""

from __future__ import annotations

import logging

from collabloop.jsonl import read_records
from collabloop.policy import SamplingSettings, derive_seed, policy_engine
from collabloop.records import Context, Generation
from collabloop.stage import StageRun
from collabloop.stage_configs import GenerateConfig

logger = logging.getLogger(__name__)


def run(cfg: GenerateConfig) -> dict | None:
    """Generate candidates for every context; returns the stage's meta, or None when up to date."""
    stage = StageRun(
        "generate", cfg.output_path, Generation, (cfg,), inputs={"contexts": cfg.contexts_path, "model": cfg.model},
        code=("generation.candidates", "collabloop.policy"),
    )
    if stage.up_to_date():
        return None
    contexts = read_records(cfg.contexts_path, Context)
    done, todo_chunks = stage.begin_chunks(contexts, cfg.batch_size)
    if todo_chunks:
        engine = policy_engine(cfg)
        sampling = SamplingSettings(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        gen_info = {
            "model": cfg.model,
            "seed": cfg.seed,
            "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens},
        }
        for chunk_index, chunk in todo_chunks:
            replies = engine.chat(
                [c.prompt for c in chunk], sampling, n=cfg.num_candidates, batch_seed=derive_seed(cfg.seed, chunk_index)
            )
            new = [
                Generation(**c.to_dict(), responses=r, gen=gen_info) for c, r in zip(chunk, replies) if c.id not in done
            ]
            stage.append(new)
            stage.counts["records_generated"] += len(new)
            stage.counts["responses_generated"] += sum(len(g.responses) for g in new)
            stage.counts["empty_responses"] += sum(1 for g in new for r in g.responses if not r.strip())
    return stage.finish([c.id for c in contexts])
