"""The one client for simulator and judge calls: litellm for API models and servers, or a local engine.

- bounded concurrency (a semaphore over asyncio tasks),
- a timeout per call, retries with exponential backoff capped at a few seconds,
- an on-disk cache (SQLite, `collabloop.response_cache`) keyed by the full request, so a rerun makes no
  new calls. Sampled calls that must differ (S futures of one candidate) carry
  a `salt` in the key.

A model named `local/<path>` runs on a vLLM engine in this process instead
(`collabloop.local_llm`): the misses of each `complete_many` go to it as one
batch, with the same cache, deduplication and counts.

A call that still fails after its retries comes back as a `CallResult` with
`error` set; callers record it and exclude it from means, never score it 0.

Every call's cost, as litellm prices it (0 for a local engine or an unpriced
`hosted_vllm/` server), adds up in the cache's file: the spend is the run's,
not the process's. With a budget (`max_cost_usd`) a call that could pass it
raises `BudgetExceeded` instead of being made.

With requests-per-minute or tokens-per-minute limits (an API's), each attempt waits until it keeps them
(`collabloop.rate_limits`); the limits hold across the client's batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from collabloop.local_llm import LocalModel, is_local
from collabloop.rate_limits import RateLimiter, estimated_tokens
from collabloop.response_cache import ResponseCache

# litellm fetches a model cost map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

logger = logging.getLogger(__name__)

# Seconds before one call is abandoned (then retried): the OpenAI Python client's default. The time a call
# waits queued at the server counts, and on a 2-core CPU a local server took over 120 s for a wave of 64 calls.
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call a chat model through litellm."""

    model: str  # litellm model name, e.g. "hosted_vllm/simulator" or "gpt-4o-mini"
    api_base: str | None = None
    api_key: str | None = None
    temperature: float = 1.0
    max_tokens: int = 256


@dataclass
class Request:
    messages: list[dict]
    salt: str = ""  # makes otherwise identical sampled requests distinct cache entries
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    top_logprobs: int | None = None  # ask for the first token's N most likely alternatives
    choices: list[str] | None = None  # the answer is one of these (structured outputs: a local engine, a vLLM server)


@dataclass
class CallResult:
    text: str | None
    error: str | None = None
    cached: bool = False
    # The first generated token's alternatives, token -> log probability (when asked and served).
    first_token_logprobs: dict[str, float] | None = None


def _first_token_logprobs(choice) -> dict[str, float] | None:
    """The top alternatives of the first generated token, from an OpenAI-style choice."""
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if content is None and isinstance(logprobs, dict):
        content = logprobs.get("content")
    if not content:
        return None
    first = content[0]
    top = getattr(first, "top_logprobs", None) if not isinstance(first, dict) else first.get("top_logprobs")
    out = {}
    for alt in top or []:
        token = alt.get("token") if isinstance(alt, dict) else alt.token
        logprob = alt.get("logprob") if isinstance(alt, dict) else alt.logprob
        out[token] = max(out.get(token, float("-inf")), float(logprob))
    return out or None


def _cache_entry(text: str, first_token_logprobs: dict[str, float] | None) -> str:
    return json.dumps({"text": text, "first_token_logprobs": first_token_logprobs})


class BudgetExceeded(RuntimeError):
    """The next call could pass `max_cost_usd`; the stage stops as after a failed batch."""


def _response_cost(response) -> float:
    """What litellm says a response cost; 0 for a model it has no price for (a `hosted_vllm/` server)."""
    import litellm

    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if cost is None:
        try:
            cost = litellm.completion_cost(completion_response=response)
        except Exception:  # litellm raises for an unmapped model: such calls are not priced
            cost = 0.0
    return float(cost or 0.0)


def _non_retryable() -> tuple[type[BaseException], ...]:
    import litellm

    return (litellm.BadRequestError, litellm.AuthenticationError, litellm.NotFoundError, litellm.PermissionDeniedError)


@dataclass
class LLMClient:
    endpoint: Endpoint
    cache: ResponseCache | None = None
    max_concurrency: int = 16
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 4.0
    stats: Counter = field(default_factory=Counter)
    local: LocalModel | None = None  # set for a `local/<path>` model: calls go to an engine in this process
    # The run's budget in dollars: the spend is read from the cache's file (shared by the run's stages and
    # shards), or counted in this client alone without a cache. None: no budget.
    max_cost_usd: float | None = None
    cost_usd: float = 0.0  # what this client's calls cost
    _max_call_usd: float = field(default=0.0, repr=False)  # the dearest call of this client
    _budget_stop: str | None = field(default=None, repr=False)  # the message, once a call was refused
    # An API's limits on call starts and tokens (prompt estimate + max_tokens) per window; 0: none. Each attempt
    # counts, retries included. Not applied to a local engine. The window is a minute as APIs count, except
    # in tests and for an API that counts over another window.
    max_requests_per_minute: float = 0.0
    max_tokens_per_minute: float = 0.0
    rate_window_s: float = 60.0
    _rate_limiter: RateLimiter | None = field(default=None, repr=False)  # made at the first call; kept across batches

    async def _wait_for_rate_limits(self, request: Request) -> None:
        if not self.max_requests_per_minute and not self.max_tokens_per_minute:
            return
        if self._rate_limiter is None:
            self._rate_limiter = RateLimiter(self.max_requests_per_minute, self.max_tokens_per_minute,
                                             self.rate_window_s)
        tokens = estimated_tokens(request.messages, request.max_tokens or self.endpoint.max_tokens)
        if await self._rate_limiter.acquire(tokens):
            self.stats["rate_limit_waits"] += 1

    def _spend(self) -> tuple[float, float]:
        if self.cache is not None:
            return self.cache.spend()
        return self.cost_usd, self._max_call_usd

    def _over_budget(self) -> bool:
        """Whether the next call could pass the budget: spent + the dearest call so far > budget, or, before any
        priced call, spent >= budget. The check is made as each call starts, so calls started together all pass
        it: the budget can be overshot by the calls in flight at once (llm_max_concurrency, with each shard of a
        sharded stage checking on its own), each as dear as the dearest seen. Those finish, are cached, and
        count; no new call starts after the first that would pass."""
        if self.max_cost_usd is None:
            return False
        if self._budget_stop is None:
            spent, dearest = self._spend()
            if spent + dearest > self.max_cost_usd or spent >= self.max_cost_usd:
                where = f" (kept in {self.cache.path})" if self.cache is not None else ""
                self._budget_stop = (
                    f"the LLM budget is spent: ${_usd(spent)} of max_cost_usd={self.max_cost_usd:g}{where}, and the "
                    f"next call could cost ${_usd(dearest)} ({self.endpoint.model}). Raise loop.max_cost_usd (or "
                    "--max_cost_usd) and rerun the same command: finished records are kept."
                )
        return self._budget_stop is not None

    def _paid(self, cost: float) -> None:
        self.cost_usd += cost
        self._max_call_usd = max(self._max_call_usd, cost)
        self.stats["cost_usd"] = round(self.cost_usd, 6)

    def raise_if_stopped(self) -> None:
        """Raise BudgetExceeded once the budget stopped the calls; callers do so after the calls in flight ended."""
        if self._budget_stop is not None:
            raise BudgetExceeded(self._budget_stop)

    def cache_key(self, request: Request) -> str:
        body = {
            "model": self.endpoint.model,
            "api_base": self.endpoint.api_base,
            "messages": request.messages,
            "temperature": self._temperature(request),
            "max_tokens": request.max_tokens or self.endpoint.max_tokens,
            "stop": request.stop,
            "top_logprobs": request.top_logprobs,
            "salt": request.salt,
        }
        if request.choices is not None:  # only then: the keys of every earlier cache stay valid
            body["choices"] = request.choices
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _deduplicated(self, requests: list[Request]) -> tuple[list[str], dict[str, Request]]:
        """Each request's key, and one request per key: identical requests (salt included) are one call."""
        keys = [self.cache_key(r) for r in requests]
        unique = dict(zip(keys, requests))  # a key is the request's content: its repeats are equal
        self.stats["deduplicated"] += len(requests) - len(unique)
        return keys, unique

    def _from_cache(self, key: str) -> CallResult | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        self.stats["cache_hits"] += 1
        entry = json.loads(hit)
        return CallResult(entry["text"], cached=True, first_token_logprobs=entry.get("first_token_logprobs"))

    def _temperature(self, request: Request) -> float:
        return self.endpoint.temperature if request.temperature is None else request.temperature

    async def call(self, request: Request, semaphore: asyncio.Semaphore) -> CallResult:
        """One remote call: from the cache, else under `semaphore` and the rate limits, with retries; a failure is
        recorded in the result, never raised."""
        import litellm

        key = self.cache_key(request) if self.cache is not None else None
        if key is not None and (hit := self._from_cache(key)) is not None:
            return hit
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                self.stats["retries"] += 1
            async with semaphore:
                await self._wait_for_rate_limits(request)
                if self._over_budget():
                    return CallResult(None, error="over budget")  # not a failure: complete_many raises
                self.stats["calls"] += 1
                extra = {"logprobs": True, "top_logprobs": request.top_logprobs} if request.top_logprobs else {}
                if request.choices is not None:  # vLLM's OpenAI server: structured outputs
                    extra["extra_body"] = {"structured_outputs": {"choice": request.choices}}
                try:
                    response = await asyncio.wait_for(
                        litellm.acompletion(
                            model=self.endpoint.model,
                            messages=request.messages,
                            api_base=self.endpoint.api_base,
                            api_key=self.endpoint.api_key or ("EMPTY" if self.endpoint.api_base else None),
                            temperature=self._temperature(request),
                            max_tokens=request.max_tokens or self.endpoint.max_tokens,
                            stop=request.stop,
                            timeout=self.timeout_s,
                            num_retries=0,
                            # Providers without logprobs drop the parameter instead of failing;
                            # callers then fall back to the text.
                            drop_params=True,
                            **extra,
                        ),
                        timeout=self.timeout_s,
                    )
                    cost = _response_cost(response)
                    self._paid(cost)
                    text = response.choices[0].message.content
                    alternatives = _first_token_logprobs(response.choices[0]) if request.top_logprobs else None
                except asyncio.TimeoutError:
                    last_error = f"timeout after {self.timeout_s:g}s"
                    self.stats["timeouts"] += 1
                    continue
                except _non_retryable() as e:
                    last_error = f"{type(e).__name__}: {str(e)[:300]}"
                    break
                except Exception as e:  # connection refused, 5xx, rate limits: retry
                    last_error = f"{type(e).__name__}: {str(e)[:300]}"
                    continue
            if text is None or not text.strip():
                last_error = "empty response"
                if self.cache is not None:
                    self.cache.put_many([], [cost])  # paid for all the same
                continue
            if key is not None:
                self.cache.put(key, _cache_entry(text, alternatives), cost)
            return CallResult(text, first_token_logprobs=alternatives)
        self.stats["failures"] += 1
        return CallResult(None, error=last_error)

    async def acomplete_many(self, requests: list[Request], progress: str | None = None) -> list[CallResult]:
        semaphore = asyncio.Semaphore(self.max_concurrency)
        keys, unique = self._deduplicated(requests)
        tasks = {key: asyncio.ensure_future(self.call(r, semaphore)) for key, r in unique.items()}
        if progress:
            from tqdm.auto import tqdm

            from collabloop.console import progress_stream

            with tqdm(total=len(tasks), desc=progress, leave=False, file=progress_stream()) as bar:
                for t in tasks.values():
                    t.add_done_callback(lambda _: bar.update(1))
                await asyncio.gather(*tasks.values())
        else:
            await asyncio.gather(*tasks.values())
        self.raise_if_stopped()  # after the calls in flight finished and were cached
        return [tasks[key].result() for key in keys]

    def local_sampling(self, request: Request) -> dict:
        """The sampling settings `LocalModel` takes for `request`."""
        return {"temperature": self._temperature(request), "max_tokens": request.max_tokens or self.endpoint.max_tokens,
                "stop": request.stop, "top_logprobs": request.top_logprobs, "choices": request.choices}

    def cached(self, key: str) -> CallResult | None:
        """The cached answer to the request of `key`, counted as a hit; None without a cache or an entry."""
        return None if self.cache is None else self._from_cache(key)

    def start_local_calls(self, count: int) -> None:
        """Count `count` calls about to go to the local engine; stops the run when its budget is spent (a local
        engine costs nothing, but the run's API calls may have spent it: the run stops as a whole, whichever
        stage comes next)."""
        if not count:
            return
        if self._over_budget():
            self.raise_if_stopped()
        self.stats["calls"] += count
        self._paid(0.0)

    def local_result(self, done) -> tuple[CallResult, str | None]:
        """The result of a local engine's `Completion`, and the cache entry to keep (None for a failure)."""
        if done.error is not None:
            self.stats["failures"] += 1
            return CallResult(None, error=done.error), None
        entry = _cache_entry(done.text, done.first_token_logprobs)
        return CallResult(done.text, first_token_logprobs=done.first_token_logprobs), entry

    def _complete_local(self, requests: list[Request]) -> list[CallResult]:
        """The local backend: cache hits answered, every miss in one engine batch, answers cached at once."""
        keys, unique = self._deduplicated(requests)
        answers = {key: hit for key in unique if (hit := self.cached(key)) is not None}
        misses = [key for key in unique if key not in answers]
        self.start_local_calls(len(misses))
        if misses:
            batch = [(key, unique[key].messages, self.local_sampling(unique[key])) for key in misses]
            new = []
            for key, done in zip(misses, self.local.complete(batch)):
                answers[key], entry = self.local_result(done)
                if entry is not None:
                    new.append((key, entry))
            if self.cache is not None and new:
                self.cache.put_many(new)
        return [answers[key] for key in keys]

    def complete_many(self, requests: list[Request], progress: str | None = None) -> list[CallResult]:
        """Run all requests concurrently (bounded) and return results in order."""
        if not requests:
            return []
        start = time.time()
        if self.local is not None:
            results = self._complete_local(requests)
        else:
            results = asyncio.run(self.acomplete_many(requests, progress))
        logger.debug("%d calls in %.1fs", len(requests), time.time() - start)
        return results


# --- clients for a stage's config (a `RemoteCallArgs`, with `SimulatorArgs` for the simulator) ----------------


def cache_for(cfg, output_path: str) -> ResponseCache:
    """The LLM response cache a stage uses: `llm_cache_path`, or beside its output."""
    path = cfg.llm_cache_path or str(Path(output_path).parent / "llm_cache.sqlite")
    return ResponseCache(path)


def client_for(
    cfg, cache: ResponseCache, *, model: str, api_base: str | None, temperature: float, max_tokens: int
) -> LLMClient:
    """A client for `model` with the stage's call settings: a local engine for `local/<dir>`, litellm else."""
    local = None
    if is_local(model):  # an engine in this process; no server, so no api_base (nor in the cache key)
        local = LocalModel(model, cfg.local_max_model_len, cfg.local_gpu_memory_utilization)
        api_base = None
    return LLMClient(
        Endpoint(model=model, api_base=api_base or None, temperature=temperature, max_tokens=max_tokens),
        cache=cache,
        local=local,
        max_concurrency=cfg.llm_max_concurrency,
        timeout_s=cfg.llm_timeout_s,
        max_retries=cfg.llm_max_retries,
        max_cost_usd=cfg.max_cost_usd,
        max_requests_per_minute=cfg.llm_max_requests_per_minute,
        max_tokens_per_minute=cfg.llm_max_tokens_per_minute,
    )


def simulator_client(cfg, cache: ResponseCache) -> LLMClient:
    """The user simulator's client."""
    return client_for(
        cfg, cache, model=cfg.simulator_model, api_base=cfg.simulator_api_base,
        temperature=cfg.simulator_temperature, max_tokens=cfg.simulator_max_tokens,
    )


def _usd(amount: float) -> str:
    """Dollars to read: cents to four places, and a cheap model's calls (a few millionths) not as $0.0000."""
    return f"{amount:.4f}" if amount >= 0.01 or amount == 0 else f"{amount:.2g}"
