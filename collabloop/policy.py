"""The policy as a vLLM offline engine in the stage process.

All requests of a stage go to the engine in a few large batches. Sampling is
reproducible per batch: the engine core runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) and the torch generator is reseeded with
a seed derived from the batch before each call, so a batch that is redone
after a kill gives the same text. (A per-request `seed` would do this more
simply, but it crashes the CPU engine: "CPU Generator does not use offset".) On a GPU the engine
seeds unseeded requests itself, so there each request gets a seed derived from its batch's.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX, aarch64 BF16)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: no way to tell, and float32 is never slow
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(dtype: str) -> str:
    """The dtype vLLM gets for `dtype` ('auto' is resolved here, everything else passes through).

    On GPU 'auto' stays vLLM's own choice. On CPU vLLM's 'auto' downcasts a float32 model to
    bfloat16, which without hardware bf16 falls back to slow kernels: on a 2-core AVX2-only EPYC
    the embedded model sampled 29 tokens/s in bfloat16 and 132 in float32. So on CPU 'auto' is
    bfloat16 only where the CPU has native bf16, and float32 elsewhere.
    """
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "auto"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


@dataclass
class SamplingSettings:
    temperature: float
    top_p: float
    max_new_tokens: int


CPU_KV_BLOCK_TOKENS = 32  # the smallest block the CPU attention backend takes (a multiple of 32)

# One vLLM engine per model and dtype in a process: a local simulator or judge on the policy's own model
# (the demo's first iteration) samples from the policy's engine instead of starting a second one.
_ENGINES: dict[tuple[str, str], object] = {}


def shared_llm(
    model: str,
    seed: int,
    dtype: str = "auto",
    max_model_len: int = 0,
    kv_cache_gib: int = 1,
    enable_prefix_caching: bool = True,
    enforce_eager: bool = True,
    gpu_memory_utilization: float = 0.6,
):
    """The process's `vllm.LLM` for `model` in `dtype`, started on first use.

    The settings of the first caller hold for every later one (an engine cannot change them).
    `max_model_len` 0: the model's own context length, as vLLM reads it from its config.
    `gpu_memory_utilization` is the share of the GPU this engine takes; on CPU the KV cache is
    `kv_cache_gib` instead, and the share is not passed.
    """
    configure_vllm_env(kv_cache_gib)
    resolved = resolve_dtype(dtype)
    key = (os.path.realpath(model) if os.path.exists(model) else model, resolved)
    if key not in _ENGINES:
        import torch
        from vllm import LLM

        logger.info("vLLM engine: %s in %s", model, resolved)
        if torch.cuda.is_available():
            device_settings = {"gpu_memory_utilization": gpu_memory_utilization}
        else:
            # Blocks of 32 tokens instead of the CPU's 128: a conversation's next prompt reuses its earlier
            # prompt up to the last full block, so turn-synchronous futures computed 26k prompt tokens instead
            # of 43k (64 conversations of 3 exchanges). Whole prompts in one step: a per-request seed fails on
            # the CPU when its prompt is split across steps ("CPU Generator does not use offset").
            device_settings = {"block_size": CPU_KV_BLOCK_TOKENS, "enable_chunked_prefill": False}
        _ENGINES[key] = LLM(
            model=model,
            seed=seed,
            dtype=resolved,
            max_model_len=max_model_len or None,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            **device_settings,
        )
        _compile_grammars_when_added(_ENGINES[key])
    return _ENGINES[key]


def _compile_grammars_when_added(llm) -> None:
    """Structured outputs (the 'choice' simulator) compile each request's grammar on a thread, and the request
    joins the batch at the first step after its grammar is ready: which requests share a step then depends on
    timing, and so, in bfloat16, their text (two runs of the same 'choice' conversations sampled 7758 and 8031
    tokens). Compiled as the request is added, every batch is a function of the requests. The switch is an
    attribute of vLLM's in-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0, set above)."""
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    manager = getattr(core, "structured_output_manager", None)
    if manager is None or not hasattr(manager, "_use_async_grammar_compilation"):
        logger.warning("this vLLM compiles structured-output grammars on a thread: turns of the 'choice' "
                       "simulator may sample other text in a rerun")
        return
    manager._use_async_grammar_compilation = False


def forget_prefixes() -> None:
    """Empty the prefix cache of every engine of this process: a stage calls this as it starts a batch (its unit
    of resumption), so that the batch computes its prompts the same way whatever the process ran before, and a
    batch redone after a kill, or by another shard, samples the same text. A prompt found in the cache is
    computed by other kernels than one computed whole, and bfloat16 rounds them differently: with the cache kept
    across batches (KV blocks of 32 tokens, so the prompts' shared start was cached), a generate stage resumed
    after a kill sampled other text than the uninterrupted run. Within a batch the cache still serves each
    conversation's next turn."""
    for llm in _ENGINES.values():
        if not llm.llm_engine.reset_prefix_cache():  # refused while requests run: none should between batches
            raise RuntimeError("vLLM kept its prefix cache: requests of the last batch are still running")


class PolicyEngine:
    """A thin wrapper over `vllm.LLM` for batched chat sampling."""

    def __init__(self, model: str, seed: int, dtype: str = "auto", **engine_settings):
        """`engine_settings`: the rest of `shared_llm`'s arguments (max_model_len, kv_cache_gib, ...)."""
        self.model = model
        self.seed = seed
        self.dtype = resolve_dtype(dtype)
        self.llm = shared_llm(model, seed, dtype, **engine_settings)
        self.tokenizer = self.llm.get_tokenizer()
        # The engine's context length: the model's own, or what its first user set (a shared engine).
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len

    def prompt_tokens(self, conversation: list[dict], reply_opening: str = "") -> int:
        """Tokens of the prompt `chat` makes of `conversation` (with the reply's opening, when given)."""
        return prompt_tokens(self.tokenizer, conversation, reply_opening)

    def chat(
        self,
        conversations: list[list[dict]],
        sampling: SamplingSettings,
        n: int,
        batch_seed: int,
        progress: bool = True,
        reply_opening: str = "",
    ) -> list[list[str] | None]:
        """Sample `n` replies for each conversation, in one engine batch; with `reply_opening`, every reply
        starts with that text (the model continues it) and is returned with it.

        A conversation whose prompt leaves less than `max_new_tokens` of the engine's context length gets
        None instead of replies, and is not sent: vLLM would refuse the whole batch for it. The caller ends
        that conversation and counts it.
        """
        import torch
        from vllm import SamplingParams

        fits = [self.prompt_tokens(c, reply_opening) + sampling.max_new_tokens <= self.max_model_len
                for c in conversations]
        sent = [c for c, ok in zip(conversations, fits) if ok]
        if not sent:
            return [None] * len(conversations)

        def params(seed: int | None) -> SamplingParams:
            return SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                  max_tokens=sampling.max_new_tokens, seed=seed)

        if torch.cuda.is_available():
            # vLLM's GPU runner seeds every unseeded request itself, so the torch generator fixes nothing
            # there: each conversation gets its own seed (which the CPU engine cannot take, see above).
            per_request = [params(derive_seed(batch_seed, i)) for i, ok in enumerate(fits) if ok]
        else:
            per_request = params(None)
            torch.manual_seed(batch_seed)
        if reply_opening:
            opened = [[*c, {"role": "assistant", "content": reply_opening}] for c in sent]
            outputs = self.llm.chat(opened, per_request, use_tqdm=progress, add_generation_prompt=False,
                                    continue_final_message=True)
        else:
            outputs = self.llm.chat(sent, per_request, use_tqdm=progress, add_generation_prompt=True)
        replies = iter([[reply_opening + o.text for o in out.outputs] for out in outputs])
        return [next(replies) if ok else None for ok in fits]


    def reply_request(
        self, conversation: list[dict], sampling: SamplingSettings, seed: int
    ) -> tuple[dict, object] | None:
        """The engine's (prompt, SamplingParams) for one reply to `conversation` with its own `seed`, for a caller
        that drives the engine itself (collabloop/scheduler.py); None when the reply would not fit (see `chat`)."""
        from vllm import SamplingParams

        ids = chat_prompt_ids(self.tokenizer, conversation)
        if len(ids) + sampling.max_new_tokens > self.max_model_len:
            return None
        return {"prompt_token_ids": ids}, SamplingParams(
            n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens, seed=seed)


def prompt_tokens(tokenizer, conversation: list[dict], reply_opening: str = "") -> int:
    """Tokens of the chat prompt of `conversation` (see `chat_prompt_ids`)."""
    return len(chat_prompt_ids(tokenizer, conversation, reply_opening))


def chat_prompt_ids(tokenizer, conversation: list[dict], reply_opening: str = "") -> list[int]:
    """The token ids of the chat prompt of `conversation`: ready for the assistant's reply, or inside it
    after `reply_opening`."""
    if reply_opening:
        ids = tokenizer.apply_chat_template([*conversation, {"role": "assistant", "content": reply_opening}],
                                            tokenize=True, continue_final_message=True)
    else:
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


class LazyPolicyEngine:
    """A `PolicyEngine` started by its first `chat`: a stage whose simulator speaks first (simulate) and
    is down fails in seconds, without first spending the engine's start (~20 s on CPU) on nothing."""

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs = args, kwargs
        self._engine: PolicyEngine | None = None

    def chat(self, *args, **kwargs) -> list[list[str] | None]:
        return self.started().chat(*args, **kwargs)

    def started(self) -> PolicyEngine:
        if self._engine is None:
            self._engine = PolicyEngine(*self._args, **self._kwargs)
        return self._engine


def policy_engine(cfg, lazy: bool = False) -> PolicyEngine | LazyPolicyEngine:
    """The policy engine a stage's `PolicyArgs` describe; `lazy`: started by its first `chat`."""
    make = LazyPolicyEngine if lazy else PolicyEngine
    return make(cfg.model, cfg.seed, cfg.dtype, max_model_len=cfg.max_model_len, kv_cache_gib=cfg.kv_cache_gib,
                enforce_eager=cfg.enforce_eager, gpu_memory_utilization=cfg.gpu_memory_utilization)
