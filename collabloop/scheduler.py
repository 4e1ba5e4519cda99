"""Per-conversation scheduling: a simulated conversation's next turn goes to its model as soon as its last one
ends.

Turn-synchronous rollouts (`roll_out`'s other schedule) sample every live conversation's user turn as one batch,
then every assistant turn, so each phase waits for its longest reply while the engine runs an ever smaller batch
(on a 2-core CPU the embedded model decodes 1067 tokens/s at a batch of 64 and 155 at a batch of 4). Here each
conversation advances on its own: the local vLLM engines (the policy's, and a `local/<dir>` simulator's, the same
engine when the models are the same) are driven a step at a time through `LLMEngine.add_request`/`step`, so a turn
joins the running batch at the next step and leaves it when it ends, and the user and assistant turns of
different conversations share steps. A remote simulator's calls run as concurrent tasks on an event loop in a
thread, with the client's concurrency, rate limits, retries, cache and failure accounting, while the engine steps.

What stays reproducible: every request carries its own seed, derived from its conversation and turn (the policy)
or its cache key (a local simulator). With local engines only, no clock is read (structured-output grammars are
compiled as a request is added: collabloop/policy.py), so the schedule, and every step's batch, is a function of
the conversations; a local simulator's answers are not read back from the cache here (an answer found there
would end its turn at another step), and each batch of a stage starts from an empty prefix cache, so a batch
redone after a kill, or by another shard, samples the same text. With a remote simulator, replies arrive when the
server sends them, so which policy turns share a step depends on timing; where the engine's arithmetic depends
on its batch (bfloat16 on a CPU, most GPU kernels) a rerun's text can then differ, which is why `auto` keeps the
turn-synchronous schedule there. Records are written only per finished batch either way: a kill loses and
doubles nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable

from collabloop.llm_client import CallResult, LLMClient, Request
from collabloop.local_llm import Completion
from collabloop.policy import LazyPolicyEngine, PolicyEngine, SamplingSettings

_REQUEST_IDS = itertools.count()


class SteppedEngine:
    """A vLLM engine advanced one step at a time: requests join as they come; each one's callback runs when it
    finishes, in the order the engine reports them."""

    def __init__(self, llm):
        self.core = llm.llm_engine
        self.waiting: dict[str, Callable] = {}

    def add(self, prompt: dict, params, done: Callable) -> None:
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when it ends
        request_id = f"conversation-{next(_REQUEST_IDS)}"  # outputs name it; add_request returns an internal id
        self.core.add_request(request_id, prompt, params)
        self.waiting[request_id] = done

    def step(self) -> None:
        for output in self.core.step():
            if output.finished:
                self.waiting.pop(output.request_id)(output)

    def abort(self) -> None:
        """Drop what is still running (after an error), so the shared engine starts its next user clean."""
        if self.waiting:
            self.core.abort_request(list(self.waiting))
            self.waiting.clear()


class RemoteCalls:
    """A remote client's calls as tasks on an event loop in a thread; finished calls queue up for the scheduler."""

    def __init__(self, client: LLMClient):
        self.client = client
        self.finished: queue.Queue = queue.Queue()
        self.in_flight = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="remote-calls", daemon=True)
        self.thread.start()
        self.semaphore = asyncio.run_coroutine_threadsafe(self._semaphore(), self.loop).result()

    async def _semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.client.max_concurrency)

    def call(self, request: Request, done: Callable[[CallResult], None]) -> None:
        self.in_flight += 1
        future = asyncio.run_coroutine_threadsafe(self.client.call(request, self.semaphore), self.loop)
        future.add_done_callback(lambda f: self.finished.put((done, f)))

    def deliver(self, block: bool) -> None:
        """Run the callbacks of the calls that finished; with `block`, wait for at least one."""
        try:
            item = self.finished.get(block=block)
        except queue.Empty:
            return
        while True:
            done, future = item
            self.in_flight -= 1
            done(future.result())  # a call records its failures in its result; anything else is a bug
            try:
                item = self.finished.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """Stop the loop as `asyncio.run` would: tasks left on it (litellm starts a logging worker on each
        loop) cancelled and awaited first, else their coroutines complain of a closed loop at exit."""
        asyncio.run_coroutine_threadsafe(self._cancel_the_rest(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    @staticmethod
    async def _cancel_the_rest() -> None:
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)


class Scheduler:
    """The simulator and the policy, each request handed to its model at once; `run` drives them until no work is
    left."""

    def __init__(self, simulator: LLMClient, engine: PolicyEngine | LazyPolicyEngine):
        self.simulator = simulator
        self._policy_source = engine
        self.policy: PolicyEngine | None = None
        self.engines: dict[int, SteppedEngine] = {}  # one per vLLM engine, by identity
        self.remote = None if simulator.local is not None else RemoteCalls(simulator)
        self.in_flight: dict[str, list[Callable[[CallResult], None]]] = {}  # simulator requests by cache key
        self.to_cache: list[tuple[str, str]] = []  # a local simulator's answers, stored as the run ends

    def _stepped(self, llm) -> SteppedEngine:
        if id(llm) not in self.engines:
            self.engines[id(llm)] = SteppedEngine(llm)
        return self.engines[id(llm)]

    def ask_simulator(self, request: Request, done: Callable[[CallResult], None]) -> None:
        key = self.simulator.cache_key(request)
        if key in self.in_flight:  # an identical request (salt included) is one call
            self.simulator.stats["deduplicated"] += 1
            self.in_flight[key].append(done)
            return
        self.in_flight[key] = [done]
        if self.remote is not None:
            self.remote.call(request, lambda result: self._answered(key, result))
            return
        self.simulator.start_local_calls(1)
        made = self.simulator.local.request(key, request.messages, self.simulator.local_sampling(request), seeded=True)
        if isinstance(made, Completion):  # the prompt does not fit the simulator's engine
            self._answered_locally(key, made)
            return
        prompt, params = made
        top_logprobs = request.top_logprobs
        self._stepped(self.simulator.local.engine()).add(
            prompt, params, lambda output: self._answered_locally(key, self.simulator.local.completion(output,
                                                                                                     top_logprobs)))

    def _answered_locally(self, key: str, done: Completion) -> None:
        result, entry = self.simulator.local_result(done)
        if entry is not None:
            self.to_cache.append((key, entry))
        self._answered(key, result)

    def _answered(self, key: str, result: CallResult) -> None:
        for done in self.in_flight.pop(key):
            done(result)

    def ask_policy(self, conversation: list[dict], sampling: SamplingSettings, seed: int,
                   done: Callable[[str | None], None]) -> None:
        """Sample one reply to `conversation`; `done` gets its text, or None when it would not fit the engine."""
        if self.policy is None:  # a lazy engine starts with the first reply asked of it
            source = self._policy_source
            self.policy = source.started() if isinstance(source, LazyPolicyEngine) else source
        made = self.policy.reply_request(conversation, sampling, seed)
        if made is None:
            done(None)
            return
        self._stepped(self.policy.llm).add(*made, lambda output: done(output.outputs[0].text))

    def run(self) -> None:
        """Step the engines and deliver remote answers until every request has been answered."""
        try:
            while True:
                busy = [e for e in self.engines.values() if e.waiting]
                for stepped in busy:
                    stepped.step()
                if self.remote is not None and self.remote.in_flight:
                    self.remote.deliver(block=not busy)  # nothing to step: wait for the server
                elif not busy:
                    break
        except BaseException:
            for stepped in self.engines.values():
                stepped.abort()
            raise
        finally:
            if self.remote is not None:
                self.remote.close()
            if self.to_cache and self.simulator.cache is not None:  # one transaction, not one per answer
                self.simulator.cache.put_many(self.to_cache)
        self.simulator.raise_if_stopped()  # after the calls in flight finished and were cached
