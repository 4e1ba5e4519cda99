"""The policy as a vLLM offline engine in the stage process.

All requests of a stage go to the engine in a few large batches. Sampling is
reproducible per batch: the engine core runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) and the torch generator is reseeded with
a seed derived from the batch before each call, so a batch that is redone
after a kill gives the same text. (A per-request `seed` would do this more
simply, but it crashes the CPU engine: "CPU Generator does not use offset".)
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (base seed, batch index, turn...)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def configure_vllm_env(kv_cache_gib: int) -> None:
    """Environment vLLM reads at import/engine start; set before importing it."""
    # In-process engine core: our reseeding reaches the sampler, and no extra
    # process competes for the cores.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@dataclass
class SamplingSettings:
    temperature: float
    top_p: float
    max_new_tokens: int


class PolicyEngine:
    """A thin wrapper over `vllm.LLM` for batched chat sampling."""

    def __init__(
        self,
        model: str,
        seed: int,
        dtype: str = "auto",
        max_model_len: int = 2048,
        kv_cache_gib: int = 1,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = True,
    ):
        configure_vllm_env(kv_cache_gib)
        import torch
        from vllm import LLM

        self.model = model
        self.seed = seed
        if dtype == "auto":
            dtype = "bfloat16" if not torch.cuda.is_available() else "auto"
        self.llm = LLM(
            model=model,
            seed=seed,
            dtype=dtype,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def chat(
        self,
        conversations: list[list[dict]],
        sampling: SamplingSettings,
        n: int,
        batch_seed: int,
        progress: bool = True,
    ) -> list[list[str]]:
        """Sample `n` replies for each conversation, in one engine batch."""
        import torch
        from vllm import SamplingParams

        if not conversations:
            return []
        params = SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
        )
        torch.manual_seed(batch_seed)
        outputs = self.llm.chat(conversations, params, use_tqdm=progress, add_generation_prompt=True)
        return [[o.text for o in out.outputs] for out in outputs]
