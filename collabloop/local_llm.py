"""A simulator or judge model run on a vLLM engine inside the stage process: `local/<model path>`.

On one machine an HTTP server in front of a small model costs more than the
model: on a 2-core CPU the server's engine-core process spun a core of its
own, and simulate and annotate spent most of their time waiting on it. Here
a stage's simulator turns or judge prompts go to an in-process engine as one
batch, like the policy's replies, and the engine is the policy's own when
both are the same model.

The client (`LLMClient`) keeps everything else the same for every backend:
requests, the on-disk cache, deduplication and failure accounting. The engine
starts only when a request misses the cache, so a rerun that finds every
answer cached starts none. Sampling is reproducible per batch: the torch
generator is reseeded from the batch's requests before the batch runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from collabloop.policy import chat_prompt_ids, derive_seed, shared_llm

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "local/"


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)


def local_path(model: str) -> str:
    """The model directory named by `local/<path>`."""
    return model[len(LOCAL_PREFIX):]


@dataclass(frozen=True)
class Completion:
    text: str | None
    error: str | None = None
    first_token_logprobs: dict[str, float] | None = None


class LocalModel:
    """One model on the process's shared vLLM engine; `complete` runs a batch of chat requests."""

    def __init__(self, model: str, max_model_len: int = 2048, gpu_memory_utilization: float = 0.3,
                 kv_cache_gib: int = 1):
        self.path = local_path(model)
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.kv_cache_gib = kv_cache_gib
        self.engine_starts = 0  # 0 or 1: whether this model's engine was needed at all
        self.batches = 0  # engine batches run (one per `complete` with something to answer)
        self._llm = None

    def engine(self):
        """The `vllm.LLM` this model runs on (started on first use; the policy's own when the model is the same)."""
        if self._llm is None:
            self._llm = shared_llm(self.path, seed=0, max_model_len=self.max_model_len,
                                   kv_cache_gib=self.kv_cache_gib, gpu_memory_utilization=self.gpu_memory_utilization)
            self.engine_starts += 1
        return self._llm

    def request(self, key: str, messages: list[dict], sampling: dict, seeded: bool) -> tuple[dict, object] | Completion:
        """The engine's (prompt, SamplingParams) for one chat request, or its failure when the prompt does not
        fit the engine. `sampling` holds temperature, max_tokens, stop, top_logprobs and choices (the answer is
        one of them). `seeded`: the request carries its own seed, derived from its cache key (always on a GPU,
        where the engine seeds unseeded requests itself; on a CPU for per-conversation scheduling)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        llm = self.engine()
        # A shared engine keeps the context length its first user gave it.
        model_config = getattr(llm.llm_engine, "model_config", None)
        limit = min(self.max_model_len, getattr(model_config, "max_model_len", self.max_model_len))
        ids = chat_prompt_ids(llm.get_tokenizer(), messages)
        room = limit - len(ids)
        if room < 1:
            return Completion(None, f"prompt of {len(ids)} tokens does not fit max_model_len={limit} of the local "
                                    f"model {self.path}")
        structured = None if sampling.get("choices") is None else StructuredOutputsParams(choice=sampling["choices"])
        params = SamplingParams(
            temperature=sampling["temperature"], max_tokens=min(sampling["max_tokens"], room),
            stop=sampling["stop"], logprobs=sampling["top_logprobs"], structured_outputs=structured,
            seed=derive_seed("local", key) if seeded else None,
        )
        return {"prompt_token_ids": ids}, params

    @staticmethod
    def completion(output, top_logprobs: int | None) -> Completion:
        """What the engine's finished `output` (a RequestOutput) answers."""
        choice = output.outputs[0]
        alternatives = None
        if top_logprobs and choice.logprobs:
            alternatives = {}
            for logprob in choice.logprobs[0].values():
                token = logprob.decoded_token or ""
                alternatives[token] = max(alternatives.get(token, float("-inf")), float(logprob.logprob))
        if not choice.text.strip():
            return Completion(None, "empty response")
        return Completion(choice.text, first_token_logprobs=alternatives)

    def complete(self, batch: list[tuple[str, list[dict], dict]]) -> list[Completion]:
        """Answer (cache key, messages, sampling) triples in one engine batch, in order (see `request`).
        A prompt too long for the engine, or an empty answer, fails alone; the rest of the batch is answered."""
        import torch

        on_gpu = torch.cuda.is_available()  # there each request carries its own seed (collabloop/policy.py)
        results: list[Completion | None] = [None] * len(batch)
        prompts, params, where = [], [], []
        for i, (key, messages, sampling) in enumerate(batch):
            made = self.request(key, messages, sampling, seeded=on_gpu)
            if isinstance(made, Completion):
                results[i] = made
                continue
            prompts.append(made[0])
            params.append(made[1])
            where.append(i)
        if prompts:
            self.batches += 1
            if not on_gpu:
                torch.manual_seed(derive_seed("local", *(batch[i][0] for i in where)))
            outputs = self.engine().generate(prompts, params, use_tqdm=False)
            for i, output in zip(where, outputs):
                results[i] = self.completion(output, batch[i][2]["top_logprobs"])
        return results
